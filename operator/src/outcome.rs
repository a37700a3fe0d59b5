//! What a run produces: health states, snapshots, notifications and the [`Outcome`].

use std::fmt;
use std::str::FromStr;

use llm::{Message, ProviderError, ProviderErrorKind, TokenUsage};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The operator's verdict on what it watches. A run starts `unknown` (no verdict) and only
/// the model's `set_state` gives it one; any `set_state` to one of the four verdicts is
/// accepted (no transition rules). `unknown` is never a verdict the model can set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    /// No verdict: the model has not called `set_state`.
    #[default]
    Unknown,
    /// Nothing wrong.
    Healthy,
    /// Something worth watching, not yet a problem.
    Observing,
    /// A problem that needs attention.
    Warning,
    /// A serious problem.
    Critical,
}

impl HealthState {
    /// The lowercase name used on the wire and in prompts.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Unknown => "unknown",
            HealthState::Healthy => "healthy",
            HealthState::Observing => "observing",
            HealthState::Warning => "warning",
            HealthState::Critical => "critical",
        }
    }

    /// Whether this is a verdict the model gave (anything but `unknown`).
    pub fn is_verdict(self) -> bool {
        self != HealthState::Unknown
    }
}

impl fmt::Display for HealthState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the allowed names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: expected one of {expected}")]
pub struct ParseNameError {
    /// What was parsed (`state` or `severity`).
    pub what: &'static str,
    /// The rejected input.
    pub value: String,
    /// The allowed names, `|`-separated.
    pub expected: &'static str,
}

impl FromStr for HealthState {
    type Err = ParseNameError;

    /// Parses a verdict name, ignoring case and surrounding whitespace; `unknown` is not
    /// a verdict and is refused.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "healthy" => Ok(HealthState::Healthy),
            "observing" => Ok(HealthState::Observing),
            "warning" => Ok(HealthState::Warning),
            "critical" => Ok(HealthState::Critical),
            _ => Err(ParseNameError {
                what: "state",
                value: s.to_string(),
                expected: "healthy|observing|warning|critical",
            }),
        }
    }
}

/// How serious a notification is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// For information.
    Info,
    /// Needs attention.
    Warning,
    /// Needs attention now.
    Critical,
}

impl Severity {
    /// The lowercase name used on the wire and in prompts.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = ParseNameError;

    /// Parses a severity name, ignoring case and surrounding whitespace.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "info" => Ok(Severity::Info),
            "warning" => Ok(Severity::Warning),
            "critical" => Ok(Severity::Critical),
            _ => Err(ParseNameError {
                what: "severity",
                value: s.to_string(),
                expected: "info|warning|critical",
            }),
        }
    }
}

/// One stored measurement, as the `take_snapshot` tool returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// 16 lowercase hex digits.
    pub id: String,
    /// RFC 3339 UTC time of capture, e.g. `2025-01-02T03:04:05.678Z`.
    pub captured_at: String,
    /// What [`crate::Skill::snapshot`] returned.
    pub data: Value,
}

/// A notification the model raised with `send_notification`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// 16 lowercase hex digits.
    pub id: String,
    /// The model's anomaly type, e.g. `process_spike`.
    #[serde(rename = "type")]
    pub kind: String,
    /// How serious it is.
    pub severity: Severity,
    /// The model's one-line summary.
    pub summary: String,
    /// Ids of the stored snapshots it refers to (`"latest"` already resolved).
    pub snapshot_ids: Vec<String>,
    /// RFC 3339 UTC time it was recorded.
    pub detected_at: String,
}

/// Why a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stop {
    /// The model called `done`.
    Done,
    /// `max_iterations` model requests were made without `done` (a normal completion).
    IterationCap,
    /// The overall deadline passed.
    Deadline,
    /// The caller cancelled the run.
    Cancelled,
    /// The provider failed (after its own retries).
    LlmError,
}

impl Stop {
    /// The snake_case name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Stop::Done => "done",
            Stop::IterationCap => "iteration_cap",
            Stop::Deadline => "deadline",
            Stop::Cancelled => "cancelled",
            Stop::LlmError => "llm_error",
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failure that ended a run early. Serialisable, unlike [`ProviderError`].
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RunError {
    /// The provider returned an error (its retry policy already gave up).
    #[error("llm error from {provider}: {kind:?}{}: {message}", status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Llm {
        /// Provider id.
        provider: String,
        /// Class of failure.
        kind: ProviderErrorKind,
        /// HTTP status, when there was a response.
        status: Option<u16>,
        /// The vendor's message, or the provider's.
        message: String,
    },
}

impl From<&ProviderError> for RunError {
    fn from(e: &ProviderError) -> Self {
        RunError::Llm {
            provider: e.provider.clone(),
            kind: e.kind,
            status: e.status,
            message: e.message.clone(),
        }
    }
}

/// The result of one operator run. Everything gathered is kept, however the run ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The last state the model set; `unknown` if it set none (see [`Outcome::no_verdict`]).
    pub state: HealthState,
    /// The newest notification's summary (see [`summarize`]), else `"sandbox stable"`, or
    /// [`NO_VERDICT_SUMMARY`] when there is neither a notification nor a verdict.
    pub summary: String,
    /// Notifications recorded, oldest first.
    pub notifications: Vec<Notification>,
    /// Snapshots taken, oldest first.
    pub snapshots: Vec<Snapshot>,
    /// Model requests made (one iteration = one request, including a failed one).
    pub iterations: u32,
    /// Tokens spent over all requests.
    pub usage: TokenUsage,
    /// The conversation, as sent to the model plus its last reply and tool results.
    pub transcript: Vec<Message>,
    /// Why the run ended.
    pub stop: Stop,
    /// The failure, when `stop` is `llm_error`.
    pub error: Option<RunError>,
    /// Why the run ended, in words: e.g. `the model called done`, `the provider did not
    /// answer within 3000 ms`, `4 iterations without set_state`.
    #[serde(default)]
    pub stop_reason: String,
    /// The tools the model called because the request named them ([`llm::ToolChoice`]),
    /// in order: each one a turn whose first reply had no tool call (and every turn after
    /// the first such one). Empty when the model called its tools on its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forced: Vec<String>,
}

impl Outcome {
    /// `Some("operator gave no verdict: <why>")` when the model never called `set_state`;
    /// `None` when `state` is a verdict the model gave.
    pub fn no_verdict(&self) -> Option<String> {
        (!self.state.is_verdict())
            .then(|| format!("operator gave no verdict: {}", self.stop_reason))
    }
}

/// Summary used when there is no notification.
pub const STABLE_SUMMARY: &str = "sandbox stable";

/// Summary of a run with neither a notification nor a verdict.
pub const NO_VERDICT_SUMMARY: &str = "no verdict";

/// Maximum summary length in characters.
pub const SUMMARY_MAX_CHARS: usize = 80;

/// The run summary: the newest (last) notification's summary with whitespace collapsed to
/// single spaces and trimmed, cut to 77 characters plus `"..."` when longer than 80;
/// `"sandbox stable"` when there are no notifications.
pub fn summarize(notifications: &[Notification]) -> String {
    match notifications.last() {
        None => STABLE_SUMMARY.to_string(),
        Some(n) => truncate_summary(&n.summary),
    }
}

/// Collapses whitespace and truncates to [`SUMMARY_MAX_CHARS`] (77 + `"..."`).
pub fn truncate_summary(text: &str) -> String {
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if collapsed.chars().count() <= SUMMARY_MAX_CHARS {
        collapsed
    } else {
        let mut cut: String = collapsed.chars().take(SUMMARY_MAX_CHARS - 3).collect();
        cut.push_str("...");
        cut
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(summary: &str) -> Notification {
        Notification {
            id: "0".repeat(16),
            kind: "t".into(),
            severity: Severity::Info,
            summary: summary.into(),
            snapshot_ids: vec![],
            detected_at: String::new(),
        }
    }

    #[test]
    fn summary_rules() {
        assert_eq!(summarize(&[]), "sandbox stable");
        assert_eq!(
            summarize(&[note("old"), note("  new \n\t one ")]),
            "new one"
        );
        let exact = "x".repeat(80);
        assert_eq!(summarize(&[note(&exact)]), exact);
        let long = "é".repeat(81);
        let s = summarize(&[note(&long)]);
        assert_eq!(s.chars().count(), 80);
        assert!(s.ends_with("...") && s.starts_with(&"é".repeat(77)));
    }

    #[test]
    fn names_parse_and_print() {
        assert_eq!(" Warning ".parse::<HealthState>(), Ok(HealthState::Warning));
        assert!("purple".parse::<HealthState>().is_err());
        assert_eq!("CRITICAL".parse::<Severity>(), Ok(Severity::Critical));
        assert_eq!(Stop::IterationCap.to_string(), "iteration_cap");
        assert_eq!(
            serde_json::to_string(&Stop::LlmError).unwrap(),
            "\"llm_error\""
        );
    }
}
