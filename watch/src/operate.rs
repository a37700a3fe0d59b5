//! One operator run on a live sandbox: the daemon's side of `host operate`.
//!
//! The client sends its own provider variables (keys, base URLs, model), so the operator uses
//! the caller's credentials, not whatever the daemon was started with. The socket is 0600 and
//! checked with SO_PEERCRED, so only the same user (or root) can send them.

use std::sync::Arc;
use std::time::Duration;

use operator::{MockProvider, Operator, OperatorConfig, Outcome, Skill};
use serde_json::json;

use proto::control::WireError;
pub use proto::operate::{FORWARDED_ENV, OperateRequest, SkillKind, forwarded_env};
use sandbox::Manager;
use sandbox::events::{EventBus, EventKind};

use crate::provider::choose_provider_with;
use crate::skill::{PROCESS_THRESHOLD, SandboxSkill};

/// Error kind of an `operate` whose provider configuration is wrong (unknown provider, no
/// key, Ollama not running): the client exits 2 on it, as `demo` does.
pub const CONFIG_ERROR: &str = "operator_config";

/// Error kind of any other failed `operate`.
pub const OPERATOR_ERROR: &str = "operator";

/// Runs the operator once on sandbox `req.id` and returns its outcome (which may carry no
/// verdict: see [`Outcome::no_verdict`]).
pub async fn operate(manager: &Manager, req: OperateRequest) -> Result<Outcome, WireError> {
    let context = json!({"reason": "operator run requested with host operate"});
    operate_with(manager, req, "request", context).await
}

/// Runs the operator once with `context` as its first message, reporting the run in the
/// manager's event stream under `trigger` (`request`, `detector`).
pub async fn operate_with(
    manager: &Manager,
    req: OperateRequest,
    trigger: &str,
    context: serde_json::Value,
) -> Result<Outcome, WireError> {
    let run = operator::ids::new_id();
    operate_run(manager, req, trigger, &run, context).await
}

/// [`operate_with`] under a run id the caller chose (the detector names the run in its
/// `detector.trigger` event before the run begins).
pub async fn operate_run(
    manager: &Manager,
    req: OperateRequest,
    trigger: &str,
    run: &str,
    context: serde_json::Value,
) -> Result<Outcome, WireError> {
    manager
        .info(&req.id)
        .await
        .map_err(|e| WireError::from(&e))?;
    let env = req.env.clone();
    let lookup = move |k: &str| env.get(k).cloned();
    let choice = choose_provider_with(req.provider.as_deref(), req.model.as_deref(), &lookup)
        .await
        .map_err(|e| WireError::new(CONFIG_ERROR, e.to_string()))?;
    let skill: Arc<dyn Skill> = match req.skill {
        SkillKind::Sandbox => Arc::new(SandboxSkill::new(manager.clone(), &req.id)),
        SkillKind::Anomaly => Arc::new(SandboxSkill::anomaly(
            manager.clone(),
            &req.id,
            PROCESS_THRESHOLD,
        )),
    };
    // Every LLM call of the run (each provider a fallback tries) is an `llm.call` event.
    let rule = skill.alert_rule();
    let provider = choice.observed(
        || Arc::new(MockProvider::careful(rule)),
        crate::telemetry::event_sink(
            manager.events().clone(),
            Some(req.id.clone()),
            Some(run.to_string()),
        ),
    );
    // Each model request may take what is left of the deadline (OperatorConfig's default).
    let config = OperatorConfig {
        max_iterations: req.max_iterations.unwrap_or(4),
        deadline: Duration::from_millis(req.timeout_ms.unwrap_or(30_000)),
        ..OperatorConfig::default()
    };
    let events = manager.events();
    let run = run.to_string();
    events.sandbox(
        &req.id,
        EventKind::OperatorStarted {
            run: run.clone(),
            skill: match req.skill {
                SkillKind::Sandbox => "sandbox",
                SkillKind::Anomaly => "anomaly",
            }
            .to_string(),
            provider: choice.name.clone(),
            trigger: trigger.to_string(),
        },
    );
    let outcome = Operator::new(skill, provider)
        .with_config(config)
        .run(context)
        .await;
    report_outcome(events, &req.id, &run, &outcome);
    Ok(outcome)
}

/// Puts what an operator run did into the event stream: its snapshots and notifications in
/// the order they were made, then its verdict (or that it gave none).
pub fn report_outcome(events: &EventBus, sandbox: &str, run: &str, outcome: &Outcome) {
    for snapshot in &outcome.snapshots {
        events.sandbox(
            sandbox,
            EventKind::OperatorSnapshot {
                run: run.to_string(),
                id: snapshot.id.clone(),
                data: snapshot.data.clone(),
            },
        );
    }
    for n in &outcome.notifications {
        events.sandbox(
            sandbox,
            EventKind::OperatorNotification {
                run: run.to_string(),
                severity: n.severity.as_str().to_string(),
                summary: n.summary.clone(),
            },
        );
    }
    for tool in &outcome.forced {
        events.sandbox(
            sandbox,
            EventKind::OperatorForced {
                run: run.to_string(),
                tool: tool.clone(),
            },
        );
    }
    match outcome.no_verdict() {
        None => {
            events.sandbox(
                sandbox,
                EventKind::OperatorState {
                    run: run.to_string(),
                    state: outcome.state.as_str().to_string(),
                    summary: outcome.summary.clone(),
                },
            );
            events.sandbox(
                sandbox,
                EventKind::OperatorDone {
                    run: run.to_string(),
                    state: outcome.state.as_str().to_string(),
                    stop: outcome.stop.as_str().to_string(),
                    notifications: outcome.notifications.len(),
                },
            );
        }
        Some(reason) => {
            events.sandbox(
                sandbox,
                EventKind::OperatorNoVerdict {
                    run: run.to_string(),
                    reason,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use operator::{HealthState, Stop};

    #[test]
    fn forced_calls_are_in_the_event_stream_before_the_verdict() {
        let events = EventBus::new(64, 64);
        let outcome = Outcome {
            state: HealthState::Healthy,
            summary: "sandbox stable".into(),
            notifications: vec![],
            snapshots: vec![],
            iterations: 3,
            usage: Default::default(),
            transcript: vec![],
            stop: Stop::Done,
            error: None,
            stop_reason: "the model called done".into(),
            forced: vec!["take_snapshot".into(), "set_state".into()],
        };
        report_outcome(&events, "s1", "r1", &outcome);
        let names: Vec<String> = events
            .subscribe(usize::MAX, |_| true)
            .backlog
            .iter()
            .map(|e| match &e.kind {
                EventKind::OperatorForced { tool, .. } => format!("forced {tool}"),
                other => other.name().to_string(),
            })
            .collect();
        assert_eq!(
            names,
            [
                "forced take_snapshot",
                "forced set_state",
                "operator.state",
                "operator.done"
            ]
        );
    }
}
