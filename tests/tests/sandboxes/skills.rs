//! The operator's kernel-reading skills (`watch::skill`: logs, pressure, throttling, crash
//! history, headroom, isolation) against real sandboxes and the kernel's own figures: a
//! CPU-limited sandbox that spins is throttled in its cgroup's `cpu.stat`, a crashed runner
//! shows in the crash history with its signal, lines the app printed are in the logs skill
//! escaped, and the pressure skill reads PSI where the cgroup has it (cgroup v2) and says
//! "not available" on v1. Each skill also runs under the operator with the exploring mock,
//! which plays every tool the skill offers.

use std::sync::Arc;
use std::time::Duration;

use e2e::manager::create_app;
use e2e::prelude::*;
use operator::{MockProvider, Operator, OperatorConfig, Skill};
use sandbox::{Level, Limits, Status};
use serde_json::{Value, json};
use watch::skill;

/// Runs `skill` under the exploring mock and returns each tool's result by name (errors
/// fail the test: every tool must answer on a live sandbox).
async fn play_every_tool(skill: Arc<dyn Skill>) -> Vec<(String, Value)> {
    let offered: Vec<String> = skill.callbacks().into_iter().map(|c| c.name).collect();
    assert!(!offered.is_empty(), "{} offers no tool", skill.title());
    let provider = Arc::new(MockProvider::exploring(skill.alert_rule()));
    let config = OperatorConfig {
        max_iterations: 6,
        deadline: Duration::from_secs(30),
        ..OperatorConfig::default()
    };
    let outcome = Operator::new(skill.clone(), provider)
        .with_config(config)
        .run(json!({"reason": "skills test"}))
        .await;
    assert!(outcome.state.is_verdict(), "{}: {outcome:?}", skill.title());
    let mut results = Vec::new();
    for m in &outcome.transcript {
        if let llm::Message::Tool { results: rs } = m {
            for r in rs {
                if offered.contains(&r.name) {
                    assert!(!r.is_error, "{} failed: {}", r.name, r.content);
                    results.push((r.name.clone(), serde_json::from_str(&r.content).unwrap()));
                }
            }
        }
    }
    for name in &offered {
        assert!(
            results.iter().any(|(n, _)| n == name),
            "the mock did not play {name}"
        );
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_limited_spinner_is_throttled_in_its_cgroup() {
    let m = manager();
    let limits = Limits {
        cpu: Some(0.1),
        ..Limits::default()
    };
    create_app(&m, "thr", "hostile_app", limits, Level::Standard).await;
    let s = skill::build("throttling", m.manager.clone(), "thr").unwrap();
    let before = s.snapshot().await;
    if before.get("throttling").is_some() {
        return skip(&format!("no cpu.stat throttling counters: {before}"));
    }
    // Two threads spin for 2 s in the background (the call returns once they started):
    // two cores' worth of demand against a tenth of one.
    let r = m
        .run("thr", "cpu_spin", json!({"threads": 2, "ms": 2000}), None)
        .await
        .unwrap();
    assert_eq!(r["threads"], 2, "{r}");
    let mut after = Value::Null;
    let throttled_enough = wait_until_async(Duration::from_secs(10), async || {
        after = s.snapshot().await;
        after["throttled_usec"].as_u64().unwrap_or(0) > 100_000
    })
    .await;
    assert!(throttled_enough, "{after}");
    let throttled = after["nr_throttled"].as_u64().unwrap();
    assert!(throttled > 0, "{after}");
    assert_eq!(after["cpu_limit_cores"], 0.1, "{after}");
    assert!(after["since_previous_look"].is_object(), "{after}");
    assert!(after["source"].as_str().unwrap().ends_with("cpu.stat"));
    // The mock judges from the figures: throttled most periods of a 0.1-core spin.
    assert!(
        after["throttled_percent"].as_f64().unwrap() > 0.0,
        "{after}"
    );
    let results = play_every_tool(s).await;
    assert!(results[0].1["nr_throttled"].as_u64().unwrap() >= throttled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_runner_is_in_the_crash_history_with_its_signal() {
    let m = manager();
    let info = create_app(
        &m,
        "crash",
        "faulty_app",
        Limits::default(),
        Level::Standard,
    )
    .await;
    let s = skill::build("crashes", m.manager.clone(), "crash").unwrap();
    assert_eq!(s.snapshot().await["crashes_last_hour"], 0);
    let err = m
        .run("crash", "segfault", json!(null), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "crashed", "{err}");
    let up = wait_until_async(Duration::from_secs(20), async || {
        matches!(m.info("crash").await, Ok(i) if i.status == Status::Running && i.pid != info.pid)
    })
    .await;
    assert!(up, "not restarted");
    let snap = s.snapshot().await;
    assert_eq!(snap["crashes_last_hour"], 1, "{snap}");
    assert_eq!(snap["restart_count"], 1, "{snap}");
    let history = snap["history"].as_array().unwrap();
    let crash = history
        .iter()
        .find(|e| e["event"] == "sandbox.crashed")
        .unwrap_or_else(|| panic!("{snap}"));
    assert_eq!(crash["cause"], "signal", "{crash}");
    assert_eq!(crash["signal"], "SIGSEGV", "{crash}");
    assert!(crash["time"].as_str().unwrap().ends_with('Z'), "{crash}");
    assert!(
        history
            .iter()
            .any(|e| e["event"] == "sandbox.restarted" && e["after"] == "crash"),
        "{snap}"
    );
    // The careful policy flags it from the figures.
    let results = play_every_tool(s).await;
    assert!(!results[0].1["history"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_the_app_printed_are_in_the_logs_skill_escaped() {
    let m = manager();
    create_app(&m, "talk", "talker_app", Limits::default(), Level::Standard).await;
    m.run("talk", "say", json!("hello\u{1b}[2J"), None)
        .await
        .unwrap();
    let s = skill::build("logs", m.manager.clone(), "talk").unwrap();
    let mut snap = Value::Null;
    let seen = wait_until_async(Duration::from_secs(10), async || {
        snap = s.snapshot().await;
        snap["stderr_lines_last_minute"].as_u64().unwrap_or(0) >= 1
    })
    .await;
    assert!(seen, "{snap}");
    let last = snap["last_error_lines"].as_array().unwrap();
    let said = last
        .iter()
        .find(|l| l["app_text"].as_str().unwrap().contains("err: hello"))
        .unwrap_or_else(|| panic!("{snap}"));
    assert_eq!(said["app_text"], "err: hello\\u{1b}[2J", "{said}");
    assert_eq!(said["stream"], "stderr");
    let results = play_every_tool(s).await;
    let lines = results[0].1["lines"].as_array().unwrap();
    assert!(
        lines
            .iter()
            .any(|l| l["app_text"] == "out: hello\\u{1b}[2J" && l["stream"] == "stdout"),
        "{lines:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pressure_headroom_and_isolation_read_the_kernel() {
    let m = manager();
    let limits = Limits {
        max_memory: Some(64 << 20),
        max_processes: Some(64),
        ..Limits::default()
    };
    create_app(&m, "k", "hostile_app", limits, Level::Standard).await;
    let pressure = skill::build("pressure", m.manager.clone(), "k").unwrap();
    let snap = pressure.snapshot().await;
    match snap["cgroup"].as_str() {
        Some("v2") => {
            let some = &snap["memory"]["some"];
            assert!(
                some["avg10"].is_number() && some["total_usec"].is_u64(),
                "{snap}"
            );
            assert!(snap["memory_some_avg10"].is_number(), "{snap}");
            assert!(snap["cpu"]["some"]["total_usec"].is_u64(), "{snap}");
        }
        Some("v1") => {
            for r in ["cpu", "memory", "io"] {
                let why = snap[r]["not_available"].as_str().unwrap_or_default();
                assert!(why.contains("cgroup v1"), "{r}: {snap}");
            }
            assert!(snap.get("memory_some_avg10").is_none(), "{snap}");
        }
        _ => panic!("no cgroup: {snap}"),
    }
    assert!(
        snap["host_wide"]["note"]
            .as_str()
            .unwrap()
            .contains("not the sandbox's"),
        "{snap}"
    );
    play_every_tool(pressure).await;

    let headroom = skill::build("headroom", m.manager.clone(), "k").unwrap();
    let snap = headroom.snapshot().await;
    let limits = snap["limits"].as_array().unwrap();
    let memory = limits.iter().find(|l| l["limit"] == "memory").unwrap();
    assert_eq!(memory["max"], (64u64 << 20) as f64, "{memory}");
    let used = memory["used"].as_f64().unwrap();
    let usage = m.usage("k").await.unwrap();
    // The cgroup's own figure, not the app's: within a few pages of a fresh usage read.
    assert!(
        (used - usage.memory_bytes as f64).abs() < (4 << 20) as f64,
        "{used} vs {}",
        usage.memory_bytes
    );
    assert!(
        memory["enforced_by"].as_str().unwrap().contains("memory"),
        "{memory}"
    );
    let tasks = limits.iter().find(|l| l["limit"] == "tasks").unwrap();
    assert_eq!(tasks["max"], 64.0, "{tasks}");
    assert!(snap["max_used_percent"].as_f64().unwrap() < 90.0, "{snap}");
    play_every_tool(headroom).await;

    let isolation = skill::build("isolation", m.manager.clone(), "k").unwrap();
    let snap = isolation.snapshot().await;
    assert_eq!(snap["level"], "standard", "{snap}");
    let mechanisms = snap["mechanisms"].as_array().unwrap();
    assert!(
        mechanisms
            .iter()
            .any(|e| e["mechanism"] == "seccomp" && e["applied"] == true),
        "{snap}"
    );
    assert_eq!(snap["missing_mechanisms"], 0, "{snap}");
    play_every_tool(isolation).await;
}
