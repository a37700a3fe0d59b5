//! What the loop asks of the model next: the nudge after a reply without a tool call, and the
//! tool a forced turn names (snapshot, verdict, notification for a warning, done).

use crate::outcome::HealthState;
use crate::tool_names::{DONE, SEND_NOTIFICATION, SET_STATE, TAKE_SNAPSHOT};

/// Text sent when the model replies without calling a tool.
pub const NUDGE: &str = "You replied without calling a tool. Use the tools: take_snapshot, \
     send_notification, set_state, and call done when you are finished.";

/// The line that tells the model (and whoever reads the transcript) that this turn's
/// request names the tool it must call.
pub fn forced_line(tool: &str) -> String {
    format!("This request requires a call to {tool}: call it now (forced by the operator).")
}

/// The tool the workflow needs next, from what the run has: a snapshot, then a verdict,
/// then (for a warning or critical verdict, the model's own) a notification, then `done`.
pub fn next_tool(snapshots: usize, state: HealthState, notifications: usize) -> &'static str {
    if snapshots == 0 {
        TAKE_SNAPSHOT
    } else if !state.is_verdict() {
        SET_STATE
    } else if matches!(state, HealthState::Warning | HealthState::Critical) && notifications == 0 {
        SEND_NOTIFICATION
    } else {
        DONE
    }
}
