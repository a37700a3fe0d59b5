//! The daemon's side of `host reload ID --canary`: the manager's canary reload
//! (`sandbox::manager::canary`), logged, answered with its `CanaryReport` once the window
//! passed or the daemon rolled the sandbox back.

use std::time::Duration;

use proto::control::{CanaryWire, Response};
use sandbox::manager::CanaryOptions;
use sandbox::{Manager, ReloadSource};

/// Runs a canary reload of `source` into sandbox `id` for `canary.watch_for_ms` (capped).
pub(crate) async fn reload(
    manager: &Manager,
    id: &str,
    source: ReloadSource,
    canary: CanaryWire,
) -> Response {
    let options = CanaryOptions::new(Duration::from_millis(canary.watch_for_ms));
    let result = manager.reload_canary(id, source, options).await;
    if let Ok(report) = &result {
        tracing::info!(
            sandbox = %id,
            outcome = %report.outcome,
            serving = report.serving,
            watched_ms = report.watched_ms,
            reason = report.reason.as_deref().unwrap_or(""),
            "canary reload"
        );
    }
    super::ok(result)
}
