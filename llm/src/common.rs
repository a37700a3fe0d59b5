//! Small helpers shared by the provider modules.

use serde_json::{Map, Value, json};

use crate::types::{ChatRequest, StopReason};

/// Output token cap used when a request asks for 0.
pub(crate) const DEFAULT_MAX_TOKENS: u32 = 1024;

/// The request's model, or the provider's when the request leaves it empty.
pub(crate) fn model_for<'a>(request: &'a ChatRequest, default: &'a str) -> &'a str {
    let model = request.model.trim();
    if model.is_empty() { default } else { model }
}

/// The request's token cap, or [`DEFAULT_MAX_TOKENS`] for 0.
pub(crate) fn max_tokens(request: &ChatRequest) -> u32 {
    if request.max_tokens == 0 {
        DEFAULT_MAX_TOKENS
    } else {
        request.max_tokens
    }
}

/// Whether a tool's schema declares no arguments (null, not an object, or an object whose
/// `properties` is missing or empty).
pub(crate) fn takes_no_arguments(schema: &Value) -> bool {
    match schema {
        Value::Object(map) => match map.get("properties") {
            Some(Value::Object(props)) => props.is_empty(),
            Some(_) => true,
            None => true,
        },
        _ => true,
    }
}

/// A schema that is always a JSON object with `"type": "object"` (what Anthropic, OpenAI and
/// Ollama want even for tools without arguments).
pub(crate) fn object_schema(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut map = map.clone();
            map.entry("type").or_insert_with(|| json!("object"));
            if map.get("type") == Some(&json!("object")) {
                map.entry("properties").or_insert_with(|| json!({}));
            }
            Value::Object(map)
        }
        _ => json!({"type": "object", "properties": {}}),
    }
}

/// For vendors whose tool schema keeps only `type`, `items`, `description`, `enum`,
/// `required` and `properties` (Ollama): every other keyword with a scalar value
/// (`minimum`, `maximum`, `minLength`, `pattern`, `default`, …) is dropped from the schema
/// and written into the description instead, e.g. `"wait time (minimum 0, maximum 5000)"`,
/// so the model still sees the bound. At every level, never touching property names.
pub(crate) fn bounds_into_descriptions(schema: &Value) -> Value {
    const KEPT: [&str; 6] = [
        "type",
        "items",
        "description",
        "enum",
        "required",
        "properties",
    ];
    // Lower bounds before upper ones; anything else after, by name.
    const ORDER: [&str; 8] = [
        "minimum",
        "exclusiveMinimum",
        "maximum",
        "exclusiveMaximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
    ];
    let Value::Object(map) = schema else {
        return schema.clone();
    };
    let mut out = Map::new();
    let mut bounds: Vec<(usize, String)> = Vec::new();
    for (key, value) in map {
        match key.as_str() {
            "properties" => {
                let props = match value {
                    Value::Object(props) => Value::Object(
                        props
                            .iter()
                            .map(|(name, s)| (name.clone(), bounds_into_descriptions(s)))
                            .collect(),
                    ),
                    other => other.clone(),
                };
                out.insert(key.clone(), props);
            }
            "items" => {
                out.insert(key.clone(), bounds_into_descriptions(value));
            }
            k if KEPT.contains(&k) => {
                out.insert(key.clone(), value.clone());
            }
            k => {
                let rank = ORDER.iter().position(|o| *o == k).unwrap_or(ORDER.len());
                match value {
                    Value::Number(_) => bounds.push((rank, format!("{k} {value}"))),
                    Value::String(s) if !k.starts_with('$') => {
                        bounds.push((rank, format!("{k} {s}")))
                    }
                    // Structural keywords (`additionalProperties`, `oneOf`, `$schema`, …)
                    // have no short wording: dropped, as the vendor would.
                    _ => {}
                }
            }
        }
    }
    if !bounds.is_empty() {
        bounds.sort();
        let texts: Vec<String> = bounds.into_iter().map(|(_, text)| text).collect();
        let note = format!("({})", texts.join(", "));
        let description = match out.get("description").and_then(Value::as_str) {
            Some(d) if !d.trim().is_empty() => format!("{} {note}", d.trim_end()),
            _ => note,
        };
        out.insert("description".into(), Value::String(description));
    }
    Value::Object(out)
}

/// Arguments as an object (a non-object becomes `{}`), for vendors that require one.
pub(crate) fn arguments_object(arguments: &Value) -> Value {
    match arguments {
        Value::Object(_) => arguments.clone(),
        Value::String(s) => match serde_json::from_str::<Value>(s) {
            Ok(v @ Value::Object(_)) => v,
            _ => Value::Object(Map::new()),
        },
        _ => Value::Object(Map::new()),
    }
}

/// Arguments received as a JSON string: parsed, `{}` when empty, kept as a string when
/// not valid JSON (so the operator can report the bad arguments back to the model).
pub(crate) fn parse_arguments_string(text: &str) -> Value {
    if text.trim().is_empty() {
        return Value::Object(Map::new());
    }
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
}

/// How a vendor names its stop reasons (see [`stop_reason`]).
pub(crate) struct StopWords {
    /// The output token cap was hit.
    pub max_tokens: &'static str,
    /// The model finished its turn.
    pub end_turn: &'static str,
    /// The model wants tool results (some vendors have no such word).
    pub tool_use: &'static [&'static str],
}

/// The stop reason of a reply: the cap word gives `MaxTokens`; otherwise any tool call
/// gives `ToolUse` (some servers say "stop" after tool calls); otherwise the end word or
/// none gives `EndTurn`, a tool word `ToolUse`, anything else `Other`.
pub(crate) fn stop_reason(reason: Option<&str>, has_calls: bool, words: &StopWords) -> StopReason {
    match reason {
        Some(r) if r == words.max_tokens => StopReason::MaxTokens,
        _ if has_calls => StopReason::ToolUse,
        None => StopReason::EndTurn,
        Some(r) if r == words.end_turn => StopReason::EndTurn,
        Some(r) if words.tool_use.contains(&r) => StopReason::ToolUse,
        Some(other) => StopReason::Other(other.to_string()),
    }
}

/// Appends `parts` as a turn of `role`, merged into the last turn when that has the same
/// role (Anthropic and Gemini want all results of a turn, and any text after them, in ONE
/// user message). Empty `parts` add nothing.
pub(crate) fn push_turn(
    turns: &mut Vec<(&'static str, Vec<Value>)>,
    role: &'static str,
    parts: Vec<Value>,
) {
    if parts.is_empty() {
        return;
    }
    match turns.last_mut() {
        Some((last, existing)) if *last == role => existing.extend(parts),
        _ => turns.push((role, parts)),
    }
}

/// Text that is `None` when empty or blank.
pub(crate) fn non_empty(text: String) -> Option<String> {
    if text.trim().is_empty() {
        None
    } else {
        Some(text)
    }
}

/// Removes `<think>...</think>` reasoning that local reasoning models (Qwen3, DeepSeek-R1)
/// put in their answer text; an unclosed block runs to the end.
pub(crate) fn strip_think(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("<think>") {
        out.push_str(&rest[..start]);
        match rest[start..].find("</think>") {
            Some(end) => rest = &rest[start + end + "</think>".len()..],
            None => {
                rest = "";
                break;
            }
        }
    }
    out.push_str(rest);
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn think_blocks_are_removed() {
        assert_eq!(strip_think("<think>hmm</think>\nAnswer"), "Answer");
        assert_eq!(strip_think("a<think>x</think>b<think>y"), "ab");
        assert_eq!(strip_think("plain"), "plain");
    }

    #[test]
    fn bounds_move_into_descriptions() {
        let schema = json!({
            "type": "object",
            "properties": {
                "ms": {"type": "integer", "minimum": 0, "maximum": 5000},
                "limit": {"type": "integer", "minimum": 0, "description": "default 10"},
                "ids": {"type": "array", "items": {"type": "string", "maxLength": 16}},
                "minimum": {"type": "string", "enum": ["a"]}
            },
            "required": ["ms"],
            "additionalProperties": false
        });
        assert_eq!(
            bounds_into_descriptions(&schema),
            json!({
                "type": "object",
                "properties": {
                    "ms": {"type": "integer", "description": "(minimum 0, maximum 5000)"},
                    "limit": {"type": "integer", "description": "default 10 (minimum 0)"},
                    "ids": {"type": "array",
                            "items": {"type": "string", "description": "(maxLength 16)"}},
                    "minimum": {"type": "string", "enum": ["a"]}
                },
                "required": ["ms"]
            })
        );
    }

    #[test]
    fn schemas_without_arguments() {
        assert!(takes_no_arguments(
            &json!({"type": "object", "properties": {}})
        ));
        assert!(takes_no_arguments(&json!({"type": "object"})));
        assert!(takes_no_arguments(&Value::Null));
        assert!(!takes_no_arguments(
            &json!({"type": "object", "properties": {"a": {"type": "string"}}})
        ));
        assert_eq!(
            object_schema(&Value::Null),
            json!({"type": "object", "properties": {}})
        );
    }

    #[test]
    fn arguments() {
        assert_eq!(parse_arguments_string(""), json!({}));
        assert_eq!(parse_arguments_string("{\"a\":1}"), json!({"a": 1}));
        assert_eq!(parse_arguments_string("{bad"), json!("{bad"));
        assert_eq!(arguments_object(&json!("{\"a\":1}")), json!({"a": 1}));
        assert_eq!(arguments_object(&json!([1])), json!({}));
    }
}
