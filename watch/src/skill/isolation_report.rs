//! `IsolationSkill`: one sandbox's isolation report as the host checked it against the
//! kernel (`info`'s `isolation`: the level and each mechanism, applied or not and why), its
//! limit states and warnings. A mechanism that is required and not applied is a weaker
//! sandbox than asked for.

use async_trait::async_trait;
use operator::{AlertRule, CallbackSpec, Severity, Skill, ToolError};
use serde_json::{Value, json};

use super::common::{Target, failed, prompt};
use sandbox::{Manager, SandboxInfo};

/// Watches one sandbox's isolation report.
#[derive(Debug, Clone)]
pub struct IsolationSkill {
    target: Target,
    rule: AlertRule,
}

impl IsolationSkill {
    /// A skill watching `id`; any required mechanism not applied is a warning.
    pub fn new(manager: Manager, id: impl Into<String>) -> IsolationSkill {
        IsolationSkill {
            target: Target::new(manager, id),
            rule: AlertRule {
                metric: "missing_mechanisms".into(),
                above: 0.0,
                notification_type: "isolation_gap".into(),
                summary: "a required isolation mechanism is not applied".into(),
                severity: Severity::Warning,
            },
        }
    }
}

/// The report's entries, whether `info.isolation` holds them as a list or under `entries`.
fn entries(isolation: &Value) -> Vec<Value> {
    let mechanisms = &isolation["mechanisms"];
    mechanisms
        .as_array()
        .or_else(|| mechanisms["entries"].as_array())
        .cloned()
        .unwrap_or_default()
}

/// The skill's view of `info`: the level, every mechanism, the required ones missing.
pub(crate) fn isolation_json(info: &SandboxInfo) -> Value {
    let all = entries(&info.isolation);
    let missing: Vec<&Value> = all
        .iter()
        .filter(|e| e["applied"] == false && e["required"] != false)
        .collect();
    let not_enforced: Vec<&str> = info
        .limit_states
        .iter()
        .filter(|s| s.enforced_by.is_none())
        .map(|s| s.flag.as_str())
        .collect();
    json!({
        "sandbox_id": info.id,
        "level": info.isolation["level"],
        "mechanisms": all,
        "applied": all.iter().filter(|e| e["applied"] == true).count(),
        "missing_mechanisms": missing.len(),
        "missing": missing,
        "limits_not_enforced": not_enforced,
        "warnings": info.warnings,
        "source": "the host's isolation report, each mechanism checked against what the kernel shows (/proc, cgroupfs)",
    })
}

#[async_trait]
impl Skill for IsolationSkill {
    fn title(&self) -> &str {
        "Sandbox Isolation"
    }

    fn description(&self) -> &str {
        "Sandbox: its isolation report, checked against the kernel"
    }

    fn system_prompt(&self) -> String {
        prompt("the isolation report", &self.target.id, &self.rule)
    }

    async fn snapshot(&self) -> Value {
        match self.target.manager.info(&self.target.id).await {
            Ok(info) => isolation_json(&info),
            Err(e) => self.target.failed_snapshot(e),
        }
    }

    fn callbacks(&self) -> Vec<CallbackSpec> {
        vec![CallbackSpec::no_args(
            "sandbox_isolation_report",
            "The isolation level and every mechanism (namespaces, own root, uid, seccomp, Landlock, cgroup, rlimits) with whether it is applied and how, the limits nothing enforces, and the warnings.",
        )]
    }

    async fn call(&self, name: &str, _args: Value) -> Result<Value, ToolError> {
        match name {
            "sandbox_isolation_report" => {
                let info = self
                    .target
                    .manager
                    .info(&self.target.id)
                    .await
                    .map_err(failed)?;
                Ok(isolation_json(&info))
            }
            other => Err(ToolError::UnknownCallback(other.to_string())),
        }
    }

    fn alert_rule(&self) -> Option<AlertRule> {
        Some(self.rule.clone())
    }
}
