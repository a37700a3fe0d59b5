//! `PressureSkill`: pressure stall information (PSI) of one sandbox's cgroup, memory, cpu and
//! io, where the cgroup has it (cgroup v2 `*.pressure`). On cgroup v1 the kernel keeps no
//! per-cgroup pressure: the snapshot says "not available" for each and shows the machine's
//! own `/proc/pressure` figures apart, labelled as the whole machine's.

use async_trait::async_trait;
use operator::{AlertRule, CallbackSpec, Severity, Skill, ToolError};
use serde_json::{Value, json};

use super::common::{Target, failed, prompt};
use sandbox::Manager;
use sandbox::manager::{CgroupStats, PressureReading};

/// Memory pressure (`some avg10`, percent) above which the sandbox is stalling on memory.
pub const MEMORY_PRESSURE_THRESHOLD: f64 = 10.0;

/// Watches one sandbox's pressure stall information.
#[derive(Debug, Clone)]
pub struct PressureSkill {
    target: Target,
    rule: AlertRule,
}

impl PressureSkill {
    /// A skill watching `id`'s PSI; memory `some avg10` above 10 % is a warning.
    pub fn new(manager: Manager, id: impl Into<String>) -> PressureSkill {
        PressureSkill {
            target: Target::new(manager, id),
            rule: AlertRule {
                metric: "memory_some_avg10".into(),
                above: MEMORY_PRESSURE_THRESHOLD,
                notification_type: "memory_pressure".into(),
                summary: "memory pressure stalls the sandbox".into(),
                severity: Severity::Warning,
            },
        }
    }

    /// The snapshot: the cgroup's pressure, or why it has none, and the machine's apart.
    async fn read(&self) -> Value {
        let stats = match self.target.manager.cgroup_stats(&self.target.id).await {
            Ok(stats) => stats,
            Err(e) => return self.target.failed_snapshot(e),
        };
        let mut out = pressure_json(&self.target.id, stats.as_ref());
        out["host_wide"] = host_pressure().await;
        out
    }
}

/// The sandbox's pressure figures as the skill shows them; `memory_some_avg10` (the rule's
/// metric) only when the kernel gave one.
pub(crate) fn pressure_json(id: &str, stats: Option<&CgroupStats>) -> Value {
    let Some(stats) = stats else {
        return json!({
            "sandbox_id": id,
            "cgroup": null,
            "cpu": {"not_available": "the sandbox has no cgroup"},
            "memory": {"not_available": "the sandbox has no cgroup"},
            "io": {"not_available": "the sandbox has no cgroup"},
            "source": "none: without a cgroup the kernel keeps no pressure for the sandbox",
        });
    };
    let reading = |r: &PressureReading| match r {
        PressureReading::Available(p) => json!(p),
        PressureReading::NotAvailable(why) => json!({"not_available": why}),
    };
    let mut out = json!({
        "sandbox_id": id,
        "cgroup": stats.version,
        "cpu": reading(&stats.cpu_pressure),
        "memory": reading(&stats.memory_pressure),
        "io": reading(&stats.io_pressure),
        "units": "avg10/avg60/avg300: percent of wall time some (full: all) tasks stalled; total_usec: microseconds",
        "source": "the sandbox's cgroup (cpu.pressure, memory.pressure, io.pressure)",
    });
    if let PressureReading::Available(p) = &stats.memory_pressure {
        out["memory_some_avg10"] = json!(p.some.avg10);
    }
    out
}

/// `/proc/pressure/{cpu,memory,io}`: the whole machine's, not the sandbox's.
async fn host_pressure() -> Value {
    tokio::task::spawn_blocking(|| {
        let mut out = serde_json::Map::new();
        for name in ["cpu", "memory", "io"] {
            let path = format!("/proc/pressure/{name}");
            let value = match std::fs::read_to_string(&path) {
                Ok(text) => match isolation::cgroups::parse_pressure(&text) {
                    Some(p) => json!(p),
                    None => json!({"not_available": format!("{path} does not parse")}),
                },
                Err(e) => json!({"not_available": format!("{path}: {e}")}),
            };
            out.insert(name.into(), value);
        }
        out.insert(
            "note".into(),
            json!("the whole machine's pressure (/proc/pressure), not the sandbox's"),
        );
        Value::Object(out)
    })
    .await
    .unwrap_or(Value::Null)
}

#[async_trait]
impl Skill for PressureSkill {
    fn title(&self) -> &str {
        "Sandbox Pressure"
    }

    fn description(&self) -> &str {
        "Sandbox: memory, cpu and io pressure stall information from its cgroup"
    }

    fn system_prompt(&self) -> String {
        prompt(
            "the pressure stall information (PSI)",
            &self.target.id,
            &self.rule,
        )
    }

    async fn snapshot(&self) -> Value {
        self.read().await
    }

    fn callbacks(&self) -> Vec<CallbackSpec> {
        vec![
            CallbackSpec::no_args(
                "sandbox_pressure",
                "The sandbox's cgroup pressure now: cpu, memory, io (some/full avg10, avg60, avg300, total), or why not available.",
            ),
            CallbackSpec::no_args(
                "host_pressure",
                "The whole machine's pressure from /proc/pressure (not the sandbox's): context for the sandbox's figures.",
            ),
        ]
    }

    async fn call(&self, name: &str, _args: Value) -> Result<Value, ToolError> {
        match name {
            "sandbox_pressure" => {
                let stats = self
                    .target
                    .manager
                    .cgroup_stats(&self.target.id)
                    .await
                    .map_err(failed)?;
                Ok(pressure_json(&self.target.id, stats.as_ref()))
            }
            "host_pressure" => Ok(host_pressure().await),
            other => Err(ToolError::UnknownCallback(other.to_string())),
        }
    }

    fn alert_rule(&self) -> Option<AlertRule> {
        Some(self.rule.clone())
    }
}
