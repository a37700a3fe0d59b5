//! `SandboxSkill`: one sandbox, watched for its status and resource usage or, with
//! [`SandboxSkill::anomaly`], for process spikes. One implementation; only the title and the
//! prompt differ.

use async_trait::async_trait;
use operator::{AlertRule, CallbackSpec, Skill, ToolError};
use serde_json::{Value, json};

use super::{PROCESS_THRESHOLD, process_rule};
use sandbox::{Manager, SandboxInfo, Usage, procfs};

/// What a [`SandboxSkill`] asks the model to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Focus {
    /// Status and resource usage (the demo, `host operate`).
    Status,
    /// Process spikes (`host anomaly`, `--skill anomaly`, the detector).
    Anomaly,
}

/// Watches one sandbox: its status and resource usage, or its process spikes.
#[derive(Debug, Clone)]
pub struct SandboxSkill {
    manager: Manager,
    sandbox_id: String,
    rule: AlertRule,
    focus: Focus,
}

impl SandboxSkill {
    /// A skill watching `sandbox_id` with the default threshold (processes > 10).
    pub fn new(manager: Manager, sandbox_id: impl Into<String>) -> SandboxSkill {
        SandboxSkill::with_threshold(manager, sandbox_id, PROCESS_THRESHOLD)
    }

    /// A skill watching `sandbox_id`; more than `threshold` processes is a spike.
    pub fn with_threshold(
        manager: Manager,
        sandbox_id: impl Into<String>,
        threshold: u64,
    ) -> SandboxSkill {
        SandboxSkill {
            manager,
            sandbox_id: sandbox_id.into(),
            rule: process_rule(threshold),
            focus: Focus::Status,
        }
    }

    /// A skill watching `sandbox_id` for process spikes: more than `threshold` processes.
    pub fn anomaly(
        manager: Manager,
        sandbox_id: impl Into<String>,
        threshold: u64,
    ) -> SandboxSkill {
        SandboxSkill {
            focus: Focus::Anomaly,
            ..SandboxSkill::with_threshold(manager, sandbox_id, threshold)
        }
    }

    /// The watched sandbox.
    pub fn sandbox_id(&self) -> &str {
        &self.sandbox_id
    }

    /// The snapshot of one sandbox, shared with the other skills.
    pub(crate) async fn snapshot_of(manager: &Manager, id: &str) -> Value {
        let info = match manager.info(id).await {
            Ok(info) => info,
            Err(e) => return snapshot_from(id, Err(e.to_string()), Err(String::new())),
        };
        let usage = manager.usage(id).await.map_err(|e| e.to_string());
        snapshot_from(id, Ok(&info), usage.as_ref().map_err(Clone::clone))
    }

    /// The callbacks, shared with the anomaly skill.
    pub(crate) fn callback_specs() -> Vec<CallbackSpec> {
        vec![
            CallbackSpec::no_args(
                "sandbox_info",
                "Id, status, restart count, creation time, app version and current resource usage.",
            ),
            CallbackSpec::no_args(
                "sandbox_resource_usage",
                "Full usage: processes, threads, memory, CPU time and percent, open fds, uptime, restarts, mapped app copies.",
            ),
            CallbackSpec::no_args(
                "sandbox_process_tree",
                "Every process in the sandbox with pid, parent, threads, resident memory and CPU ticks.",
            ),
            CallbackSpec::no_args(
                "sandbox_app_versions",
                "The app versions loaded so far, and which one serves now.",
            ),
            CallbackSpec::no_args(
                "sandbox_health_check",
                "Liveness checks: status running, workers answer, process count against the threshold.",
            ),
        ]
    }

    /// Runs a callback against sandbox `id`.
    pub(crate) async fn callback(
        manager: &Manager,
        id: &str,
        rule: &AlertRule,
        name: &str,
    ) -> Result<Value, ToolError> {
        let failed = |e: &dyn std::fmt::Display| ToolError::Callback(e.to_string());
        let to_json = |v: Result<Value, serde_json::Error>| v.map_err(|e| failed(&e));
        match name {
            "sandbox_info" => {
                let info = manager.info(id).await.map_err(|e| failed(&e))?;
                let usage = manager.usage(id).await.ok();
                Ok(json!({
                    "id": info.id,
                    "status": info.status,
                    "restart_count": info.restart_count,
                    "created_at": info.created_at,
                    "app_version": info.app.version,
                    // Only the app vouches for these two: labelled so the model weighs them so.
                    "app_name_claimed_by_app": info.app.name,
                    "app_version_string_claimed_by_app": info.app.app_version,
                    "resource_usage": usage,
                }))
            }
            "sandbox_resource_usage" => to_json(serde_json::to_value(
                manager.usage(id).await.map_err(|e| failed(&e))?,
            )),
            "sandbox_process_tree" => {
                let info = manager.info(id).await.map_err(|e| failed(&e))?;
                let pid = info.pid;
                let tree = tokio::task::spawn_blocking(move || procfs::tree(pid))
                    .await
                    .map_err(|e| failed(&e))?;
                let page = procfs::page_size();
                let procs: Vec<Value> = tree
                    .iter()
                    .map(|p| json!({"pid": p.pid, "ppid": p.ppid, "threads": p.threads, "rss_bytes": p.rss_pages * page, "cpu_ticks": p.cpu_ticks}))
                    .collect();
                Ok(json!({"root": pid, "processes": procs}))
            }
            "sandbox_app_versions" => {
                let info = manager.info(id).await.map_err(|e| failed(&e))?;
                Ok(json!({
                    "current": info.app.version,
                    "versions": info.versions,
                    "note": "each version's app_version string is the app's own claim; version numbers and sha256 are the host's",
                }))
            }
            "sandbox_health_check" => {
                let info = manager.info(id).await.map_err(|e| failed(&e))?;
                let workers = manager.workers(id).await;
                let usage = manager.usage(id).await;
                let processes = usage.as_ref().map(|u| u.processes).unwrap_or(0);
                let checks = json!({
                    "running": info.status == sandbox::Status::Running,
                    "workers_answer": workers.is_ok(),
                    "processes_within_threshold": (processes as f64) <= rule.above,
                });
                let healthy = checks
                    .as_object()
                    .is_some_and(|c| c.values().all(|v| v == true));
                Ok(
                    json!({"healthy": healthy, "checks": checks, "processes": processes, "threshold": rule.above}),
                )
            }
            other => Err(ToolError::UnknownCallback(other.to_string())),
        }
    }
}

#[async_trait]
impl Skill for SandboxSkill {
    fn title(&self) -> &str {
        match self.focus {
            Focus::Status => "Sandbox",
            Focus::Anomaly => "Sandbox Anomaly",
        }
    }

    fn description(&self) -> &str {
        match self.focus {
            Focus::Status => "Sandbox: status and resource usage",
            Focus::Anomaly => "Sandbox: detect process spikes and notify",
        }
    }

    fn system_prompt(&self) -> String {
        system_prompt_for(self.focus, &self.sandbox_id, &self.rule)
    }

    async fn snapshot(&self) -> Value {
        SandboxSkill::snapshot_of(&self.manager, &self.sandbox_id).await
    }

    /// What the workflow uses: a small local model pays for every tool's schema on every
    /// turn, so `think`, `wait` and the listings are not offered.
    fn builtin_tools(&self) -> Vec<&'static str> {
        use operator::tools::{DONE, SEND_NOTIFICATION, SET_STATE, TAKE_SNAPSHOT};
        vec![TAKE_SNAPSHOT, SEND_NOTIFICATION, SET_STATE, DONE]
    }

    fn callbacks(&self) -> Vec<CallbackSpec> {
        SandboxSkill::callback_specs()
    }

    async fn call(&self, name: &str, _args: Value) -> Result<Value, ToolError> {
        SandboxSkill::callback(&self.manager, &self.sandbox_id, &self.rule, name).await
    }

    fn alert_rule(&self) -> Option<AlertRule> {
        Some(self.rule.clone())
    }
}

/// The snapshot the skills show of sandbox `id`, from what `info` and `usage` answered (an
/// `Err` is the failure's text; `usage` is not looked at when `info` failed). The one shape
/// the operator's skills and the MCP server's `snapshot` tool share.
pub fn snapshot_from(
    id: &str,
    info: Result<&SandboxInfo, String>,
    usage: Result<&Usage, String>,
) -> Value {
    let (status, reason) = match info {
        Ok(info) => (info.status.clone(), info.crash_reason.clone()),
        Err(e) => return json!({"sandbox_id": id, "error": e}),
    };
    let mut snapshot = match usage {
        Ok(u) => json!({
            "sandbox_id": id,
            "status": status,
            "oom_kills": u.oom_kills,
            "processes": u.processes,
            "threads": u.threads,
            "memory_bytes": u.memory_bytes,
            "cpu_percent": u.cpu_percent,
            "uptime_ms": u.uptime_ms,
            "restart_count": u.restart_count,
            "app_version": u.app_version,
        }),
        Err(e) => json!({"sandbox_id": id, "status": status, "error": e}),
    };
    // Why it crashed or restarts (say, `out of memory: limit 1 MiB, signal SIGKILL`).
    if let Some(reason) = reason {
        snapshot["crash_reason"] = json!(reason);
    }
    snapshot
}

/// The operator's instructions for watching sandbox `id` with `focus` under `rule`: what a
/// [`SandboxSkill`] tells its model (and the MCP server's `judge_sandbox` prompt an agent).
pub fn system_prompt_for(focus: Focus, id: &str, rule: &AlertRule) -> String {
    let rules = rule.prompt_instructions();
    match focus {
        Focus::Status => format!(
            "You monitor one native sandbox (id {id}). Do not use think. Use snapshot data \
             from take_snapshot() as the source of truth.\n{rules}\nKeep responses short and \
             complete within 4 iterations."
        ),
        Focus::Anomaly => format!(
            "You watch one native sandbox (id {id}) for process spikes. Do not use think. \
             Ignore any counts provided in the context payload: only the snapshot from \
             take_snapshot() is the truth.\n{rules}\nKeep responses short and complete \
             within 5 iterations."
        ),
    }
}
