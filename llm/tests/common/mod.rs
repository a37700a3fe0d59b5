//! Requests and server helpers the provider tests share.

use std::time::Duration;

use llm::{ChatRequest, Message, RetryPolicy, ToolCall, ToolResult, ToolSpec};
use serde_json::{Value, json};
use wiremock::MockServer;

/// The system prompt of every test request.
pub const SYSTEM: &str = "You are an operator monitoring a sandbox.";

/// The user's first message.
pub const PROMPT: &str = "CPU 100% for 10 min. Assess.";

/// The thought signature on the first call of [`second_turn`]'s history.
pub const HISTORY_SIGNATURE: &str = "CiQB...opaque...";

/// Retries in milliseconds so the tests stay fast.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
        deadline: Duration::from_secs(10),
    }
}

/// `set_state(state, reason)` and the argument-less `take_snapshot`.
pub fn tools() -> Vec<ToolSpec> {
    vec![
        ToolSpec {
            name: "set_state".into(),
            description: "Set sandbox state".into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "state": {"type": "string", "enum": ["healthy", "degraded", "failed"]},
                    "reason": {"type": "string"}
                },
                "required": ["state", "reason"]
            }),
        },
        ToolSpec {
            name: "take_snapshot".into(),
            description: "Take a snapshot of the sandbox".into(),
            parameters: json!({"type": "object", "properties": {}}),
        },
    ]
}

/// A first-turn request: one user message, the tools.
pub fn first_turn(model: &str) -> ChatRequest {
    ChatRequest {
        model: model.into(),
        system: SYSTEM.into(),
        messages: vec![Message::User {
            text: PROMPT.into(),
        }],
        tools: tools(),
        max_tokens: 512,
        timeout: Duration::from_secs(5),
        tool_choice: Default::default(),
    }
}

/// A second-turn request: the first turn, the assistant's calls (`ids`, `signature` on the
/// first), and their results.
pub fn second_turn(model: &str, ids: [&str; 2], signature: Option<&str>) -> ChatRequest {
    let mut request = first_turn(model);
    request.messages.push(Message::Assistant {
        text: None,
        tool_calls: vec![
            ToolCall {
                id: ids[0].into(),
                name: "take_snapshot".into(),
                arguments: json!({}),
                thought_signature: signature.map(str::to_string),
            },
            ToolCall {
                id: ids[1].into(),
                name: "set_state".into(),
                arguments: json!({"state": "degraded", "reason": "CPU pegged"}),
                thought_signature: None,
            },
        ],
    });
    request.messages.push(Message::Tool {
        results: vec![
            ToolResult {
                call_id: ids[0].into(),
                name: "take_snapshot".into(),
                content: r#"{"cpu_percent":100.0}"#.into(),
                is_error: false,
            },
            ToolResult {
                call_id: ids[1].into(),
                name: "set_state".into(),
                content: r#"{"ok":true}"#.into(),
                is_error: false,
            },
        ],
    });
    request
}

/// The JSON bodies of every request the server received.
pub async fn bodies(server: &MockServer) -> Vec<Value> {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).expect("request body is JSON"))
        .collect()
}

/// How many requests the server received.
pub async fn request_count(server: &MockServer) -> usize {
    server.received_requests().await.unwrap_or_default().len()
}

/// A port nobody listens on.
pub fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
