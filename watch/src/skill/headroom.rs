//! `HeadroomSkill`: each of one sandbox's limits against what it uses now, from the host's
//! measurements (cgroup and `/proc`) and what enforces the limit (`info`'s limit states):
//! memory (and its peak), tasks against `--max-processes` (`pids.max` counts threads),
//! disk, CPU.

use async_trait::async_trait;
use operator::{AlertRule, CallbackSpec, Severity, Skill, ToolError};
use serde_json::{Value, json};

use super::common::{Target, failed, percent, prompt};
use sandbox::{Manager, SandboxInfo, Usage};

/// Use of a limit (percent) above which the sandbox is close to it.
pub const HEADROOM_THRESHOLD: f64 = 90.0;

/// Watches one sandbox's limits against its use.
#[derive(Debug, Clone)]
pub struct HeadroomSkill {
    target: Target,
    rule: AlertRule,
}

impl HeadroomSkill {
    /// A skill watching `id`; any limit more than 90 % used is a warning.
    pub fn new(manager: Manager, id: impl Into<String>) -> HeadroomSkill {
        HeadroomSkill {
            target: Target::new(manager, id),
            rule: AlertRule {
                metric: "max_used_percent".into(),
                above: HEADROOM_THRESHOLD,
                notification_type: "near_limit".into(),
                summary: "the sandbox is close to one of its limits".into(),
                severity: Severity::Warning,
            },
        }
    }

    /// The snapshot: one entry per limit that applies.
    async fn read(&self) -> Value {
        let t = &self.target;
        let info = match t.manager.info(&t.id).await {
            Ok(info) => info,
            Err(e) => return t.failed_snapshot(e),
        };
        match t.manager.usage(&t.id).await {
            Ok(usage) => headroom_json(&info, &usage),
            Err(e) => t.failed_snapshot(e),
        }
    }
}

/// Limits against use, and the largest share used (`max_used_percent`).
pub(crate) fn headroom_json(info: &SandboxInfo, u: &Usage) -> Value {
    let l = &info.limits;
    let enforced = |flag: &str| {
        info.limit_states
            .iter()
            .find(|s| s.flag.starts_with(flag))
            .map(|s| match (&s.enforced_by, &s.not_enforced) {
                (Some(by), _) => json!(by),
                (None, Some(why)) => json!(format!("not enforced: {why}")),
                (None, None) => Value::Null,
            })
            .unwrap_or(Value::Null)
    };
    let mut limits = Vec::new();
    let mut add = |name: &str, flag: &str, used: f64, limit: Option<f64>, unit: &str| {
        if let Some(limit) = limit {
            limits.push(json!({
                "limit": name,
                "used": used,
                "max": limit,
                "unit": unit,
                "used_percent": percent(used, Some(limit)),
                "headroom": (limit - used).max(0.0),
                "enforced_by": enforced(flag),
            }));
        }
    };
    let as_f = |v: Option<u64>| v.map(|v| v as f64);
    add(
        "memory",
        "--max-memory",
        u.memory_bytes as f64,
        as_f(l.max_memory),
        "bytes",
    );
    if let Some(peak) = u.memory_peak_bytes {
        add(
            "memory_peak",
            "--max-memory",
            peak as f64,
            as_f(l.max_memory),
            "bytes",
        );
    }
    add(
        "tasks",
        "--max-processes",
        u.threads as f64,
        as_f(l.max_processes),
        "processes and threads",
    );
    if let Some(disk) = u.disk_bytes {
        add("disk", "--max-disk", disk as f64, as_f(l.max_disk), "bytes");
    }
    add("cpu", "--cpu", u.cpu_percent / 100.0, l.cpu, "cores");
    let max_used = limits
        .iter()
        .filter_map(|e| e["used_percent"].as_f64())
        .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
    json!({
        "sandbox_id": info.id,
        "limits": limits,
        "max_used_percent": max_used,
        "oom_kills": u.oom_kills,
        "unlimited": limits.is_empty(),
        "source": format!("the host's measurement ({}) against the sandbox's limits", u.source),
    })
}

#[async_trait]
impl Skill for HeadroomSkill {
    fn title(&self) -> &str {
        "Sandbox Headroom"
    }

    fn description(&self) -> &str {
        "Sandbox: its limits against what it uses now, and what enforces each"
    }

    fn system_prompt(&self) -> String {
        prompt("the limits against the usage", &self.target.id, &self.rule)
    }

    async fn snapshot(&self) -> Value {
        self.read().await
    }

    fn callbacks(&self) -> Vec<CallbackSpec> {
        vec![CallbackSpec::no_args(
            "sandbox_limits_headroom",
            "Every limit of the sandbox (memory, tasks, disk, cpu) with what it uses now, the share used, the headroom and what enforces it.",
        )]
    }

    async fn call(&self, name: &str, _args: Value) -> Result<Value, ToolError> {
        match name {
            "sandbox_limits_headroom" => {
                let v = self.read().await;
                match v.get("error") {
                    Some(e) => Err(failed(e)),
                    None => Ok(v),
                }
            }
            other => Err(ToolError::UnknownCallback(other.to_string())),
        }
    }

    fn alert_rule(&self) -> Option<AlertRule> {
        Some(self.rule.clone())
    }
}
