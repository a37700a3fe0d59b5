//! The operator's built-in tools: their specs, argument parsing, `"latest"` snapshot
//! resolution, and the execution of one tool call against a run's state.

use std::time::Duration;

use llm::{ToolCall, ToolResult, ToolSpec};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::ids::{new_id, now_rfc3339};
use crate::outcome::{HealthState, Notification, Severity, Snapshot};
use crate::skill::Skill;

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
/// Sleeps: `ms`, capped at [`WAIT_CAP`] and at the deadline.
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

/// Longest single `wait`.
pub const WAIT_CAP: Duration = Duration::from_secs(5);

/// Default `limit` of `get_snapshots`.
pub const DEFAULT_SNAPSHOT_PAGE: usize = 10;

/// The word that stands for the most recent snapshot in `snapshot_ids` and `get_snapshot`.
pub const LATEST: &str = "latest";

/// Specs of the built-in tools, in the order of [`BUILTIN_TOOLS`].
pub fn builtin_tool_specs() -> Vec<ToolSpec> {
    let no_args = || json!({"type": "object", "properties": {}});
    let spec = |name: &str, description: &str, parameters: Value| ToolSpec {
        name: name.to_string(),
        description: description.to_string(),
        parameters,
    };
    vec![
        spec(
            TAKE_SNAPSHOT,
            "Measure now and store the snapshot. Returns {id, captured_at, data}. \
             The data is the source of truth.",
            no_args(),
        ),
        spec(
            GET_SNAPSHOT,
            "Return one stored snapshot by id (\"latest\" = the most recent).",
            json!({
                "type": "object",
                "properties": {"id": {"type": "string", "description": "snapshot id or \"latest\""}},
                "required": ["id"]
            }),
        ),
        spec(
            GET_SNAPSHOTS,
            "List stored snapshots, newest first.",
            json!({
                "type": "object",
                "properties": {
                    "limit": {"type": "integer", "minimum": 0, "description": "default 10"},
                    "offset": {"type": "integer", "minimum": 0, "description": "default 0"}
                }
            }),
        ),
        spec(
            SEND_NOTIFICATION,
            "Raise a notification about an anomaly, citing the snapshots that show it. \
             snapshot_ids: [\"latest\"] (or omitted) means the most recent snapshot.",
            json!({
                "type": "object",
                "properties": {
                    "type": {"type": "string", "description": "anomaly type, e.g. process_spike"},
                    "severity": {"type": "string", "enum": ["info", "warning", "critical"]},
                    "summary": {"type": "string", "description": "one line, facts only"},
                    "snapshot_ids": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "ids from take_snapshot, or [\"latest\"]"
                    }
                },
                "required": ["type", "severity", "summary", "snapshot_ids"]
            }),
        ),
        spec(
            GET_NOTIFICATIONS,
            "List the notifications sent in this run.",
            no_args(),
        ),
        spec(
            SET_STATE,
            "Set your health verdict.",
            json!({
                "type": "object",
                "properties": {
                    "state": {"type": "string", "enum": ["healthy", "observing", "warning", "critical"]},
                    "reason": {"type": "string"}
                },
                "required": ["state", "reason"]
            }),
        ),
        spec(
            THINK,
            "Record a thought. Has no other effect.",
            json!({
                "type": "object",
                "properties": {"thought": {"type": "string"}},
                "required": ["thought"]
            }),
        ),
        spec(
            WAIT,
            "Sleep before measuring again (at most 5000 ms).",
            json!({
                "type": "object",
                "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 5000}},
                "required": ["ms"]
            }),
        ),
        spec(
            DONE,
            "Finish the run. Call it once your verdict is set.",
            no_args(),
        ),
    ]
}

/// Resolves `snapshot_ids` against `snapshots` (oldest first), in order and without
/// duplicates: `"latest"` (any case) and an omitted or empty list mean the most recent
/// snapshot.
///
/// Errors: `snapshot_ids requested "latest" but no snapshots available` when the latest is
/// wanted and none exists; `snapshots not found: a, b` for unknown ids.
pub fn resolve_snapshot_ids(
    requested: Option<&[String]>,
    snapshots: &[Snapshot],
) -> Result<Vec<String>, String> {
    let latest_only = [LATEST.to_string()];
    let requested = match requested {
        Some(ids) if !ids.is_empty() => ids,
        _ => &latest_only[..],
    };
    let mut resolved: Vec<String> = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    for raw in requested {
        let id = raw.trim();
        let found = if id.eq_ignore_ascii_case(LATEST) {
            match snapshots.last() {
                Some(s) => Some(s.id.clone()),
                None => {
                    return Err(
                        "snapshot_ids requested \"latest\" but no snapshots available".into(),
                    );
                }
            }
        } else {
            snapshots.iter().find(|s| s.id == id).map(|s| s.id.clone())
        };
        match found {
            Some(id) if !resolved.contains(&id) => resolved.push(id),
            Some(_) => {}
            None if !missing.contains(&id) => missing.push(id),
            None => {}
        }
    }
    if missing.is_empty() {
        Ok(resolved)
    } else {
        Err(format!("snapshots not found: {}", missing.join(", ")))
    }
}

/// The mutable state of a run that tools act on.
#[derive(Debug, Default)]
pub(crate) struct RunState {
    /// The current verdict.
    pub(crate) state: HealthState,
    /// Snapshots taken, oldest first.
    pub(crate) snapshots: Vec<Snapshot>,
    /// Notifications recorded, oldest first.
    pub(crate) notifications: Vec<Notification>,
    /// Whether `done` was called.
    pub(crate) done: bool,
}

/// Arguments of `get_snapshot`.
#[derive(Deserialize)]
struct GetSnapshotArgs {
    id: String,
}

/// Arguments of `get_snapshots`.
#[derive(Deserialize)]
struct GetSnapshotsArgs {
    limit: Option<u64>,
    offset: Option<u64>,
}

/// One id or a list of ids (models sometimes send a bare string).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

/// Arguments of `send_notification`.
#[derive(Deserialize)]
struct SendNotificationArgs {
    #[serde(rename = "type")]
    kind: String,
    severity: String,
    summary: String,
    #[serde(default)]
    snapshot_ids: Option<OneOrMany>,
}

/// Arguments of `set_state`.
#[derive(Deserialize)]
struct SetStateArgs {
    state: String,
    #[serde(default)]
    reason: String,
}

/// Arguments of `think`.
#[derive(Deserialize)]
struct ThinkArgs {
    thought: String,
}

/// Arguments of `wait`.
#[derive(Deserialize)]
struct WaitArgs {
    ms: f64,
}

/// The arguments as an object: `null` counts as `{}`; anything else is an error.
fn object_args(call: &ToolCall) -> Result<Value, String> {
    match &call.arguments {
        Value::Null => Ok(json!({})),
        v @ Value::Object(_) => Ok(v.clone()),
        other => Err(format!(
            "invalid arguments for {}: expected a JSON object, got {other}",
            call.name
        )),
    }
}

/// Parses a call's arguments into `T`, with an error message naming the tool.
fn parse<T: DeserializeOwned>(call: &ToolCall) -> Result<T, String> {
    let args = object_args(call)?;
    serde_json::from_value(args).map_err(|e| format!("invalid arguments for {}: {e}", call.name))
}

/// A successful result carrying `value` as JSON text.
fn ok_result(call: &ToolCall, value: Value) -> ToolResult {
    result(call, value, false)
}

/// An error result `{"error": message}`.
fn err_result(call: &ToolCall, message: &str) -> ToolResult {
    result(call, json!({"error": message}), true)
}

/// A result for `call` carrying `value` as JSON text.
fn result(call: &ToolCall, value: Value, is_error: bool) -> ToolResult {
    ToolResult {
        call_id: call.id.clone(),
        name: call.name.clone(),
        content: value.to_string(),
        is_error,
    }
}

/// A snapshot as tools return it: `{"id","captured_at","data"}`.
fn snapshot_json(s: &Snapshot) -> Value {
    json!({"id": s.id, "captured_at": s.captured_at, "data": s.data})
}

/// Executes one tool call. Never panics on model input: unknown tools and bad arguments
/// become error results. `deadline` bounds `wait`.
pub(crate) async fn execute(
    call: &ToolCall,
    skill: &dyn Skill,
    callbacks: &[String],
    run: &mut RunState,
    deadline: Instant,
) -> ToolResult {
    match call.name.as_str() {
        TAKE_SNAPSHOT => {
            let data = skill.snapshot().await;
            let snapshot = Snapshot {
                id: new_id(),
                captured_at: now_rfc3339(),
                data,
            };
            tracing::info!(
                target: "operator",
                event = "snapshot",
                snapshot_id = %snapshot.id,
                has_error = snapshot.data.get("error").is_some(),
                "snapshot taken"
            );
            let value = snapshot_json(&snapshot);
            run.snapshots.push(snapshot);
            ok_result(call, value)
        }
        GET_SNAPSHOT => match parse::<GetSnapshotArgs>(call) {
            Err(e) => err_result(call, &e),
            Ok(args) => {
                let found = if args.id.trim().eq_ignore_ascii_case(LATEST) {
                    run.snapshots.last()
                } else {
                    run.snapshots.iter().find(|s| s.id == args.id.trim())
                };
                match found {
                    Some(s) => ok_result(call, snapshot_json(s)),
                    None => result(
                        call,
                        json!({"error": "snapshot_not_found", "id": args.id}),
                        true,
                    ),
                }
            }
        },
        GET_SNAPSHOTS => match parse::<GetSnapshotsArgs>(call) {
            Err(e) => err_result(call, &e),
            Ok(args) => {
                let limit = args
                    .limit
                    .map_or(DEFAULT_SNAPSHOT_PAGE, |l| l.min(usize::MAX as u64) as usize);
                let offset = args.offset.unwrap_or(0).min(usize::MAX as u64) as usize;
                let page: Vec<Value> = run
                    .snapshots
                    .iter()
                    .rev()
                    .skip(offset)
                    .take(limit)
                    .map(snapshot_json)
                    .collect();
                ok_result(
                    call,
                    json!({"snapshots": page, "total": run.snapshots.len()}),
                )
            }
        },
        SEND_NOTIFICATION => send_notification(call, run),
        GET_NOTIFICATIONS => {
            let list = serde_json::to_value(&run.notifications).unwrap_or(Value::Null);
            ok_result(call, json!({"notifications": list}))
        }
        SET_STATE => match parse::<SetStateArgs>(call) {
            Err(e) => err_result(call, &e),
            Ok(args) => match args.state.parse::<HealthState>() {
                Err(e) => err_result(call, &format!("invalid arguments for set_state: {e}")),
                Ok(to) => {
                    let from = run.state;
                    run.state = to;
                    tracing::info!(
                        target: "operator",
                        event = "state_change",
                        from = %from,
                        to = %to,
                        reason = %args.reason,
                        "state changed"
                    );
                    ok_result(
                        call,
                        json!({"state": to, "previous": from, "reason": args.reason}),
                    )
                }
            },
        },
        THINK => match parse::<ThinkArgs>(call) {
            Err(e) => err_result(call, &e),
            Ok(args) => {
                tracing::debug!(target: "operator", event = "think", thought = %args.thought);
                ok_result(call, json!({"thought": args.thought, "recorded": true}))
            }
        },
        WAIT => match parse::<WaitArgs>(call) {
            Err(e) => err_result(call, &e),
            Ok(args) if !args.ms.is_finite() || args.ms < 0.0 => err_result(
                call,
                "invalid arguments for wait: ms must be a non-negative number",
            ),
            Ok(args) => {
                let asked = Duration::from_millis(args.ms as u64);
                let left = deadline.saturating_duration_since(Instant::now());
                let wait = asked.min(WAIT_CAP).min(left);
                tokio::time::sleep(wait).await;
                ok_result(
                    call,
                    json!({"waited_ms": wait.as_millis() as u64, "requested_ms": asked.as_millis() as u64}),
                )
            }
        },
        DONE => {
            run.done = true;
            ok_result(call, json!({"done": true}))
        }
        name if callbacks.iter().any(|c| c == name) => match object_args(call) {
            Err(e) => err_result(call, &e),
            Ok(args) => match skill.call(name, args).await {
                Ok(value) => ok_result(call, value),
                Err(e) => err_result(call, &e),
            },
        },
        name => err_result(call, &format!("unknown tool: {name}")),
    }
}

/// `send_notification`: resolves the snapshot ids, then records the notification.
fn send_notification(call: &ToolCall, run: &mut RunState) -> ToolResult {
    let outcome = parse::<SendNotificationArgs>(call).and_then(|args| {
        let severity = args
            .severity
            .parse::<Severity>()
            .map_err(|e| format!("invalid arguments for send_notification: {e}"))?;
        let requested = match args.snapshot_ids {
            None => None,
            Some(OneOrMany::One(id)) => Some(vec![id]),
            Some(OneOrMany::Many(ids)) => Some(ids),
        };
        let snapshot_ids = resolve_snapshot_ids(requested.as_deref(), &run.snapshots)?;
        Ok(Notification {
            id: new_id(),
            kind: args.kind,
            severity,
            summary: args.summary,
            snapshot_ids,
            detected_at: now_rfc3339(),
        })
    });
    match outcome {
        Ok(n) => {
            tracing::info!(
                target: "operator",
                event = "notification_sent",
                notification_id = %n.id,
                kind = %n.kind,
                severity = %n.severity,
                summary = %n.summary,
                snapshot_ids = ?n.snapshot_ids,
                "notification sent"
            );
            let value = json!({"sent": true, "id": n.id, "snapshot_ids": n.snapshot_ids});
            run.notifications.push(n);
            ok_result(call, value)
        }
        Err(e) => {
            tracing::warn!(
                target: "operator",
                event = "notification_failed",
                error = %e,
                "notification failed"
            );
            err_result(call, &e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(id: &str) -> Snapshot {
        Snapshot {
            id: id.into(),
            captured_at: String::new(),
            data: json!({}),
        }
    }

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn resolution() {
        let snaps = [snap("a"), snap("b")];
        assert_eq!(resolve_snapshot_ids(None, &snaps), Ok(ids(&["b"])));
        assert_eq!(resolve_snapshot_ids(Some(&[]), &snaps), Ok(ids(&["b"])));
        assert_eq!(
            resolve_snapshot_ids(Some(&ids(&["LATEST", "a", "b"])), &snaps),
            Ok(ids(&["b", "a"]))
        );
        assert_eq!(
            resolve_snapshot_ids(Some(&ids(&["x", "a", "y"])), &snaps),
            Err("snapshots not found: x, y".into())
        );
        assert_eq!(
            resolve_snapshot_ids(Some(&ids(&["latest"])), &[]),
            Err("snapshot_ids requested \"latest\" but no snapshots available".into())
        );
        assert_eq!(
            resolve_snapshot_ids(None, &[]),
            Err("snapshot_ids requested \"latest\" but no snapshots available".into())
        );
    }

    #[test]
    fn specs_cover_builtins() {
        let specs = builtin_tool_specs();
        let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, BUILTIN_TOOLS);
        for s in &specs {
            assert_eq!(s.parameters["type"], "object", "{}", s.name);
        }
    }
}
