//! The detector against a real daemon, a real operator run (mock provider) and a real HTTP
//! webhook: a process spike on a watched sandbox gives one anomaly, one run, a `warning`
//! verdict, one POST, and the cooldown holds the next run back; an unwatched sandbox is left
//! alone. Synchronised on events, never on sleeps.

use std::time::Duration;

use e2e::serve::{Serve, hook};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);

#[test]
fn a_spike_on_a_watched_sandbox_runs_the_operator_once_and_posts_its_verdict() {
    let hook = hook();
    let scratch = e2e::scratch();
    let jsonl = scratch.path().join("verdicts.jsonl");
    let d = Serve::start(&[
        "--watch-interval",
        "200ms",
        "--watch-provider",
        "mock",
        "--watch-webhook",
        &hook.url,
        "--watch-jsonl",
        jsonl.to_str().unwrap(),
    ]);
    let mut events = d.follow(None);
    // serve without --watch: only the sandbox created with --watch is watched.
    d.ok(&["create", "w-on", "--watch", "--isolation", "none"]);
    d.ok(&["create", "w-off", "--isolation", "none"]);
    d.ok(&["workers", "w-off", "--add", "15"]);
    d.ok(&["workers", "w-on", "--add", "25"]);

    let anomaly = events.event("detector.anomaly", "w-on", LONG);
    assert_eq!(anomaly["metric"], "processes");
    assert_eq!(anomaly["rule"], "processes > 10");
    // The sample may land while the workers are still starting: above the rule is enough.
    assert!(anomaly["value"].as_f64().unwrap() > 10.0, "{anomaly}");
    let trigger = events.event("detector.trigger", "w-on", LONG);
    let run = trigger["run"].as_str().unwrap().to_string();
    let started = events.event("operator.started", "w-on", LONG);
    assert_eq!(
        (started["run"].as_str(), started["trigger"].as_str()),
        (Some(&*run), Some("detector"))
    );
    let state = events.event("operator.state", "w-on", LONG);
    assert_eq!(state["state"], "warning", "{state}");
    assert_eq!(state["run"], run.as_str());
    // The spike goes on: the next sample wants another run, and the cooldown holds it.
    let held = events.event("detector.held", "w-on", LONG);
    assert_eq!(held["reason"], "cooldown");

    let (request, body) = hook.bodies.recv_timeout(LONG).expect("one webhook POST");
    assert!(request.starts_with("POST /hook "), "{request}");
    assert_eq!(body["sandbox"], "w-on");
    assert_eq!(body["run"], run.as_str());
    assert_eq!(body["state"], "warning");
    assert_eq!(body["accepted"], true, "{body}");
    assert_eq!(body["anomaly"]["metric"], "processes");
    assert_eq!(body["notifications"].as_array().unwrap().len(), 1, "{body}");

    // Up to here: one trigger, one run, nothing about the unwatched sandbox.
    assert_eq!(events.count("detector.trigger", "w-on"), 1);
    assert_eq!(events.count("operator.started", "w-on"), 1);
    let about_off = |e: &&Value| {
        e["sandbox"] == "w-off"
            && e["event"]
                .as_str()
                .is_some_and(|n| n.starts_with("detector."))
    };
    assert_eq!(
        events.seen.iter().filter(about_off).count(),
        0,
        "{:#?}",
        events.seen
    );
    // The held run posts nothing: the verdict is the only request the hook got.
    assert!(hook.bodies.try_recv().is_err());

    let lines: Vec<Value> = std::fs::read_to_string(&jsonl)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "anomaly" && l["sandbox"] == "w-on")
    );
    assert!(
        lines
            .iter()
            .any(|l| l["kind"] == "verdict" && l["run"] == run.as_str())
    );
    d.ok(&["destroy", "w-on"]);
    d.ok(&["destroy", "w-off"]);
}

#[test]
fn serve_watch_watches_every_sandbox_but_one_created_with_no_watch() {
    let d = Serve::start(&[
        "--watch",
        "--watch-interval",
        "200ms",
        "--watch-provider",
        "mock",
        "--watch-rule",
        "processes>4",
    ]);
    let mut events = d.follow(None);
    d.ok(&["create", "n-off", "--no-watch", "--isolation", "none"]);
    d.ok(&["create", "n-on", "--isolation", "none"]);
    d.ok(&["workers", "n-off", "--add", "6"]);
    d.ok(&["workers", "n-on", "--add", "6"]);
    let anomaly = events.event("detector.anomaly", "n-on", LONG);
    assert_eq!(anomaly["rule"], "processes > 4");
    // Two more samples of each (the detector samples in id order): still nothing for n-off.
    events.event("detector.held", "n-on", LONG);
    assert!(
        !events
            .seen
            .iter()
            .any(|e| e["sandbox"] == "n-off" && e["event"] == "detector.anomaly"),
        "{:#?}",
        events.seen
    );
    d.ok(&["destroy", "n-on"]);
    d.ok(&["destroy", "n-off"]);
}
