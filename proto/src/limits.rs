//! Limit by limit, what enforces a sandbox's limits: the one place that decides what `info`
//! prints next to each limit and which limits `create` warns about, so the two never
//! disagree (`--max-processes` said "not enforced" while `info` showed `nproc=16`).

use serde::{Deserialize, Serialize};

use crate::spec::{ENFORCE_FIX, Limits, format_bytes};

/// One limit of a sandbox (asked for, or the host's default) and what enforces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LimitState {
    /// The flag and its value as a user writes it: `--max-memory 64 MiB`.
    pub flag: String,
    /// What enforces it (`cgroup v1 memory.limit_in_bytes`, `RLIMIT_NOFILE`); `None` when
    /// nothing does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enforced_by: Option<String>,
    /// Why nothing enforces it, when nothing does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_enforced: Option<String>,
    /// The host's default, not asked for.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub default: bool,
}

impl LimitState {
    /// The warning a user sees for a limit nothing enforces: `--max-memory 64 MiB is not
    /// enforced: no cgroup (…); run as root, …`; `None` for an enforced one.
    pub fn warning(&self, fix: &str) -> Option<String> {
        let why = self.not_enforced.as_ref()?;
        Some(format!("{} is not enforced: {why}; {fix}", self.flag))
    }
}

/// Where a sandbox's limits could be enforced, as the host set it up.
#[derive(Debug, Clone, Copy)]
pub struct Setting<'a> {
    /// The sandbox's cgroup: its version (`v1`, `v2`) and the limits it could not apply, as
    /// the cgroup code notes them (`max_memory (no memory controller)`); or why it has none.
    pub cgroup: Result<(&'a str, &'a [String]), &'a str>,
    /// `RLIMIT_NPROC` counts this sandbox's processes only: a non-root host, a user namespace
    /// of the sandbox's own (the kernel counts it per user namespace since Linux 5.14).
    pub nproc_in_own_userns: bool,
    /// The capped tmpfs of `/work` and `/tmp`: `Ok(Some(bytes))` when the kernel shows it,
    /// `Err(why)` when the sandbox has none, `Ok(None)` when not known yet (before start).
    pub disk: Result<Option<u64>, &'a str>,
}

/// The fix a warning names when no cgroup enforces a limit.
pub const FIX: &str = ENFORCE_FIX;

/// Every limit of `limits` that applies (asked for, or the capped disk's default), with what
/// enforces it under `setting`, in the order of the CLI's flags.
pub fn limit_states(limits: &Limits, setting: &Setting<'_>) -> Vec<LimitState> {
    let mut out = Vec::new();
    let cgroup = |key: &str, v1_file: &str, v2_file: &str| -> Result<String, String> {
        match setting.cgroup {
            Err(why) => Err(format!("no cgroup ({why})")),
            Ok((version, missing)) => match missing.iter().find(|m| m.starts_with(key)) {
                Some(note) => Err(note[key.len()..]
                    .trim()
                    .trim_start_matches('(')
                    .trim_end_matches(')')
                    .to_string()),
                None => Ok(format!(
                    "cgroup {version} {}",
                    if version == "v1" { v1_file } else { v2_file }
                )),
            },
        }
    };
    let push = |out: &mut Vec<LimitState>, flag: String, by: Result<String, String>| {
        out.push(match by {
            Ok(by) => LimitState {
                flag,
                enforced_by: Some(by),
                not_enforced: None,
                default: false,
            },
            Err(why) => LimitState {
                flag,
                enforced_by: None,
                not_enforced: Some(why),
                default: false,
            },
        })
    };
    if let Some(bytes) = limits.max_memory {
        let by = cgroup("max_memory", "memory.limit_in_bytes", "memory.max");
        push(
            &mut out,
            format!("--max-memory {}", format_bytes(bytes)),
            by,
        );
    }
    if let Some(n) = limits.max_processes {
        let by = match cgroup("max_processes", "pids.max", "pids.max") {
            Err(_) if setting.nproc_in_own_userns => {
                Ok("RLIMIT_NPROC in the sandbox's own user namespace".to_string())
            }
            by => by,
        };
        push(&mut out, format!("--max-processes {n}"), by);
    }
    if let Some(cpu) = limits.cpu {
        let by = cgroup("cpu", "cpu.cfs_quota_us", "cpu.max");
        push(&mut out, format!("--cpu {cpu}"), by);
    }
    for (value, flag, rlimit) in [
        (limits.max_open_files, "--max-open-files", "RLIMIT_NOFILE"),
        (limits.max_file_size, "--max-file-size", "RLIMIT_FSIZE"),
        (limits.cpu_seconds, "--cpu-seconds", "RLIMIT_CPU"),
        (limits.address_space, "--address-space", "RLIMIT_AS"),
    ] {
        if let Some(v) = value {
            let shown = match flag {
                "--max-file-size" | "--address-space" => format_bytes(v),
                _ => v.to_string(),
            };
            push(&mut out, format!("{flag} {shown}"), Ok(rlimit.to_string()));
        }
    }
    match (limits.max_disk, setting.disk) {
        (_, Ok(None)) => {}
        (asked, Ok(Some(bytes))) => out.push(LimitState {
            flag: format!("--max-disk {}", format_bytes(bytes)),
            enforced_by: Some("the size of the tmpfs of /work and /tmp".to_string()),
            not_enforced: None,
            default: asked.is_none(),
        }),
        (Some(bytes), Err(why)) => push(
            &mut out,
            format!("--max-disk {}", format_bytes(bytes)),
            Err(why.to_string()),
        ),
        (None, Err(_)) => {}
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_MEMORY: &[String] = &[];

    fn limits() -> Limits {
        Limits {
            max_memory: Some(64 << 20),
            max_processes: Some(16),
            cpu: Some(0.5),
            max_open_files: Some(256),
            ..Limits::default()
        }
    }

    /// (setting, the flags' enforcement in order: `Ok(by)` or `Err(why)`).
    #[test]
    fn each_limit_says_what_enforces_it() {
        let missing_memory = vec!["max_memory (no memory controller)".to_string()];
        type Case<'a> = (&'a str, Setting<'a>, Vec<Result<&'a str, &'a str>>);
        let cases: Vec<Case<'_>> = vec![
            (
                "root, cgroup v1",
                Setting {
                    cgroup: Ok(("v1", NO_MEMORY)),
                    nproc_in_own_userns: false,
                    disk: Ok(Some(64 << 20)),
                },
                vec![
                    Ok("cgroup v1 memory.limit_in_bytes"),
                    Ok("cgroup v1 pids.max"),
                    Ok("cgroup v1 cpu.cfs_quota_us"),
                    Ok("RLIMIT_NOFILE"),
                    Ok("the size of the tmpfs of /work and /tmp"),
                ],
            ),
            (
                "cgroup v2 without a memory controller",
                Setting {
                    cgroup: Ok(("v2", &missing_memory)),
                    nproc_in_own_userns: false,
                    disk: Ok(None),
                },
                vec![
                    Err("no memory controller"),
                    Ok("cgroup v2 pids.max"),
                    Ok("cgroup v2 cpu.max"),
                    Ok("RLIMIT_NOFILE"),
                ],
            ),
            (
                "non-root without a cgroup: processes by RLIMIT_NPROC in its user namespace",
                Setting {
                    cgroup: Err("not root"),
                    nproc_in_own_userns: true,
                    disk: Ok(Some(1 << 20)),
                },
                vec![
                    Err("no cgroup (not root)"),
                    Ok("RLIMIT_NPROC in the sandbox's own user namespace"),
                    Err("no cgroup (not root)"),
                    Ok("RLIMIT_NOFILE"),
                    Ok("the size of the tmpfs of /work and /tmp"),
                ],
            ),
            (
                "isolation none",
                Setting {
                    cgroup: Err("--isolation none"),
                    nproc_in_own_userns: false,
                    disk: Err("no root of its own at --isolation none"),
                },
                vec![
                    Err("no cgroup (--isolation none)"),
                    Err("no cgroup (--isolation none)"),
                    Err("no cgroup (--isolation none)"),
                    Ok("RLIMIT_NOFILE"),
                ],
            ),
        ];
        for (name, setting, want) in cases {
            let states = limit_states(&limits(), &setting);
            let got: Vec<Result<&str, &str>> = states
                .iter()
                .map(|s| match (&s.enforced_by, &s.not_enforced) {
                    (Some(by), None) => Ok(by.as_str()),
                    (None, Some(why)) => Err(why.as_str()),
                    other => panic!("{name}: both or neither: {other:?}"),
                })
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn the_default_disk_is_shown_and_marked() {
        let setting = Setting {
            cgroup: Ok(("v1", NO_MEMORY)),
            nproc_in_own_userns: false,
            disk: Ok(Some(64 << 20)),
        };
        let states = limit_states(&Limits::default(), &setting);
        assert_eq!(states.len(), 1, "{states:?}");
        assert_eq!(states[0].flag, "--max-disk 64 MiB");
        assert!(states[0].default);
        let asked = Limits {
            max_disk: Some(64 << 20),
            ..Limits::default()
        };
        assert!(!limit_states(&asked, &setting)[0].default);
    }

    #[test]
    fn warnings_name_the_flag_the_reason_and_the_fix() {
        let setting = Setting {
            cgroup: Err("not root"),
            nproc_in_own_userns: true,
            disk: Ok(None),
        };
        let warnings: Vec<String> = limit_states(&limits(), &setting)
            .iter()
            .filter_map(|s| s.warning(FIX))
            .collect();
        assert_eq!(
            warnings,
            vec![
                format!("--max-memory 64 MiB is not enforced: no cgroup (not root); {FIX}"),
                format!("--cpu 0.5 is not enforced: no cgroup (not root); {FIX}"),
            ]
        );
    }
}
