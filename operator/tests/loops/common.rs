//! Test doubles shared by the integration tests: a skill whose snapshot the test controls
//! and providers that sleep or fail.

#![allow(dead_code)]

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use llm::{
    ChatRequest, ChatResponse, Message, Provider, ProviderError, ProviderErrorKind, StopReason,
    TokenUsage, ToolResult,
};
use operator::mock::tool_call;
use operator::{AlertRule, CallbackSpec, Skill, ToolError};
use serde_json::{Value, json};

/// The demo's rule: processes > 10 → process_spike / warning.
pub fn process_rule() -> AlertRule {
    AlertRule::process_spike(10.0)
}

/// A skill whose snapshot is whatever the test set.
#[derive(Debug)]
pub struct FakeSkill {
    pub data: Mutex<Value>,
    pub rule: Option<AlertRule>,
    pub snapshots_taken: AtomicU32,
}

impl FakeSkill {
    pub fn new(data: Value) -> Self {
        FakeSkill {
            data: Mutex::new(data),
            rule: Some(process_rule()),
            snapshots_taken: AtomicU32::new(0),
        }
    }
}

#[async_trait::async_trait]
impl Skill for FakeSkill {
    fn title(&self) -> &str {
        "Fake"
    }

    fn description(&self) -> &str {
        "Fake: a snapshot the test controls"
    }

    fn system_prompt(&self) -> String {
        match &self.rule {
            Some(r) => r.prompt_instructions(),
            None => "Watch the fake.".into(),
        }
    }

    async fn snapshot(&self) -> Value {
        self.snapshots_taken.fetch_add(1, Ordering::SeqCst);
        self.data.lock().unwrap().clone()
    }

    fn callbacks(&self) -> Vec<CallbackSpec> {
        vec![
            CallbackSpec {
                name: "echo".into(),
                doc: "Returns its arguments.".into(),
                parameters: json!({"type": "object", "properties": {"x": {"type": "integer"}}}),
            },
            CallbackSpec::no_args("broken", "Always fails."),
            // Clashes with a built-in: must not be offered.
            CallbackSpec::no_args("done", "Impostor."),
        ]
    }

    async fn call(&self, name: &str, args: Value) -> Result<Value, ToolError> {
        match name {
            "echo" => Ok(json!({"echo": args})),
            "broken" => Err("broken on purpose".into()),
            other => Err(ToolError::UnknownCallback(other.to_string())),
        }
    }

    fn alert_rule(&self) -> Option<AlertRule> {
        self.rule.clone()
    }
}

/// A provider that sleeps for `delay` before answering `done`.
#[derive(Debug)]
pub struct SleepyProvider {
    pub delay: Duration,
}

#[async_trait::async_trait]
impl Provider for SleepyProvider {
    fn name(&self) -> &str {
        "sleepy"
    }

    fn model(&self) -> &str {
        "sleepy"
    }

    async fn chat(&self, _request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        tokio::time::sleep(self.delay).await;
        Ok(ChatResponse {
            text: None,
            tool_calls: vec![tool_call("done", json!({}))],
            stop_reason: StopReason::ToolUse,
            usage: TokenUsage::default(),
        })
    }
}

/// A provider that answers `take_snapshot` once (with some usage), then fails.
#[derive(Debug, Default)]
pub struct FailingProvider {
    pub calls: AtomicU32,
}

#[async_trait::async_trait]
impl Provider for FailingProvider {
    fn name(&self) -> &str {
        "failing"
    }

    fn model(&self) -> &str {
        "failing-1"
    }

    async fn chat(&self, _request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
            let mut call = tool_call("take_snapshot", json!({}));
            call.id = "c1".into();
            return Ok(ChatResponse {
                text: Some("looking".into()),
                tool_calls: vec![call],
                stop_reason: StopReason::ToolUse,
                usage: TokenUsage {
                    input_tokens: 100,
                    output_tokens: 7,
                },
            });
        }
        Err(ProviderError {
            provider: "failing".into(),
            kind: ProviderErrorKind::Overloaded,
            status: Some(529),
            message: "overloaded".into(),
            retry_after: None,
            retryable: true,
        })
    }
}

/// All tool results in a transcript, in order.
pub fn tool_results(transcript: &[Message]) -> Vec<ToolResult> {
    transcript
        .iter()
        .flat_map(|m| match m {
            Message::Tool { results } => results.clone(),
            _ => Vec::new(),
        })
        .collect()
}

/// The tool result for `name`, the `nth` of that name (0-based).
pub fn result_for(transcript: &[Message], name: &str, nth: usize) -> ToolResult {
    tool_results(transcript)
        .into_iter()
        .filter(|r| r.name == name)
        .nth(nth)
        .unwrap_or_else(|| panic!("no result #{nth} for {name}"))
}

/// The JSON content of a tool result.
pub fn content(r: &ToolResult) -> Value {
    serde_json::from_str(&r.content).expect("tool result content is JSON")
}
