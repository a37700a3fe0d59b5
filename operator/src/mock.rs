//! A deterministic, offline [`Provider`] for tests and `BEAMLENS_DEMO_PROVIDER=mock`.
//!
//! Two modes:
//! - [`MockProvider::scripted`] replays queued tool calls turn by turn, ignoring the
//!   conversation, then answers `done` forever.
//! - [`MockProvider::careful`] reads the conversation and acts like a careful model on an
//!   [`AlertRule`]: it takes a snapshot, compares the rule's metric with the threshold
//!   from the actual snapshot data, and reports accordingly.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use llm::{
    ChatRequest, ChatResponse, Message, Provider, ProviderError, StopReason, TokenUsage, ToolCall,
};
use serde_json::{Value, json};

use crate::outcome::{HealthState, Severity};
use crate::skill::{AlertRule, format_number};
use crate::tools::{DONE, LATEST, SEND_NOTIFICATION, SET_STATE, TAKE_SNAPSHOT};

/// Notification type the careful mock uses when the snapshot carries an `error`.
pub const SNAPSHOT_ERROR_TYPE: &str = "snapshot_error";

use crate::mock_calls::latest_snapshot_data;
pub use crate::mock_calls::tool_call;

/// What the mock does each turn.
#[derive(Debug)]
enum Mode {
    /// Replay these replies, then `done`.
    Scripted(Mutex<VecDeque<Vec<ToolCall>>>),
    /// Decide from the conversation and the rule.
    Careful(Option<AlertRule>),
    /// Coordinate: correlate the members' notifications, answer questions
    /// (`crate::coordinator_mock`).
    Coordinator,
    /// Careful, after calling every offered callback once (`crate::mock_explore`).
    Exploring(Option<AlertRule>),
}

/// A deterministic, offline provider. `name()` and `model()` are both `mock`.
#[derive(Debug)]
pub struct MockProvider {
    /// Scripted or careful.
    mode: Mode,
    /// Next number for a `mock_<n>` call id.
    next_id: AtomicU64,
    /// Every request received, for tests.
    requests: Mutex<Vec<ChatRequest>>,
}

impl MockProvider {
    /// Replays `turns` one reply per request (the messages are ignored); once they are
    /// exhausted every reply is a single `done` call. Calls with an empty id get
    /// `mock_<n>`.
    pub fn scripted(turns: Vec<Vec<ToolCall>>) -> Self {
        Self::with_mode(Mode::Scripted(Mutex::new(turns.into())))
    }

    /// A policy that acts like a careful model, from the conversation:
    ///
    /// 1. While no successful `take_snapshot` result is in the conversation: `take_snapshot`.
    /// 2. Then, from the newest snapshot's `data`, in one reply:
    ///    - `data.error` present: `send_notification("snapshot_error", "critical",
    ///      "snapshot failed: <error>", ["latest"])`, `set_state("critical", ...)`, `done`
    ///      (an operator that cannot measure raises the alarm);
    ///    - no rule: `set_state("healthy", "no alert rule; snapshot taken")`, `done`;
    ///    - the rule's metric missing: `set_state("observing", "<metric> missing ...")`,
    ///      `done`;
    ///    - metric above the threshold (for a multi-sandbox snapshot, the max over
    ///      `sandboxes`): `send_notification(rule.notification_type, rule.severity,
    ///      rule.summary, ["latest"])`, `set_state(<state for severity>, "<metric> <v>
    ///      above threshold <t>")`, `done`;
    ///    - otherwise: `set_state("healthy", "<metric> <v> normal (threshold <t>)")`, `done`.
    /// 3. After it has called `done` once: `done`.
    pub fn careful(rule: Option<AlertRule>) -> Self {
        Self::with_mode(Mode::Careful(rule))
    }

    /// A careful coordinator, from the conversation: `take_snapshot`, then one
    /// `record_insight` per notification type across the members (tied to the host event that
    /// explains it, citing the figures read), or, when a question was asked, `answer` from
    /// the members' figures; then `set_state` and `done` (see `crate::coordinator_mock`).
    pub fn coordinator() -> Self {
        Self::with_mode(Mode::Coordinator)
    }

    /// [`MockProvider::careful`], except that between the snapshot and the verdict it calls
    /// every tool the skill offers besides the built-ins, once each, with arguments made from
    /// their schemas: so each skill's tools are played offline (see `crate::mock_explore`).
    pub fn exploring(rule: Option<AlertRule>) -> Self {
        Self::with_mode(Mode::Exploring(rule))
    }

    /// A provider in `mode`.
    fn with_mode(mode: Mode) -> Self {
        MockProvider {
            mode,
            next_id: AtomicU64::new(1),
            requests: Mutex::new(Vec::new()),
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<ChatRequest> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The careful policy's reply to `messages`.
    fn careful_reply(rule: Option<&AlertRule>, messages: &[Message]) -> Vec<ToolCall> {
        let called_done = messages.iter().any(|m| {
            matches!(m, Message::Assistant { tool_calls, .. }
                if tool_calls.iter().any(|c| c.name == DONE))
        });
        if called_done {
            return vec![tool_call(DONE, json!({}))];
        }
        let Some(data) = latest_snapshot_data(messages) else {
            return vec![tool_call(TAKE_SNAPSHOT, json!({}))];
        };
        let done = tool_call(DONE, json!({}));
        let set_state = |state: HealthState, reason: String| {
            tool_call(SET_STATE, json!({"state": state, "reason": reason}))
        };
        if let Some(err) = data.get("error").filter(|e| !e.is_null()) {
            let err = match err {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let reason = format!("snapshot failed: {err}");
            return vec![
                tool_call(
                    SEND_NOTIFICATION,
                    json!({
                        "type": SNAPSHOT_ERROR_TYPE,
                        "severity": Severity::Critical,
                        "summary": reason,
                        "snapshot_ids": [LATEST],
                    }),
                ),
                set_state(HealthState::Critical, reason),
                done,
            ];
        }
        let Some(rule) = rule else {
            return vec![
                set_state(HealthState::Healthy, "no alert rule; snapshot taken".into()),
                done,
            ];
        };
        let threshold = rule.threshold_text();
        match rule.metric_value(&data) {
            None => vec![
                set_state(
                    HealthState::Observing,
                    format!("{} missing from snapshot", rule.metric),
                ),
                done,
            ],
            Some(v) if v > rule.above => vec![
                tool_call(
                    SEND_NOTIFICATION,
                    json!({
                        "type": rule.notification_type,
                        "severity": rule.severity,
                        "summary": rule.summary,
                        "snapshot_ids": [LATEST],
                    }),
                ),
                set_state(
                    rule.breach_state(),
                    format!(
                        "{} {} above threshold {threshold}",
                        rule.metric,
                        format_number(v)
                    ),
                ),
                done,
            ],
            Some(v) => vec![
                set_state(
                    HealthState::Healthy,
                    format!(
                        "{} {} normal (threshold {threshold})",
                        rule.metric,
                        format_number(v)
                    ),
                ),
                done,
            ],
        }
    }
}

#[async_trait::async_trait]
impl Provider for MockProvider {
    fn name(&self) -> &str {
        "mock"
    }

    fn model(&self) -> &str {
        "mock"
    }

    async fn chat(&self, request: &ChatRequest) -> Result<ChatResponse, ProviderError> {
        self.requests
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(request.clone());
        let mut calls = match &self.mode {
            Mode::Scripted(queue) => queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front()
                .unwrap_or_else(|| vec![tool_call(DONE, json!({}))]),
            Mode::Careful(rule) => Self::careful_reply(rule.as_ref(), &request.messages),
            Mode::Coordinator => crate::coordinator_mock::reply(&request.messages),
            Mode::Exploring(rule) => {
                crate::mock_explore::exploring_reply(rule.as_ref(), request, Self::careful_reply)
            }
        };
        for call in &mut calls {
            if call.id.is_empty() {
                call.id = format!("mock_{}", self.next_id.fetch_add(1, Ordering::Relaxed));
            }
        }
        let stop_reason = if calls.is_empty() {
            StopReason::EndTurn
        } else {
            StopReason::ToolUse
        };
        Ok(ChatResponse {
            text: None,
            tool_calls: calls,
            stop_reason,
            usage: TokenUsage::default(),
        })
    }
}
