//! Anthropic Messages API: `POST {base}/v1/messages`.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::common::{arguments_object, max_tokens, model_for, non_empty, object_schema, push_turn};
use crate::config::{ConfigError, ProviderConfig, ProviderKind};
use crate::http::Client;
use crate::types::{
    ChatRequest, ChatResponse, Message, Provider, ProviderError, StopReason, TokenUsage, ToolCall,
};

/// The API version header value.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// A client of Anthropic's Messages API.
#[derive(Debug, Clone)]
pub struct AnthropicProvider {
    client: Client,
}

impl AnthropicProvider {
    /// A provider from explicit config. Fails on an empty key or a base URL that is not
    /// `http(s)://`.
    pub fn new(config: ProviderConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            client: Client::new(ProviderKind::Anthropic, config)?,
        })
    }

    /// A provider from `ANTHROPIC_API_KEY`, `ANTHROPIC_BASE_URL` and `BEAMLENS_DEMO_MODEL`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::new(ProviderConfig::from_env(ProviderKind::Anthropic)?)
    }

    /// The config this provider was built from.
    pub fn config(&self) -> &ProviderConfig {
        &self.client.config
    }

    /// The endpoint requests go to.
    pub fn endpoint(&self) -> String {
        format!("{}/v1/messages", self.client.base_url)
    }
}

#[async_trait::async_trait]
impl Provider for AnthropicProvider {
    fn name(&self) -> &str {
        self.client.name()
    }

    fn model(&self) -> &str {
        &self.client.config.model
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        let body = to_wire(request, model_for(request, self.model()));
        let headers = [
            ("x-api-key", self.client.config.api_key.clone()),
            ("anthropic-version", ANTHROPIC_VERSION.to_string()),
        ];
        let parse = |wire, _| Ok(from_wire(wire));
        let url = self.endpoint();
        self.client
            .chat(request, &url, &headers, &body, parse)
            .await
    }
}

/// The request body.
pub(crate) fn to_wire(request: &ChatRequest, model: &str) -> Value {
    let mut body = json!({
        "model": model,
        "max_tokens": max_tokens(request),
        "messages": messages(&request.messages),
    });
    if !request.system.trim().is_empty() {
        body["system"] = json!(request.system);
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.name,
                    "description": tool.description,
                    "input_schema": object_schema(&tool.parameters),
                })
            })
            .collect();
        body["tool_choice"] = match request.tool_choice.forced() {
            Some(name) => json!({"type": "tool", "name": name}),
            None => json!({"type": "auto"}),
        };
    }
    body
}

/// Messages with content blocks; consecutive messages of one role are merged, so all tool
/// results of a turn (and any text after them) form ONE user message.
fn messages(messages: &[Message]) -> Vec<Value> {
    let mut turns = Vec::new();
    for message in messages {
        let (role, blocks) = match message {
            Message::User { text } => ("user", vec![json!({"type": "text", "text": text})]),
            Message::Assistant { text, tool_calls } => {
                let mut blocks = Vec::new();
                if let Some(text) = text.as_deref().filter(|t| !t.trim().is_empty()) {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in tool_calls {
                    blocks.push(json!({
                        "type": "tool_use",
                        "id": call.id,
                        "name": call.name,
                        "input": arguments_object(&call.arguments),
                    }));
                }
                ("assistant", blocks)
            }
            Message::Tool { results } => (
                "user",
                results
                    .iter()
                    .map(|r| {
                        json!({
                            "type": "tool_result",
                            "tool_use_id": r.call_id,
                            "content": r.content,
                            "is_error": r.is_error,
                        })
                    })
                    .collect(),
            ),
        };
        push_turn(&mut turns, role, blocks);
    }
    turns
        .into_iter()
        .map(|(role, content)| json!({"role": role, "content": content}))
        .collect()
}

/// The fields of a reply this client uses.
#[derive(Debug, Deserialize)]
pub(crate) struct WireResponse {
    content: Vec<WireBlock>,
    #[serde(default)]
    stop_reason: Option<String>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

/// The reply in the neutral model.
pub(crate) fn from_wire(wire: WireResponse) -> ChatResponse {
    let mut texts = Vec::new();
    let mut tool_calls = Vec::new();
    for block in wire.content {
        match block {
            WireBlock::Text { text } => texts.push(text),
            WireBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                name,
                arguments: if input.is_null() { json!({}) } else { input },
                thought_signature: None,
            }),
            WireBlock::Other => {}
        }
    }
    let stop_reason = match wire.stop_reason.as_deref() {
        Some("end_turn") => StopReason::EndTurn,
        Some("tool_use") => StopReason::ToolUse,
        Some("max_tokens") => StopReason::MaxTokens,
        Some(other) => StopReason::Other(other.to_string()),
        None if !tool_calls.is_empty() => StopReason::ToolUse,
        None => StopReason::EndTurn,
    };
    ChatResponse {
        text: non_empty(texts.join("\n")),
        tool_calls,
        stop_reason,
        usage: TokenUsage {
            input_tokens: wire.usage.input_tokens,
            output_tokens: wire.usage.output_tokens,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ToolResult;
    use std::time::Duration;

    #[test]
    fn tool_results_and_following_text_form_one_user_message() {
        let request = ChatRequest {
            model: String::new(),
            system: String::new(),
            messages: vec![
                Message::User { text: "go".into() },
                Message::Assistant {
                    text: Some("Looking.".into()),
                    tool_calls: vec![ToolCall {
                        id: "toolu_1".into(),
                        name: "take_snapshot".into(),
                        arguments: json!({}),
                        thought_signature: None,
                    }],
                },
                Message::Tool {
                    results: vec![ToolResult {
                        call_id: "toolu_1".into(),
                        name: "take_snapshot".into(),
                        content: "{}".into(),
                        is_error: true,
                    }],
                },
                Message::User {
                    text: "Iteration 2".into(),
                },
            ],
            tools: vec![],
            max_tokens: 0,
            timeout: Duration::from_secs(1),
            tool_choice: Default::default(),
        };
        let body = to_wire(&request, "m");
        assert!(body.get("system").is_none());
        assert!(body.get("tools").is_none());
        assert_eq!(body["max_tokens"], 1024);
        let messages = body["messages"].as_array().unwrap();
        assert_eq!(messages.len(), 3);
        assert_eq!(
            messages[1]["content"][0],
            json!({"type": "text", "text": "Looking."})
        );
        assert_eq!(messages[2]["role"], "user");
        assert_eq!(messages[2]["content"][0]["type"], "tool_result");
        assert_eq!(messages[2]["content"][0]["is_error"], true);
        assert_eq!(
            messages[2]["content"][1],
            json!({"type": "text", "text": "Iteration 2"})
        );
    }
}
