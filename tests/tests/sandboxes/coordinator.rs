//! The coordinator over real sandboxes: two sandboxes of one app spiking workers make one
//! grounded insight whose figures are the kernel's; a model (a real-HTTP stand-in speaking
//! OpenAI's format) that cites a snapshot the run never took is caught as ungrounded and never
//! raised as healthy; unknown and malformed tool calls are fed back and the run goes on; a
//! schedule is capped and bounded by the deadline; a model that never answers ends at the
//! deadline or at a cancellation.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use e2e::prelude::*;
use llm::{ProviderConfig, ProviderKind, RetryPolicy};
use operator::{Correlation, HealthState, Stop};
use sandbox::{AppSource, SandboxSpec};
use serde_json::{Value, json};
use testkit::http::{loopback, read_request, respond};
use tokio_util::sync::CancellationToken;
use watch::coordinator::{
    Coordinator, CoordinatorConfig, CoordinatorReport, Providers, Trigger, report_insights,
    sandbox_members,
};

/// What a scripted model answers: given whether the request is the coordinator's, how many
/// tool results its conversation holds, and the body, the calls to make (`None`: never
/// answer, holding the connection).
type Script = dyn Fn(bool, usize, &Value) -> Option<Vec<(String, Value)>> + Send + Sync;

/// A stand-in OpenAI-compatible server on 127.0.0.1 that answers by `script`; every request
/// body is kept, and each arrival is told on the returned channel.
fn standin(script: Arc<Script>) -> (String, Arc<Mutex<Vec<Value>>>, mpsc::Receiver<()>) {
    let (listener, url) = loopback();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    let kept = Arc::clone(&bodies);
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let Ok(request) = read_request(&stream) else {
                continue;
            };
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            kept.lock().unwrap().push(body.clone());
            let _ = tx.send(());
            let messages = body["messages"].as_array().cloned().unwrap_or_default();
            let coordinator = messages
                .first()
                .and_then(|m| m["content"].as_str())
                .is_some_and(|s| s.contains("You coordinate"));
            let results = messages.iter().filter(|m| m["role"] == "tool").count();
            match script(coordinator, results, &body) {
                Some(calls) => {
                    let tool_calls: Vec<Value> = calls
                        .iter()
                        .enumerate()
                        .map(|(i, (name, args))| {
                            json!({"id": format!("call_{n}_{i}"), "type": "function",
                                   "function": {"name": name, "arguments": args.to_string()}})
                        })
                        .collect();
                    let reply = json!({"id": "chatcmpl-1", "object": "chat.completion",
                        "created": 1, "model": "stand-in",
                        "choices": [{"index": 0, "finish_reason": "tool_calls",
                            "message": {"role": "assistant", "content": null, "tool_calls": tool_calls}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}});
                    respond(&stream, "200 OK", &reply.to_string());
                }
                None => held.push(stream),
            }
        }
    });
    (url, bodies, rx)
}

/// The stand-in as the coordinator's and its members' model.
fn model(url: &str) -> Providers {
    let mut config = ProviderConfig::defaults(ProviderKind::OpenAi, "sk-test");
    config.base_url = url.to_string();
    config.model = "stand-in".into();
    config.retry = RetryPolicy::new(
        1,
        Duration::from_millis(1),
        Duration::from_millis(1),
        Duration::from_secs(60),
    );
    Providers::Model(Arc::from(
        llm::provider_from_config(ProviderKind::OpenAi, config).unwrap(),
    ))
}

fn call(name: &str, args: Value) -> (String, Value) {
    (name.to_string(), args)
}

/// A member that looks, notifies of the spike it sees and says warning.
fn member_turn(results: usize) -> Vec<(String, Value)> {
    if results == 0 {
        return vec![call("take_snapshot", json!({}))];
    }
    vec![
        call(
            "send_notification",
            json!({"type": "process_spike", "severity": "warning",
                   "summary": "process count elevated", "snapshot_ids": ["latest"]}),
        ),
        call("set_state", json!({"state": "warning", "reason": "spike"})),
        call("done", json!({})),
    ]
}

/// The coordinator's snapshot, read back out of its conversation (the take_snapshot result).
fn coordinator_snapshot(body: &Value) -> Value {
    let content = body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "tool")
        .and_then(|m| m["content"].as_str())
        .expect("a take_snapshot result");
    let v: Value = serde_json::from_str(content).unwrap();
    v["data"].clone()
}

/// Creates `ids` from the demo app and starts `workers` extra workers in each.
async fn spiking(m: &Managed, ids: &[String], workers: u32) {
    for id in ids {
        m.create(id, SandboxSpec::new(AppSource::Crate(demo_app())))
            .await
            .unwrap();
        m.spawn_workers(id, workers).await.unwrap();
    }
}

fn config(deadline: Duration) -> CoordinatorConfig {
    CoordinatorConfig {
        deadline,
        ..CoordinatorConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sandboxes_of_one_app_spiking_workers_make_one_grounded_insight() {
    let m = manager();
    let ids = vec!["co-a".to_string(), "co-b".to_string()];
    spiking(&m, &ids, 12).await;
    let report = Coordinator::new(
        m.manager.clone(),
        sandbox_members(&m, &ids, false),
        Providers::Mock,
    )
    .run(
        Trigger::Incident("test: two spikes".into()),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(report.insights.len(), 1, "{report:#?}");
    let insight = &report.insights[0];
    assert!(insight.grounded, "{insight:#?}");
    assert_eq!(insight.correlation, Correlation::Symptomatic);
    assert_eq!(insight.state, HealthState::Warning);
    assert_eq!(insight.notification_ids.len(), 2, "one from each member");
    let mut sources = insight.sources.clone();
    sources.sort();
    assert_eq!(sources, ids);
    // The figures it rests on are the kernel's: each sandbox's cited process count is what
    // its cgroup says now (init, the app process, its worker and the 12 added), and the cause
    // is the host's record of the 12 workers it started.
    for id in &ids {
        let live = m.usage(id).await.unwrap().processes;
        assert_eq!(live, 15, "{id}");
    }
    let processes: Vec<&Value> = insight
        .observations
        .iter()
        .filter(|o| o.metric == "processes")
        .map(|o| &o.value)
        .collect();
    assert_eq!(processes, [&json!(15), &json!(15)], "{insight:#?}");
    let added = insight
        .observations
        .iter()
        .filter(|o| o.metric.ends_with(".count") && o.value == json!(12))
        .count();
    assert_eq!(added, 2, "{insight:#?}");
    assert_eq!(report.members.len(), 2);
    assert!(
        report
            .members
            .iter()
            .all(|r| r.state == HealthState::Warning)
    );

    // One event for it, daemon-wide (it covers two sandboxes).
    report_insights(m.events(), &report);
    let events = m
        .events()
        .subscribe(usize::MAX, |e| e.kind.name() == "operator.insight");
    assert_eq!(events.backlog.len(), 1);
    let event = serde_json::to_value(&*events.backlog[0]).unwrap();
    assert!(event.get("sandbox").is_none(), "{event}");
    assert_eq!(event["grounded"], true);
    assert_eq!(event["correlation"], "symptomatic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_insight_citing_a_snapshot_the_run_never_took_is_ungrounded_and_never_healthy() {
    let m = manager();
    let ids = vec!["co-lie".to_string()];
    spiking(&m, &ids, 12).await;
    let script: Arc<Script> = Arc::new(|coordinator, results, body| {
        if !coordinator {
            return Some(member_turn(results));
        }
        if results == 0 {
            return Some(vec![call("take_snapshot", json!({}))]);
        }
        let data = coordinator_snapshot(body);
        let note = data["members"][0]["notifications"][0]["id"].clone();
        Some(vec![
            call(
                "record_insight",
                json!({"notification_ids": [note], "correlation": "temporal",
                       "hypothesis": "a passing blip: all is well",
                       "observations": [{"snapshot_id": "feedfacefeedface", "metric": "processes", "value": 3}],
                       "state": "healthy", "confidence": 0.95}),
            ),
            call("set_state", json!({"state": "healthy", "reason": "fine"})),
            call("done", json!({})),
        ])
    });
    let (url, _, _) = standin(script);
    let report = Coordinator::new(
        m.manager.clone(),
        sandbox_members(&m, &ids, false),
        model(&url),
    )
    .with_config(config(Duration::from_secs(60)))
    .run(Trigger::Incident("test".into()), CancellationToken::new())
    .await;
    assert_eq!(report.insights.len(), 1, "{report:#?}");
    let lie = &report.insights[0];
    assert!(!lie.grounded);
    assert_eq!(
        lie.ungrounded.as_deref(),
        Some(
            "insight_unknown_snapshot: cites snapshot feedfacefeedface, which the snapshots do \
             not contain"
        )
    );
    assert_eq!(
        lie.state,
        HealthState::Unknown,
        "an ungrounded claim of health"
    );
    report_insights(m.events(), &report);
    let events = m
        .events()
        .subscribe(usize::MAX, |e| e.kind.name() == "operator.insight");
    let event = serde_json::to_value(&*events.backlog[0]).unwrap();
    assert_eq!(event["state"], "unknown");
    assert_eq!(event["grounded"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_and_malformed_tool_calls_are_fed_back_and_the_run_goes_on() {
    let m = manager();
    let ids = vec!["co-bad".to_string()];
    spiking(&m, &ids, 12).await;
    let script: Arc<Script> = Arc::new(|coordinator, results, body| {
        if !coordinator {
            return Some(member_turn(results));
        }
        match results {
            0 => Some(vec![call("take_snapshot", json!({}))]),
            1 => Some(vec![
                call("resolve", json!({"incident": "all"})),
                call(
                    "record_insight",
                    json!({"correlation": "maybe", "hypothesis": 3}),
                ),
            ]),
            _ => {
                let data = coordinator_snapshot(body);
                let member = &data["members"][0];
                Some(vec![
                    call(
                        "record_insight",
                        json!({"notification_ids": [member["notifications"][0]["id"]],
                               "correlation": "causal", "hypothesis": "workers were added",
                               "observations": [{"snapshot_id": member["snapshot_id"], "metric": "processes", "value": member["data"]["processes"]}],
                               "state": "warning", "confidence": 0.8}),
                    ),
                    call("set_state", json!({"state": "warning", "reason": "spike"})),
                    call("done", json!({})),
                ])
            }
        }
    });
    let (url, bodies, _) = standin(script);
    let report = Coordinator::new(
        m.manager.clone(),
        sandbox_members(&m, &ids, false),
        model(&url),
    )
    .with_config(config(Duration::from_secs(60)))
    .run(Trigger::Incident("test".into()), CancellationToken::new())
    .await;
    assert_eq!(report.stop, Stop::Done, "{report:#?}");
    assert_eq!(report.tool_errors, 2);
    assert_eq!(report.insights.len(), 1);
    assert!(report.insights[0].grounded, "{:#?}", report.insights[0]);
    // What the model got back for its two bad calls, in its third request.
    let bodies = bodies.lock().unwrap();
    let third = bodies
        .iter()
        .filter(|b| {
            b["messages"][0]["content"]
                .as_str()
                .is_some_and(|s| s.contains("You coordinate"))
        })
        .nth(2)
        .expect("a third coordinator request");
    let fed: Vec<String> = third["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .filter_map(|m| m["content"].as_str().map(str::to_string))
        .collect();
    assert!(
        fed.iter().any(|c| c.contains("unknown tool `resolve`")),
        "{fed:?}"
    );
    assert!(
        fed.iter()
            .any(|c| c.contains("invalid arguments for record_insight")),
        "{fed:?}"
    );
}

/// A coordinator that schedules a later look (`ms`) and a second one (refused: one a run).
fn scheduler(ms: u64) -> Arc<Script> {
    Arc::new(move |coordinator, results, _| {
        if !coordinator {
            return Some(vec![call("done", json!({}))]);
        }
        if results == 0 {
            return Some(vec![call("take_snapshot", json!({}))]);
        }
        Some(vec![
            call("schedule", json!({"ms": ms, "reason": "recheck"})),
            call("schedule", json!({"ms": 1, "reason": "again"})),
            call(
                "set_state",
                json!({"state": "observing", "reason": "too early"}),
            ),
            call("done", json!({})),
        ])
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_look_runs_once_more_and_a_second_schedule_is_refused() {
    let m = manager();
    let (url, bodies, _) = standin(scheduler(50));
    let report: CoordinatorReport = Coordinator::new(m.manager.clone(), Vec::new(), model(&url))
        .with_config(config(Duration::from_secs(60)))
        .run(Trigger::Incident("test".into()), CancellationToken::new())
        .await;
    assert_eq!(report.looks, 2, "{report:#?}");
    assert_eq!(report.scheduled.len(), 2, "one accepted per look");
    assert_eq!(report.tool_errors, 2, "the second schedule of each look");
    let firsts: Vec<String> = bodies
        .lock()
        .unwrap()
        .iter()
        .filter(|b| b["messages"].as_array().unwrap().len() == 2)
        .map(|b| b["messages"][1]["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(firsts.len(), 2, "{firsts:?}");
    assert!(
        firsts[1].contains("the later look you scheduled: recheck"),
        "{firsts:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_is_capped_and_bounded_by_the_deadline() {
    let m = manager();
    let (url, _, _) = standin(scheduler(10_000_000));
    let started = Instant::now();
    let report = Coordinator::new(m.manager.clone(), Vec::new(), model(&url))
        .with_config(config(Duration::from_secs(2)))
        .run(Trigger::Incident("test".into()), CancellationToken::new())
        .await;
    assert_eq!(report.scheduled[0].ms, watch::coordinator::MAX_SCHEDULE_MS);
    assert_eq!(report.looks, 1, "{report:#?}");
    assert_eq!(report.stop, Stop::Deadline);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_that_never_answers_ends_at_the_deadline_or_when_cancelled() {
    let m = manager();
    let (url, _, arrived) = standin(Arc::new(|_, _, _| None));
    let started = Instant::now();
    let report = Coordinator::new(m.manager.clone(), Vec::new(), model(&url))
        .with_config(config(Duration::from_millis(1500)))
        .run(Trigger::Incident("test".into()), CancellationToken::new())
        .await;
    assert_eq!(report.stop, Stop::Deadline, "{report:#?}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "{:?}",
        started.elapsed()
    );

    // The first run's request was told; the second's is awaited below.
    while arrived.try_recv().is_ok() {}
    let cancel = CancellationToken::new();
    let coordinator = Coordinator::new(m.manager.clone(), Vec::new(), model(&url))
        .with_config(config(Duration::from_secs(120)));
    let run = {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            coordinator
                .run(Trigger::Question("why?".into()), cancel)
                .await
        })
    };
    // Cancelled once the model has the request (it never answers).
    tokio::task::spawn_blocking(move || arrived.recv_timeout(Duration::from_secs(60)))
        .await
        .unwrap()
        .expect("the request arrives");
    let cancelled_at = Instant::now();
    cancel.cancel();
    let report = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("the run ends once cancelled")
        .unwrap();
    assert_eq!(report.stop, Stop::Cancelled);
    assert!(report.answer.is_none());
    assert!(cancelled_at.elapsed() < Duration::from_secs(5));
}
