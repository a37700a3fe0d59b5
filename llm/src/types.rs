//! The internal model that maps onto every vendor's format.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A tool the model may call: name, documentation and a JSON schema for its arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// Tool name, `[a-z_]+`.
    pub name: String,
    /// What the tool does, for the model.
    pub description: String,
    /// JSON schema (`{"type":"object","properties":{..},"required":[..]}`); an object with
    /// no properties means the tool takes no arguments.
    pub parameters: Value,
}

/// One tool call the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// The vendor's call id, or a synthesised `call_<n>` where the vendor gives none.
    pub id: String,
    /// Tool name as the model wrote it (may be unknown to the operator).
    pub name: String,
    /// Arguments as a JSON value (always an object when the model sent valid JSON).
    pub arguments: Value,
    /// Gemini's opaque `thoughtSignature`, echoed back unchanged on the next turn.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thought_signature: Option<String>,
}

/// The result of one tool call, fed back to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolResult {
    /// Id of the call this answers.
    pub call_id: String,
    /// Name of the tool (Gemini and Ollama need it).
    pub name: String,
    /// JSON text of the result.
    pub content: String,
    /// Whether the call failed (unknown tool, bad arguments, ...).
    pub is_error: bool,
}

/// One message of the conversation. The system prompt lives in [`ChatRequest::system`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case")]
pub enum Message {
    /// Text from the user (the operator's prompts and context).
    User {
        /// The text.
        text: String,
    },
    /// What the model answered: optional text and any tool calls, replayed verbatim.
    Assistant {
        /// Free text, if any.
        text: Option<String>,
        /// Native tool calls, in order.
        tool_calls: Vec<ToolCall>,
    },
    /// The results of the previous assistant message's tool calls, in the same order.
    Tool {
        /// One result per call.
        results: Vec<ToolResult>,
    },
}

/// A non-streaming chat request with tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    /// The model name (provider-specific).
    pub model: String,
    /// The system prompt.
    pub system: String,
    /// The conversation so far.
    pub messages: Vec<Message>,
    /// Tools offered to the model.
    pub tools: Vec<ToolSpec>,
    /// Output token cap.
    pub max_tokens: u32,
    /// Per-attempt timeout (each retry gets it anew; the provider's retry policy bounds the
    /// whole call, and never to less than one attempt).
    pub timeout: Duration,
    /// Whether the model may answer as it likes or must call one named tool.
    #[serde(default)]
    pub tool_choice: ToolChoice,
}

/// What the request asks of the model about tools.
///
/// Small local models behind OpenAI-compatible servers (llama.cpp, llama-cpp-python) often
/// write a call-shaped JSON object as text when left to choose, and make a real call only
/// when the request names the tool. On the wire: OpenAI and compatible servers
/// `tool_choice: {"type": "function", "function": {"name": ..}}`, Anthropic
/// `tool_choice: {"type": "tool", "name": ..}`, Gemini `toolConfig.functionCallingConfig:
/// {"mode": "ANY", "allowedFunctionNames": [..]}`. Ollama's API has no such field: the
/// request goes out as with `Auto` (see [`Provider::can_force_tool`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides whether and which tool to call.
    #[default]
    Auto,
    /// The model must call this tool (one of [`ChatRequest::tools`]).
    Tool(String),
}

impl ToolChoice {
    /// The forced tool's name, if any.
    pub fn forced(&self) -> Option<&str> {
        match self {
            ToolChoice::Auto => None,
            ToolChoice::Tool(name) => Some(name),
        }
    }
}

/// Why the model stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// It finished its turn.
    EndTurn,
    /// It wants tool results.
    ToolUse,
    /// It hit `max_tokens`.
    MaxTokens,
    /// Anything else the vendor said.
    Other(String),
}

/// Tokens spent, as the vendor reported them (0 when it did not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub input_tokens: u64,
    /// Completion tokens.
    pub output_tokens: u64,
}

impl std::ops::AddAssign for TokenUsage {
    fn add_assign(&mut self, other: TokenUsage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
    }
}

/// The model's reply. Tool calls that the model wrote as JSON text (for instance in a
/// fenced code block) instead of native calls are already parsed into `tool_calls`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    /// Free text, if any.
    pub text: Option<String>,
    /// Tool calls, in the order the model made them.
    pub tool_calls: Vec<ToolCall>,
    /// Why it stopped.
    pub stop_reason: StopReason,
    /// Tokens spent on this request.
    pub usage: TokenUsage,
}

/// The class of a provider failure; decides whether it is retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderErrorKind {
    /// 429 (retried unless quota or spend is exhausted).
    RateLimited,
    /// 529 or 503: the vendor is overloaded.
    Overloaded,
    /// 401/403, or a missing key.
    Auth,
    /// 400/404/413, or a reply we cannot parse.
    BadRequest,
    /// Other 5xx.
    Server,
    /// Connection failure or timeout.
    Network,
    /// The provider is not reachable or not configured (e.g. Ollama not running).
    Unavailable,
}

/// A typed provider failure.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{provider}: {kind:?}{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
pub struct ProviderError {
    /// Which provider failed.
    pub provider: String,
    /// The class of failure.
    pub kind: ProviderErrorKind,
    /// HTTP status, when there was a response.
    pub status: Option<u16>,
    /// The vendor's message, or ours.
    pub message: String,
    /// The server's retry hint, if any.
    pub retry_after: Option<Duration>,
    /// Whether the retry policy may try again (false for auth, bad request, exhausted quota).
    pub retryable: bool,
}

impl ProviderError {
    /// A new error; `retryable` follows the kind (Auth, BadRequest and Unavailable are not).
    pub fn new(
        provider: impl Into<String>,
        kind: ProviderErrorKind,
        status: Option<u16>,
        message: impl Into<String>,
    ) -> Self {
        let retryable = matches!(
            kind,
            ProviderErrorKind::RateLimited
                | ProviderErrorKind::Overloaded
                | ProviderErrorKind::Server
                | ProviderErrorKind::Network
        );
        Self {
            provider: provider.into(),
            kind,
            status,
            message: message.into(),
            retry_after: None,
            retryable,
        }
    }

    /// The same error, marked as not retryable.
    pub fn not_retryable(mut self) -> Self {
        self.retryable = false;
        self
    }

    /// The same error with an HTTP status.
    pub(crate) fn with_status(mut self, status: u16) -> Self {
        self.status = Some(status);
        self
    }

    /// The same error with the server's retry hint.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// A reply that could not be understood (kind BadRequest, not retried).
    pub fn unparseable(provider: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        Self::new(
            provider,
            ProviderErrorKind::BadRequest,
            None,
            format!("unparseable reply: {detail}"),
        )
    }
}

/// A chat model behind one vendor's API.
#[async_trait::async_trait]
pub trait Provider: Send + Sync + std::fmt::Debug {
    /// Provider id: `anthropic`, `openai`, `google-ai`, `ollama`, `mock`.
    fn name(&self) -> &str;
    /// The model this provider sends requests to.
    fn model(&self) -> &str;
    /// Whether [`ChatRequest::tool_choice`] reaches the model: true unless the vendor's API
    /// has no way to name the tool the model must call (Ollama).
    fn can_force_tool(&self) -> bool {
        true
    }
    /// Sends one request (with the retry policy applied) and returns the reply.
    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError>;
}
