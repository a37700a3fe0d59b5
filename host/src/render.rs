//! Human renderings of the daemon's answers: one line per reload, a few lines per sandbox,
//! tables of sandboxes and workers, usage figures.

use std::time::Duration;

use proto::info::LogInfo;
use proto::limits::LimitState;
use proto::runner::WorkerList;
use proto::spec::format_bytes;
use sandbox::{ReloadReport, SandboxInfo, SandboxSummary, Status, Usage};

use crate::output::{CLAIM, untrusted};

/// Formats milliseconds for humans: `412 ms`, `1.23 s`.
pub fn fmt_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{ms:.2} ms")
    } else if ms < 10.0 {
        format!("{ms:.1} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.2} s", ms / 1000.0)
    }
}

/// One line for a reload or rollback, with the client's end-to-end time:
/// `reloaded demo: v1 -> v2 in 412 ms (build 380 ms, swap 0.31 ms)`.
pub fn render_reload(id: &str, report: &ReloadReport, total: Duration) -> String {
    let total = fmt_ms(total.as_secs_f64() * 1000.0);
    let build = report
        .compile_ms
        .map(|ms| format!("build {}, ", fmt_ms(ms as f64)))
        .unwrap_or_default();
    if report.status == "no_change" {
        format!(
            "unchanged {id}: still v{} ({build}same library, nothing to reload)",
            report.from_version
        )
    } else {
        format!(
            "reloaded {id}: v{} -> v{} in {total} ({build}swap {})",
            report.from_version,
            report.to_version,
            fmt_ms(report.load_us as f64 / 1000.0)
        )
    }
}

/// What the app says of itself, quoted, escaped and labelled as its claim:
/// `name "sandbox_app" version "0.1.0" (the app's claim)`.
pub fn app_claims(name: &str, version: &str) -> String {
    format!(
        "name {} version {} {CLAIM}",
        untrusted(name).quoted(),
        untrusted(version).quoted()
    )
}

/// The line `host create` prints: what the host assigned and measured, then the app's claims.
pub fn render_created(info: &SandboxInfo) -> String {
    format!(
        "created {}: pid {}, v{} sha256 {}, {}",
        info.id,
        info.pid,
        info.app.version,
        short_sha(&info.app.sha256),
        app_claims(&info.app.name, &info.app.app_version)
    )
}

/// A few lines describing a sandbox.
pub fn render_info(info: &SandboxInfo) -> String {
    let mut out = format!(
        "{}: {} (pid {}), created {}, {} restart(s)\n",
        info.id,
        status_name(&info.status),
        info.pid,
        untrusted(&info.created_at),
        info.restart_count
    );
    if let Some(reason) = &info.crash_reason {
        out.push_str(&format!("  crash reason: {}\n", untrusted(reason)));
    }
    out.push_str(&format!(
        "  app: v{} ({}) sha256 {}, {}\n",
        info.app.version,
        untrusted(&info.app.path.to_string_lossy()),
        short_sha(&info.app.sha256),
        app_claims(&info.app.name, &info.app.app_version)
    ));
    for v in &info.versions {
        let mark = if v.version == info.app.version {
            "*"
        } else {
            " "
        };
        out.push_str(&format!(
            "  {mark} v{} sha256 {}, version {} {CLAIM}\n",
            v.version,
            short_sha(&v.sha256),
            untrusted(&v.app_version).quoted()
        ));
    }
    out.push_str(&render_limits(&info.limit_states, &info.limits));
    let t = &info.startup;
    let ms = |us: u64| format!("{:.2}", us as f64 / 1000.0);
    out.push_str(&format!(
        "  started in ms: install {}, cgroup {}, prepare {}, spawn {}, ready {} (restrict {}, load {})\n",
        ms(t.install_us),
        ms(t.cgroup_us),
        ms(t.prepare_us),
        ms(t.spawn_us),
        ms(t.ready_us),
        ms(t.restrict_us),
        ms(t.load_us)
    ));
    if let (Some(root), Some(ids)) = (t.root_us, t.ids_us) {
        out.push_str(&format!(
            "  of which, before exec: own root {}, ids {}\n",
            ms(root),
            ms(ids)
        ));
    }
    if t.pooled {
        out.push_str(&format!(
            "  pooled: a prepared runner (the spawn phases ran before the create); given its \
             cgroup, limits and version in {} ms\n",
            ms(t.assign_us.unwrap_or(0))
        ));
    }
    out.push_str(&render_isolation(&info.isolation));
    out.push_str(&render_log(&info.log));
    out.truncate(out.trim_end().len());
    out
}

/// Each limit and what enforces it, a line each, a limit nothing enforces marked `NOT
/// ENFORCED` next to it; from a daemon that does not say, the limits as asked.
fn render_limits(states: &[LimitState], limits: &sandbox::Limits) -> String {
    if states.is_empty() {
        let asked: Vec<String> = match serde_json::to_value(limits) {
            Ok(serde_json::Value::Object(map)) => map
                .iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| format!("{}={}", untrusted(k), crate::output::json(v)))
                .collect(),
            _ => Vec::new(),
        };
        return match asked.is_empty() {
            true => "  limits: none\n".to_string(),
            false => format!("  limits: {}\n", asked.join(" ")),
        };
    }
    let mut out = String::from("  limits:\n");
    for s in states {
        let default = if s.default { " (default)" } else { "" };
        let how = match (&s.enforced_by, &s.not_enforced) {
            (_, Some(why)) => format!("NOT ENFORCED: {why}"),
            (Some(by), None) => by.clone(),
            (None, None) => "?".to_string(),
        };
        out.push_str(&format!(
            "    {}{default}: {}\n",
            untrusted(&s.flag),
            untrusted(&how)
        ));
    }
    out
}

/// Where the sandbox's log is, how much of it is on disk and what was dropped to keep it
/// within its bound; nothing from a daemon that does not say.
fn render_log(log: &LogInfo) -> String {
    if log.path.as_os_str().is_empty() {
        return String::new();
    }
    format!(
        "  log: {} ({} on disk, at most {}; {} of earlier runners' output deleted)\n",
        log.path.display(),
        format_bytes(log.kept_bytes),
        format_bytes(log.bound_bytes),
        format_bytes(log.dropped_bytes)
    )
}

/// The isolation report: one line per mechanism when it has the usual shape
/// (`{"level", "mechanisms": [{"mechanism", "applied", "detail"}]}`), else its JSON.
fn render_isolation(isolation: &serde_json::Value) -> String {
    let mechanisms = isolation.get("mechanisms").and_then(|m| m.as_array());
    let Some(mechanisms) = mechanisms else {
        return match isolation {
            serde_json::Value::Null => String::new(),
            other => format!("  isolation: {}\n", crate::output::json(other)),
        };
    };
    let level = isolation
        .get("level")
        .and_then(|l| l.as_str())
        .unwrap_or("?");
    let mut out = format!("  isolation: {}\n", untrusted(level));
    for m in mechanisms {
        let applied = m.get("applied").and_then(|a| a.as_bool()).unwrap_or(false);
        out.push_str(&format!(
            "    {} {}: {}\n",
            if applied { "+" } else { "-" },
            untrusted(m.get("mechanism").and_then(|n| n.as_str()).unwrap_or("?")),
            untrusted(m.get("detail").and_then(|d| d.as_str()).unwrap_or(""))
        ));
    }
    out
}

/// A status as its JSON name (`running`, `restarting`, `crashed`).
fn status_name(status: &Status) -> String {
    serde_json::to_value(status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn short_sha(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// A table of sandboxes.
pub fn render_list(list: &[SandboxSummary]) -> String {
    if list.is_empty() {
        return "no sandboxes".into();
    }
    let mut out = format!(
        "{:<24} {:<10} {:>8} {:>7}",
        "ID", "STATUS", "PID", "VERSION"
    );
    for s in list {
        out.push_str(&format!(
            "\n{:<24} {:<10} {:>8} {:>7}",
            s.id,
            status_name(&s.status),
            s.pid,
            format!("v{}", s.app_version)
        ));
        if let Some(reason) = &s.reason {
            out.push_str(&format!("  {}", untrusted(reason)));
        }
    }
    out
}

/// A sandbox's usage, one figure per line.
pub fn render_usage(u: &Usage) -> String {
    format!(
        "{} (pid {}, app v{}, from {})\n  processes {}  threads {}  open fds {}\n  \
         memory {:.1} MiB  cpu {} ms ({:.1}%)\n  uptime {}  restarts {} (workers {})  \
         mapped app copies {}",
        u.sandbox_id,
        u.pid,
        u.app_version,
        untrusted(&u.source),
        u.processes,
        u.threads,
        u.open_fds,
        u.memory_bytes as f64 / (1024.0 * 1024.0),
        u.cpu_time_ms,
        u.cpu_percent,
        fmt_ms(u.uptime_ms as f64),
        u.restart_count,
        u.worker_restarts,
        u.mapped_app_copies
    ) + &match (u.disk_bytes, u.disk_files) {
        (Some(b), Some(f)) => format!(
            "\n  disk {:.1} MiB in {f} files",
            b as f64 / (1024.0 * 1024.0)
        ),
        _ => String::new(),
    }
}

/// A table of workers.
pub fn render_workers(id: &str, w: &WorkerList) -> String {
    let mut out = format!(
        "{id}: {} worker(s), {} restart(s){}",
        w.workers.len(),
        w.restarts,
        if w.crashed {
            ", past restart intensity"
        } else {
            ""
        }
    );
    for worker in &w.workers {
        out.push_str(&format!(
            "\n  #{:<3} pid {:<8} v{:<4} restarts {}",
            worker.index, worker.pid, worker.version, worker.restarts
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_well() {
        assert_eq!(fmt_ms(0.312), "0.31 ms");
        assert_eq!(fmt_ms(4.25), "4.2 ms");
        assert_eq!(fmt_ms(412.4), "412 ms");
        assert_eq!(fmt_ms(1234.0), "1.23 s");
    }

    #[test]
    fn isolation_reads_one_mechanism_per_line() {
        let report = serde_json::json!({"level": "standard", "mechanisms": [
            {"mechanism": "pid_ns", "applied": true, "detail": "new pid namespace"},
            {"mechanism": "user_ns", "applied": false, "detail": "host runs as root"},
        ]});
        assert_eq!(
            render_isolation(&report),
            "  isolation: standard\n    + pid_ns: new pid namespace\n    - user_ns: host runs as root\n"
        );
        assert_eq!(render_isolation(&serde_json::Value::Null), "");
    }

    #[test]
    fn the_log_says_where_it_is_and_what_was_dropped() {
        let log = LogInfo {
            path: "/run/sb/x.1/runner.log".into(),
            kept_bytes: 3 << 20,
            dropped_bytes: 2 << 20,
            bound_bytes: proto::info::LOG_BOUND_BYTES,
        };
        assert_eq!(
            render_log(&log),
            "  log: /run/sb/x.1/runner.log (3 MiB on disk, at most 8 MiB; 2 MiB of earlier \
             runners' output deleted)\n"
        );
        assert_eq!(render_log(&LogInfo::default()), "");
    }

    #[test]
    fn each_limit_is_marked_next_to_it() {
        let states = [
            LimitState {
                flag: "--max-memory 64 MiB".into(),
                enforced_by: None,
                not_enforced: Some("no cgroup (not root)".into()),
                default: false,
            },
            LimitState {
                flag: "--max-disk 64 MiB".into(),
                enforced_by: Some("the size of the tmpfs of /work and /tmp".into()),
                not_enforced: None,
                default: true,
            },
        ];
        assert_eq!(
            render_limits(&states, &sandbox::Limits::default()),
            "  limits:\n    --max-memory 64 MiB: NOT ENFORCED: no cgroup (not root)\n    \
             --max-disk 64 MiB (default): the size of the tmpfs of /work and /tmp\n"
        );
        // A daemon that does not say: the limits as asked, or none.
        assert_eq!(
            render_limits(&[], &sandbox::Limits::default()),
            "  limits: none\n"
        );
        // A reason with control characters (a path the host named) is escaped.
        let odd = [LimitState {
            flag: "--cpu 0.5".into(),
            enforced_by: None,
            not_enforced: Some("no cgroup (\u{1b}[2J)".into()),
            default: false,
        }];
        assert!(!render_limits(&odd, &sandbox::Limits::default()).contains('\u{1b}'));
    }

    #[test]
    fn a_reload_is_one_line() {
        let report = ReloadReport {
            status: "reloaded".into(),
            from_version: 1,
            to_version: 2,
            load_us: 310,
            compile_ms: Some(380),
        };
        assert_eq!(
            render_reload("demo", &report, Duration::from_millis(412)),
            "reloaded demo: v1 -> v2 in 412 ms (build 380 ms, swap 0.31 ms)"
        );
    }
}
