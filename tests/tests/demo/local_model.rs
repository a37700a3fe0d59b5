//! Opt-in: `host anomaly --load 25` (once more with `--coordinator`) and `host demo` against a
//! real small model on this machine (Qwen2.5-Coder 0.5B behind llama-cpp-python's
//! OpenAI-compatible server, started by
//! `scripts/local-model.sh`). Skipped, and said so, unless `SANDBOX_TEST_LOCAL_MODEL_URL`
//! names the running server (`http://127.0.0.1:PORT/v1`):
//!
//! ```text
//! SANDBOX_TEST_LOCAL_MODEL_URL=$(scripts/local-model.sh) cargo test -p e2e --test demo local_model
//! ```
//!
//! The model's judgement may be wrong; the pipeline may not be. Each command is run up to
//! `SANDBOX_TEST_LOCAL_MODEL_RUNS` times (default 3) until one reaches a verdict; at least
//! one must, and for every run that reached one, the guardrail's decision is the one the
//! kernel's figures call for (an accepted verdict agrees with them, a rejected one does
//! not), and the exit status follows it. `--timeout` is `SANDBOX_TEST_LOCAL_MODEL_TIMEOUT_MS`
//! (default 600000: a cold prompt takes tens of seconds on 2 cores).

use e2e::prelude::*;
use serde_json::Value;

use super::{assert_clean, assert_kernel_evidence_once, run, stdout};

/// The server's base URL, or `None` (the test is skipped, and says so).
fn server() -> Option<String> {
    let url = std::env::var("SANDBOX_TEST_LOCAL_MODEL_URL")
        .ok()
        .filter(|u| !u.trim().is_empty());
    if url.is_none() {
        testkit::skip(
            "SANDBOX_TEST_LOCAL_MODEL_URL is not set (start a server with \
             scripts/local-model.sh and set it to the URL printed)",
        );
    }
    url
}

fn number(var: &str, default: u64) -> u64 {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

/// What the guardrail must decide from the kernel's figures and the verdict: the rules of
/// `watch::skill::guardrail`, written out again so that the test does not take the
/// product's word for them.
fn kernel_agrees(anomaly: bool, processes: u64, threshold: u64, state: &str, notes: u64) -> bool {
    if !anomaly {
        return state == "healthy" && notes == 0;
    }
    if processes > threshold {
        state == "warning" && notes > 0
    } else {
        state == "healthy" && notes == 0
    }
}

/// Runs `args` (a flow with `--json`) against the local server up to the configured number
/// of times, checking every run; returns how many of them reached a verdict.
fn runs_reach_a_verdict(url: &str, args: &[&str], anomaly: bool) -> (u64, u64) {
    let timeout = number("SANDBOX_TEST_LOCAL_MODEL_TIMEOUT_MS", 600_000).to_string();
    let tries = number("SANDBOX_TEST_LOCAL_MODEL_RUNS", 3).max(1);
    let mut args: Vec<&str> = args.to_vec();
    args.extend(["--json", "--timeout", &timeout]);
    let env = [
        ("BEAMLENS_DEMO_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", url),
    ];
    let mut verdicts = 0;
    let mut made = 0;
    while made < tries && verdicts == 0 {
        made += 1;
        let dir = scratch();
        let out = run(&args, &env, dir.path());
        let text = stdout(&out);
        let what = format!("{args:?} run {made}: {text}");
        let report: Value = serde_json::from_str(text.trim()).expect(&what);
        assert_kernel_evidence_once(&report["sandbox"]["isolation"]);
        let operator = &report["operator"];
        let state = operator["state"].as_str().expect(&what);
        println!(
            "{args:?} run {made}: state={state} notifications={} stop={} forced={} \
             guardrail={}",
            operator["notifications"],
            operator["stop_reason"],
            operator["forced"],
            report["guardrail"]
        );
        if state == "unknown" {
            // No verdict: said so, nothing checked, exit 1.
            assert_eq!(out.status.code(), Some(1), "{what}");
            assert!(report.get("guardrail").is_none(), "{what}");
            assert_clean(dir.path(), &out);
            continue;
        }
        verdicts += 1;
        let guard = &report["guardrail"];
        let processes = guard["live_processes"].as_u64().expect(&what);
        let threshold = guard["threshold"].as_u64().expect(&what);
        let notes = operator["notifications"].as_u64().expect(&what);
        if anomaly {
            // init + the app process + the initial worker + 25 injected.
            assert_eq!(processes, 28, "{what}");
        }
        let expected = kernel_agrees(anomaly, processes, threshold, state, notes);
        assert_eq!(
            guard["ok"], expected,
            "the guardrail against the kernel: {what}"
        );
        assert_eq!(report["ok"], expected, "{what}");
        assert_eq!(
            out.status.code(),
            Some(if expected { 0 } else { 1 }),
            "{what}"
        );
        assert_clean(dir.path(), &out);
    }
    (verdicts, made)
}

#[test]
fn anomaly_against_a_local_model_reaches_a_checked_verdict() {
    let Some(url) = server() else { return };
    let (verdicts, made) = runs_reach_a_verdict(&url, &["anomaly", "--load", "25"], true);
    assert!(verdicts > 0, "no verdict in {made} runs");
}

#[test]
fn demo_against_a_local_model_reaches_a_checked_verdict() {
    let Some(url) = server() else { return };
    let (verdicts, made) = runs_reach_a_verdict(&url, &["demo"], false);
    assert!(verdicts > 0, "no verdict in {made} runs");
}

/// The coordinator once against the local model: `anomaly --load 25 --coordinator`. The
/// model may correlate badly; the pipeline may not: once its operator reached a verdict, the
/// coordinator ran (its tools reached the model over the OpenAI-compatible API), every
/// insight says whether it is grounded and an ungrounded one is never healthy, and the run
/// passes only with an accepted verdict and a grounded insight.
#[test]
fn the_coordinator_runs_once_against_a_local_model() {
    let Some(url) = server() else { return };
    let timeout = number("SANDBOX_TEST_LOCAL_MODEL_TIMEOUT_MS", 600_000).to_string();
    let tries = number("SANDBOX_TEST_LOCAL_MODEL_RUNS", 3).max(1);
    let env = [
        ("BEAMLENS_DEMO_PROVIDER", "openai"),
        ("OPENAI_BASE_URL", url.as_str()),
    ];
    let args = [
        "anomaly",
        "--load",
        "25",
        "--coordinator",
        "--json",
        "--timeout",
        &timeout,
    ];
    for made in 1..=tries {
        let dir = scratch();
        let out = run(&args, &env, dir.path());
        let text = stdout(&out);
        let what = format!("coordinator run {made}: {text}");
        let report: Value = serde_json::from_str(text.trim()).expect(&what);
        assert_clean(dir.path(), &out);
        let Some(coordinator) = report.get("coordinator") else {
            // The operator gave no verdict: the coordinator was not reached.
            println!("run {made}: no verdict, no coordinator");
            continue;
        };
        println!(
            "run {made}: coordinator stop={} looks={} insights={} tool_errors={}",
            coordinator["stop_reason"],
            coordinator["looks"],
            coordinator["insights"],
            coordinator["tool_errors"]
        );
        assert!(coordinator["looks"].as_u64().unwrap_or(0) >= 1, "{what}");
        assert_ne!(coordinator["stop"], "llm_error", "{what}");
        let insights = coordinator["insights"].as_array().expect(&what);
        for i in insights {
            let grounded = i["grounded"].as_bool().expect(&what);
            assert_eq!(grounded, i.get("ungrounded").is_none(), "{what}");
            if !grounded {
                assert_ne!(i["state"], "healthy", "{what}");
            }
        }
        let any_grounded = insights.iter().any(|i| i["grounded"] == true);
        let expected = report["guardrail"]["ok"] == true && any_grounded;
        assert_eq!(report["ok"], expected, "{what}");
        assert_eq!(
            out.status.code(),
            Some(if expected { 0 } else { 1 }),
            "{what}"
        );
        return;
    }
    panic!("the operator reached no verdict in {tries} runs: the coordinator never ran");
}
