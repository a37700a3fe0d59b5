//! What a coordinator produces: [`Insight`]s (which notifications belong together, how they
//! are correlated, a root-cause hypothesis, the observations it rests on, whether it is
//! grounded, a confidence), the [`Answer`] to a question with the [`Figure`]s it used, and the
//! later looks it [`Scheduled`]. Also the coordinator's tools: their names, specs and
//! arguments, so that any skill (and the mock) can offer and play them.
//!
//! This crate knows nothing of sandboxes: the coordinator over sandboxes is elsewhere. What
//! it shows the model (its snapshot) has this shape, which the mock reads:
//!
//! ```text
//! {"members": [{"source": "sandbox w-1", "sandbox_id": "w-1", "snapshot_id": "…",
//!               "data": {…the member skill's snapshot…},
//!               "notifications": [{"id", "type", "severity", "summary"}],
//!               "events": [{"event": "sandbox.workers_added", "count": 25, …}]}], …}
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::outcome::HealthState;
use crate::skill::CallbackSpec;

/// Records an insight: `notification_ids`, `correlation`, `hypothesis`, `observations`,
/// `state`, `confidence`.
pub const RECORD_INSIGHT: &str = "record_insight";
/// Asks for a later look: `ms`, `reason` (capped).
pub const SCHEDULE: &str = "schedule";
/// Answers the question asked: `text`, `figures`.
pub const ANSWER: &str = "answer";
/// Calls one member skill's tool: `source`, `tool`, `args`.
pub const CALL_SKILL: &str = "call_skill";

/// Insights one coordinator run keeps, at most.
pub const MAX_INSIGHTS: usize = 8;
/// Observations (or figures) one insight (or answer) keeps, at most.
pub const MAX_OBSERVATIONS: usize = 16;
/// Notification ids one insight keeps, at most.
pub const MAX_NOTIFICATION_IDS: usize = 32;
/// Longest hypothesis, answer or reason kept, in bytes.
pub const MAX_TEXT: usize = 1024;

/// How the notifications of an insight belong together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Correlation {
    /// They happened at the same time; no link is claimed.
    Temporal,
    /// One caused the other (or a named event caused them).
    Causal,
    /// They are symptoms of one common cause.
    Symptomatic,
}

impl Correlation {
    /// The lowercase name used on the wire, in metrics and in prompts.
    pub fn as_str(self) -> &'static str {
        match self {
            Correlation::Temporal => "temporal",
            Correlation::Causal => "causal",
            Correlation::Symptomatic => "symptomatic",
        }
    }
}

impl fmt::Display for Correlation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One figure a claim rests on: the value at `metric` (a key, or a dotted path such as
/// `members.0.events.1.count`) of the snapshot `snapshot_id`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// The snapshot cited: a member's or the coordinator's own.
    pub snapshot_id: String,
    /// The key or dotted path in that snapshot's data.
    pub metric: String,
    /// The value the model says it read there.
    pub value: Value,
}

/// A correlation of notifications with a root-cause hypothesis, checked against what the
/// snapshots hold and what the kernel says now (see the coordinator's guardrail).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Insight {
    /// 16 lowercase hex digits.
    pub id: String,
    /// The notifications that belong together.
    pub notification_ids: Vec<String>,
    /// How they belong together.
    pub correlation: Correlation,
    /// The root-cause hypothesis (the model's words).
    pub hypothesis: String,
    /// The figures it rests on.
    pub observations: Vec<Observation>,
    /// The state the model claims for what the insight covers. An ungrounded insight is
    /// never raised as healthy: its claimed `healthy` becomes `unknown`.
    pub state: HealthState,
    /// The model's confidence, 0 to 1.
    pub confidence: f64,
    /// Whether every observation and notification it cites is in the snapshots and the
    /// kernel does not contradict its state. False until checked.
    pub grounded: bool,
    /// Why it is not grounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ungrounded: Option<String>,
    /// What it covers (sandbox ids), as the cited snapshots say.
    #[serde(default)]
    pub sources: Vec<String>,
}

/// A figure an answer used, and whether the snapshots hold it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Figure {
    /// What was cited.
    #[serde(flatten)]
    pub observation: Observation,
    /// The sandbox the cited snapshot is about, when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Whether the cited snapshot holds that value at that metric.
    pub grounded: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ungrounded: Option<String>,
}

/// The answer to a question, with the figures it used.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    /// The answer (the model's words).
    pub text: String,
    /// The figures it cites.
    pub figures: Vec<Figure>,
}

/// A later look the model asked for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduled {
    /// After how long (already capped).
    pub ms: u64,
    /// Why.
    pub reason: String,
}

/// Arguments of `record_insight`.
#[derive(Debug, Clone, Deserialize)]
pub struct InsightArgs {
    /// The notifications that belong together.
    #[serde(default)]
    pub notification_ids: Vec<String>,
    /// `temporal`, `causal` or `symptomatic`.
    pub correlation: Correlation,
    /// The root-cause hypothesis.
    pub hypothesis: String,
    /// The figures it rests on.
    #[serde(default)]
    pub observations: Vec<Observation>,
    /// The claimed state.
    pub state: String,
    /// 0 to 1 (clamped).
    pub confidence: f64,
}

/// Arguments of `schedule`.
#[derive(Debug, Clone, Deserialize)]
pub struct ScheduleArgs {
    /// After how long, in milliseconds.
    pub ms: f64,
    /// Why.
    #[serde(default)]
    pub reason: String,
}

/// Arguments of `answer`.
#[derive(Debug, Clone, Deserialize)]
pub struct AnswerArgs {
    /// The answer.
    pub text: String,
    /// The figures it used.
    #[serde(default)]
    pub figures: Vec<Observation>,
}

/// `text` cut to [`MAX_TEXT`] bytes at a char boundary.
pub fn clip(text: &str) -> String {
    if text.len() <= MAX_TEXT {
        return text.to_string();
    }
    let mut end = MAX_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The value at `path` (`a.b.0.c`: object keys and array indices) in `data`.
pub fn value_at<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(data, |v, key| match v {
        Value::Object(map) => map.get(key),
        Value::Array(list) => key.parse::<usize>().ok().and_then(|i| list.get(i)),
        _ => None,
    })
}

/// Whether a cited value is the one held: numbers within 0.5 % (a model rounds), anything
/// else equal.
pub fn same_value(cited: &Value, held: &Value) -> bool {
    match (cited.as_f64(), held.as_f64()) {
        (Some(a), Some(b)) => (a - b).abs() <= (b.abs() * 0.005).max(1e-9),
        _ => match (cited, held) {
            (Value::String(a), Value::String(b)) => a.trim().eq_ignore_ascii_case(b.trim()),
            (a, b) => a == b,
        },
    }
}

/// The observation schema the tools share.
fn observation_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "snapshot_id": {"type": "string", "description": "id of a snapshot you saw (a member's snapshot_id, or the id take_snapshot returned)"},
            "metric": {"type": "string", "description": "key in that snapshot's data, or a dotted path such as members.0.events.1.count"},
            "value": {"description": "the value you read there"}
        },
        "required": ["snapshot_id", "metric", "value"]
    })
}

/// The coordinator's tools as callbacks: `record_insight` and `schedule` always, `answer`
/// when a question was asked, `call_skill` when members have tools.
pub fn coordinator_tools(question: bool, members_have_tools: bool) -> Vec<CallbackSpec> {
    let mut tools = vec![
        CallbackSpec {
            name: RECORD_INSIGHT.into(),
            doc: "Record an insight: which notifications belong together (their ids), the \
                  correlation (temporal: same time, no link claimed; causal: one caused the \
                  other, or a host event caused them; symptomatic: symptoms of one common \
                  cause), a root-cause hypothesis, the observations it rests on (each a \
                  snapshot_id, metric and the value read there), the state and a confidence \
                  0..1. Observations are checked against the snapshots."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "notification_ids": {"type": "array", "items": {"type": "string"}},
                    "correlation": {"type": "string", "enum": ["temporal", "causal", "symptomatic"]},
                    "hypothesis": {"type": "string"},
                    "observations": {"type": "array", "items": observation_schema()},
                    "state": {"type": "string", "enum": ["healthy", "observing", "warning", "critical"]},
                    "confidence": {"type": "number", "minimum": 0, "maximum": 1}
                },
                "required": ["notification_ids", "correlation", "hypothesis", "observations", "state", "confidence"]
            }),
        },
        CallbackSpec {
            name: SCHEDULE.into(),
            doc: "Look again later instead of waiting now: ms until the next look (capped), \
                  and why. Then call done."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "ms": {"type": "integer", "minimum": 0},
                    "reason": {"type": "string"}
                },
                "required": ["ms", "reason"]
            }),
        },
    ];
    if question {
        tools.push(CallbackSpec {
            name: ANSWER.into(),
            doc: "Answer the question in a few sentences, citing the figures you used (each a \
                  snapshot_id, metric and value). Then set_state and done."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "text": {"type": "string"},
                    "figures": {"type": "array", "items": observation_schema()}
                },
                "required": ["text", "figures"]
            }),
        });
    }
    if members_have_tools {
        tools.push(CallbackSpec {
            name: CALL_SKILL.into(),
            doc: "Call one member's read-only tool: source (a member's source), tool (one of \
                  the member's tools listed in the snapshot) and its args. Returns \
                  {snapshot_id, data}: cite its figures with that snapshot_id."
                .into(),
            parameters: json!({
                "type": "object",
                "properties": {
                    "source": {"type": "string"},
                    "tool": {"type": "string"},
                    "args": {"type": "object"}
                },
                "required": ["source", "tool"]
            }),
        });
    }
    tools
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_reach_keys_and_indices() {
        let data = json!({"members": [{"events": [{"count": 25}]}], "processes": 28});
        assert_eq!(value_at(&data, "processes"), Some(&json!(28)));
        assert_eq!(
            value_at(&data, "members.0.events.0.count"),
            Some(&json!(25))
        );
        assert_eq!(value_at(&data, "members.1"), None);
        assert_eq!(value_at(&data, "processes.x"), None);
        assert!(same_value(&json!(28.0), &json!(28)));
        assert!(!same_value(&json!(27), &json!(28)));
        assert!(same_value(&json!("Running"), &json!("running")));
        assert!(clip(&"é".repeat(600)).ends_with('…'));
    }
}
