//! [`ToolError`]: why a tool call failed, built-in tool or skill callback.

use serde_json::{Value, json};

use crate::outcome::ParseNameError;

/// Why a tool call failed. The model gets it back as the call's result,
/// `{"error": "<message>"}`, and the run goes on.
///
/// A skill's callback reports its own failures as [`ToolError::Callback`]; a `String` or a
/// `&str` converts into one (with `?` or `.into()`).
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The model called a tool that was not offered (natively, or in a call written as
    /// JSON text): `unknown tool `health`; the tools are take_snapshot, set_state, done`.
    #[error(
        "unknown tool `{name}`{}",
        if offered.is_empty() { String::new() } else { format!("; the tools are {}", offered.join(", ")) }
    )]
    UnknownTool {
        /// The name the model wrote.
        name: String,
        /// The tools it was offered.
        offered: Vec<String>,
    },
    /// A skill was asked for a callback it does not have.
    #[error("unknown callback: {0}")]
    UnknownCallback(String),
    /// The arguments are not a JSON object.
    #[error("invalid arguments for {tool}: expected a JSON object, got {got}")]
    NotAnObject {
        /// The tool called.
        tool: String,
        /// What the model sent.
        got: Value,
    },
    /// The arguments do not fit the tool's parameters.
    #[error("invalid arguments for {tool}: {source}")]
    BadArguments {
        /// The tool called.
        tool: String,
        /// Why they do not fit.
        #[source]
        source: serde_json::Error,
    },
    /// A state or severity that is not one of the allowed names.
    #[error("invalid arguments for {tool}: {source}")]
    BadName {
        /// The tool called.
        tool: &'static str,
        /// The name that was refused.
        #[source]
        source: ParseNameError,
    },
    /// `wait` for a negative or non-finite time.
    #[error("invalid arguments for wait: ms must be a non-negative number")]
    BadWait,
    /// `get_snapshot` for an id that names no stored snapshot.
    #[error("snapshot_not_found")]
    SnapshotNotFound {
        /// The id asked for.
        id: String,
    },
    /// `"latest"` (or no id) was asked for before any snapshot was taken.
    #[error("snapshot_ids requested \"latest\" but no snapshots available")]
    NoSnapshots,
    /// Snapshot ids that name no stored snapshot, in the order asked.
    #[error("snapshots not found: {}", .0.join(", "))]
    SnapshotsNotFound(Vec<String>),
    /// A skill's callback failed: its own words.
    #[error("{0}")]
    Callback(String),
}

impl ToolError {
    /// The result the model sees: `{"error": "<message>"}`, plus the `id` asked for when a
    /// snapshot is not found.
    pub fn to_json(&self) -> Value {
        match self {
            ToolError::SnapshotNotFound { id } => json!({"error": self.to_string(), "id": id}),
            _ => json!({"error": self.to_string()}),
        }
    }
}

impl From<String> for ToolError {
    fn from(message: String) -> Self {
        ToolError::Callback(message)
    }
}

impl From<&str> for ToolError {
    fn from(message: &str) -> Self {
        ToolError::Callback(message.to_string())
    }
}
