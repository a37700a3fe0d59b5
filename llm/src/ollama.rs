//! Ollama's native chat API: `POST {base}/api/chat` with `"stream": false`.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{
    StopWords, arguments_object, bounds_into_descriptions, max_tokens, model_for, non_empty,
    object_schema, stop_reason, strip_think,
};
use crate::compat::{WireToolCall, function_tools, messages, tool_calls};
use crate::config::{ConfigError, ProviderConfig, ProviderKind};
use crate::http::{CONNECTION_FAILED, Client, network_error, snippet, vendor_message};
use crate::types::{
    ChatRequest, ChatResponse, Provider, ProviderError, ProviderErrorKind, TokenUsage, ToolCall,
    ToolResult,
};

/// How long [`OllamaProvider::probe`] waits for the server.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// A client of a local (or remote) Ollama server.
#[derive(Debug, Clone)]
pub struct OllamaProvider {
    client: Client,
}

impl OllamaProvider {
    /// A provider from explicit config. The base URL may be a bare `host:port` as in
    /// `OLLAMA_HOST`. The key is optional (sent as a bearer token when set, for servers
    /// behind an authenticating proxy).
    pub fn new(config: ProviderConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            client: Client::new(ProviderKind::Ollama, config)?,
        })
    }

    /// A provider from `OLLAMA_HOST` (a URL or a bare `host:port`) and `BEAMLENS_DEMO_MODEL`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new(ProviderConfig::from_env(ProviderKind::Ollama)?)
    }

    /// The config this provider was built from.
    pub fn config(&self) -> &ProviderConfig {
        &self.client.config
    }

    /// The chat endpoint.
    pub fn endpoint(&self) -> String {
        format!("{}/api/chat", self.client.base_url)
    }

    /// Checks that the server answers `GET /api/tags` within [`PROBE_TIMEOUT`] and returns
    /// the names of the installed models. On failure the error has kind `Unavailable` and
    /// the message `Ollama not available: <reason>. Start with: ollama serve`.
    pub async fn probe(&self) -> Result<Vec<String>, ProviderError> {
        let url = format!("{}/api/tags", self.client.base_url);
        let name = self.client.name();
        let mut request = self.client.http.get(&url).timeout(PROBE_TIMEOUT);
        if !self.client.config.api_key.is_empty() {
            request = request.bearer_auth(&self.client.config.api_key);
        }
        let response = request
            .send()
            .await
            .map_err(|e| unavailable(network_error(name, &e).message, None))?;
        let status = response.status().as_u16();
        let body = response
            .text()
            .await
            .map_err(|e| unavailable(network_error(name, &e).message, Some(status)))?;
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

/// An `Unavailable` error that says how to start Ollama.
fn unavailable(reason: String, status: Option<u16>) -> ProviderError {
    ProviderError::new(
        ProviderKind::Ollama.id(),
        ProviderErrorKind::Unavailable,
        status,
        format!("Ollama not available: {reason}. Start with: ollama serve"),
    )
}

#[async_trait::async_trait]
impl Provider for OllamaProvider {
    fn name(&self) -> &str {
        self.client.name()
    }

    fn model(&self) -> &str {
        &self.client.config.model
    }

    /// Ollama's `/api/chat` has no `tool_choice`: a forced request goes out as any other.
    fn can_force_tool(&self) -> bool {
        false
    }

    /// A server that cannot be reached (after the retries) is `Unavailable`, not retried
    /// further, with the hint to start it.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let body = to_wire(request, model_for(request, self.model()));
        let headers = self.client.bearer();
        let parse = |wire, first| Ok(from_wire(wire, first));
        let url = self.endpoint();
        let result = self
            .client
            .chat(request, &url, &headers, &body, parse)
            .await;
        result.map_err(|err| {
            if err.kind == ProviderErrorKind::Network && err.message.starts_with(CONNECTION_FAILED)
            {
                unavailable(err.message, None)
            } else {
                err
            }
        })
    }
}

/// The request body.
pub(crate) fn to_wire(request: &ChatRequest, model: &str) -> Value {
    let call = |call: &ToolCall| {
        json!({"function": {
            "name": call.name,
            "arguments": arguments_object(&call.arguments),
        }})
    };
    let result = |result: &ToolResult| json!({"role": "tool", "content": result.content, "tool_name": result.name});
    let mut body = json!({
        "model": model,
        "stream": false,
        "messages": messages(request, call, result),
        "options": {"num_predict": max_tokens(request)},
    });
    if !request.tools.is_empty() {
        // Ollama keeps only type/items/description/enum (and required/properties): bounds
        // go into the descriptions. It has no `tool_choice`: `request.tool_choice` is not
        // sent (`can_force_tool` says so to the operator).
        body["tools"] = function_tools(&request.tools, |schema| {
            bounds_into_descriptions(&object_schema(schema))
        });
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
struct WireTags {
    #[serde(default)]
    models: Vec<WireModel>,
}

#[derive(Debug, Deserialize)]
struct WireModel {
    name: String,
}

/// `done_reason`s: there is no tool-specific one.
const STOP_WORDS: StopWords = StopWords {
    max_tokens: "length",
    end_turn: "stop",
    tool_use: &[],
};

/// The reply in the neutral model; calls without an id get `call_<first>`, ...
pub(crate) fn from_wire(wire: WireResponse, first: usize) -> ChatResponse {
    let tool_calls = tool_calls(wire.message.tool_calls, first);
    ChatResponse {
        text: non_empty(strip_think(&wire.message.content)),
        stop_reason: stop_reason(
            wire.done_reason.as_deref(),
            !tool_calls.is_empty(),
            &STOP_WORDS,
        ),
        tool_calls,
        usage: TokenUsage {
            input_tokens: wire.prompt_eval_count,
            output_tokens: wire.eval_count,
        },
    }
}
