//! OpenAI Chat Completions: `POST {base}/v1/chat/completions`. Also speaks to
//! OpenAI-compatible servers (llama.cpp, llama-cpp-python, vLLM, Ollama's `/v1`).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{
    max_tokens, model_for, non_empty, object_schema, parse_arguments_string, strip_think,
};
use crate::config::{ConfigError, ProviderConfig, ProviderKind, http_client, normalise_base_url};
use crate::http::{Caller, post_json};
use crate::text_tool_calls::{apply_text_tool_calls, next_call_number, synth_call_id};
use crate::types::{
    ChatRequest, ChatResponse, Message, Provider, ProviderError, StopReason, TokenUsage, ToolCall,
};

const CALLER: Caller = Caller {
    provider: "openai",
    key_var: Some("OPENAI_API_KEY"),
};

/// A client of the Chat Completions API.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    config: ProviderConfig,
    endpoint: String,
    official: bool,
    client: reqwest::Client,
}

impl OpenAiProvider {
    /// A provider from explicit config. The key may be empty for local OpenAI-compatible
    /// servers (no `Authorization` header is sent then). A base URL ending in `/v1` is
    /// accepted as well as one without.
    pub fn new(config: ProviderConfig) -> Result<Self, ConfigError> {
        let base = normalise_base_url(&config.base_url)?;
        let endpoint = if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        };
        let official = base.to_ascii_lowercase().contains("://api.openai.com");
        Ok(Self {
            endpoint,
            official,
            client: http_client()?,
            config,
        })
    }

    /// A provider from `OPENAI_API_KEY`, `OPENAI_BASE_URL` and `BEAMLENS_DEMO_MODEL`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new(ProviderConfig::from_env(ProviderKind::OpenAi)?)
    }

    /// The config this provider was built from.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        CALLER.provider
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let body = to_wire(
            request,
            model_for(request, &self.config.model),
            self.official,
        );
        let mut headers = Vec::new();
        if !self.config.api_key.is_empty() {
            headers.push(("authorization", format!("Bearer {}", self.config.api_key)));
        }
        let wire: WireResponse = post_json(
            &self.client,
            &self.config.retry,
            CALLER,
            &self.endpoint,
            &headers,
            &body,
            request.timeout,
        )
        .await?;
        let first = next_call_number(&request.messages);
        let mut response = from_wire(wire, first)?;
        apply_text_tool_calls(&mut response, &request.tools, first);
        Ok(response)
    }
}

/// The request body. `official` (api.openai.com) sends only `max_completion_tokens`, which
/// reasoning models require; other servers also get `max_tokens`, which they know.
pub(crate) fn to_wire(request: &ChatRequest, model: &str, official: bool) -> Value {
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
                    wire["tool_calls"] = tool_calls
                        .iter()
                        .map(|call| {
                            let arguments = match &call.arguments {
                                Value::String(raw) => raw.clone(),
                                other => other.to_string(),
                            };
                            json!({
                                "id": call.id,
                                "type": "function",
                                "function": {"name": call.name, "arguments": arguments},
                            })
                        })
                        .collect();
                }
                messages.push(wire);
            }
            Message::Tool { results } => {
                for result in results {
                    messages.push(json!({
                        "role": "tool",
                        "tool_call_id": result.call_id,
                        "content": result.content,
                    }));
                }
            }
        }
    }
    let mut body = json!({
        "model": model,
        "messages": messages,
        "max_completion_tokens": max_tokens(request),
    });
    if !official {
        body["max_tokens"] = json!(max_tokens(request));
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": "function",
                    "function": {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": object_schema(&tool.parameters),
                    },
                })
            })
            .collect();
        body["tool_choice"] = json!("auto");
    }
    body
}

/// The fields of a reply this client uses.
#[derive(Debug, Deserialize)]
pub(crate) struct WireResponse {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Debug, Deserialize)]
struct WireChoice {
    #[serde(default)]
    finish_reason: Option<String>,
    message: WireMessage,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Value,
    #[serde(default)]
    refusal: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Debug, Deserialize)]
struct WireToolCall {
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

#[derive(Debug, Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// The reply in the neutral model; calls without an id get `call_<first>`, ...
pub(crate) fn from_wire(wire: WireResponse, first: usize) -> Result<ChatResponse, ProviderError> {
    let Some(choice) = wire.choices.into_iter().next() else {
        return Err(ProviderError::unparseable(
            CALLER.provider,
            "the reply has no choices",
        ));
    };
    let text = match choice.message.content {
        Value::String(s) => s,
        // Some compatible servers send content parts.
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => choice.message.refusal.unwrap_or_default(),
    };
    let tool_calls: Vec<ToolCall> = choice
        .message
        .tool_calls
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
        .collect();
    let stop_reason = match choice.finish_reason.as_deref() {
        Some("length") => StopReason::MaxTokens,
        // Some compatible servers say "stop" after tool calls.
        _ if !tool_calls.is_empty() => StopReason::ToolUse,
        Some("stop") | None => StopReason::EndTurn,
        Some("tool_calls") | Some("function_call") => StopReason::ToolUse,
        Some(other) => StopReason::Other(other.to_string()),
    };
    let usage = wire.usage.map_or(TokenUsage::default(), |u| TokenUsage {
        input_tokens: u.prompt_tokens.unwrap_or(0),
        output_tokens: u.completion_tokens.unwrap_or(0),
    });
    Ok(ChatResponse {
        text: non_empty(strip_think(&text)),
        tool_calls,
        stop_reason,
        usage,
    })
}
