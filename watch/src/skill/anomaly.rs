//! `SandboxAnomalySkill`: the sandbox skill with a prompt tuned to process spikes.

use async_trait::async_trait;
use operator::{AlertRule, CallbackSpec, Skill};
use serde_json::Value;

use super::{PROCESS_THRESHOLD, SandboxSkill, process_rule};
use sandbox::Manager;

/// Watches one sandbox for process spikes and notifies.
#[derive(Debug, Clone)]
pub struct SandboxAnomalySkill {
    manager: Manager,
    sandbox_id: String,
    rule: AlertRule,
}

impl SandboxAnomalySkill {
    /// A skill watching `sandbox_id`; more than `threshold` processes is a spike.
    pub fn new(
        manager: Manager,
        sandbox_id: impl Into<String>,
        threshold: u64,
    ) -> SandboxAnomalySkill {
        SandboxAnomalySkill {
            manager,
            sandbox_id: sandbox_id.into(),
            rule: process_rule(threshold),
        }
    }

    /// A skill with the default threshold (processes > 10).
    pub fn with_default_threshold(
        manager: Manager,
        sandbox_id: impl Into<String>,
    ) -> SandboxAnomalySkill {
        SandboxAnomalySkill::new(manager, sandbox_id, PROCESS_THRESHOLD)
    }
}

#[async_trait]
impl Skill for SandboxAnomalySkill {
    fn title(&self) -> &str {
        "Sandbox Anomaly"
    }

    fn description(&self) -> &str {
        "Sandbox: detect process spikes and notify"
    }

    fn system_prompt(&self) -> String {
        format!(
            "You watch one native sandbox (id {id}) for process spikes. Do not use think. Ignore \
             any counts provided in the context payload: only the snapshot from take_snapshot() \
             is the truth.\n{rules}\nKeep responses short and complete within 5 iterations.",
            id = self.sandbox_id,
            rules = self.rule.prompt_instructions()
        )
    }

    async fn snapshot(&self) -> Value {
        SandboxSkill::snapshot_of(&self.manager, &self.sandbox_id).await
    }

    fn callbacks(&self) -> Vec<CallbackSpec> {
        SandboxSkill::callback_specs()
    }

    async fn call(&self, name: &str, _args: Value) -> Result<Value, String> {
        SandboxSkill::callback(&self.manager, &self.sandbox_id, &self.rule, name).await
    }

    fn alert_rule(&self) -> Option<AlertRule> {
        Some(self.rule.clone())
    }
}
