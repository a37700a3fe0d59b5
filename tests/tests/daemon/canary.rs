//! Canary reloads through the real binary: `host reload ID --canary --watch-for D` keeps a
//! version that behaves, and rolls back by itself, saying why in an event and in the
//! command's output, a version whose workers crash once it is loaded or whose calls fail.

use std::time::{Duration, Instant};

use e2e::apps::block_on;
use e2e::prelude::*;
use e2e::serve::Serve;

#[test]
fn a_canary_whose_workers_crash_is_rolled_back_by_the_daemon() {
    let v1 = block_on(built("sandbox_app"));
    let crashing = block_on(built("canary_crash_app"));
    let d = Serve::start(&[]);
    d.create("can", &v1, &[]);
    assert_eq!(d.call_answer("can"), 41);
    let mut events = d.follow(Some("can"));
    let started = Instant::now();
    let out = d.host(&[
        "reload",
        "can",
        "--lib",
        crashing.to_str().unwrap(),
        "--canary",
        "--watch-for",
        "20s",
    ]);
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", d.log());
    assert!(stdout.contains("reloaded can: v1 -> v2"), "{stdout}");
    assert!(
        stdout.contains("canary can: rolled back to v1 after")
            && stdout.contains("worker 0 crashed and was restarted: signal SIGABRT")
            && stdout.contains("(swapped back, state carried over)"),
        "{stdout}"
    );
    // Flagged at the first crash, long before the window ends.
    assert!(took < Duration::from_secs(15), "{took:?}");
    let event = events.event("sandbox.canary_rolled_back", "can", Duration::from_secs(5));
    assert_eq!(event["from"], 2);
    assert_eq!(event["to"], 1);
    assert!(
        event["reason"]
            .as_str()
            .unwrap()
            .contains("worker 0 crashed"),
        "{event}"
    );
    assert_eq!(events.count("sandbox.canary_started", "can"), 1);
    // The previous version serves again, the sandbox runs, and its workers stay up.
    assert_eq!(d.call_answer("can"), 41);
    let info = d.json(&["info", "can"]);
    assert_eq!(info["status"], "running", "{info}");
    assert_eq!(info["app"]["version"], 1, "{info}");
    d.ok(&["destroy", "can"]);
}

#[test]
fn a_canary_whose_calls_fail_is_rolled_back_by_the_daemon() {
    // The new version (talker_app) has no `answer`: every call the clients go on making
    // fails, which only the host's count of failed calls shows (no crash, no spike).
    let v1 = block_on(built("sandbox_app"));
    let other = block_on(built("talker_app"));
    let d = Serve::start(&[]);
    d.create("err", &v1, &[]);
    for _ in 0..3 {
        assert_eq!(d.call_answer("err"), 41);
    }
    let mut events = d.follow(Some("err"));
    let reload = d
        .cmd()
        .args(["reload", "err", "--lib", other.to_str().unwrap()])
        .args(["--canary", "--watch-for", "30s"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    events.event("sandbox.canary_started", "err", Duration::from_secs(20));
    let mut reload = reload;
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut failed = 0;
    while reload.try_wait().unwrap().is_none() && Instant::now() < deadline {
        if !d.host(&["call", "err", "answer"]).status.success() {
            failed += 1;
        }
    }
    let out = reload.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{}", d.log());
    assert!(failed >= 4, "{failed} calls failed\n{stdout}");
    assert!(
        stdout.contains("canary err: rolled back to v1 after") && stdout.contains("error rate: "),
        "{stdout}"
    );
    let event = events.event("sandbox.canary_rolled_back", "err", Duration::from_secs(5));
    let reason = event["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("error rate: ") && reason.ends_with("(0 of 3 before)"),
        "{event}"
    );
    assert_eq!(d.call_answer("err"), 41);
    d.ok(&["destroy", "err"]);
}

#[test]
fn a_canary_that_behaves_is_kept_after_its_window() {
    let v1 = block_on(built("sandbox_app"));
    let v2 = block_on(demo_lib_answering(42));
    let d = Serve::start(&[]);
    d.create("keep", &v1, &[]);
    let out = d.json(&[
        "reload",
        "keep",
        "--lib",
        v2.to_str().unwrap(),
        "--canary",
        "--watch-for",
        "2s",
    ]);
    assert_eq!(out["outcome"], "kept", "{out}");
    assert_eq!(out["serving"], 2, "{out}");
    assert!(out["watched_ms"].as_u64().unwrap() >= 2000, "{out}");
    assert!(out["baseline"]["processes"].as_u64().unwrap() >= 2, "{out}");
    assert!(out.get("reason").is_none(), "{out}");
    assert_eq!(d.call_answer("keep"), 42);
    d.ok(&["destroy", "keep"]);
}

#[test]
fn a_batch_of_canaries_stops_at_the_first_rolled_back() {
    let v1 = block_on(built("sandbox_app"));
    let crashing = block_on(built("canary_crash_app"));
    let d = Serve::start(&[]);
    for id in ["cb-0", "cb-1", "cb-2"] {
        d.create(id, &v1, &[]);
    }
    let out = d.host(&[
        "batch",
        "reload",
        "--lib",
        crashing.to_str().unwrap(),
        "--canary",
        "--watch-for",
        "20s",
        "--prefix",
        "cb-",
        "--json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(4), "{stdout}\n{}", d.log());
    let items: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|v: &serde_json::Value| v.get("id").is_some())
        .collect();
    let of = |id: &str| items.iter().find(|i| i["id"] == id).cloned().unwrap();
    let first = of("cb-0");
    assert_eq!(first["error"]["kind"], "reload_refused", "{first}");
    let message = first["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("canary rolled back: worker 0 crashed") && message.contains("v1 serves"),
        "{message}"
    );
    for id in ["cb-1", "cb-2"] {
        let item = of(id);
        assert_eq!(item["error"]["kind"], "cancelled", "{item}");
        assert!(
            item["error"]["message"]
                .as_str()
                .unwrap()
                .contains("the canary on cb-0"),
            "{item}"
        );
    }
    for id in ["cb-0", "cb-1", "cb-2"] {
        assert_eq!(d.call_answer(id), 41, "{id}");
        assert_eq!(d.json(&["info", id])["app"]["version"], 1, "{id}");
    }
}
