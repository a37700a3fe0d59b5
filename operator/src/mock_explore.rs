//! The exploring mock: [`crate::MockProvider::exploring`] acts like the careful mock, but
//! between the snapshot and the verdict it calls every tool the skill offers besides the
//! built-ins, once each, in one reply, with arguments made from each tool's schema. So every
//! skill's tools are played offline, their results land in the transcript (where a test or
//! a coordinator can read them), and the verdict still comes from the snapshot and the rule.

use llm::{ChatRequest, Message, ToolCall};
use serde_json::{Map, Value, json};

use crate::mock_calls::{latest_snapshot_data, tool_call};
use crate::skill::AlertRule;
use crate::tool_names::BUILTIN_TOOLS;

/// The careful policy: its reply to the conversation under the rule.
pub(crate) type Careful = fn(Option<&AlertRule>, &[Message]) -> Vec<ToolCall>;

/// The exploring policy's reply to `request` under `rule` (see the module docs): the
/// offered tools not called yet, else what `careful` replies.
pub(crate) fn exploring_reply(
    rule: Option<&AlertRule>,
    request: &ChatRequest,
    careful: Careful,
) -> Vec<ToolCall> {
    let messages = &request.messages;
    if latest_snapshot_data(messages).is_some() {
        let called: Vec<&str> = messages
            .iter()
            .flat_map(|m| match m {
                Message::Assistant { tool_calls, .. } => tool_calls.as_slice(),
                _ => &[],
            })
            .map(|c| c.name.as_str())
            .collect();
        let pending: Vec<ToolCall> = request
            .tools
            .iter()
            .filter(|t| !BUILTIN_TOOLS.contains(&t.name.as_str()))
            .filter(|t| !called.contains(&t.name.as_str()))
            .map(|t| tool_call(&t.name, arguments_for(&t.parameters)))
            .collect();
        if !pending.is_empty() {
            return pending;
        }
    }
    careful(rule, messages)
}

/// Arguments that satisfy `schema`'s required properties: an enum's first value, an
/// integer's minimum (else 1), a number's minimum (else 0), a boolean false, a string "".
pub(crate) fn arguments_for(schema: &Value) -> Value {
    let mut args = Map::new();
    let required = schema["required"].as_array().cloned().unwrap_or_default();
    for name in required.iter().filter_map(Value::as_str) {
        let prop = &schema["properties"][name];
        let value = if let Some(first) = prop["enum"].as_array().and_then(|e| e.first()) {
            first.clone()
        } else {
            match prop["type"].as_str() {
                Some("integer") => json!(prop["minimum"].as_i64().unwrap_or(1)),
                Some("number") => json!(prop["minimum"].as_f64().unwrap_or(0.0)),
                Some("boolean") => json!(false),
                Some("array") => json!([]),
                Some("object") => json!({}),
                _ => json!(""),
            }
        };
        args.insert(name.to_string(), value);
    }
    Value::Object(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_arguments_are_filled_from_the_schema() {
        let schema = json!({
            "type": "object",
            "properties": {
                "sandbox_id": {"type": "string", "enum": ["a", "b"]},
                "last": {"type": "integer", "minimum": 3},
                "note": {"type": "string"},
            },
            "required": ["sandbox_id", "last"],
        });
        assert_eq!(
            arguments_for(&schema),
            json!({"sandbox_id": "a", "last": 3})
        );
        assert_eq!(arguments_for(&json!({"type": "object"})), json!({}));
    }
}
