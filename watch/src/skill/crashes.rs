//! `CrashHistorySkill`: how one sandbox has died and come back, with times: runner crashes
//! (the cause and signal the host observed: exit status, init's `waitpid`, the cgroup's OOM
//! counter), worker restarts, runner restarts, canary rollbacks. From the manager's own
//! records: its counters (restarts, worker restarts, OOM kills) and the daemon's event ring
//! (as far back as the ring reaches: its size is `host serve --event-ring`).

use async_trait::async_trait;
use operator::{AlertRule, CallbackSpec, Severity, Skill, ToolError};
use sandbox::events::{Event, EventKind};
use serde_json::{Value, json};

use super::common::{Target, failed, prompt};
use sandbox::Manager;

/// The most history entries one answer shows (the newest).
pub const MAX_ENTRIES: usize = 50;

/// Watches one sandbox's crashes and restarts.
#[derive(Debug, Clone)]
pub struct CrashHistorySkill {
    target: Target,
    rule: AlertRule,
}

impl CrashHistorySkill {
    /// A skill watching `id`; any runner crash or worker restart in the last hour is a
    /// warning.
    pub fn new(manager: Manager, id: impl Into<String>) -> CrashHistorySkill {
        CrashHistorySkill {
            target: Target::new(manager, id),
            rule: AlertRule {
                metric: "crashes_last_hour".into(),
                above: 0.0,
                notification_type: "crashes".into(),
                summary: "the sandbox crashed or restarted workers recently".into(),
                severity: Severity::Warning,
            },
        }
    }

    /// The newest `last` history entries of the sandbox, oldest first.
    fn history(&self, last: usize) -> Vec<Value> {
        let id = self.target.id.clone();
        self.target
            .manager
            .events()
            .subscribe(last, move |e| {
                e.sandbox.as_deref() == Some(id.as_str()) && entry(e).is_some()
            })
            .backlog
            .iter()
            .filter_map(|e| entry(e))
            .collect()
    }

    /// The snapshot: counters, the crashes within the last hour, the newest entries.
    async fn read(&self) -> Value {
        let t = &self.target;
        let info = match t.manager.info(&t.id).await {
            Ok(info) => info,
            Err(e) => return t.failed_snapshot(e),
        };
        let usage = t.manager.usage(&t.id).await.ok();
        let history = self.history(MAX_ENTRIES);
        let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        let within_hour = |e: &&Value| {
            e["time"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339(t).ok())
                .is_some_and(|t| t >= hour_ago)
        };
        let crashes_last_hour = history
            .iter()
            .filter(within_hour)
            .filter(|e| e["event"] == "sandbox.crashed" || e["event"] == "sandbox.worker_restarted")
            .count();
        let newest: Vec<Value> = history.iter().rev().take(10).rev().cloned().collect();
        json!({
            "sandbox_id": t.id,
            "status": info.status,
            "crash_reason": info.crash_reason,
            "restart_count": info.restart_count,
            "worker_restarts": usage.as_ref().map(|u| u.worker_restarts),
            "oom_kills": usage.as_ref().and_then(|u| u.oom_kills),
            "crashes_last_hour": crashes_last_hour,
            "history": newest,
            "source": "the manager's counters and the daemon's event ring (what the host observed: exit status, init's waitpid, the cgroup's OOM counter)",
        })
    }
}

/// A history entry of `event`, when it is one: its time, name and what was observed.
fn entry(event: &Event) -> Option<Value> {
    let mut v = match &event.kind {
        EventKind::SandboxCrashed { cause, how, final_ } => json!({
            "cause": cause, "how": how, "final": final_, "signal": signal_of(how),
        }),
        EventKind::WorkerRestarted { index, reason } => json!({
            "worker": index, "reason": reason, "signal": signal_of(reason),
        }),
        EventKind::SandboxRestarted { after, .. } => json!({"after": after}),
        EventKind::CanaryRolledBack {
            from, to, reason, ..
        } => json!({"from": from, "to": to, "reason": reason}),
        _ => return None,
    };
    v["time"] = json!(event.time);
    v["event"] = json!(event.kind.name());
    Some(v)
}

/// The signal named in a description the host wrote (`signal SIGKILL`, `app process signal
/// SIGSEGV (core dumped)`), if any.
fn signal_of(how: &str) -> Option<String> {
    let (_, rest) = how.split_once("signal ")?;
    let name: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric())
        .collect();
    name.starts_with("SIG").then_some(name)
}

#[async_trait]
impl Skill for CrashHistorySkill {
    fn title(&self) -> &str {
        "Sandbox Crash History"
    }

    fn description(&self) -> &str {
        "Sandbox: crashes (signals, OOM kills), worker and runner restarts, with times"
    }

    fn system_prompt(&self) -> String {
        prompt("the crash history", &self.target.id, &self.rule)
    }

    async fn snapshot(&self) -> Value {
        self.read().await
    }

    fn callbacks(&self) -> Vec<CallbackSpec> {
        vec![CallbackSpec {
            name: "sandbox_crash_history".into(),
            doc: "Runner crashes (cause, signal, how), worker restarts, runner restarts and canary rollbacks of the sandbox, with times, oldest first.".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "last": {"type": "integer", "minimum": 1, "maximum": MAX_ENTRIES, "description": "how many entries (default 20)"},
                },
            }),
        }]
    }

    async fn call(&self, name: &str, args: Value) -> Result<Value, ToolError> {
        if name != "sandbox_crash_history" {
            return Err(ToolError::UnknownCallback(name.to_string()));
        }
        self.target
            .manager
            .info(&self.target.id)
            .await
            .map_err(failed)?;
        let last = args
            .get("last")
            .and_then(Value::as_u64)
            .unwrap_or(20)
            .clamp(1, MAX_ENTRIES as u64) as usize;
        Ok(json!({"sandbox_id": self.target.id, "history": self.history(last)}))
    }

    fn alert_rule(&self) -> Option<AlertRule> {
        Some(self.rule.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_read_from_the_hosts_descriptions() {
        assert_eq!(signal_of("signal SIGKILL").as_deref(), Some("SIGKILL"));
        assert_eq!(
            signal_of("out of memory: limit 1 MiB, app process signal SIGKILL").as_deref(),
            Some("SIGKILL")
        );
        assert_eq!(
            signal_of("signal SIGSEGV (core dumped)").as_deref(),
            Some("SIGSEGV")
        );
        assert_eq!(signal_of("exit 3"), None);
        assert_eq!(signal_of("signal garbage"), None);
    }
}
