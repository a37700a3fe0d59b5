//! What the mock policies share: a tool call to reply with, and the newest snapshot in the
//! conversation.

use llm::{Message, ToolCall};
use serde_json::Value;

use crate::tool_names::TAKE_SNAPSHOT;

/// A tool call with an empty id; [`crate::MockProvider`] fills in `mock_<n>` when it replies.
pub fn tool_call(name: &str, arguments: Value) -> ToolCall {
    ToolCall {
        id: String::new(),
        name: name.to_string(),
        arguments,
        thought_signature: None,
    }
}

/// The `data` of the newest successful `take_snapshot` result in `messages`.
pub(crate) fn latest_snapshot_data(messages: &[Message]) -> Option<Value> {
    messages.iter().rev().find_map(|m| match m {
        Message::Tool { results } => results.iter().rev().find_map(|r| {
            if r.name != TAKE_SNAPSHOT || r.is_error {
                return None;
            }
            let mut v: Value = serde_json::from_str(&r.content).ok()?;
            v.get_mut("data").map(Value::take)
        }),
        _ => None,
    })
}
