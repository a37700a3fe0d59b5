//! What OpenAI's Chat Completions and Ollama's `/api/chat` share: a system message first,
//! one `tool` message per result, `function` tools, and tool calls in replies whose id may
//! be missing and whose arguments may be a JSON string.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::parse_arguments_string;
use crate::text_tool_calls::synth_call_id;
use crate::types::{ChatRequest, Message, ToolCall, ToolResult, ToolSpec};

/// The messages of `request`, with each tool call written by `call` and each result by
/// `result`.
pub(crate) fn messages(
    request: &ChatRequest,
    call: impl Fn(&ToolCall) -> Value,
    result: impl Fn(&ToolResult) -> Value,
) -> Vec<Value> {
    let mut messages = Vec::new();
    if !request.system.trim().is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    for message in &request.messages {
        match message {
            Message::User { text } => messages.push(json!({"role": "user", "content": text})),
            Message::Assistant { text, tool_calls } => {
                // Never null: llama-cpp-python rejects `"content": null`.
                let mut wire =
                    json!({"role": "assistant", "content": text.clone().unwrap_or_default()});
                if !tool_calls.is_empty() {
                    wire["tool_calls"] = tool_calls.iter().map(&call).collect();
                }
                messages.push(wire);
            }
            Message::Tool { results } => messages.extend(results.iter().map(&result)),
        }
    }
    messages
}

/// `{"type": "function", "function": {name, description, parameters}}` for each tool, the
/// parameters written by `schema`.
pub(crate) fn function_tools(tools: &[ToolSpec], schema: impl Fn(&Value) -> Value) -> Value {
    tools
        .iter()
        .map(|tool| {
            json!({
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": schema(&tool.parameters),
                },
            })
        })
        .collect()
}

/// A tool call in a reply.
#[derive(Debug, Deserialize)]
pub(crate) struct WireToolCall {
    #[serde(default)]
    id: Option<String>,
    function: WireFunction,
}

#[derive(Debug, Deserialize)]
struct WireFunction {
    name: String,
    #[serde(default)]
    arguments: Value,
}

/// The calls of a reply; calls without an id get `call_<first>`, `call_<first + 1>`, ...
pub(crate) fn tool_calls(calls: Option<Vec<WireToolCall>>, first: usize) -> Vec<ToolCall> {
    calls
        .unwrap_or_default()
        .into_iter()
        .enumerate()
        .map(|(i, call)| ToolCall {
            id: call
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| synth_call_id(first + i)),
            name: call.function.name,
            arguments: match call.function.arguments {
                Value::String(raw) => parse_arguments_string(&raw),
                Value::Null => json!({}),
                other => other,
            },
            thought_signature: None,
        })
        .collect()
}
