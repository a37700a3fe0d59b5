//! Ollama's native chat API: `POST {base}/api/chat` with `"stream": false`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{
    arguments_object, bounds_into_descriptions, max_tokens, model_for, non_empty, object_schema,
    parse_arguments_string, strip_think,
};
use crate::config::{
    ConfigError, ProviderConfig, ProviderKind, http_client, normalise_base_url, ollama_host_url,
};
use crate::http::{Caller, network_error, post_json, snippet, vendor_message};
use crate::text_tool_calls::{apply_text_tool_calls, next_call_number, synth_call_id};
use crate::types::{
    ChatRequest, ChatResponse, Message, Provider, ProviderError, ProviderErrorKind, StopReason,
    TokenUsage, ToolCall,
};

/// How long [`OllamaProvider::probe`] waits for the server.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

const CALLER: Caller = Caller {
    provider: "ollama",
    key_var: None,
};

/// A client of a local (or remote) Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaProvider {
    config: ProviderConfig,
    base_url: String,
    client: reqwest::Client,
}

impl OllamaProvider {
    /// A provider from explicit config. The base URL may be a bare `host:port` as in
    /// `OLLAMA_HOST`. The key is optional (sent as a bearer token when set, for servers
    /// behind an authenticating proxy).
    pub fn new(config: ProviderConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            base_url: normalise_base_url(&ollama_host_url(&config.base_url))?,
            client: http_client()?,
            config,
        })
    }

    /// A provider from `OLLAMA_HOST` (a URL or a bare `host:port`) and `BEAMLENS_DEMO_MODEL`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new(ProviderConfig::from_env(ProviderKind::Ollama)?)
    }

    /// The config this provider was built from.
    pub fn config(&self) -> &ProviderConfig {
        &self.config
    }

    /// The chat endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}/api/chat", self.base_url)
    }

    /// Checks that the server answers `GET /api/tags` within [`PROBE_TIMEOUT`] and returns
    /// the names of the installed models. On failure the error has kind `Unavailable` and
    /// the message `Ollama not available: <reason>. Start with: ollama serve`.
    pub async fn probe(&self) -> Result<Vec<String>, ProviderError> {
        let url = format!("{}/api/tags", self.base_url);
        let unavailable = |reason: String, status: Option<u16>| {
            ProviderError::new(
                CALLER.provider,
                ProviderErrorKind::Unavailable,
                status,
                format!("Ollama not available: {reason}. Start with: ollama serve"),
            )
        };
        let mut request = self.client.get(&url).timeout(PROBE_TIMEOUT);
        if !self.config.api_key.is_empty() {
            request = request.bearer_auth(&self.config.api_key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(network_error(CALLER, &e).message, None))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| unavailable(network_error(CALLER, &e).message, Some(status)))?;
        if !(200..300).contains(&status) {
            let reason = vendor_message(&body).unwrap_or_else(|| snippet(&body));
            return Err(unavailable(
                format!("GET {url} gave HTTP {status}: {reason}"),
                Some(status),
            ));
        }
        let tags: WireTags = serde_json::from_str(&body).map_err(|e| {
            unavailable(
                format!("GET {url} did not return a model list ({e})"),
                Some(status),
            )
        })?;
        Ok(tags.models.into_iter().map(|m| m.name).collect())
    }
}

#[async_trait::async_trait]
impl Provider for OllamaProvider {
    fn name(&self) -> &str {
        CALLER.provider
    }

    fn model(&self) -> &str {
        &self.config.model
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let body = to_wire(request, model_for(request, &self.config.model));
        let mut headers = Vec::new();
        if !self.config.api_key.is_empty() {
            headers.push(("authorization", format!("Bearer {}", self.config.api_key)));
        }
        let wire: WireResponse = post_json(
            &self.client,
            &self.config.retry,
            CALLER,
            &self.endpoint(),
            &headers,
            &body,
            request.timeout,
        )
        .await
        .map_err(|err| {
            if err.kind == ProviderErrorKind::Network
                && err.message.starts_with("connection failed")
            {
                ProviderError {
                    kind: ProviderErrorKind::Unavailable,
                    message: format!(
                        "Ollama not available: {}. Start with: ollama serve",
                        err.message
                    ),
                    retryable: false,
                    ..err
                }
            } else {
                err
            }
        })?;
        let first = next_call_number(&request.messages);
        let mut response = from_wire(wire, first);
        apply_text_tool_calls(&mut response, &request.tools, first);
        Ok(response)
    }
}

/// The request body.
pub(crate) fn to_wire(request: &ChatRequest, model: &str) -> Value {
    let mut messages = Vec::new();
    if !request.system.trim().is_empty() {
        messages.push(json!({"role": "system", "content": request.system}));
    }
    for message in &request.messages {
        match message {
            Message::User { text } => messages.push(json!({"role": "user", "content": text})),
            Message::Assistant { text, tool_calls } => {
                let mut wire =
                    json!({"role": "assistant", "content": text.clone().unwrap_or_default()});
                if !tool_calls.is_empty() {
                    wire["tool_calls"] = tool_calls
                        .iter()
                        .map(|call| {
                            json!({"function": {
                                "name": call.name,
                                "arguments": arguments_object(&call.arguments),
                            }})
                        })
                        .collect();
                }
                messages.push(wire);
            }
            Message::Tool { results } => {
                for result in results {
                    messages.push(json!({
                        "role": "tool",
                        "content": result.content,
                        "tool_name": result.name,
                    }));
                }
            }
        }
    }
    let mut body = json!({
        "model": model,
        "stream": false,
        "messages": messages,
        "options": {"num_predict": max_tokens(request)},
    });
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
                        // Ollama keeps only type/items/description/enum (and
                        // required/properties): bounds go into the descriptions.
                        "parameters": bounds_into_descriptions(&object_schema(&tool.parameters)),
                    },
                })
            })
            .collect();
    }
    body
}

/// The fields of a reply this client uses.
#[derive(Debug, Deserialize)]
pub(crate) struct WireResponse {
    message: WireMessage,
    #[serde(default)]
    done_reason: Option<String>,
    #[serde(default)]
    prompt_eval_count: u64,
    #[serde(default)]
    eval_count: u64,
}

#[derive(Debug, Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: String,
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
struct WireTags {
    #[serde(default)]
    models: Vec<WireModel>,
}

#[derive(Debug, Deserialize)]
struct WireModel {
    name: String,
}

/// The reply in the neutral model; calls without an id get `call_<first>`, ...
pub(crate) fn from_wire(wire: WireResponse, first: usize) -> ChatResponse {
    let tool_calls: Vec<ToolCall> = wire
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
    let stop_reason = match wire.done_reason.as_deref() {
        Some("length") => StopReason::MaxTokens,
        _ if !tool_calls.is_empty() => StopReason::ToolUse,
        Some("stop") | None => StopReason::EndTurn,
        Some(other) => StopReason::Other(other.to_string()),
    };
    ChatResponse {
        text: non_empty(strip_think(&wire.message.content)),
        tool_calls,
        stop_reason,
        usage: TokenUsage {
            input_tokens: wire.prompt_eval_count,
            output_tokens: wire.eval_count,
        },
    }
}
