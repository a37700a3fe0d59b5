//! The names of the operator's built-in tools (what a skill may offer, what the loop forces),
//! apart from their specs and execution in `tools`, so that a skill can name them.

/// Takes a snapshot: no arguments; result `{"id","captured_at","data"}`.
pub const TAKE_SNAPSHOT: &str = "take_snapshot";
/// Returns one stored snapshot: `id` (or `"latest"`).
pub const GET_SNAPSHOT: &str = "get_snapshot";
/// Lists stored snapshots, newest first: `limit`, `offset`.
pub const GET_SNAPSHOTS: &str = "get_snapshots";
/// Records a notification: `type`, `severity`, `summary`, `snapshot_ids`.
pub const SEND_NOTIFICATION: &str = "send_notification";
/// Lists this run's notifications.
pub const GET_NOTIFICATIONS: &str = "get_notifications";
/// Sets the health state: `state`, `reason`.
pub const SET_STATE: &str = "set_state";
/// Records a thought: `thought`.
pub const THINK: &str = "think";
/// Sleeps: `ms`, capped at `tools::WAIT_CAP` and at the deadline.
pub const WAIT: &str = "wait";
/// Ends the run after the current reply.
pub const DONE: &str = "done";

/// Names of all built-in tools, in the order they are offered.
pub const BUILTIN_TOOLS: [&str; 9] = [
    TAKE_SNAPSHOT,
    GET_SNAPSHOT,
    GET_SNAPSHOTS,
    SEND_NOTIFICATION,
    GET_NOTIFICATIONS,
    SET_STATE,
    THINK,
    WAIT,
    DONE,
];

/// The built-in tools every run offers, whatever the skill says: without them the loop
/// cannot reach a verdict or end.
pub const REQUIRED: [&str; 3] = [TAKE_SNAPSHOT, SET_STATE, DONE];
