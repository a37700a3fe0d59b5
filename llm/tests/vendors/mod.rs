//! One [`Vendor`] per provider: how to reach it on a local test server, how its replies and
//! errors look on the wire, and what its requests must look like. The shared tests in
//! `providers.rs` run against every one; each vendor's own quirks are tested in its file.

pub mod anthropic;
pub mod gemini;
pub mod ollama;
pub mod openai;

use llm::{
    ChatResponse, Provider, ProviderConfig, ProviderError, ProviderErrorKind, ProviderKind,
    ToolCall,
};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockBuilder, MockServer, ResponseTemplate};

use crate::common::{fast_retry, first_turn, tools};

/// Prompt and completion tokens every reply reports.
pub const USAGE: (u64, u64) = (412, 61);

/// A tool call as a test writes it; each vendor renders it in its own wire format.
#[derive(Debug, Clone)]
pub struct Call {
    /// The call id, for vendors whose replies carry one.
    pub id: &'static str,
    /// Tool name.
    pub name: &'static str,
    /// Arguments.
    pub args: Value,
    /// A thought signature, for vendors that sign calls (Gemini).
    pub signature: Option<&'static str>,
}

/// The HTTP failures every vendor has, each in its own words.
#[derive(Debug, Clone, Copy)]
pub enum Failure {
    /// A 429 with a zero retry hint: retried.
    RateLimited,
    /// The vendor is overloaded (529 or 503): retried.
    Overloaded,
    /// A bad key: a 401, never retried.
    Unauthorized,
    /// A 429 saying the quota or spend limit is gone, with a zero retry hint: not retried.
    QuotaExhausted,
}

/// One failure on the wire and what the client makes of it.
#[derive(Debug)]
pub struct Failing {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: &'static [(&'static str, &'static str)],
    /// The vendor's error body.
    pub body: Value,
    /// The error's message (before any note on retries).
    pub message: &'static str,
}

/// A zero retry hint in a header.
pub const RETRY_NOW: &[(&str, &str)] = &[("retry-after", "0")];

/// What a chat fails with when nobody listens: kind, message start and message end.
pub type Unreachable = (ProviderErrorKind, &'static str, &'static str);

/// A retried, then failed, connection.
pub const NETWORK_ERROR: Unreachable = (
    ProviderErrorKind::Network,
    "connection failed: ",
    "attempts exhausted)",
);

/// Where a request body says which tool the model must call (a JSON pointer), and what it
/// holds there for `None` (the model chooses) and for a named tool.
pub type ToolChoiceAt = (&'static str, fn(Option<&str>) -> Value);

/// How one vendor speaks.
#[derive(Debug)]
pub struct Vendor {
    /// Which provider.
    pub kind: ProviderKind,
    /// The configured model.
    pub model: &'static str,
    /// The configured key.
    pub key: &'static str,
    /// The path chat requests are posted to.
    pub path: &'static str,
    /// Headers every chat request carries.
    pub headers: &'static [(&'static str, &'static str)],
    /// Whether replies carry call ids (else the client numbers calls `call_<n>`).
    pub native_ids: bool,
    /// Whether calls carry thought signatures back to the client.
    pub signatures: bool,
    /// Whether `<think>` blocks are removed from answers.
    pub strips_think: bool,
    /// A 200 reply body with optional text and tool calls.
    pub reply: fn(Option<&str>, &[Call]) -> Value,
    /// A failure in the vendor's words.
    pub failing: fn(Failure) -> Failing,
    /// A 200 body that is not JSON.
    pub malformed: &'static str,
    /// The call ids in the history of the second-turn request.
    pub history_ids: [&'static str; 2],
    /// The exact body of `common::second_turn(model, history_ids, Some(HISTORY_SIGNATURE))`.
    pub second_turn_body: fn() -> Value,
    /// What a chat without a server fails with.
    pub unreachable: Unreachable,
    /// Where a request says which tool the model must call (a JSON pointer into the body)
    /// and what it holds for `None` (the model chooses) and for a named tool; `None` for a
    /// vendor whose API cannot name one (Ollama).
    pub tool_choice: Option<ToolChoiceAt>,
}

impl Vendor {
    /// The provider pointed at `base_url`, with fast retries.
    pub fn provider_at(&self, base_url: impl Into<String>) -> Box<dyn Provider> {
        let config = ProviderConfig::new(base_url, self.key, self.model).with_retry(fast_retry());
        llm::provider_from_config(self.kind, config).expect("provider")
    }

    /// The provider pointed at `server`.
    pub fn provider(&self, server: &MockServer) -> Box<dyn Provider> {
        self.provider_at(server.uri())
    }

    /// A server that answers every chat request with `response`.
    pub async fn serve(&self, response: ResponseTemplate) -> MockServer {
        let server = MockServer::start().await;
        self.mount(&server, response).await;
        server
    }

    /// Sends `common::first_turn` to `server`.
    pub async fn first_turn(&self, server: &MockServer) -> Result<ChatResponse, ProviderError> {
        self.provider(server).chat(&first_turn(self.model)).await
    }

    /// A mock of the chat endpoint.
    pub fn chat(&self) -> MockBuilder {
        Mock::given(method("POST")).and(path(self.path))
    }

    /// Answers every chat request with `response`.
    pub async fn mount(&self, server: &MockServer, response: ResponseTemplate) {
        self.chat().respond_with(response).mount(server).await;
    }

    /// Answers the next chat request with `response` (mount it before [`Vendor::mount`]).
    pub async fn mount_once(&self, server: &MockServer, response: ResponseTemplate) {
        self.chat()
            .respond_with(response)
            .up_to_n_times(1)
            .mount(server)
            .await;
    }

    /// A 200 reply with optional text and tool calls.
    pub fn ok(&self, text: Option<&str>, calls: &[Call]) -> ResponseTemplate {
        ResponseTemplate::new(200).set_body_json((self.reply)(text, calls))
    }

    /// A failure reply, and the message the client reports for it.
    pub fn fail(&self, failure: Failure) -> (ResponseTemplate, Failing) {
        let failing = (self.failing)(failure);
        let mut response = ResponseTemplate::new(failing.status).set_body_json(&failing.body);
        for (name, value) in failing.headers {
            response = response.insert_header(*name, *value);
        }
        (response, failing)
    }

    /// The call as the client must return it: `call_<n>` where the vendor sends no id, the
    /// signature where the vendor has them.
    pub fn expected(&self, call: &Call, n: usize) -> ToolCall {
        ToolCall {
            id: if self.native_ids {
                call.id.to_string()
            } else {
                format!("call_{n}")
            },
            name: call.name.to_string(),
            arguments: call.args.clone(),
            thought_signature: call
                .signature
                .filter(|_| self.signatures)
                .map(str::to_string),
        }
    }
}

/// The tools as Chat Completions servers (OpenAI, Ollama) take them.
pub fn function_tools() -> Vec<Value> {
    tools()
        .into_iter()
        .map(|t| {
            json!({"type": "function", "function": {
                "name": t.name, "description": t.description, "parameters": t.parameters}})
        })
        .collect()
}
