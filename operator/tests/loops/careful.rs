//! The careful mock decides from the real snapshot data, like a careful model would.

use std::sync::Arc;

use crate::common::{FakeSkill, process_rule, result_for};
use llm::Provider;
use operator::mock::SNAPSHOT_ERROR_TYPE;
use operator::{HealthState, MockProvider, Operator, Outcome, Severity, Skill, Stop};
use serde_json::{Value, json};

async fn run_careful(data: Value) -> Outcome {
    let skill = Arc::new(FakeSkill::new(data));
    let provider = Arc::new(MockProvider::careful(skill.alert_rule()));
    Operator::new(skill, provider)
        .run(json!({"reason": "sandbox health check"}))
        .await
}

#[tokio::test]
async fn calm_sandbox_is_healthy_with_no_notification() {
    let out = run_careful(json!({"processes": 3, "memory_bytes": 1_000_000})).await;
    assert_eq!(out.stop, Stop::Done);
    assert_eq!(out.state, HealthState::Healthy);
    assert!(out.notifications.is_empty());
    assert_eq!(out.summary, "sandbox stable");
    assert_eq!(out.snapshots.len(), 1);
    assert_eq!(out.iterations, 2);
    let r = result_for(&out.transcript, "set_state", 0);
    assert!(r.content.contains("processes 3 normal"), "{}", r.content);
}

#[tokio::test]
async fn at_the_threshold_is_still_healthy() {
    let out = run_careful(json!({"processes": 10})).await;
    assert_eq!(out.state, HealthState::Healthy);
    assert!(out.notifications.is_empty());
}

#[tokio::test]
async fn spiking_sandbox_is_warning_with_one_notification() {
    let out = run_careful(json!({"processes": 27, "sandbox_id": "demo-1"})).await;
    assert_eq!(out.stop, Stop::Done);
    assert_eq!(out.state, HealthState::Warning);
    assert_eq!(out.notifications.len(), 1);
    let n = &out.notifications[0];
    assert_eq!(n.kind, "process_spike");
    assert_eq!(n.severity, Severity::Warning);
    assert_eq!(n.snapshot_ids, vec![out.snapshots[0].id.clone()]);
    assert_eq!(out.summary, "process count elevated");
    assert_eq!(out.iterations, 2);
    let r = result_for(&out.transcript, "set_state", 0);
    assert!(
        r.content.contains("processes 27 above threshold 10"),
        "{}",
        r.content
    );
}

#[tokio::test]
async fn multi_sandbox_snapshot_uses_the_max() {
    let spiking = json!({"sandboxes": [
        {"sandbox_id": "a", "processes": 2},
        {"sandbox_id": "b", "error": "gone"},
        {"sandbox_id": "c", "processes": 27}
    ]});
    let out = run_careful(spiking).await;
    assert_eq!(out.state, HealthState::Warning);
    assert_eq!(out.notifications.len(), 1);

    let calm = json!({"sandboxes": [{"processes": 2}, {"processes": 9}]});
    let out = run_careful(calm).await;
    assert_eq!(out.state, HealthState::Healthy);
    assert!(out.notifications.is_empty());
}

#[tokio::test]
async fn snapshot_error_is_critical_with_a_notification() {
    let out = run_careful(json!({"error": "sandbox_id_not_configured"})).await;
    assert_eq!(out.stop, Stop::Done);
    assert_eq!(out.state, HealthState::Critical);
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(out.notifications[0].kind, SNAPSHOT_ERROR_TYPE);
    assert_eq!(out.notifications[0].severity, Severity::Critical);
    assert_eq!(out.summary, "snapshot failed: sandbox_id_not_configured");
}

#[tokio::test]
async fn missing_metric_is_observing_and_no_rule_is_healthy() {
    let out = run_careful(json!({"memory_bytes": 5})).await;
    assert_eq!(out.state, HealthState::Observing);
    assert!(out.notifications.is_empty());

    let mut skill = FakeSkill::new(json!({"processes": 99}));
    skill.rule = None;
    let skill = Arc::new(skill);
    let out = Operator::new(skill, Arc::new(MockProvider::careful(None)))
        .run(json!({}))
        .await;
    assert_eq!(out.state, HealthState::Healthy);
    assert!(out.notifications.is_empty());
}

#[tokio::test]
async fn careful_mock_takes_a_fresh_snapshot_reflecting_live_data() {
    // The same skill calm, then spiking: each run decides from its own snapshot.
    let skill = Arc::new(FakeSkill::new(json!({"processes": 1})));
    let provider = Arc::new(MockProvider::careful(Some(process_rule())));
    let operator = Operator::new(skill.clone(), provider.clone());
    let out = operator.run(json!({})).await;
    assert_eq!(out.state, HealthState::Healthy);
    *skill.data.lock().unwrap() = json!({"processes": 40});
    let out = operator.run(json!({})).await;
    assert_eq!(out.state, HealthState::Warning);
    assert_eq!(out.notifications.len(), 1);
    assert_eq!(provider.name(), "mock");
    assert_eq!(provider.model(), "mock");
}
