//! What the kernel shows of a runner, read by the host from `/proc/PID/{status,ns,mountinfo}`,
//! and the isolation report checked against it: a mechanism that the spawn sequence or the
//! runner claims and the kernel does not show is reported as missing (and fails `strict`).
//! The runner runs app code, so its own word is never the evidence.

use std::collections::HashMap;

use isolation::{Mechanism, Report, ReportEntry};

/// The kernel's view of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelView {
    /// `/proc/PID/status` fields (`Uid`, `Gid`, `NoNewPrivs`, `Seccomp`, `CapEff`, ...).
    pub status: HashMap<String, String>,
    /// Namespaces (`pid`, `mnt`, ...) that differ from the host's own.
    pub own_ns: Vec<&'static str>,
    /// Namespaces the host may not look at (a process that is not dumpable, seen by a
    /// non-root host): they confirm nothing either way.
    pub hidden_ns: Vec<&'static str>,
    /// The mounts it sees: (mount point, filesystem type, read-only).
    pub mounts: Vec<(String, String, bool)>,
}

/// The namespaces compared, with the report mechanism each confirms.
const NAMESPACES: &[(&str, Mechanism)] = &[
    ("pid", Mechanism::PidNs),
    ("mnt", Mechanism::MountNs),
    ("ipc", Mechanism::IpcNs),
    ("uts", Mechanism::UtsNs),
    ("user", Mechanism::UserNs),
    ("net", Mechanism::NetNs),
];

/// What the kernel shows of one mechanism: the evidence, either way.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shown {
    /// It shows the mechanism in force (`Seccomp: 2`).
    Confirms(String),
    /// It shows something else (`NoNewPrivs: 0`).
    Contradicts(String),
}

impl KernelView {
    /// Reads the view of `pid` (fields it cannot read stay empty, which confirms nothing).
    pub fn read(pid: i32) -> KernelView {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let mut own_ns = Vec::new();
        let mut hidden_ns = Vec::new();
        for (ns, _) in NAMESPACES {
            let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{ns}"));
            let ours = std::fs::read_link(format!("/proc/self/ns/{ns}"));
            match (theirs, ours) {
                (Ok(t), Ok(o)) if t != o => own_ns.push(*ns),
                (Ok(_), Ok(_)) => {}
                _ => hidden_ns.push(*ns),
            }
        }
        KernelView {
            status: parse_status(&status),
            own_ns,
            hidden_ns,
            mounts: mounts(isolation::mountinfo::of(&pid.to_string())),
        }
    }

    fn field(&self, key: &str) -> &str {
        self.status.get(key).map_or("", String::as_str)
    }

    /// What the kernel shows of `mechanism`, or `None` when it shows nothing either way.
    fn confirms(&self, mechanism: Mechanism) -> Option<Shown> {
        let verdict = |ok: bool, shown: String| {
            Some(if ok {
                Shown::Confirms(shown)
            } else {
                Shown::Contradicts(shown)
            })
        };
        match mechanism {
            Mechanism::Seccomp => {
                let mode = self.field("Seccomp");
                verdict(mode == "2", format!("Seccomp: {mode}"))
            }
            Mechanism::NoNewPrivs => {
                let v = self.field("NoNewPrivs");
                verdict(v == "1", format!("NoNewPrivs: {v}"))
            }
            Mechanism::Capabilities => {
                let caps = ["CapEff", "CapPrm", "CapInh", "CapBnd", "CapAmb"];
                let nonzero: Vec<&str> = caps
                    .into_iter()
                    .filter(|k| !self.field(k).trim_start_matches('0').is_empty())
                    .collect();
                verdict(
                    nonzero.is_empty(),
                    if nonzero.is_empty() {
                        "CapEff, CapPrm, CapInh, CapBnd, CapAmb all 0".into()
                    } else {
                        format!("non-zero {}", nonzero.join(", "))
                    },
                )
            }
            Mechanism::Ids => {
                let uid = self.field("Uid");
                let gid = self.field("Gid");
                let root = |ids: &str| ids.split_whitespace().any(|i| i == "0");
                verdict(
                    !uid.is_empty() && !root(uid) && !root(gid),
                    format!("Uid: {uid}, Gid: {gid}"),
                )
            }
            Mechanism::Root | Mechanism::Disk if self.mounts.is_empty() => None,
            Mechanism::Root => {
                let root = self.mounts.iter().find(|(at, ..)| at == "/");
                let ok = root.is_some_and(|(_, fs, ro)| fs == "tmpfs" && *ro);
                verdict(
                    ok,
                    match root {
                        Some((_, fs, ro)) => {
                            format!("/ is {fs} {}", if *ro { "ro" } else { "rw" })
                        }
                        None => "no / in mountinfo".into(),
                    },
                )
            }
            Mechanism::Disk => {
                let work = self.mounts.iter().find(|(at, ..)| at == "/work");
                verdict(
                    work.is_some_and(|(_, fs, ro)| fs == "tmpfs" && !ro),
                    match work {
                        Some((_, fs, _)) => format!("/work is {fs}"),
                        None => "no /work mount".into(),
                    },
                )
            }
            m => NAMESPACES
                .iter()
                .find(|(_, n)| *n == m)
                .and_then(|(ns, _)| {
                    // Joining the shared empty netns is a namespace of its own too.
                    verdict(
                        self.own_ns.contains(ns),
                        format!(
                            "ns/{ns} {} the host's",
                            if self.own_ns.contains(ns) {
                                "differs from"
                            } else {
                                "is"
                            }
                        ),
                    )
                }),
        }
    }

    /// Checks every applied entry of `report` against this view: confirmed entries gain the
    /// kernel's evidence, contradicted ones become missing. Landlock, which the kernel does
    /// not show from outside, is labelled as the runner's report. Checking against several
    /// processes (init, then the app process) adds each distinct piece of evidence once.
    pub fn check(&self, report: &mut Report) {
        let add = |detail: &mut String, note: String| {
            if !detail.contains(&note) {
                detail.push(' ');
                detail.push_str(&note);
            }
        };
        for entry in report.entries.iter_mut().filter(|e| e.applied) {
            match self.confirms(entry.mechanism) {
                Some(Shown::Confirms(evidence)) => {
                    add(&mut entry.detail, format!("[kernel: {evidence}]"))
                }
                Some(Shown::Contradicts(shown)) => {
                    *entry = ReportEntry::missing(
                        entry.mechanism,
                        format!(
                            "claimed but the kernel shows {shown} (claimed: {})",
                            entry.detail
                        ),
                    )
                }
                None if entry.mechanism == Mechanism::Landlock => add(
                    &mut entry.detail,
                    "[the runner's report: the kernel does not show Landlock from outside]".into(),
                ),
                None => {}
            }
        }
    }
}

fn parse_status(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            (
                k.trim().to_string(),
                v.split_whitespace().collect::<Vec<_>>().join(" "),
            )
        })
        .collect()
}

/// (mount point, fs type, read-only) per line of `mountinfo` (proc(5)): the mount point is
/// field 5, the options field 6, the fs type the first field after the ` - ` separator.
/// (mount point, filesystem type, read-only) of each mount.
fn mounts(mounts: Vec<isolation::mountinfo::Mount>) -> Vec<(String, String, bool)> {
    mounts
        .into_iter()
        .map(|m| {
            let at = m.mount_point.to_string_lossy().into_owned();
            (at, m.fs_type, m.read_only)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tsandbox-runner\nUid:\t1600000001\t1600000001\t1600000001\t1600000001\nGid:\t1600000001\t1600000001\t1600000001\t1600000001\nCapInh:\t0000000000000000\nCapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\nSeccomp:\t2\n";
    const MOUNTS: &str = "66 45 0:40 / / ro,nosuid,nodev,relatime - tmpfs tmpfs rw,size=1024k\n69 66 0:42 /work /work rw,nosuid,nodev,relatime - tmpfs tmpfs rw,size=65536k\n";

    fn sandboxed() -> KernelView {
        KernelView {
            status: parse_status(STATUS),
            own_ns: vec!["pid", "mnt", "ipc", "uts", "net"],
            hidden_ns: vec![],
            mounts: mounts(isolation::mountinfo::parse(MOUNTS.as_bytes())),
        }
    }

    /// What the kernel of a process without any of it shows: the host's root, uid 0, no
    /// filter, every capability, the host's namespaces.
    fn bare() -> KernelView {
        let status = STATUS
            .replace("1600000001", "0")
            .replace("Seccomp:\t2", "Seccomp:\t0")
            .replace("NoNewPrivs:\t1", "NoNewPrivs:\t0")
            .replace("CapEff:\t0000000000000000", "CapEff:\t000001ffffffffff");
        KernelView {
            status: parse_status(&status),
            own_ns: vec![],
            hidden_ns: vec![],
            mounts: mounts(isolation::mountinfo::parse(
                "22 1 254:0 / / rw,relatime - ext4 /dev/vda rw\n".as_bytes(),
            )),
        }
    }

    #[test]
    fn every_claim_is_confirmed_or_refused_by_the_kernel() {
        let cases = [
            Mechanism::Seccomp,
            Mechanism::NoNewPrivs,
            Mechanism::Capabilities,
            Mechanism::Ids,
            Mechanism::Root,
            Mechanism::Disk,
            Mechanism::PidNs,
            Mechanism::MountNs,
            Mechanism::IpcNs,
            Mechanism::UtsNs,
            Mechanism::NetNs,
        ];
        for m in cases {
            assert!(
                matches!(sandboxed().confirms(m), Some(Shown::Confirms(_))),
                "{m}: {:?}",
                sandboxed().confirms(m)
            );
            assert!(
                matches!(bare().confirms(m), Some(Shown::Contradicts(_))),
                "{m}"
            );
        }
        assert_eq!(sandboxed().confirms(Mechanism::Landlock), None);
    }

    #[test]
    fn a_claim_the_kernel_does_not_show_becomes_missing() {
        let mut report = Report::new();
        report.entries = vec![
            ReportEntry::applied(Mechanism::Seccomp, "allow-list"),
            ReportEntry::applied(Mechanism::Landlock, "fully enforced"),
            ReportEntry::missing(Mechanism::Cgroup, "none"),
        ];
        bare().check(&mut report);
        assert!(!report.entries[0].applied);
        assert!(report.entries[0].detail.contains("Seccomp: 0"), "{report}");
        assert!(report.entries[1].applied);
        assert!(report.entries[1].detail.contains("the runner's report"));
        assert!(report.check(isolation::Level::Strict).is_err());
        let mut report = Report::new();
        report.entries = vec![ReportEntry::applied(Mechanism::Seccomp, "allow-list")];
        sandboxed().check(&mut report);
        assert!(report.entries[0].applied);
        assert!(report.entries[0].detail.ends_with("[kernel: Seccomp: 2]"));
    }

    #[test]
    fn init_and_the_app_process_showing_the_same_add_it_once() {
        let mut report = Report::new();
        report.entries = vec![
            ReportEntry::applied(Mechanism::PidNs, "own"),
            ReportEntry::applied(Mechanism::Landlock, "fully enforced"),
        ];
        sandboxed().check(&mut report);
        sandboxed().check(&mut report);
        assert_eq!(
            report.entries[0].detail,
            "own [kernel: ns/pid differs from the host's]"
        );
        assert_eq!(
            report.entries[1]
                .detail
                .matches("the runner's report")
                .count(),
            1
        );
        // Evidence that differs between the two is kept from both.
        let mut other = sandboxed();
        other.status.insert("Seccomp".into(), "2".into());
        let mut report = Report::new();
        report.entries = vec![ReportEntry::applied(Mechanism::Ids, "mapped")];
        sandboxed().check(&mut report);
        other.status.insert("Uid".into(), "1600000002".into());
        other.check(&mut report);
        assert_eq!(report.entries[0].detail.matches("[kernel: ").count(), 2);
    }
}
