//! The read tools: they look, never change anything, and are always listed.

use proto::control::Request;
use proto::info::{SandboxInfo, Usage};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::bounds;
use crate::server::{SandboxServer, failed};

/// Events of the daemon's ring a tool looks at, at most.
pub const EVENTS_WINDOW: usize = 1000;
/// Events an `events` answer holds by default.
const DEFAULT_EVENTS: usize = 100;

/// One sandbox.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct SandboxArgs {
    /// The sandbox id ([A-Za-z0-9_-], 1 to 64 characters).
    pub sandbox_id: String,
}

/// Which events.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct EventsArgs {
    /// Only events about this sandbox.
    #[serde(default)]
    pub sandbox_id: Option<String>,
    /// Only events after this sequence number (the `seq` of the last one you saw).
    #[serde(default)]
    pub since: Option<u64>,
    /// At most this many, the newest (default 100, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
}

/// Which anomalies.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct AnomaliesArgs {
    /// Only this sandbox's.
    #[serde(default)]
    pub sandbox_id: Option<String>,
}

#[tool_router(router = read_router, vis = "pub(crate)")]
impl SandboxServer {
    /// Every sandbox: id, status, runner pid, serving version.
    #[tool(
        description = "List the daemon's sandboxes: id, status (running, restarting, crashed), runner pid, the app version serving now.",
        annotations(read_only_hint = true)
    )]
    async fn list_sandboxes(&self) -> CallToolResult {
        match self.value(Request::List).await {
            Ok(list) => bounds::answer(json!({ "sandboxes": list })),
            Err(failure) => failure,
        }
    }

    /// One sandbox's description.
    #[tool(
        description = "Describe one sandbox: status, crash reason, pids, the app (name and app_version are the app's own claim), its versions, limits, isolation and start timings.",
        annotations(read_only_hint = true)
    )]
    async fn sandbox_info(&self, Parameters(a): Parameters<SandboxArgs>) -> CallToolResult {
        if let Err(e) = bounds::sandbox_id(&a.sandbox_id) {
            return e.into();
        }
        self.ask(Request::Info { id: a.sandbox_id }).await
    }

    /// Usage as the kernel reports it.
    #[tool(
        description = "Resource usage measured by the host from the sandbox's cgroup and /proc (not the app's word): processes, threads, memory, CPU, open fds, disk, restarts.",
        annotations(read_only_hint = true)
    )]
    async fn sandbox_usage(&self, Parameters(a): Parameters<SandboxArgs>) -> CallToolResult {
        if let Err(e) = bounds::sandbox_id(&a.sandbox_id) {
            return e.into();
        }
        self.ask(Request::Usage { id: a.sandbox_id }).await
    }

    /// The supervised workers.
    #[tool(
        description = "The sandbox's supervised worker processes: index, pid, restarts, version.",
        annotations(read_only_hint = true)
    )]
    async fn sandbox_workers(&self, Parameters(a): Parameters<SandboxArgs>) -> CallToolResult {
        if let Err(e) = bounds::sandbox_id(&a.sandbox_id) {
            return e.into();
        }
        self.ask(Request::Workers {
            id: a.sandbox_id,
            add: None,
        })
        .await
    }

    /// Recent events.
    #[tool(
        description = "Recent events of the daemon (sandbox lifecycle, operator runs, detector), oldest first; `since` a seq to get only newer ones, `limit` (default 100, at most 1000).",
        annotations(read_only_hint = true)
    )]
    async fn recent_events(&self, Parameters(a): Parameters<EventsArgs>) -> CallToolResult {
        if let Some(id) = &a.sandbox_id
            && let Err(e) = bounds::sandbox_id(id)
        {
            return e.into();
        }
        let limit = a
            .limit
            .map_or(DEFAULT_EVENTS, |l| l as usize)
            .clamp(1, EVENTS_WINDOW);
        let window = if a.since.is_some() {
            EVENTS_WINDOW
        } else {
            limit
        };
        let events = match self.backend.events(a.sandbox_id, window).await {
            Ok(events) => events,
            Err(e) => return failed(&e),
        };
        let since = a.since.unwrap_or(0);
        let mut newer: Vec<Value> = events
            .into_iter()
            .filter(|e| e["seq"].as_u64().is_some_and(|s| s > since))
            .collect();
        let dropped = newer.len().saturating_sub(limit);
        newer.drain(..dropped);
        bounds::answer(json!({ "events": newer, "omitted_older": dropped }))
    }

    /// The detector's anomalies.
    #[tool(
        description = "The detector's current anomalies: for each live sandbox and metric, the newest detector.anomaly event in the daemon's ring (metric, value, baseline mean, z-score or rule). Empty when nothing is out of line or the detector is off (host serve --watch).",
        annotations(read_only_hint = true)
    )]
    async fn detector_anomalies(&self, Parameters(a): Parameters<AnomaliesArgs>) -> CallToolResult {
        if let Some(id) = &a.sandbox_id
            && let Err(e) = bounds::sandbox_id(id)
        {
            return e.into();
        }
        let live: Vec<String> = match self.value(Request::List).await {
            Ok(list) => list
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s["id"].as_str().map(str::to_string))
                .collect(),
            Err(failure) => return failure,
        };
        let events = match self.backend.events(a.sandbox_id, EVENTS_WINDOW).await {
            Ok(events) => events,
            Err(e) => return failed(&e),
        };
        bounds::answer(json!({ "anomalies": current_anomalies(&events, &live) }))
    }

    /// What the operator's skills see.
    #[tool(
        description = "The snapshot the built-in operator's skills take of a sandbox (take_snapshot): status, processes, threads, memory, CPU percent, uptime, restarts, version, crash reason. The source of truth for a verdict.",
        annotations(read_only_hint = true)
    )]
    async fn snapshot(&self, Parameters(a): Parameters<SandboxArgs>) -> CallToolResult {
        if let Err(e) = bounds::sandbox_id(&a.sandbox_id) {
            return e.into();
        }
        bounds::answer(self.snapshot_of(&a.sandbox_id).await)
    }

    /// The isolation report, checked against the kernel.
    #[tool(
        description = "The sandbox's isolation: each mechanism (cgroup, namespaces, root, ids, seccomp, Landlock, ...) as applied or not with the reason, checked against what the kernel shows of the runner; and the daemon's warnings.",
        annotations(read_only_hint = true)
    )]
    async fn isolation_report(&self, Parameters(a): Parameters<SandboxArgs>) -> CallToolResult {
        if let Err(e) = bounds::sandbox_id(&a.sandbox_id) {
            return e.into();
        }
        match self.value(Request::Info { id: a.sandbox_id }).await {
            Ok(info) => bounds::answer(json!({
                "sandbox_id": info["id"],
                "isolation": info["isolation"],
                "warnings": info.get("warnings").cloned().unwrap_or(json!([])),
            })),
            Err(failure) => failure,
        }
    }
}

impl SandboxServer {
    /// The skills' snapshot of `id` from the daemon's `info` and `usage` answers
    /// (`watch::skill::snapshot_from`, the shape the operator sees).
    pub(crate) async fn snapshot_of(&self, id: &str) -> Value {
        let info = self
            .backend
            .request(Request::Info { id: id.to_string() })
            .await
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value::<SandboxInfo>(v).map_err(|e| e.to_string()));
        let usage = match &info {
            Ok(_) => self.usage(id).await,
            Err(_) => Err(String::new()),
        };
        ::watch::skill::snapshot_from(
            id,
            info.as_ref().map_err(Clone::clone),
            usage.as_ref().map_err(Clone::clone),
        )
    }

    /// The sandbox's usage as the daemon measured it.
    pub(crate) async fn usage(&self, id: &str) -> Result<Usage, String> {
        self.backend
            .request(Request::Usage { id: id.to_string() })
            .await
            .map_err(|e| e.to_string())
            .and_then(|v| serde_json::from_value::<Usage>(v).map_err(|e| e.to_string()))
    }
}

/// The newest `detector.anomaly` event per live sandbox and metric, oldest first.
pub fn current_anomalies(events: &[Value], live: &[String]) -> Vec<Value> {
    let mut newest: Vec<&Value> = Vec::new();
    for event in events.iter().filter(|e| e["event"] == "detector.anomaly") {
        let Some(sandbox) = event["sandbox"].as_str() else {
            continue;
        };
        if !live.iter().any(|l| l == sandbox) {
            continue;
        }
        newest.retain(|seen| {
            !(seen["sandbox"] == event["sandbox"] && seen["metric"] == event["metric"])
        });
        newest.push(event);
    }
    newest.into_iter().cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_newest_anomaly_of_live_sandboxes() {
        let events = vec![
            json!({"seq": 1, "event": "detector.anomaly", "sandbox": "a", "metric": "processes", "value": 30.0}),
            json!({"seq": 2, "event": "detector.anomaly", "sandbox": "gone", "metric": "processes", "value": 1.0}),
            json!({"seq": 3, "event": "sandbox.created", "sandbox": "a"}),
            json!({"seq": 4, "event": "detector.anomaly", "sandbox": "a", "metric": "processes", "value": 40.0}),
            json!({"seq": 5, "event": "detector.anomaly", "sandbox": "a", "metric": "memory_bytes", "value": 9.0}),
        ];
        let got = current_anomalies(&events, &["a".to_string()]);
        let seqs: Vec<u64> = got.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
        assert_eq!(seqs, [4, 5]);
    }
}
