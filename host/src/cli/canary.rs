//! `host reload ID --canary [--watch-for 30s]`: one request answered once the canary's
//! window passed or it was rolled back; exit 0 when the new version was kept, 1 when the
//! daemon rolled it back (the reason on stdout, the app's words escaped).

use super::*;
use sandbox::manager::CanaryReport;

/// Sends the canary reload and renders its [`CanaryReport`].
pub(super) fn run(
    args: &ClientArgs,
    request: Request,
    fd: Vec<std::os::fd::OwnedFd>,
    id: String,
) -> ExitCode {
    use std::os::fd::AsFd;
    let socket = socket_path::resolve(args.socket.as_deref());
    let started = Instant::now();
    let fds: Vec<_> = fd.iter().map(|f| f.as_fd()).collect();
    let answer = if args.cluster.is_set() {
        super::fleet_hook::request(args, &request)
    } else {
        Client::connect(&socket).and_then(|mut c| c.request_with_fds(&request, &fds))
    };
    let value = match answer {
        Ok(value) => value,
        Err(e) => return failure(args.json, &e),
    };
    let report: CanaryReport = match decode(value.clone()) {
        Ok(r) => r,
        Err(e) => return failure(args.json, &e),
    };
    if args.json {
        crate::output::line(&crate::output::json(&value));
    } else {
        crate::output::line(&render(&id, &report, started.elapsed()));
    }
    match report.outcome.as_str() {
        "kept" | "no_change" => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// The reload's line, then the canary's.
pub(crate) fn render(id: &str, r: &CanaryReport, took: Duration) -> String {
    let reload = client::render_reload(id, &r.reload, took);
    let secs = |ms: u64| format!("{:.1} s", ms as f64 / 1000.0);
    let canary = match r.outcome.as_str() {
        "no_change" => return reload,
        "kept" => format!(
            "canary {id}: v{} kept after watching {} (peak {} processes, {}; before {}, {})",
            r.serving,
            secs(r.watched_ms),
            r.peak.processes,
            proto::spec::format_bytes(r.peak.memory_bytes),
            r.baseline.processes,
            proto::spec::format_bytes(r.baseline.memory_bytes),
        ),
        "rolled_back" => format!(
            "canary {id}: rolled back to v{} after {}: {} ({})",
            r.serving,
            secs(r.watched_ms),
            untrusted(r.reason.as_deref().unwrap_or("flagged")),
            untrusted(r.rollback.as_deref().unwrap_or("swapped back"))
        ),
        other => format!(
            "canary {id}: {} after {}: {}; v{} serves",
            untrusted(other),
            secs(r.watched_ms),
            untrusted(r.reason.as_deref().unwrap_or("")),
            r.serving
        ),
    };
    format!("{reload}\n{canary}")
}
