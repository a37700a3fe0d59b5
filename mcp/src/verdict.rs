//! `report_verdict`: an outside agent's verdict on a sandbox, checked against live telemetry
//! by the built-in operator's own guardrail (`watch::skill::guardrail`), so an agent is held
//! to the same rule the operator is.

use operator::{HealthState, Notification, Outcome, Severity, Stop};
use rmcp::handler::server::wrapper::Parameters;
use rmcp::model::CallToolResult;
use rmcp::{tool, tool_router};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;
use watch::skill::{Check, PROCESS_THRESHOLD, guardrail};

use crate::bounds;
use crate::server::SandboxServer;

/// Notifications one verdict may carry, at most.
pub const MAX_NOTIFICATIONS: usize = 16;
/// Longest summary kept, in bytes (as the event record's free text).
const MAX_SUMMARY: usize = 512;

/// A verdict's state.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerdictState {
    /// Nothing wrong.
    Healthy,
    /// Worth watching.
    Observing,
    /// A problem that needs attention.
    Warning,
    /// A serious problem.
    Critical,
}

/// A notification's severity.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum NotificationSeverity {
    /// For the record.
    Info,
    /// Needs attention.
    Warning,
    /// Serious.
    Critical,
}

/// Which rule the verdict is held to.
#[derive(Debug, Clone, Copy, Default, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum VerdictCheck {
    /// The detector's and `host anomaly`'s rule: above the process threshold the verdict
    /// is `warning` with a notification, else `healthy` without one.
    #[default]
    Anomaly,
    /// `host demo`'s rule: the sandbox is calm, so `healthy` without notifications.
    Plumbing,
}

/// One notification the agent raised.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct NotificationArg {
    /// How serious.
    pub severity: NotificationSeverity,
    /// One line.
    pub summary: String,
    /// The anomaly type, e.g. `process_spike`.
    #[serde(default, rename = "type")]
    pub kind: Option<String>,
}

/// A verdict on one sandbox.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct VerdictArgs {
    /// The sandbox judged.
    pub sandbox_id: String,
    /// The verdict.
    pub state: VerdictState,
    /// One line on why.
    #[serde(default)]
    pub summary: Option<String>,
    /// Notifications raised (a spike calls for one), at most 16.
    #[serde(default)]
    pub notifications: Vec<NotificationArg>,
    /// The rule to hold it to (default `anomaly`).
    #[serde(default)]
    pub check: VerdictCheck,
}

/// The verdict as the operator's [`Outcome`], for the guardrail.
fn outcome(a: &VerdictArgs) -> Outcome {
    let now = proto::events::now_rfc3339();
    let notifications: Vec<Notification> = a
        .notifications
        .iter()
        .enumerate()
        .map(|(i, n)| Notification {
            id: format!("{i:016x}"),
            kind: bounds::clip(n.kind.as_deref().unwrap_or("reported"), 64),
            severity: match n.severity {
                NotificationSeverity::Info => Severity::Info,
                NotificationSeverity::Warning => Severity::Warning,
                NotificationSeverity::Critical => Severity::Critical,
            },
            summary: bounds::clip(&n.summary, MAX_SUMMARY),
            snapshot_ids: Vec::new(),
            detected_at: now.clone(),
        })
        .collect();
    Outcome {
        state: match a.state {
            VerdictState::Healthy => HealthState::Healthy,
            VerdictState::Observing => HealthState::Observing,
            VerdictState::Warning => HealthState::Warning,
            VerdictState::Critical => HealthState::Critical,
        },
        summary: bounds::clip(a.summary.as_deref().unwrap_or(""), MAX_SUMMARY),
        notifications,
        snapshots: Vec::new(),
        iterations: 0,
        usage: Default::default(),
        transcript: Vec::new(),
        stop: Stop::Done,
        error: None,
        stop_reason: "reported by an MCP client".into(),
        forced: Vec::new(),
    }
}

#[tool_router(router = verdict_router, vis = "pub(crate)")]
impl SandboxServer {
    /// Checks an agent's verdict against the kernel's figures.
    #[tool(
        description = "Report your health verdict on a sandbox. It is checked against live telemetry with the built-in operator's guardrail: with check=anomaly (default), more than 10 processes must be `warning` with a notification, 10 or fewer `healthy` without one; check=plumbing expects `healthy` without notifications. The answer says whether the kernel's figures contradict the verdict. Changes nothing.",
        annotations(read_only_hint = true)
    )]
    async fn report_verdict(&self, Parameters(a): Parameters<VerdictArgs>) -> CallToolResult {
        if let Err(e) = bounds::sandbox_id(&a.sandbox_id) {
            return e.into();
        }
        if a.notifications.len() > MAX_NOTIFICATIONS {
            return bounds::failure(
                "bad_request",
                &format!("notifications: more than {MAX_NOTIFICATIONS}"),
            );
        }
        let outcome = outcome(&a);
        let check = match a.check {
            VerdictCheck::Anomaly => Check::Anomaly,
            VerdictCheck::Plumbing => Check::Plumbing,
        };
        let verdict = json!({
            "state": outcome.state,
            "summary": outcome.summary,
            "notifications": outcome.notifications.len(),
            "check": match check { Check::Anomaly => "anomaly", Check::Plumbing => "plumbing" },
        });
        let live = match self.usage(&a.sandbox_id).await {
            Ok(live) => live,
            Err(e) => {
                return bounds::answer(json!({
                    "sandbox_id": a.sandbox_id,
                    "accepted": false,
                    "contradicts_kernel": false,
                    "message": bounds::clip(&format!("no live telemetry to check against: {e}"), bounds::MAX_MESSAGE),
                    "verdict": verdict,
                }));
            }
        };
        let checked = guardrail(check, live.processes, PROCESS_THRESHOLD, &outcome);
        let (accepted, rule, message) = match &checked {
            Ok(()) => (
                true,
                None,
                format!(
                    "accepted: the verdict agrees with the kernel's figures (processes={}, threshold={PROCESS_THRESHOLD})",
                    live.processes
                ),
            ),
            Err(c) => (
                false,
                Some(c.rule),
                format!("the verdict contradicts the kernel: {c}"),
            ),
        };
        bounds::answer(json!({
            "sandbox_id": a.sandbox_id,
            "accepted": accepted,
            "contradicts_kernel": !accepted,
            "rule": rule,
            "message": message,
            "live": {"processes": live.processes, "threshold": PROCESS_THRESHOLD, "source": "kernel (cgroup and /proc)"},
            "verdict": verdict,
        }))
    }
}
