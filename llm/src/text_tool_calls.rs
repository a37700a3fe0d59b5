//! Tool calls that a model wrote as JSON text instead of making a native call.
//!
//! Small local models (and models behind servers without tool support) often answer with
//! a JSON object in a fenced ```` ```json ```` block or bare in the text. Recognised shapes:
//!
//! - `{"name": "take_snapshot", "arguments": {...}}` (also `args`, `parameters`, `input`;
//!   arguments may be a JSON string),
//! - `{"tool": "x", "args": {...}}` (also `tool_name`, and `function` as a string),
//! - `{"function": {"name": "x", "arguments": "..."}}` (OpenAI's shape),
//! - `{"intent": "take_snapshot", ...}`: BAML style, every other field is an argument,
//! - `{"tool_calls": [...]}` or a JSON array of any of these.
//!
//! When tools were offered, a call that names none of them is taken only when its shape
//! leaves no doubt (a name with an `arguments`/`args`/`parameters`/`input` member, or
//! OpenAI's `function` object), so that ordinary JSON in an answer is not mistaken for a
//! call while a model that invents a tool (`{"name": "health", "arguments": {}}`) is told,
//! as for a native call, that no such tool exists.

use serde_json::{Map, Value};

use crate::types::{ChatResponse, Message, StopReason, ToolCall, ToolSpec};

/// A synthesised call id: `call_<n>`.
pub fn synth_call_id(n: usize) -> String {
    format!("call_{n}")
}

/// The number the next synthesised call id should carry so that ids stay unique across the
/// conversation: one more than the number of tool calls already in `messages`.
pub fn next_call_number(messages: &[Message]) -> usize {
    messages
        .iter()
        .map(|m| match m {
            Message::Assistant { tool_calls, .. } => tool_calls.len(),
            _ => 0,
        })
        .sum::<usize>()
        + 1
}

/// A tool call found in text, before it gets an id.
#[derive(Debug, Clone, PartialEq)]
pub struct TextToolCall {
    /// Tool name.
    pub name: String,
    /// Arguments (an object, or `{}` when none were given).
    pub arguments: Value,
}

/// Finds the tool calls written as JSON in `text`, and returns them with the text that is
/// left once they (and their code fences) are removed. When `known` is not empty, a call
/// naming none of its tools is taken only in an unmistakable shape (see the module doc).
pub fn parse_text_tool_calls(text: &str, known: &[ToolSpec]) -> (Vec<TextToolCall>, String) {
    let accept = |name: &str, unmistakable: bool| {
        unmistakable || known.is_empty() || known.iter().any(|t| t.name == name)
    };
    let mut calls = Vec::new();
    let mut removed: Vec<(usize, usize)> = Vec::new();

    // Fenced blocks first: ```json ... ``` or ``` ... ```.
    for (start, end, inner) in fenced_blocks(text) {
        if let Ok(value) = serde_json::from_str::<Value>(inner.trim()) {
            let found = calls_in_value(&value, &accept);
            if !found.is_empty() {
                calls.extend(found);
                removed.push((start, end));
            }
        }
    }

    // Then bare JSON values outside the fences.
    if calls.is_empty() {
        let mut i = 0;
        while i < text.len() {
            let Some(offset) = text[i..].find(['{', '[']) else {
                break;
            };
            let start = i + offset;
            let mut stream =
                serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
            match stream.next() {
                Some(Ok(value)) => {
                    let end = start + stream.byte_offset();
                    let found = calls_in_value(&value, &accept);
                    if !found.is_empty() {
                        calls.extend(found);
                        removed.push((start, end));
                    }
                    i = end;
                }
                _ => i = start + 1,
            }
        }
    }

    if calls.is_empty() {
        return (calls, text.to_string());
    }
    let mut rest = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in removed {
        rest.push_str(&text[at..start]);
        at = end;
    }
    rest.push_str(&text[at..]);
    (calls, tidy_rest(&rest))
}

/// When `response` has no native tool calls, takes the calls written as JSON text, gives
/// them ids `call_<first_number>`, `call_<first_number + 1>`, ..., removes them from the
/// text and marks the stop reason as [`StopReason::ToolUse`] if it was `EndTurn`.
/// Returns how many calls were found.
pub fn apply_text_tool_calls(
    response: &mut ChatResponse,
    tools: &[ToolSpec],
    first_number: usize,
) -> usize {
    if !response.tool_calls.is_empty() {
        return 0;
    }
    let Some(text) = response.text.as_deref() else {
        return 0;
    };
    let (calls, rest) = parse_text_tool_calls(text, tools);
    if calls.is_empty() {
        return 0;
    }
    let found = calls.len();
    response.tool_calls = calls
        .into_iter()
        .enumerate()
        .map(|(i, call)| ToolCall {
            id: synth_call_id(first_number + i),
            name: call.name,
            arguments: call.arguments,
            thought_signature: None,
        })
        .collect();
    response.text = (!rest.is_empty()).then_some(rest);
    if response.stop_reason == StopReason::EndTurn {
        response.stop_reason = StopReason::ToolUse;
    }
    tracing::debug!(count = found, "parsed tool calls written as text");
    found
}

/// `(start, end, inner)` of every fenced code block (``` with an optional language tag).
fn fenced_blocks(text: &str) -> Vec<(usize, usize, &str)> {
    let mut blocks = Vec::new();
    let mut i = 0;
    while let Some(offset) = text[i..].find("```") {
        let start = i + offset;
        let after_open = start + 3;
        // The language tag runs to the end of the opening line.
        let body_start = match text[after_open..].find('\n') {
            Some(nl) => {
                let tag = text[after_open..after_open + nl].trim();
                if tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
                {
                    after_open + nl + 1
                } else {
                    after_open
                }
            }
            None => after_open,
        };
        let Some(close) = text[body_start..].find("```") else {
            break;
        };
        let inner_end = body_start + close;
        let end = inner_end + 3;
        blocks.push((start, end, &text[body_start..inner_end]));
        i = end;
    }
    blocks
}

/// The calls described by one JSON value (an object, an array, or a `tool_calls` wrapper).
/// `accept` is asked with the call's name and whether its shape is unmistakable.
fn calls_in_value(value: &Value, accept: &dyn Fn(&str, bool) -> bool) -> Vec<TextToolCall> {
    match value {
        Value::Array(items) => items
            .iter()
            .flat_map(|item| calls_in_value(item, accept))
            .collect(),
        Value::Object(map) => {
            if let Some(inner) = map.get("tool_calls").filter(|v| v.is_array()) {
                return calls_in_value(inner, accept);
            }
            call_from_object(map)
                .filter(|(call, unmistakable)| accept(&call.name, *unmistakable))
                .map(|(call, _)| call)
                .into_iter()
                .collect()
        }
        _ => Vec::new(),
    }
}

/// One call from one object, if it has one of the recognised shapes, and whether the shape
/// is unmistakable: OpenAI's `function` object, or a name with an arguments member.
fn call_from_object(map: &Map<String, Value>) -> Option<(TextToolCall, bool)> {
    const ARG_KEYS: [&str; 4] = ["arguments", "args", "parameters", "input"];
    let string = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_string);
    let arguments_of = |map: &Map<String, Value>| {
        ARG_KEYS
            .iter()
            .find_map(|k| map.get(*k))
            .map(normalise_arguments)
            .unwrap_or_else(|| Value::Object(Map::new()))
    };

    // OpenAI shape: {"function": {"name": .., "arguments": ..}}.
    if let Some(Value::Object(function)) = map.get("function") {
        let name = function.get("name").and_then(Value::as_str)?;
        let call = TextToolCall {
            name: name.to_string(),
            arguments: arguments_of(function),
        };
        return valid_name(name).then_some((call, true));
    }
    if let Some(name) = string("name")
        .or_else(|| string("tool"))
        .or_else(|| string("tool_name"))
        .or_else(|| string("function"))
    {
        // `{"name": ..}` alone is too common in ordinary JSON unless arguments come with it
        // or nothing else does.
        let only_name = map.len() == 1;
        let has_args = ARG_KEYS.iter().any(|k| map.contains_key(*k));
        if !has_args && !only_name && map.contains_key("name") {
            return None;
        }
        return valid_name(&name).then(|| {
            let call = TextToolCall {
                name,
                arguments: arguments_of(map),
            };
            (call, has_args)
        });
    }
    if let Some(name) = string("intent") {
        let arguments: Map<String, Value> = map
            .iter()
            .filter(|(k, _)| k.as_str() != "intent")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let valid = valid_name(&name);
        let call = TextToolCall {
            name,
            arguments: Value::Object(arguments),
        };
        return valid.then_some((call, false));
    }
    None
}

/// Arguments as an object: a JSON string is parsed, null becomes `{}`.
fn normalise_arguments(value: &Value) -> Value {
    match value {
        Value::Null => Value::Object(Map::new()),
        Value::String(s) if s.trim().is_empty() => Value::Object(Map::new()),
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| value.clone()),
        other => other.clone(),
    }
}

/// A plausible tool name: non-empty, no blanks, not absurdly long.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Trims what is left of the text and drops empty `<tool_call></tool_call>` wrappers.
fn tidy_rest(rest: &str) -> String {
    let mut out = rest.to_string();
    for (open, close) in [
        ("<tool_call>", "</tool_call>"),
        ("<tool_calls>", "</tool_calls>"),
    ] {
        while let Some(start) = out.find(open) {
            let after = start + open.len();
            match out[after..].find(close) {
                Some(offset) if out[after..after + offset].trim().is_empty() => {
                    out.replace_range(start..after + offset + close.len(), "");
                }
                _ => break,
            }
        }
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::TokenUsage;
    use serde_json::json;

    fn tools(names: &[&str]) -> Vec<ToolSpec> {
        names
            .iter()
            .map(|n| ToolSpec {
                name: n.to_string(),
                description: String::new(),
                parameters: json!({"type": "object", "properties": {}}),
            })
            .collect()
    }

    fn names(calls: &[TextToolCall]) -> Vec<&str> {
        calls.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn fenced_json_block() {
        let text =
            "I will look first.\n```json\n{\"name\": \"take_snapshot\", \"arguments\": {}}\n```\n";
        let (calls, rest) = parse_text_tool_calls(text, &tools(&["take_snapshot"]));
        assert_eq!(names(&calls), ["take_snapshot"]);
        assert_eq!(calls[0].arguments, json!({}));
        assert_eq!(rest, "I will look first.");
    }

    #[test]
    fn bare_object_and_shapes() {
        let known = tools(&["set_state", "take_snapshot", "done"]);
        let (calls, rest) = parse_text_tool_calls(
            r#"{"tool": "set_state", "args": {"state": "healthy", "reason": "ok"}}"#,
            &known,
        );
        assert_eq!(names(&calls), ["set_state"]);
        assert_eq!(calls[0].arguments["state"], "healthy");
        assert_eq!(rest, "");

        let (calls, _) = parse_text_tool_calls(
            r#"{"intent": "set_state", "state": "degraded", "reason": "cpu"}"#,
            &known,
        );
        assert_eq!(calls[0].name, "set_state");
        assert_eq!(
            calls[0].arguments,
            json!({"state": "degraded", "reason": "cpu"})
        );

        let (calls, _) = parse_text_tool_calls(
            r#"{"function": {"name": "set_state", "arguments": "{\"state\":\"failed\"}"}}"#,
            &known,
        );
        assert_eq!(calls[0].arguments, json!({"state": "failed"}));

        let (calls, _) = parse_text_tool_calls(
            r#"Calling: [{"name":"take_snapshot"},{"name":"done","arguments":{"summary":"fine"}}]"#,
            &known,
        );
        assert_eq!(names(&calls), ["take_snapshot", "done"]);

        let (calls, rest) = parse_text_tool_calls(
            "<tool_call>\n{\"name\": \"take_snapshot\", \"arguments\": {}}\n</tool_call>",
            &known,
        );
        assert_eq!(names(&calls), ["take_snapshot"]);
        assert_eq!(rest, "");
    }

    #[test]
    fn ordinary_json_and_unknown_tools_are_left_alone() {
        let known = tools(&["set_state"]);
        let text = r#"The snapshot was {"name": "worker", "cpu": 3.5}."#;
        let (calls, rest) = parse_text_tool_calls(text, &known);
        assert!(calls.is_empty());
        assert_eq!(rest, text);
        let (calls, _) = parse_text_tool_calls(r#"{"tool": "rm_rf"} and {"intent": "x"}"#, &known);
        assert!(calls.is_empty());
        let (calls, _) = parse_text_tool_calls("no json here { at all", &known);
        assert!(calls.is_empty());
    }

    #[test]
    fn an_unmistakable_call_to_an_unknown_tool_is_taken() {
        // Taken so that the operator can answer it as it answers a native call to a tool
        // that does not exist, instead of nudging a model that does not see its mistake.
        let known = tools(&["set_state"]);
        let text = r#"{"name": "health", "arguments": {"sandbox_id": "demo-1"}}"#;
        let (calls, rest) = parse_text_tool_calls(text, &known);
        assert_eq!(names(&calls), ["health"]);
        assert_eq!(calls[0].arguments, json!({"sandbox_id": "demo-1"}));
        assert_eq!(rest, "");
        let (calls, _) = parse_text_tool_calls(
            r#"```json
{"function": {"name": "rm_rf", "arguments": "{}"}}
```"#,
            &known,
        );
        assert_eq!(names(&calls), ["rm_rf"]);
    }

    #[test]
    fn apply_only_without_native_calls() {
        let mut response = ChatResponse {
            text: Some("```json\n{\"name\":\"take_snapshot\",\"arguments\":{}}\n```".into()),
            tool_calls: vec![],
            stop_reason: StopReason::EndTurn,
            usage: TokenUsage::default(),
        };
        assert_eq!(
            apply_text_tool_calls(&mut response, &tools(&["take_snapshot"]), 3),
            1
        );
        assert_eq!(response.tool_calls[0].id, "call_3");
        assert_eq!(response.text, None);
        assert_eq!(response.stop_reason, StopReason::ToolUse);
        // Native calls present: nothing changes.
        response.text = Some(r#"{"name":"take_snapshot","arguments":{}}"#.into());
        assert_eq!(
            apply_text_tool_calls(&mut response, &tools(&["take_snapshot"]), 9),
            0
        );
        assert_eq!(response.tool_calls.len(), 1);
    }

    #[test]
    fn call_numbers_continue_the_conversation() {
        let messages = vec![
            Message::User { text: "hi".into() },
            Message::Assistant {
                text: None,
                tool_calls: vec![ToolCall {
                    id: "call_1".into(),
                    name: "take_snapshot".into(),
                    arguments: json!({}),
                    thought_signature: None,
                }],
            },
        ];
        assert_eq!(next_call_number(&messages), 2);
        assert_eq!(next_call_number(&[]), 1);
    }
}
