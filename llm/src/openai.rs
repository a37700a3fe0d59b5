//! OpenAI Chat Completions: `POST {base}/v1/chat/completions`. Also speaks to
//! OpenAI-compatible servers (llama.cpp, llama-cpp-python, vLLM, Ollama's `/v1`).

use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{
    StopWords, max_tokens, model_for, non_empty, object_schema, stop_reason, strip_think,
};
use crate::compat::{WireToolCall, function_tools, messages, tool_calls};
use crate::config::{ConfigError, ProviderConfig, ProviderKind};
use crate::http::Client;
use crate::types::{
    ChatRequest, ChatResponse, Provider, ProviderError, TokenUsage, ToolCall, ToolResult,
};

/// A client of the Chat Completions API.
#[derive(Debug, Clone)]
pub struct OpenAiProvider {
    client: Client,
    endpoint: String,
    official: bool,
}

impl OpenAiProvider {
    /// A provider from explicit config. The key may be empty for local OpenAI-compatible
    /// servers (no `Authorization` header is sent then). A base URL ending in `/v1` is
    /// accepted as well as one without.
    pub fn new(config: ProviderConfig) -> Result<Self, ConfigError> {
        let client = Client::new(ProviderKind::OpenAi, config)?;
        let base = &client.base_url;
        let endpoint = if base.ends_with("/v1") {
            format!("{base}/chat/completions")
        } else {
            format!("{base}/v1/chat/completions")
        };
        let official = base.to_ascii_lowercase().contains("://api.openai.com");
        Ok(Self {
            endpoint,
            official,
            client,
        })
    }

    /// A provider from `OPENAI_API_KEY`, `OPENAI_BASE_URL` and `BEAMLENS_DEMO_MODEL`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new(ProviderConfig::from_env(ProviderKind::OpenAi)?)
    }

    /// The config this provider was built from.
    pub fn config(&self) -> &ProviderConfig {
        &self.client.config
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

#[async_trait::async_trait]
impl Provider for OpenAiProvider {
    fn name(&self) -> &str {
        self.client.name()
    }

    fn model(&self) -> &str {
        &self.client.config.model
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let body = to_wire(request, model_for(request, self.model()), self.official);
        let headers = self.client.bearer();
        let url = &self.endpoint;
        self.client
            .chat(request, url, &headers, &body, from_wire)
            .await
    }
}

/// The request body. `official` (api.openai.com) sends only `max_completion_tokens`, which
/// reasoning models require; other servers also get `max_tokens`, which they know.
pub(crate) fn to_wire(request: &ChatRequest, model: &str, official: bool) -> Value {
    let call = |call: &ToolCall| {
        let arguments = match &call.arguments {
            Value::String(raw) => raw.clone(),
            other => other.to_string(),
        };
        json!({
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": arguments},
        })
    };
    let result = |result: &ToolResult| json!({"role": "tool", "tool_call_id": result.call_id, "content": result.content});
    let mut body = json!({
        "model": model,
        "messages": messages(request, call, result),
        "max_completion_tokens": max_tokens(request),
    });
    if !official {
        body["max_tokens"] = json!(max_tokens(request));
    }
    if !request.tools.is_empty() {
        body["tools"] = function_tools(&request.tools, object_schema);
        body["tool_choice"] = match request.tool_choice.forced() {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => json!("auto"),
        };
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
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

/// `finish_reason`s (`function_call` is the legacy name of `tool_calls`).
const STOP_WORDS: StopWords = StopWords {
    max_tokens: "length",
    end_turn: "stop",
    tool_use: &["tool_calls", "function_call"],
};

/// The reply in the neutral model; calls without an id get `call_<first>`, ...
pub(crate) fn from_wire(wire: WireResponse, first: usize) -> Result<ChatResponse, ProviderError> {
    let Some(choice) = wire.choices.into_iter().next() else {
        return Err(ProviderError::unparseable(
            ProviderKind::OpenAi.id(),
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
    let tool_calls = tool_calls(choice.message.tool_calls, first);
    let usage = wire.usage.map_or(TokenUsage::default(), |u| TokenUsage {
        input_tokens: u.prompt_tokens.unwrap_or(0),
        output_tokens: u.completion_tokens.unwrap_or(0),
    });
    Ok(ChatResponse {
        text: non_empty(strip_think(&text)),
        stop_reason: stop_reason(
            choice.finish_reason.as_deref(),
            !tool_calls.is_empty(),
            &STOP_WORDS,
        ),
        tool_calls,
        usage,
    })
}
