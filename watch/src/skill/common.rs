//! What the kernel-reading skills share: the sandbox they watch, the error a failed read
//! becomes, and the label that says where every figure comes from.

use operator::ToolError;
use sandbox::Manager;
use serde_json::{Value, json};

/// One sandbox watched by one of the kernel-reading skills.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Whose measurements the skill reads.
    pub manager: Manager,
    /// The watched sandbox.
    pub id: String,
}

impl Target {
    /// Sandbox `id` of `manager`.
    pub fn new(manager: Manager, id: impl Into<String>) -> Target {
        Target {
            manager,
            id: id.into(),
        }
    }

    /// A snapshot that says the figures could not be read, and why.
    pub fn failed_snapshot(&self, why: impl std::fmt::Display) -> Value {
        json!({"sandbox_id": self.id, "error": why.to_string()})
    }
}

/// A read that failed, as the model is told.
pub(crate) fn failed(e: impl std::fmt::Display) -> ToolError {
    ToolError::Callback(e.to_string())
}

/// `used / limit` in percent, one decimal; `None` without a limit.
pub(crate) fn percent(used: f64, limit: Option<f64>) -> Option<f64> {
    let limit = limit.filter(|l| *l > 0.0 && l.is_finite())?;
    Some((used / limit * 1000.0).round() / 10.0)
}

/// The prompt every kernel-reading skill shares after its own first line: its figures are
/// the host's, and how to react to its rule.
pub(crate) fn prompt(what: &str, id: &str, rule: &operator::AlertRule) -> String {
    format!(
        "You watch {what} of one native sandbox (id {id}). Every figure in the snapshot is \
         the host's own measurement (cgroupfs, /proc, the manager's records), never the app's \
         word; text quoted from the app is escaped and labelled as the app's. Do not use \
         think. A figure marked not available is not zero: say so rather than guess.\n{}\n\
         Keep responses short and complete within 5 iterations.",
        rule.prompt_instructions()
    )
}
