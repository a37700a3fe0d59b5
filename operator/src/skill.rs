//! What an operator watches: the [`Skill`] trait, its callbacks and its alert rule.
//!
//! A skill knows how to measure something (its [`Skill::snapshot`]) and which extra
//! read-only questions the model may ask (its callbacks). This crate knows nothing of
//! sandboxes: the sandbox skills implement this trait elsewhere.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ToolError;
use crate::outcome::{HealthState, Severity};

/// A named function the model may call, besides the operator's built-in tools.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallbackSpec {
    /// Tool name offered to the model, `[a-z_]+`; must not clash with a built-in tool
    /// (a clashing callback is not offered).
    pub name: String,
    /// What the callback returns, for the model.
    pub doc: String,
    /// JSON schema of the arguments (`{"type":"object","properties":{..}}`).
    pub parameters: Value,
}

impl CallbackSpec {
    /// A callback that takes no arguments.
    pub fn no_args(name: impl Into<String>, doc: impl Into<String>) -> Self {
        CallbackSpec {
            name: name.into(),
            doc: doc.into(),
            parameters: serde_json::json!({"type": "object", "properties": {}}),
        }
    }
}

/// A threshold rule on one snapshot metric: when the metric is above `above`, a careful
/// operator sends a notification and sets a non-healthy state.
///
/// The rule is data on the skill: it renders the skill's prompt
/// ([`AlertRule::prompt_instructions`]) and drives [`crate::MockProvider::careful`].
/// For a snapshot that holds a list under `sandboxes` (a multi-sandbox skill) the rule
/// applies to the maximum of `metric` over that list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    /// Snapshot key of the metric, e.g. `"processes"`.
    pub metric: String,
    /// Threshold: the rule fires when the metric is strictly greater, e.g. `10.0`.
    pub above: f64,
    /// Notification type to send, e.g. `"process_spike"`.
    pub notification_type: String,
    /// Notification summary to send, e.g. `"process count elevated"`.
    pub summary: String,
    /// Notification severity, e.g. [`Severity::Warning`].
    pub severity: Severity,
}

impl AlertRule {
    /// The demo's rule: more than `above` processes is a `process_spike` warning, "process
    /// count elevated".
    pub fn process_spike(above: f64) -> Self {
        AlertRule {
            metric: "processes".into(),
            above,
            notification_type: "process_spike".into(),
            summary: "process count elevated".into(),
            severity: Severity::Warning,
        }
    }

    /// The metric's value in `snapshot`: the number under `metric`, or, when the snapshot
    /// holds an array under `sandboxes`, the maximum of `metric` over its entries (entries
    /// without a numeric `metric` are skipped). `None` when no numeric value is found.
    pub fn metric_value(&self, snapshot: &Value) -> Option<f64> {
        match snapshot.get("sandboxes") {
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|entry| entry.get(&self.metric).and_then(Value::as_f64))
                .reduce(f64::max),
            _ => snapshot.get(&self.metric).and_then(Value::as_f64),
        }
    }

    /// Whether the rule fires for `snapshot` (`metric_value > above`); `None` when the
    /// metric is missing.
    pub fn is_breached(&self, snapshot: &Value) -> Option<bool> {
        self.metric_value(snapshot).map(|v| v > self.above)
    }

    /// The health state a careful operator sets when the rule fires: `info` maps to
    /// `observing`, `warning` to `warning`, `critical` to `critical`.
    pub fn breach_state(&self) -> HealthState {
        match self.severity {
            Severity::Info => HealthState::Observing,
            Severity::Warning => HealthState::Warning,
            Severity::Critical => HealthState::Critical,
        }
    }

    /// The threshold as the prompt writes it (`10`, not `10.0`).
    pub fn threshold_text(&self) -> String {
        format_number(self.above)
    }

    /// Prompt text telling the model what to do on either side of the threshold, in the
    /// demo's words, e.g.
    ///
    /// ```text
    /// If processes > 10: 1) take_snapshot() 2) send_notification(type: "process_spike", ...
    /// If processes <= 10: take_snapshot() then set_state("healthy", "processes normal") then done().
    /// ```
    pub fn prompt_instructions(&self) -> String {
        let m = &self.metric;
        let t = self.threshold_text();
        format!(
            "If {m} > {t}: 1) take_snapshot() 2) send_notification(type: \"{ty}\", \
             severity: \"{sev}\", summary: \"{summary}\", snapshot_ids: [\"latest\"]) \
             3) set_state(\"{state}\", \"{m} above threshold\") 4) done()\n\
             If {m} <= {t}: take_snapshot() then set_state(\"healthy\", \"{m} normal\") then done().\n\
             When the snapshot lists several sandboxes under \"sandboxes\", compare the largest \
             {m} among them.",
            ty = self.notification_type,
            sev = self.severity,
            summary = self.summary,
            state = self.breach_state(),
        )
    }
}

/// Formats a number without a trailing `.0` when it is integral.
pub(crate) fn format_number(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

/// Something an operator can watch: a prompt, a snapshot and named callbacks.
#[async_trait::async_trait]
pub trait Skill: Send + Sync {
    /// Short title, e.g. `"Sandbox"`.
    fn title(&self) -> &str;

    /// One-line description, e.g. `"Sandbox: status and resource usage"`.
    fn description(&self) -> &str;

    /// The skill's part of the system prompt: what to watch and how to react.
    fn system_prompt(&self) -> String;

    /// Measures now. Infallible by signature: a failed measurement is returned as an
    /// object with an `error` field (e.g. `{"error": "sandbox_id_not_configured"}`).
    async fn snapshot(&self) -> Value;

    /// The built-in tools offered to the model (see [`crate::tool_names::BUILTIN_TOOLS`]);
    /// `take_snapshot`, `set_state` and `done` are offered whatever this says. Each tool's
    /// schema costs prompt tokens, which a small local model pays for on every turn: offer
    /// only what the skill's workflow uses. Default: all of them.
    fn builtin_tools(&self) -> Vec<&'static str> {
        crate::tool_names::BUILTIN_TOOLS.to_vec()
    }

    /// The callbacks offered to the model as extra tools. Default: none.
    fn callbacks(&self) -> Vec<CallbackSpec> {
        Vec::new()
    }

    /// Runs callback `name` with `args` (a JSON object). `Err` is fed back to the model as
    /// an error result; a skill's own failure is [`ToolError::Callback`], which a `String`
    /// or `&str` converts into. Default: every name is unknown.
    async fn call(&self, name: &str, args: Value) -> Result<Value, ToolError> {
        let _ = args;
        Err(ToolError::UnknownCallback(name.to_string()))
    }

    /// The threshold rule this skill alerts on, if any. Default: none.
    fn alert_rule(&self) -> Option<AlertRule> {
        None
    }

    /// A tool of this skill's own that its workflow needs after the snapshot and before the
    /// verdict (a coordinator's `record_insight` while notifications wait to be correlated):
    /// the nudge and a forced turn (see `OperatorConfig::force_tools`) name it instead of
    /// `set_state`. Default: none.
    fn pending_tool(&self) -> Option<&'static str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rule() -> AlertRule {
        AlertRule::process_spike(10.0)
    }

    #[test]
    fn metric_value_single_and_multi() {
        let r = rule();
        assert_eq!(r.metric_value(&json!({"processes": 3})), Some(3.0));
        assert_eq!(r.is_breached(&json!({"processes": 11})), Some(true));
        assert_eq!(r.is_breached(&json!({"processes": 10})), Some(false));
        assert_eq!(r.metric_value(&json!({"memory_bytes": 1})), None);
        let multi = json!({"sandboxes": [
            {"processes": 2}, {"error": "gone"}, {"processes": 27}, {"processes": 5}
        ]});
        assert_eq!(r.metric_value(&multi), Some(27.0));
        assert_eq!(r.metric_value(&json!({"sandboxes": []})), None);
    }

    #[test]
    fn prompt_mentions_threshold_and_names() {
        let text = rule().prompt_instructions();
        assert!(text.contains("If processes > 10:"), "{text}");
        assert!(text.contains("If processes <= 10:"), "{text}");
        assert!(text.contains("\"process_spike\""), "{text}");
        assert!(text.contains("severity: \"warning\""), "{text}");
        assert!(text.contains("set_state(\"warning\""), "{text}");
        assert_eq!(format_number(2.5), "2.5");
    }
}
