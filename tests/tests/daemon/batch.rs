//! `host batch` through the real binary and daemon: 200 sandboxes made and destroyed with
//! nothing left, per-item errors and the exit status, the sandbox cap refused up front, the
//! batch timeout, one reload into many, and a client killed in the middle of a batch.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use e2e::apps::block_on;
use e2e::prelude::*;
use e2e::serve::Serve;
use serde_json::Value;
use testkit::proc::ChildGuard;

/// The lines a `--json` batch printed: the items, then the summary.
fn lines(stdout: &[u8]) -> (Vec<Value>, Value) {
    let mut items: Vec<Value> = String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let summary = items.pop().expect("a summary line");
    assert!(summary.get("summary").is_some(), "{summary}");
    (items, summary["summary"].clone())
}

/// `host batch ARGS --json` (and the tests' cgroup parent for a create); its exit code and
/// lines.
fn batch(d: &Serve, args: &[&str]) -> (i32, Vec<Value>, Value) {
    let mut all: Vec<String> = vec!["batch".into()];
    all.extend(args.iter().map(|a| a.to_string()));
    if args[0] == "create"
        && let Some(parent) = testkit::cgroup::cgroup_parent()
    {
        all.extend(["--cgroup-parent".into(), parent.display().to_string()]);
    }
    all.push("--json".into());
    let out = d.cmd().args(&all).output().unwrap();
    assert!(
        out.status.code() == Some(0) || out.status.code() == Some(4),
        "host {all:?}: {}\n{}\n--- daemon log ---\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        d.log()
    );
    let (items, summary) = lines(&out.stdout);
    (out.status.code().unwrap(), items, summary)
}

/// What the daemon holds now: its sandboxes' ids (all `running`), its sandbox cgroups, its
/// state entries (a daemon without a pool: a pooled sandbox keeps its runner's `pool.`
/// directory name).
fn holdings(d: &Serve) -> (BTreeSet<String>, BTreeSet<String>, BTreeSet<String>) {
    let list = d.json(&["list"]);
    let mut ids = BTreeSet::new();
    for s in list.as_array().unwrap() {
        assert_eq!(
            s["status"], "running",
            "only whole sandboxes are listed: {s}"
        );
        ids.insert(s["id"].as_str().unwrap().to_string());
    }
    // Sandbox cgroups are `sandbox-<dir name>` under a `sandbox-host` of each hierarchy;
    // the daemon's pid is in every name it makes.
    let mark = format!("-{}-", d.pid());
    let cgroups: BTreeSet<String> = testkit::cgroup::named("sandbox-host", 4)
        .iter()
        .filter_map(|parent| std::fs::read_dir(parent).ok())
        .flat_map(|entries| entries.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("sandbox-") && n.contains(&mark))
        .collect();
    let state: BTreeSet<String> = std::fs::read_dir(&d.state)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    (ids, cgroups, state)
}

/// The cgroup names of the sandbox and prepared-runner directories `state`
/// (`sandbox-<dir name>`, dots made dashes).
fn cgroups_of(state: &BTreeSet<String>) -> BTreeSet<String> {
    state
        .iter()
        .map(|n| format!("sandbox-{}", n.replace('.', "-")))
        .collect()
}

/// Waits until the daemon holds exactly `n` sandboxes, cgroups and state entries (what a
/// destroy removes goes in the background).
fn holds_exactly(d: &Serve, n: usize) {
    let mut last = None;
    let settled = wait_until(Duration::from_secs(30), || {
        let h = holdings(d);
        let ok = h.0.len() == n && h.1.len() == n && h.2.len() == n;
        last = Some(h);
        ok
    });
    assert!(settled, "expected {n} of each: {last:?}");
}

#[test]
fn two_hundred_made_in_one_batch_and_destroyed_in_another_leave_nothing() {
    // With the runner pool: most of them are made from prepared runners.
    let d = Serve::start(&["--pool", "2"]);
    let lib = block_on(built("sandbox_app"));
    let (code, items, summary) = batch(
        &d,
        &[
            "create",
            "--count",
            "200",
            "--prefix",
            "w",
            "--lib",
            lib.to_str().unwrap(),
        ],
    );
    assert_eq!((code, &summary["ok"]), (0, &Value::from(200)), "{summary}");
    assert_eq!(items.len(), 200);
    let pids: Vec<i64> = items
        .iter()
        .flat_map(|i| {
            [
                i["ok"]["pid"].as_i64().unwrap(),
                i["ok"]["app_pid"].as_i64().unwrap(),
            ]
        })
        .collect();
    let indexes: BTreeSet<u64> = items.iter().map(|i| i["index"].as_u64().unwrap()).collect();
    assert_eq!(indexes.len(), 200, "every item once");
    // One cgroup per sandbox and per prepared runner (made with it; a refill may be between
    // its directory and its cgroup), nothing else.
    let mut last = None;
    let matched = wait_until(Duration::from_secs(10), || {
        let (ids, cgroups, state) = holdings(&d);
        let ok = ids.len() == 200 && cgroups == cgroups_of(&state);
        last = Some((ids.len(), cgroups, state));
        ok
    });
    assert!(matched, "{last:?}");
    let (code, _, summary) = batch(&d, &["call", "--function", "answer", "--prefix", "w-"]);
    assert_eq!((code, &summary["ok"]), (0, &Value::from(200)), "{summary}");
    let (code, items, summary) = batch(&d, &["destroy", "--all"]);
    assert_eq!((code, &summary["ok"]), (0, &Value::from(200)), "{summary}");
    assert_eq!(
        items[0]["ok"]["destroyed"]
            .as_str()
            .map(|s| s.starts_with("w-")),
        Some(true)
    );
    // Nothing but the (at most 2) prepared runners waiting for the next create.
    let mut last = None;
    let empty = wait_until(Duration::from_secs(30), || {
        let (ids, cgroups, state) = holdings(&d);
        let ok = ids.is_empty()
            && cgroups == cgroups_of(&state)
            && state.len() <= 2
            && state.iter().all(|n| n.starts_with("pool."));
        last = Some((ids, cgroups, state));
        ok
    });
    assert!(empty, "{last:?}");
    for pid in pids {
        assert!(
            wait_until(Duration::from_secs(5), || !alive(pid as i32)),
            "pid {pid} survived its batch destroy"
        );
    }
}

#[test]
fn one_bad_item_is_its_own_error_and_the_exit_status_says_some_failed() {
    let d = Serve::start(&["--max-sandboxes", "6", "--pool", "0"]);
    let lib = block_on(built("sandbox_app"));
    let lib = lib.to_str().unwrap();
    let dir = scratch();
    let file = dir.path().join("specs.json");
    let specs = serde_json::json!([
        {"id": "p-1", "lib": lib},
        {"id": "p-1", "lib": lib},
        {"id": "bad id", "lib": lib},
        {"id": "p-2", "lib": lib, "limits": {"max_memory": 1000}},
        {"id": "p-3", "lib": "/nonexistent/lib.so"},
    ]);
    std::fs::write(&file, specs.to_string()).unwrap();
    // The missing library cannot even be opened by the client: nothing is sent.
    let out = d
        .cmd()
        .args(["batch", "create", "--file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let mut specs = specs;
    specs.as_array_mut().unwrap().pop();
    std::fs::write(&file, specs.to_string()).unwrap();
    let (code, items, summary) = batch(&d, &["create", "--file", file.to_str().unwrap()]);
    assert_eq!(code, 4, "some item failed: {summary}");
    assert_eq!(
        (summary["ok"].as_u64(), summary["failed"].as_u64()),
        (Some(1), Some(3))
    );
    let kind_of = |index: u64| {
        items
            .iter()
            .find(|i| i["index"] == index)
            .map(|i| i["error"]["kind"].as_str().unwrap_or("ok").to_string())
            .unwrap()
    };
    assert_eq!(
        (1..4).map(kind_of).collect::<Vec<_>>(),
        ["duplicate_id", "invalid_id", "invalid_limits"]
    );
    // Human output: a summary and a table of the failures; exit 4.
    let out = d
        .cmd()
        .args(["batch", "call", "--function", "answer", "p-1", "gone"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("1 ok, 1 failed"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("gone") && l.contains("not_found")),
        "{text}"
    );
    // Past the cap (6, one made): refused before anything starts.
    let out = d
        .cmd()
        .args([
            "batch", "create", "--count", "6", "--prefix", "q", "--lib", lib, "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], "too_many_sandboxes", "{error}");
    holds_exactly(&d, 1);
    let (code, _, _) = batch(&d, &["destroy", "--all"]);
    assert_eq!(code, 0);
    holds_exactly(&d, 0);
}

#[test]
fn a_batch_timeout_leaves_only_the_sandboxes_reported_made() {
    let d = Serve::start(&["--pool", "0"]);
    let lib = block_on(built("sandbox_app"));
    let (code, items, summary) = batch(
        &d,
        &[
            "create",
            "--count",
            "30",
            "--prefix",
            "t",
            "--lib",
            lib.to_str().unwrap(),
            "--max-concurrency",
            "1",
            "--timeout",
            "300",
        ],
    );
    assert_eq!(code, 4, "{summary}");
    let timed_out = summary["timed_out"].as_u64().unwrap();
    assert!(timed_out > 0, "{summary}");
    let made: BTreeSet<String> = items
        .iter()
        .filter(|i| i.get("ok").is_some())
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    for item in items.iter().filter(|i| i.get("error").is_some()) {
        assert_eq!(item["error"]["kind"], "timeout", "{item}");
    }
    holds_exactly(&d, made.len());
    assert_eq!(holdings(&d).0, made);
    batch(&d, &["destroy", "--all"]);
    holds_exactly(&d, 0);
}

#[test]
fn one_version_reloads_into_many_and_a_bad_one_leaves_each_on_its_own() {
    let d = Serve::start(&["--pool", "0"]);
    let lib = block_on(built("sandbox_app"));
    let (lib42, wrong) = (
        block_on(demo_lib_answering(42)),
        block_on(built("wrong_abi_app")),
    );
    batch(
        &d,
        &[
            "create",
            "--count",
            "4",
            "--prefix",
            "r",
            "--lib",
            lib.to_str().unwrap(),
        ],
    );
    let (code, items, _) = batch(&d, &["reload", "--lib", lib42.to_str().unwrap(), "--all"]);
    assert_eq!(code, 0);
    assert!(
        items.iter().all(|i| i["ok"]["to_version"] == 2),
        "{items:?}"
    );
    let (code, items, _) = batch(
        &d,
        &["reload", "--lib", wrong.to_str().unwrap(), "r-1", "r-2"],
    );
    assert_eq!(code, 4);
    assert!(
        items.iter().all(|i| i["error"]["kind"] == "reload_refused"),
        "{items:?}"
    );
    let (_, items, _) = batch(&d, &["call", "--function", "answer", "--all"]);
    assert!(items.iter().all(|i| i["ok"] == 42), "{items:?}");
    // The event stream (what the detector, the operator and the dashboard follow) tells of
    // batch-made sandboxes as of any other.
    let events = d.ok(&["events", "--json"]);
    for id in ["r-0", "r-1", "r-2", "r-3"] {
        let told = |kind: &str| {
            events.lines().any(|l| {
                let e: Value = serde_json::from_str(l).unwrap();
                e["event"] == kind && e["sandbox"] == id
            })
        };
        assert!(
            told("sandbox.created") && told("sandbox.reloaded"),
            "{id}: {events}"
        );
    }
    batch(&d, &["destroy", "--prefix", "r-"]);
    holds_exactly(&d, 0);
}

/// Starts `host batch create --count 60 --max-concurrency 1 --json` of the demo app and
/// returns once its first item is made.
fn slow_batch_create(d: &Serve) -> ChildGuard {
    let lib = block_on(built("sandbox_app"));
    let mut args = vec![
        "batch".to_string(),
        "create".into(),
        "--count".into(),
        "60".into(),
        "--prefix".into(),
        "k".into(),
        "--lib".into(),
        lib.display().to_string(),
        "--max-concurrency".into(),
        "1".into(),
        "--json".into(),
    ];
    if let Some(parent) = testkit::cgroup::cgroup_parent() {
        args.extend(["--cgroup-parent".into(), parent.display().to_string()]);
    }
    let mut client = ChildGuard::new(
        d.cmd()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = client.child().stdout.take().unwrap();
    let mut first = String::new();
    BufReader::new(stdout).read_line(&mut first).unwrap();
    assert!(first.contains("\"ok\""), "{first}");
    client
}

#[test]
fn a_client_killed_mid_batch_leaves_only_whole_sandboxes() {
    let d = Serve::start(&["--pool", "0"]);
    let mut client = slow_batch_create(&d);
    // Ctrl-C, or worse: the client is gone without a word.
    client.stop_with(libc::SIGKILL, Duration::from_secs(5));
    assert!(
        d.wait_log("batch create", Duration::from_secs(30)),
        "{}",
        d.log()
    );
    let (ids, _, _) = holdings(&d);
    assert!(!ids.is_empty() && ids.len() < 60, "{ids:?}");
    holds_exactly(&d, ids.len());
    batch(&d, &["destroy", "--all"]);
    holds_exactly(&d, 0);
}

#[test]
fn a_daemon_stopped_mid_batch_stops_the_batch_and_leaves_nothing() {
    let mut d = Serve::start(&["--pool", "0"]);
    let mut client = slow_batch_create(&d);
    let mark = format!("-{}-", d.pid());
    let status = d.stop_with(libc::SIGTERM);
    assert!(status.success(), "{status}\n{}", d.log());
    // The client is not left waiting: it gets the cancelled items and the summary (exit 4),
    // or, when the daemon was faster to close, is told the stream ended early (exit 1).
    let exit = client.wait_exit(Duration::from_secs(20));
    let code = exit.and_then(|e| e.code());
    assert!(code == Some(4) || code == Some(1), "{exit:?}");
    let cgroups: Vec<_> = testkit::cgroup::named("sandbox-host", 4)
        .iter()
        .filter_map(|parent| std::fs::read_dir(parent).ok())
        .flat_map(|entries| entries.flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(&mark))
        .collect();
    assert!(cgroups.is_empty(), "{cgroups:?}");
    let state: Vec<_> = std::fs::read_dir(&d.state)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(state.is_empty(), "{state:?}");
}
