//! The operator loop driven by the scripted mock and a skill whose snapshot the test sets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{
    FailingProvider, FakeSkill, SleepyProvider, content, result_for, tool_results,
};
use llm::{Message, ProviderErrorKind, ToolCall};
use operator::mock::tool_call;
use operator::operator::NUDGE;
use operator::{
    CancellationToken, HealthState, MockProvider, Operator, OperatorConfig, Outcome, RunError,
    Severity, Stop, ids,
};
use serde_json::{Value, json};

pub(crate) fn calm() -> Arc<FakeSkill> {
    Arc::new(FakeSkill::new(
        json!({"processes": 3, "sandbox_id": "demo-1"}),
    ))
}

pub(crate) fn config(max_iterations: u32) -> OperatorConfig {
    OperatorConfig {
        max_iterations,
        ..OperatorConfig::default()
    }
}

pub(crate) fn snap() -> ToolCall {
    tool_call("take_snapshot", json!({}))
}

pub(crate) fn done() -> ToolCall {
    tool_call("done", json!({}))
}

pub(crate) fn notify(ids: Value) -> ToolCall {
    tool_call(
        "send_notification",
        json!({"type": "process_spike", "severity": "warning",
               "summary": "process count elevated", "snapshot_ids": ids}),
    )
}

pub(crate) async fn run_script(
    turns: Vec<Vec<ToolCall>>,
    max_iterations: u32,
) -> (Outcome, Arc<MockProvider>) {
    let provider = Arc::new(MockProvider::scripted(turns));
    let outcome = Operator::new(calm(), provider.clone())
        .with_config(config(max_iterations))
        .run(json!({"reason": "sandbox health check"}))
        .await;
    (outcome, provider)
}

#[tokio::test]
async fn latest_resolves_to_the_most_recent_snapshot() {
    let (out, _) = run_script(
        vec![
            vec![snap()],
            vec![snap()],
            vec![notify(json!(["latest"]))],
            vec![done()],
        ],
        10,
    )
    .await;
    assert_eq!(out.stop, Stop::Done);
    assert_eq!(out.iterations, 4);
    assert_eq!(out.snapshots.len(), 2);
    assert_eq!(out.notifications.len(), 1);
    let n = &out.notifications[0];
    assert_eq!(n.snapshot_ids, vec![out.snapshots[1].id.clone()]);
    assert_eq!(n.kind, "process_spike");
    assert_eq!(n.severity, Severity::Warning);
    assert!(ids::is_id(&n.id));
    assert!(n.detected_at.ends_with('Z'));
    let r = result_for(&out.transcript, "send_notification", 0);
    assert!(!r.is_error, "{}", r.content);
    assert_eq!(content(&r)["snapshot_ids"], json!([out.snapshots[1].id]));
}

#[tokio::test]
async fn omitted_or_empty_snapshot_ids_mean_latest() {
    let omitted = tool_call(
        "send_notification",
        json!({"type": "a", "severity": "info", "summary": "first"}),
    );
    let (out, _) = run_script(vec![vec![snap(), omitted, notify(json!([])), done()]], 4).await;
    assert_eq!(out.stop, Stop::Done);
    assert_eq!(out.iterations, 1);
    assert_eq!(out.notifications.len(), 2);
    let latest = &out.snapshots[0].id;
    for n in &out.notifications {
        assert_eq!(&n.snapshot_ids, &vec![latest.clone()]);
    }
}

#[tokio::test]
async fn unknown_snapshot_ids_are_an_error_fed_back_to_the_model() {
    let (out, provider) = run_script(
        vec![
            vec![snap()],
            vec![notify(json!(["nope", "latest", "gone"]))],
            vec![done()],
        ],
        4,
    )
    .await;
    assert_eq!(out.stop, Stop::Done);
    assert!(out.notifications.is_empty());
    let r = result_for(&out.transcript, "send_notification", 0);
    assert!(r.is_error);
    assert_eq!(content(&r)["error"], "snapshots not found: nope, gone");
    // The model saw the error on its next turn.
    let third = &provider.requests()[2];
    assert!(
        third
            .messages
            .iter()
            .any(|m| matches!(m, Message::Tool { results }
                if results.iter().any(|r| r.is_error && r.content.contains("snapshots not found")))),
        "error result not sent back to the model"
    );
}

#[tokio::test]
async fn latest_without_any_snapshot_is_an_error() {
    let (out, _) = run_script(vec![vec![notify(json!(["latest"])), done()]], 4).await;
    assert!(out.notifications.is_empty());
    let r = result_for(&out.transcript, "send_notification", 0);
    assert!(r.is_error);
    assert_eq!(
        content(&r)["error"],
        "snapshot_ids requested \"latest\" but no snapshots available"
    );
    // Omitted ids with no snapshot: the same error.
    let omitted = tool_call(
        "send_notification",
        json!({"type": "a", "severity": "info", "summary": "s"}),
    );
    let (out, _) = run_script(vec![vec![omitted, done()]], 4).await;
    let r = result_for(&out.transcript, "send_notification", 0);
    assert!(r.is_error && r.content.contains("no snapshots available"));
}

#[tokio::test]
async fn iteration_cap_stops_the_run() {
    let think = || tool_call("think", json!({"thought": "hmm"}));
    let turns = (0..10).map(|_| vec![think()]).collect();
    let (out, provider) = run_script(turns, 3).await;
    assert_eq!(out.stop, Stop::IterationCap);
    assert_eq!(out.iterations, 3);
    assert_eq!(provider.requests().len(), 3);
    assert!(out.error.is_none());
    // Thinking is not a verdict: the run has none, and says why.
    assert_eq!(out.state, HealthState::Unknown);
    assert_eq!(out.stop_reason, "3 iterations without set_state");
    assert_eq!(
        out.no_verdict().as_deref(),
        Some("operator gave no verdict: 3 iterations without set_state")
    );

    // The default cap is 4.
    assert_eq!(OperatorConfig::default().max_iterations, 4);
    let turns = (0..10).map(|_| vec![think()]).collect();
    let provider = Arc::new(MockProvider::scripted(turns));
    let out = Operator::new(calm(), provider).run(json!({})).await;
    assert_eq!((out.stop, out.iterations), (Stop::IterationCap, 4));
}

#[tokio::test]
async fn deadline_bounds_a_slow_provider() {
    let provider = Arc::new(SleepyProvider {
        delay: Duration::from_secs(30),
    });
    let started = Instant::now();
    let out = Operator::new(calm(), provider)
        .with_config(OperatorConfig {
            deadline: Duration::from_millis(200),
            ..OperatorConfig::default()
        })
        .run(json!({"reason": "x"}))
        .await;
    assert_eq!(out.stop, Stop::Deadline);
    assert_eq!(out.iterations, 1);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn wait_is_capped_by_the_deadline() {
    let provider = Arc::new(MockProvider::scripted(vec![vec![tool_call(
        "wait",
        json!({"ms": 60_000}),
    )]]));
    let started = Instant::now();
    let out = Operator::new(calm(), provider)
        .with_config(OperatorConfig {
            deadline: Duration::from_millis(300),
            ..OperatorConfig::default()
        })
        .run(json!({}))
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.stop, Stop::Deadline);
}

#[tokio::test]
async fn wait_sleeps_and_reports() {
    let (out, _) = run_script(vec![vec![tool_call("wait", json!({"ms": 20})), done()]], 4).await;
    let r = result_for(&out.transcript, "wait", 0);
    assert!(!r.is_error);
    assert_eq!(content(&r)["waited_ms"], 20);
    assert_eq!(out.stop, Stop::Done);
}

#[tokio::test]
async fn cancellation_ends_the_run() {
    let provider = Arc::new(SleepyProvider {
        delay: Duration::from_secs(30),
    });
    let operator = Operator::new(calm(), provider);
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        trigger.cancel();
    });
    let started = Instant::now();
    let out = operator.run_with_cancel(json!({}), cancel).await;
    assert_eq!(out.stop, Stop::Cancelled);
    assert!(started.elapsed() < Duration::from_secs(3));

    // Already cancelled: no request at all.
    let cancel = CancellationToken::new();
    cancel.cancel();
    let out = operator.run_with_cancel(json!({}), cancel).await;
    assert_eq!((out.stop, out.iterations), (Stop::Cancelled, 0));
}

#[tokio::test]
async fn unknown_tool_is_an_error_result_and_the_loop_goes_on() {
    let (out, _) = run_script(
        vec![vec![tool_call("get_node_info", json!({}))], vec![done()]],
        4,
    )
    .await;
    assert_eq!(out.stop, Stop::Done);
    assert_eq!(out.iterations, 2);
    let r = result_for(&out.transcript, "get_node_info", 0);
    assert!(r.is_error);
    assert_eq!(
        content(&r)["error"],
        "unknown tool `get_node_info`; the tools are take_snapshot, get_snapshot, \
         get_snapshots, send_notification, get_notifications, set_state, think, wait, done, \
         echo, broken"
    );
}

#[tokio::test]
async fn bad_arguments_are_error_results_and_the_loop_goes_on() {
    let bad = vec![
        tool_call("set_state", json!({"state": "purple", "reason": "x"})),
        tool_call("set_state", json!({"reason": "no state"})),
        tool_call(
            "send_notification",
            json!({"type": "t", "severity": "warning"}),
        ),
        tool_call(
            "send_notification",
            json!({"type": "t", "severity": "loud", "summary": "s"}),
        ),
        tool_call("get_snapshot", json!({})),
        tool_call("get_snapshot", json!({"id": "0123456789abcdef"})),
        tool_call("wait", json!({"ms": "soon"})),
        tool_call("wait", json!({"ms": -5})),
        tool_call("think", json!([1, 2])),
        tool_call("echo", json!("not an object")),
        tool_call("broken", json!({})),
    ];
    let n = bad.len();
    let (out, _) = run_script(vec![bad, vec![done()]], 4).await;
    assert_eq!(out.stop, Stop::Done);
    assert_eq!(out.iterations, 2);
    let results = tool_results(&out.transcript);
    assert_eq!(results.len(), n + 1);
    for r in &results[..n] {
        assert!(r.is_error, "{} should fail: {}", r.name, r.content);
        assert!(content(r)["error"].is_string(), "{}", r.content);
    }
    assert!(results[0].content.contains("purple"));
    assert!(results[2].content.contains("summary"));
    assert_eq!(content(&results[5])["error"], "snapshot_not_found");
    assert_eq!(content(&results[10])["error"], "broken on purpose");
    // A refused set_state is no verdict.
    assert_eq!(out.state, HealthState::Unknown);
    assert!(out.notifications.is_empty());
}

#[tokio::test]
async fn several_calls_in_one_reply_all_run_in_order() {
    let (out, provider) = run_script(
        vec![
            vec![
                snap(),
                tool_call("set_state", json!({"state": "warning", "reason": "r"})),
            ],
            vec![tool_call("get_snapshots", json!({})), done()],
        ],
        4,
    )
    .await;
    assert_eq!(out.stop, Stop::Done);
    assert_eq!(out.iterations, 2);
    assert_eq!(out.state, HealthState::Warning);
    let tool_msgs: Vec<_> = out
        .transcript
        .iter()
        .filter_map(|m| match m {
            Message::Tool { results } => Some(results),
            _ => None,
        })
        .collect();
    assert_eq!(tool_msgs.len(), 2);
    let names: Vec<_> = tool_msgs[0].iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["take_snapshot", "set_state"]);
    // Results answer their calls by id.
    let Message::Assistant { tool_calls, .. } = &out.transcript[1] else {
        panic!("second message should be the first reply");
    };
    assert_eq!(tool_msgs[0][0].call_id, tool_calls[0].id);
    assert_eq!(tool_msgs[0][1].call_id, tool_calls[1].id);
    assert_ne!(tool_calls[0].id, tool_calls[1].id);
    // The model is told the new state on the next turn.
    let second = &provider.requests()[1];
    assert_eq!(
        second.messages.last(),
        Some(&Message::User {
            text: "Current state: warning".into()
        })
    );
    let page = content(&tool_msgs[1][0]);
    assert_eq!(page["total"], 1);
    assert_eq!(page["snapshots"][0]["id"], json!(out.snapshots[0].id));
}

#[tokio::test]
async fn calls_after_done_in_the_same_reply_still_run() {
    let (out, _) = run_script(
        vec![
            vec![done(), tool_call("think", json!({"thought": "after"}))],
            vec![snap()],
        ],
        4,
    )
    .await;
    assert_eq!(out.stop, Stop::Done);
    assert_eq!(out.iterations, 1);
    assert_eq!(tool_results(&out.transcript).len(), 2);
    assert!(out.snapshots.is_empty());
}

#[tokio::test]
async fn take_snapshot_result_shape_and_first_message() {
    let (out, provider) = run_script(vec![vec![snap(), done()]], 4).await;
    let r = result_for(&out.transcript, "take_snapshot", 0);
    let v = content(&r);
    let s = &out.snapshots[0];
    assert!(ids::is_id(&s.id), "{}", s.id);
    assert_eq!(
        v,
        json!({"id": s.id, "captured_at": s.captured_at, "data": s.data})
    );
    assert_eq!(s.data["processes"], 3);
    // RFC 3339: 2025-01-02T03:04:05.678Z
    assert_eq!(s.captured_at.len(), 24);
    assert_eq!(&s.captured_at[10..11], "T");

    let first = &provider.requests()[0];
    assert_eq!(first.model, "mock");
    assert_eq!(
        first.messages,
        vec![Message::User {
            text: "{\"context\":{\"reason\":\"sandbox health check\"}}\n\nCurrent state: unknown"
                .into()
        }]
    );
    assert!(first.system.contains("If processes > 10"));
    assert!(first.system.contains("Current state: <state>"));
    let tools: Vec<_> = first.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        tools,
        [
            "take_snapshot",
            "get_snapshot",
            "get_snapshots",
            "send_notification",
            "get_notifications",
            "set_state",
            "think",
            "wait",
            "done",
            "echo",
            "broken"
        ]
    );
}

#[tokio::test]
async fn callbacks_and_lookups_work() {
    let (out, _) = run_script(
        vec![
            vec![snap(), tool_call("echo", json!({"x": 1}))],
            vec![
                tool_call("get_snapshot", json!({"id": "latest"})),
                notify(json!(["latest"])),
                tool_call("get_notifications", json!(null)),
                done(),
            ],
        ],
        4,
    )
    .await;
    let echo = result_for(&out.transcript, "echo", 0);
    assert!(!echo.is_error);
    assert_eq!(content(&echo), json!({"echo": {"x": 1}}));
    let got = content(&result_for(&out.transcript, "get_snapshot", 0));
    assert_eq!(got["id"], json!(out.snapshots[0].id));
    let notes = content(&result_for(&out.transcript, "get_notifications", 0));
    assert_eq!(notes["notifications"][0]["type"], "process_spike");
    assert_eq!(
        notes["notifications"][0]["id"],
        json!(out.notifications[0].id)
    );
}

#[tokio::test]
async fn a_reply_without_tool_calls_is_nudged() {
    let provider = Arc::new(MockProvider::scripted(vec![vec![], vec![done()]]));
    let out = Operator::new(calm(), provider.clone())
        .with_config(OperatorConfig {
            force_tools: false,
            ..config(4)
        })
        .run(json!({"reason": "sandbox health check"}))
        .await;
    assert_eq!(out.stop, Stop::Done);
    assert_eq!(out.iterations, 2);
    let second = &provider.requests()[1];
    let Some(Message::User { text }) = second.messages.last() else {
        panic!("expected a nudge");
    };
    assert!(text.starts_with(NUDGE) && text.ends_with("Current state: unknown"));
    assert!(text.contains("The next step is take_snapshot."), "{text}");
}

#[tokio::test]
async fn summary_is_the_newest_notification_collapsed_and_truncated() {
    let long = format!("  process   count\n elevated {}", "x".repeat(100));
    let first = tool_call(
        "send_notification",
        json!({"type": "a", "severity": "info", "summary": "older one", "snapshot_ids": ["latest"]}),
    );
    let second = tool_call(
        "send_notification",
        json!({"type": "b", "severity": "critical", "summary": long, "snapshot_ids": ["latest"]}),
    );
    let (out, _) = run_script(vec![vec![snap(), first, second, done()]], 4).await;
    assert_eq!(out.notifications.len(), 2);
    let expected = format!("process count elevated {}...", "x".repeat(77 - 23));
    assert_eq!(out.summary.chars().count(), 80);
    assert_eq!(out.summary, expected);

    let healthy = tool_call("set_state", json!({"state": "healthy", "reason": "calm"}));
    let (out, _) = run_script(vec![vec![snap(), healthy, done()]], 4).await;
    assert_eq!(out.summary, "sandbox stable");

    // Neither a notification nor a verdict: the summary does not claim stability.
    let (out, _) = run_script(vec![vec![snap(), done()]], 4).await;
    assert_eq!(out.summary, "no verdict");
}

#[tokio::test]
async fn llm_error_ends_the_run_and_keeps_what_was_gathered() {
    let out = Operator::new(calm(), Arc::new(FailingProvider::default()))
        .run(json!({"reason": "x"}))
        .await;
    assert_eq!(out.stop, Stop::LlmError);
    assert_eq!(out.iterations, 2);
    assert_eq!(out.snapshots.len(), 1);
    assert_eq!(out.usage.input_tokens, 100);
    assert_eq!(out.usage.output_tokens, 7);
    match &out.error {
        Some(RunError::Llm {
            provider,
            kind,
            status,
            ..
        }) => {
            assert_eq!(provider, "failing");
            assert_eq!(*kind, ProviderErrorKind::Overloaded);
            assert_eq!(*status, Some(529));
        }
        other => panic!("unexpected error {other:?}"),
    }
}

#[tokio::test]
async fn outcome_serialises_to_json() {
    let (out, _) = run_script(vec![vec![snap(), notify(json!(["latest"])), done()]], 4).await;
    let v = serde_json::to_value(&out).unwrap();
    assert_eq!(v["stop"], "done");
    assert_eq!(v["state"], "unknown");
    assert_eq!(v["stop_reason"], "the model called done without set_state");
    assert_eq!(v["summary"], "process count elevated");
    assert_eq!(v["notifications"][0]["type"], "process_spike");
    assert_eq!(v["notifications"][0]["severity"], "warning");
    assert_eq!(v["error"], Value::Null);
    let back: Outcome = serde_json::from_value(v).unwrap();
    assert_eq!(back, out);
    let err = RunError::Llm {
        provider: "p".into(),
        kind: ProviderErrorKind::Auth,
        status: Some(401),
        message: "bad key".into(),
    };
    assert_eq!(
        err.to_string(),
        "llm error from p: Auth (HTTP 401): bad key"
    );
    assert_eq!(serde_json::to_value(&err).unwrap()["type"], "llm");
}
