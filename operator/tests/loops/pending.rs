//! A skill's own pending step ([`operator::Skill::pending_tool`]): after the snapshot and
//! before the verdict a forced turn names it instead of `set_state`, and once the skill has
//! what it waited for the workflow goes on to `set_state`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::scripted::snap;
use operator::mock::tool_call;
use operator::{CallbackSpec, MockProvider, Operator, OperatorConfig, Skill, ToolError};
use serde_json::{Value, json};

/// A skill that waits for its `note` callback before a verdict.
#[derive(Debug, Default)]
struct Noting {
    noted: AtomicBool,
}

#[async_trait::async_trait]
impl Skill for Noting {
    fn title(&self) -> &str {
        "Noting"
    }

    fn description(&self) -> &str {
        "waits for a note"
    }

    fn system_prompt(&self) -> String {
        "take_snapshot, note, set_state, done".into()
    }

    async fn snapshot(&self) -> Value {
        json!({"x": 1})
    }

    fn callbacks(&self) -> Vec<CallbackSpec> {
        vec![CallbackSpec::no_args("note", "Note it.")]
    }

    async fn call(&self, name: &str, _args: Value) -> Result<Value, ToolError> {
        match name {
            "note" => {
                self.noted.store(true, Ordering::SeqCst);
                Ok(json!({"noted": true}))
            }
            other => Err(ToolError::UnknownCallback(other.into())),
        }
    }

    fn pending_tool(&self) -> Option<&'static str> {
        (!self.noted.load(Ordering::SeqCst)).then_some("note")
    }
}

#[tokio::test]
async fn a_forced_turn_names_the_skills_pending_tool_before_set_state() {
    let turns = vec![
        vec![snap()],
        vec![],
        vec![tool_call("note", json!({}))],
        vec![],
        vec![tool_call(
            "set_state",
            json!({"state": "healthy", "reason": "x"}),
        )],
    ];
    let provider = Arc::new(MockProvider::scripted(turns));
    let out = Operator::new(Arc::new(Noting::default()), provider.clone())
        .with_config(OperatorConfig {
            max_iterations: 4,
            ..OperatorConfig::default()
        })
        .run(json!({}))
        .await;
    let choices: Vec<Option<String>> = provider
        .requests()
        .iter()
        .map(|r| r.tool_choice.forced().map(str::to_string))
        .collect();
    assert_eq!(
        choices,
        [
            None,
            None,
            Some("note".into()),
            Some("set_state".into()),
            Some("set_state".into())
        ]
    );
    assert_eq!(out.forced, ["note", "set_state"]);
}
