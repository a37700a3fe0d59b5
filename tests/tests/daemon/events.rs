//! `host events` against a real daemon: lifecycle events in order through the real client,
//! the backlog, and a subscriber that never reads (bounded daemon memory, a lag marker).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use e2e::apps::demo_source_file;
use e2e::serve::{Conn, Serve};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(120);

#[test]
fn a_follower_sees_create_reload_workers_destroy_in_order() {
    let d = Serve::start(&[]);
    let mut all = d.follow(None);
    let mut only = d.follow(Some("ev-1"));
    d.ok(&["create", "ev-1", "--isolation", "none"]);
    d.ok(&["create", "ev-other", "--isolation", "none"]);
    let source = demo_source_file(d.dir(), 43);
    d.ok(&["reload", "ev-1", "--source", source.to_str().unwrap()]);
    d.ok(&["workers", "ev-1", "--add", "2"]);
    d.ok(&["destroy", "ev-1"]);
    d.ok(&["destroy", "ev-other"]);

    let created = all.event("sandbox.created", "ev-1", LONG);
    let reloaded = all.event("sandbox.reloaded", "ev-1", LONG);
    let added = all.event("sandbox.workers_added", "ev-1", LONG);
    let destroyed = all.event("sandbox.destroyed", "ev-1", LONG);
    let seqs: Vec<u64> = [&created, &reloaded, &added, &destroyed]
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(created["isolation"], "none");
    assert_eq!(
        (reloaded["from"].as_u64(), reloaded["to"].as_u64()),
        (Some(1), Some(2))
    );
    assert_eq!(
        (added["count"].as_u64(), added["total"].as_u64()),
        (Some(2), Some(3))
    );

    // The filtered follower saw only ev-1, the same events in the same order.
    only.event("sandbox.destroyed", "ev-1", LONG);
    assert!(
        only.seen.iter().all(|e| e["sandbox"] == "ev-1"),
        "{:#?}",
        only.seen
    );
    let names: Vec<&str> = only
        .seen
        .iter()
        .filter_map(|e| e["event"].as_str())
        .collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(
        pos("sandbox.created") < pos("sandbox.reloaded")
            && pos("sandbox.reloaded") < pos("sandbox.workers_added")
            && pos("sandbox.workers_added") < pos("sandbox.destroyed"),
        "{names:?}"
    );

    // Without --follow: the backlog, then the client exits; humans get one line per event.
    let out = d.ok(&["events", "ev-1", "--json", "--last", "2"]);
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[1]["event"], "sandbox.destroyed");
    let human = d.ok(&["events", "ev-1"]);
    let line = human
        .lines()
        .find(|l| l.contains("sandbox.reloaded"))
        .unwrap();
    assert!(
        line.contains(" ev-1 from=1 ") && line.ends_with("to=2"),
        "{line}"
    );
}

#[test]
fn a_subscriber_that_never_reads_costs_the_daemon_a_bounded_amount() {
    let d = Serve::start(&["--event-ring", "100"]);
    d.ok(&["create", "mem", "--isolation", "none"]);
    // Subscribe and never read: the daemon's writes to it stall once its socket is full.
    let mut stalled = UnixStream::connect(&d.socket).unwrap();
    stalled
        .write_all(b"{\"op\":\"events\",\"follow\":true}\n")
        .unwrap();
    // Warm up (allocator, first operator runs), then measure.
    let mut ctl = Conn::open(&d.socket);
    let mut ask = |line: &str| ctl.ask(line);
    let operate = "{\"op\":\"operate\",\"id\":\"mem\",\"provider\":\"mock\"}";
    for _ in 0..50 {
        assert_eq!(ask(operate)["ok"]["state"], "healthy");
    }
    let (before, _) = d.memory_kib();
    let events_before = ask("{\"op\":\"ping\"}");
    // Each mock run emits started, snapshots (the whole telemetry), state and done: about
    // 1 KB per run, so an unbounded per-subscriber buffer would grow by megabytes.
    let runs = 2_000;
    for _ in 0..runs {
        assert_eq!(ask(operate)["ok"]["state"], "healthy");
    }
    let (after, _) = d.memory_kib();
    assert!(events_before["ok"]["pid"].is_u64());
    let grown = after.saturating_sub(before);
    println!("daemon RSS {before} -> {after} KiB (+{grown}) over {runs} runs");
    // The broadcast channel (1024 events) and the ring (100) bound what is held.
    assert!(grown < 4 << 10, "daemon grew by {grown} KiB");

    // Reading now: what fit in the socket, then a lag marker, then live events again.
    let mut reader = BufReader::new(stalled);
    let mut lagged = None;
    for _ in 0..10_000 {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
        let v: Value = serde_json::from_str(&line).unwrap();
        if let Some(n) = v.get("lagged") {
            lagged = n.as_u64();
            break;
        }
    }
    let lost = lagged.expect("a lag marker");
    assert!(lost > 1_000, "lost {lost}");
    d.ok(&["destroy", "mem"]);
}
