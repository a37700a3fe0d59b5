//! Google AI (Gemini): `POST {base}/v1beta/models/{model}:generateContent`.

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::common::{
    StopWords, arguments_object, max_tokens, model_for, non_empty, push_turn, stop_reason,
    takes_no_arguments,
};
use crate::config::{ConfigError, ProviderConfig, ProviderKind};
use crate::http::Client;
use crate::text_tool_calls::synth_call_id;
use crate::types::{
    ChatRequest, ChatResponse, Message, Provider, ProviderError, StopReason, TokenUsage, ToolCall,
};

/// The documented stand-in signature for function calls Gemini did not make itself
/// (synthetic or foreign history); Gemini 3 rejects such calls without a signature.
pub const SKIP_THOUGHT_SIGNATURE: &str = "skip_thought_signature_validator";

/// A client of the Gemini API (`generateContent`). Its provider id is `google-ai`.
#[derive(Debug, Clone)]
pub struct GeminiProvider {
    client: Client,
}

impl GeminiProvider {
    /// A provider from explicit config. Fails on an empty key or a base URL that is not
    /// `http(s)://`.
    pub fn new(config: ProviderConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            client: Client::new(ProviderKind::GoogleAi, config)?,
        })
    }

    /// A provider from `GOOGLE_API_KEY` (or `GEMINI_API_KEY`), `GOOGLE_AI_BASE_URL` and
    /// `BEAMLENS_DEMO_MODEL`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new(ProviderConfig::from_env(ProviderKind::GoogleAi)?)
    }

    /// The config this provider was built from.
    pub fn config(&self) -> &ProviderConfig {
        &self.client.config
    }

    /// The endpoint for `model` (a `models/` prefix is accepted).
    pub fn endpoint(&self, model: &str) -> String {
        let model = model.strip_prefix("models/").unwrap_or(model);
        format!(
            "{}/v1beta/models/{model}:generateContent",
            self.client.base_url
        )
    }
}

#[async_trait::async_trait]
impl Provider for GeminiProvider {
    fn name(&self) -> &str {
        self.client.name()
    }

    fn model(&self) -> &str {
        &self.client.config.model
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let url = self.endpoint(model_for(request, self.model()));
        let headers = [("x-goog-api-key", self.client.config.api_key.clone())];
        let body = to_wire(request);
        self.client
            .chat(request, &url, &headers, &body, from_wire)
            .await
    }
}

/// Whether a call id is one this crate made up (`call_<n>`), which Gemini never saw.
fn is_synthesised(id: &str) -> bool {
    id.strip_prefix("call_")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The request body.
pub(crate) fn to_wire(request: &ChatRequest) -> Value {
    let mut contents = Vec::new();
    let mut names_by_id: HashMap<&str, &str> = HashMap::new();
    for message in &request.messages {
        let (role, parts) = match message {
            Message::User { text } => ("user", vec![json!({"text": text})]),
            Message::Assistant { text, tool_calls } => {
                let mut parts = Vec::new();
                if let Some(text) = text.as_deref().filter(|t| !t.trim().is_empty()) {
                    parts.push(json!({"text": text}));
                }
                let foreign = tool_calls.iter().all(|c| c.thought_signature.is_none());
                for (i, call) in tool_calls.iter().enumerate() {
                    names_by_id.insert(&call.id, &call.name);
                    let mut function_call = json!({
                        "name": call.name,
                        "args": arguments_object(&call.arguments),
                    });
                    if !is_synthesised(&call.id) {
                        function_call["id"] = json!(call.id);
                    }
                    let mut part = json!({"functionCall": function_call});
                    match &call.thought_signature {
                        Some(signature) => part["thoughtSignature"] = json!(signature),
                        None if foreign && i == 0 => {
                            part["thoughtSignature"] = json!(SKIP_THOUGHT_SIGNATURE)
                        }
                        None => {}
                    }
                    parts.push(part);
                }
                ("model", parts)
            }
            Message::Tool { results } => (
                "user",
                results
                    .iter()
                    .map(|result| {
                        let value = serde_json::from_str::<Value>(&result.content)
                            .unwrap_or_else(|_| json!(result.content));
                        let key = if result.is_error { "error" } else { "result" };
                        let name = if result.name.is_empty() {
                            names_by_id
                                .get(result.call_id.as_str())
                                .copied()
                                .unwrap_or_default()
                        } else {
                            &result.name
                        };
                        let mut response = json!({"name": name, "response": {key: value}});
                        if !is_synthesised(&result.call_id) && !result.call_id.is_empty() {
                            response["id"] = json!(result.call_id);
                        }
                        json!({"functionResponse": response})
                    })
                    .collect(),
            ),
        };
        push_turn(&mut contents, role, parts);
    }
    let contents: Vec<Value> = contents
        .into_iter()
        .map(|(role, parts)| json!({"role": role, "parts": parts}))
        .collect();
    let mut body = json!({
        "contents": contents,
        "generationConfig": {"maxOutputTokens": max_tokens(request)},
    });
    if !request.system.trim().is_empty() {
        body["systemInstruction"] = json!({"parts": [{"text": request.system}]});
    }
    if !request.tools.is_empty() {
        let declarations: Vec<Value> = request
            .tools
            .iter()
            .map(|tool| {
                let mut declaration = json!({"name": tool.name, "description": tool.description});
                // An empty OBJECT schema is a 400 INVALID_ARGUMENT: omit it.
                if !takes_no_arguments(&tool.parameters) {
                    declaration["parameters"] = sanitise_schema(&tool.parameters);
                }
                declaration
            })
            .collect();
        body["tools"] = json!([{"functionDeclarations": declarations}]);
        body["toolConfig"] = match request.tool_choice.forced() {
            Some(name) => json!({"functionCallingConfig": {
                "mode": "ANY",
                "allowedFunctionNames": [name],
            }}),
            None => json!({"functionCallingConfig": {"mode": "AUTO"}}),
        };
    }
    body
}

/// Drops the JSON-schema keywords Gemini's OpenAPI subset rejects (`additionalProperties`,
/// `$schema`, `$id`, `$comment`), at every level but never property names.
fn sanitise_schema(schema: &Value) -> Value {
    const REJECTED: [&str; 4] = ["additionalProperties", "$schema", "$id", "$comment"];
    match schema {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, value) in map {
                if REJECTED.contains(&key.as_str()) {
                    continue;
                }
                let value = match (key.as_str(), value) {
                    ("properties", Value::Object(props)) => Value::Object(
                        props
                            .iter()
                            .map(|(name, s)| (name.clone(), sanitise_schema(s)))
                            .collect(),
                    ),
                    _ => sanitise_schema(value),
                };
                out.insert(key.clone(), value);
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(sanitise_schema).collect()),
        other => other.clone(),
    }
}

/// The fields of a reply this client uses.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WireResponse {
    #[serde(default)]
    candidates: Vec<WireCandidate>,
    #[serde(default)]
    prompt_feedback: Option<WirePromptFeedback>,
    #[serde(default)]
    usage_metadata: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireCandidate {
    #[serde(default)]
    content: Option<WireContent>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireContent {
    #[serde(default)]
    parts: Vec<WirePart>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePart {
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    thought: Option<bool>,
    #[serde(default)]
    function_call: Option<WireFunctionCall>,
    #[serde(default)]
    thought_signature: Option<String>,
}

#[derive(Debug, Deserialize)]
struct WireFunctionCall {
    name: String,
    #[serde(default)]
    args: Value,
    #[serde(default)]
    id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WirePromptFeedback {
    #[serde(default)]
    block_reason: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireUsage {
    #[serde(default)]
    prompt_token_count: u64,
    #[serde(default)]
    candidates_token_count: u64,
    #[serde(default)]
    thoughts_token_count: u64,
}

/// `finishReason`s: a tool call ends with `STOP` too.
const STOP_WORDS: StopWords = StopWords {
    max_tokens: "MAX_TOKENS",
    end_turn: "STOP",
    tool_use: &[],
};

/// The reply in the neutral model; calls get `call_<first>`, ... unless Gemini gave ids.
pub(crate) fn from_wire(wire: WireResponse, first: usize) -> Result<ChatResponse, ProviderError> {
    let usage = wire
        .usage_metadata
        .map_or(TokenUsage::default(), |u| TokenUsage {
            input_tokens: u.prompt_token_count,
            output_tokens: u.candidates_token_count + u.thoughts_token_count,
        });
    let Some(candidate) = wire.candidates.into_iter().next() else {
        return match wire.prompt_feedback.and_then(|f| f.block_reason) {
            Some(reason) => Ok(ChatResponse {
                text: None,
                tool_calls: Vec::new(),
                stop_reason: StopReason::Other(format!("blocked: {reason}")),
                usage,
            }),
            None => Err(ProviderError::unparseable(
                ProviderKind::GoogleAi.id(),
                "the reply has no candidates",
            )),
        };
    };
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for part in candidate.content.map(|c| c.parts).unwrap_or_default() {
        if let Some(call) = part.function_call {
            let n = first + tool_calls.len();
            tool_calls.push(ToolCall {
                id: call
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| synth_call_id(n)),
                name: call.name,
                arguments: if call.args.is_null() {
                    json!({})
                } else {
                    call.args
                },
                thought_signature: part.thought_signature,
            });
        } else if let Some(text) = part.text
            && part.thought != Some(true)
        {
            texts.push(text);
        }
    }
    Ok(ChatResponse {
        text: non_empty(texts.concat()),
        stop_reason: stop_reason(
            candidate.finish_reason.as_deref(),
            !tool_calls.is_empty(),
            &STOP_WORDS,
        ),
        tool_calls,
        usage,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_lose_keywords_gemini_rejects_but_keep_property_names() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "additionalProperties": false,
            "properties": {
                "additionalProperties": {"type": "string"},
                "nested": {"type": "object", "additionalProperties": false,
                           "properties": {"x": {"type": "integer"}}}
            }
        });
        assert_eq!(
            sanitise_schema(&schema),
            json!({
                "type": "object",
                "properties": {
                    "additionalProperties": {"type": "string"},
                    "nested": {"type": "object", "properties": {"x": {"type": "integer"}}}
                }
            })
        );
    }

    #[test]
    fn synthesised_ids() {
        assert!(is_synthesised("call_12"));
        assert!(!is_synthesised("call_abc"));
        assert!(!is_synthesised("call_"));
    }
}
