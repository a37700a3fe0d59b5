//! The operator's built-in tools: their specs, argument parsing, `"latest"` snapshot
//! resolution, and the execution of one tool call against a run's state.

use std::time::Duration;

use llm::{ToolCall, ToolResult, ToolSpec};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::error::ToolError;
use crate::ids::{new_id, now_rfc3339};
use crate::outcome::{HealthState, Notification, Severity, Snapshot};
use crate::skill::Skill;

pub use crate::tool_names::*;

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
/// Errors: [`ToolError::NoSnapshots`] when the latest is wanted and none exists;
/// [`ToolError::SnapshotsNotFound`] for unknown ids.
pub fn resolve_snapshot_ids(
    requested: Option<&[String]>,
    snapshots: &[Snapshot],
) -> Result<Vec<String>, ToolError> {
    let latest_only = [LATEST.to_string()];
    let requested = match requested {
        Some(ids) if !ids.is_empty() => ids,
        _ => &latest_only[..],
    };
    let mut resolved: Vec<String> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    for raw in requested {
        let id = raw.trim();
        let found = if id.eq_ignore_ascii_case(LATEST) {
            match snapshots.last() {
                Some(s) => Some(s.id.clone()),
                None => return Err(ToolError::NoSnapshots),
            }
        } else {
            snapshots.iter().find(|s| s.id == id).map(|s| s.id.clone())
        };
        match found {
            Some(id) if !resolved.contains(&id) => resolved.push(id),
            Some(_) => {}
            None if !missing.iter().any(|m| m == id) => missing.push(id.to_string()),
            None => {}
        }
    }
    if missing.is_empty() {
        Ok(resolved)
    } else {
        Err(ToolError::SnapshotsNotFound(missing))
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
fn object_args(call: &ToolCall) -> Result<Value, ToolError> {
    match &call.arguments {
        Value::Null => Ok(json!({})),
        v @ Value::Object(_) => Ok(v.clone()),
        other => Err(ToolError::NotAnObject {
            tool: call.name.clone(),
            got: other.clone(),
        }),
    }
}

/// Parses a call's arguments into `T`.
fn parse<T: DeserializeOwned>(call: &ToolCall) -> Result<T, ToolError> {
    serde_json::from_value(object_args(call)?).map_err(|source| ToolError::BadArguments {
        tool: call.name.clone(),
        source,
    })
}

/// A snapshot as tools return it: `{"id","captured_at","data"}`.
fn snapshot_json(s: &Snapshot) -> Value {
    json!({"id": s.id, "captured_at": s.captured_at, "data": s.data})
}

/// Executes one tool call. Never panics on model input: unknown tools (any not in
/// `offered`) and bad arguments become error results (see [`ToolError::to_json`]).
/// `deadline` bounds `wait`.
pub(crate) async fn execute(
    call: &ToolCall,
    skill: &dyn Skill,
    offered: &[String],
    callbacks: &[String],
    run: &mut RunState,
    deadline: Instant,
) -> ToolResult {
    let outcome = if offered.contains(&call.name) {
        run_tool(call, skill, callbacks, run, deadline).await
    } else {
        Err(ToolError::UnknownTool {
            name: call.name.clone(),
            offered: offered.to_vec(),
        })
    };
    let (value, is_error) = match outcome {
        Ok(value) => (value, false),
        Err(e) => (e.to_json(), true),
    };
    ToolResult {
        call_id: call.id.clone(),
        name: call.name.clone(),
        content: value.to_string(),
        is_error,
    }
}

/// What [`execute`] runs: the tool's result as JSON.
async fn run_tool(
    call: &ToolCall,
    skill: &dyn Skill,
    callbacks: &[String],
    run: &mut RunState,
    deadline: Instant,
) -> Result<Value, ToolError> {
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
            Ok(value)
        }
        GET_SNAPSHOT => {
            let GetSnapshotArgs { id } = parse(call)?;
            let found = if id.trim().eq_ignore_ascii_case(LATEST) {
                run.snapshots.last()
            } else {
                run.snapshots.iter().find(|s| s.id == id.trim())
            };
            found
                .map(snapshot_json)
                .ok_or(ToolError::SnapshotNotFound { id })
        }
        GET_SNAPSHOTS => {
            let args: GetSnapshotsArgs = parse(call)?;
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
            Ok(json!({"snapshots": page, "total": run.snapshots.len()}))
        }
        SEND_NOTIFICATION => send_notification(call, run).inspect_err(|e| {
            tracing::warn!(
                target: "operator",
                event = "notification_failed",
                error = %e,
                "notification failed"
            );
        }),
        GET_NOTIFICATIONS => {
            let list = serde_json::to_value(&run.notifications).unwrap_or(Value::Null);
            Ok(json!({"notifications": list}))
        }
        SET_STATE => {
            let SetStateArgs { state, reason } = parse(call)?;
            let to = state
                .parse::<HealthState>()
                .map_err(|source| ToolError::BadName {
                    tool: SET_STATE,
                    source,
                })?;
            let from = std::mem::replace(&mut run.state, to);
            tracing::info!(
                target: "operator",
                event = "state_change",
                from = %from,
                to = %to,
                reason = %reason,
                "state changed"
            );
            Ok(json!({"state": to, "previous": from, "reason": reason}))
        }
        THINK => {
            let ThinkArgs { thought } = parse(call)?;
            tracing::debug!(target: "operator", event = "think", thought = %thought);
            Ok(json!({"thought": thought, "recorded": true}))
        }
        WAIT => {
            let WaitArgs { ms } = parse(call)?;
            if !ms.is_finite() || ms < 0.0 {
                return Err(ToolError::BadWait);
            }
            let asked = Duration::from_millis(ms as u64);
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = asked.min(WAIT_CAP).min(left);
            tokio::time::sleep(wait).await;
            Ok(json!({
                "waited_ms": wait.as_millis() as u64,
                "requested_ms": asked.as_millis() as u64,
            }))
        }
        DONE => {
            run.done = true;
            Ok(json!({"done": true}))
        }
        name if callbacks.iter().any(|c| c == name) => skill.call(name, object_args(call)?).await,
        name => Err(ToolError::UnknownTool {
            name: name.to_string(),
            offered: Vec::new(),
        }),
    }
}

/// `send_notification`: resolves the snapshot ids, then records the notification.
fn send_notification(call: &ToolCall, run: &mut RunState) -> Result<Value, ToolError> {
    let args: SendNotificationArgs = parse(call)?;
    let severity = args
        .severity
        .parse::<Severity>()
        .map_err(|source| ToolError::BadName {
            tool: SEND_NOTIFICATION,
            source,
        })?;
    let requested = match args.snapshot_ids {
        None => None,
        Some(OneOrMany::One(id)) => Some(vec![id]),
        Some(OneOrMany::Many(ids)) => Some(ids),
    };
    let n = Notification {
        id: new_id(),
        kind: args.kind,
        severity,
        summary: args.summary,
        snapshot_ids: resolve_snapshot_ids(requested.as_deref(), &run.snapshots)?,
        detected_at: now_rfc3339(),
    };
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
    Ok(value)
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
        let resolve = |requested: Option<&[String]>, snapshots: &[Snapshot]| {
            resolve_snapshot_ids(requested, snapshots).map_err(|e| e.to_string())
        };
        assert_eq!(resolve(None, &snaps), Ok(ids(&["b"])));
        assert_eq!(resolve(Some(&[]), &snaps), Ok(ids(&["b"])));
        assert_eq!(
            resolve(Some(&ids(&["LATEST", "a", "b"])), &snaps),
            Ok(ids(&["b", "a"]))
        );
        assert_eq!(
            resolve(Some(&ids(&["x", "a", "y", "x"])), &snaps),
            Err("snapshots not found: x, y".into())
        );
        assert_eq!(
            resolve(Some(&ids(&["latest"])), &[]),
            Err("snapshot_ids requested \"latest\" but no snapshots available".into())
        );
        assert_eq!(
            resolve(None, &[]),
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
