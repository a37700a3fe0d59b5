//! `MultiSandboxSkill`: one snapshot over several sandboxes.

use async_trait::async_trait;
use operator::{AlertRule, CallbackSpec, Skill, ToolError};
use serde_json::{Value, json};

use super::{PROCESS_THRESHOLD, SandboxSkill, process_rule};
use sandbox::Manager;

/// Watches several sandboxes at once; the rule applies to the busiest one.
#[derive(Debug, Clone)]
pub struct MultiSandboxSkill {
    manager: Manager,
    sandbox_ids: Vec<String>,
    rule: AlertRule,
}

impl MultiSandboxSkill {
    /// A skill watching `ids`; more than 10 processes in any of them is a spike.
    pub fn new(manager: Manager, ids: Vec<String>) -> MultiSandboxSkill {
        MultiSandboxSkill {
            manager,
            sandbox_ids: ids,
            rule: process_rule(PROCESS_THRESHOLD),
        }
    }
}

#[async_trait]
impl Skill for MultiSandboxSkill {
    fn title(&self) -> &str {
        "Sandboxes"
    }

    fn description(&self) -> &str {
        "Several sandboxes: status and resource usage"
    }

    fn system_prompt(&self) -> String {
        format!(
            "You monitor {n} native sandboxes ({ids}). Use snapshot data from take_snapshot() as \
             the source of truth.\n{rules}\nName the sandbox in the notification summary. \
             Callbacks take {{\"sandbox_id\": ...}}.",
            n = self.sandbox_ids.len(),
            ids = self.sandbox_ids.join(", "),
            rules = self.rule.prompt_instructions()
        )
    }

    async fn snapshot(&self) -> Value {
        let mut all = Vec::with_capacity(self.sandbox_ids.len());
        for id in &self.sandbox_ids {
            all.push(SandboxSkill::snapshot_of(&self.manager, id).await);
        }
        json!({"sandboxes": all})
    }

    fn callbacks(&self) -> Vec<CallbackSpec> {
        let schema = json!({
            "type": "object",
            "properties": {"sandbox_id": {"type": "string", "enum": self.sandbox_ids}},
            "required": ["sandbox_id"],
        });
        SandboxSkill::callback_specs()
            .into_iter()
            .map(|c| CallbackSpec {
                parameters: schema.clone(),
                ..c
            })
            .collect()
    }

    async fn call(&self, name: &str, args: Value) -> Result<Value, ToolError> {
        let id = args["sandbox_id"]
            .as_str()
            .ok_or("sandbox_id is required")?;
        if !self.sandbox_ids.iter().any(|s| s == id) {
            return Err(format!("sandbox {id} is not watched by this skill").into());
        }
        SandboxSkill::callback(&self.manager, id, &self.rule, name).await
    }

    fn alert_rule(&self) -> Option<AlertRule> {
        Some(self.rule.clone())
    }
}
