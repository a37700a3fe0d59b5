//! The control socket and the thin clients: every command's JSON and human output and errors,
//! no daemon, malformed requests, two clients calling and reloading at once, `operate`.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::net::UnixStream;

use e2e::apps::block_on;
use e2e::prelude::*;
use e2e::serve::{Conn, Serve, client};
use serde_json::{Value, json};

fn has_fields(value: &Value, fields: &[&str]) {
    for field in fields {
        assert!(value.get(field).is_some(), "no {field:?} in {value}");
    }
}

#[test]
fn every_command_answers_json_with_the_documented_fields() {
    let d = Serve::start(&[]);
    let lib41 = block_on(built("sandbox_app"));
    let lib42 = block_on(demo_lib_answering(42));

    let info = d.json(&[
        "create",
        "shapes",
        "--lib",
        lib41.to_str().unwrap(),
        "--max-open-files",
        "256",
        "--address-space",
        "4G",
    ]);
    has_fields(
        &info,
        &[
            "id",
            "status",
            "pid",
            "created_at",
            "restart_count",
            "app",
            "versions",
            "limits",
            "isolation",
            "startup",
        ],
    );
    has_fields(&info["app"], &["path", "version", "sha256"]);
    // Where the start spent its time, measured phase by phase.
    assert!(info["startup"]["spawn_us"].as_u64().unwrap() > 0, "{info}");
    assert!(info["startup"]["ready_us"].as_u64().unwrap() > 0, "{info}");
    assert_eq!(info["status"], json!("running"));
    assert_eq!(info["limits"]["max_open_files"], json!(256));
    assert_eq!(info["limits"]["address_space"], json!(4u64 << 30));
    assert_eq!(info["versions"].as_array().unwrap().len(), 1);

    let list = d.json(&["list"]);
    assert_eq!(list[0]["id"], json!("shapes"));

    assert_eq!(d.call_answer("shapes"), json!(41));
    assert_eq!(d.ok(&["call", "shapes", "answer"]), "41");
    assert_eq!(
        d.json(&["call", "shapes", "calls", "{}", "--timeout", "2000"]),
        json!(2)
    );

    let usage = d.json(&["usage", "shapes"]);
    has_fields(
        &usage,
        &[
            "sandbox_id",
            "pid",
            "processes",
            "threads",
            "memory_bytes",
            "cpu_time_ms",
            "cpu_percent",
            "open_fds",
            "uptime_ms",
            "restart_count",
            "app_version",
        ],
    );
    assert_eq!(usage["sandbox_id"], json!("shapes"));
    assert!(usage["processes"].as_u64().unwrap() >= 2, "{usage}");
    assert!(usage["memory_bytes"].as_u64().unwrap() > 0, "{usage}");

    let reload = d.json(&["reload", "shapes", "--lib", lib42.to_str().unwrap()]);
    has_fields(
        &reload,
        &[
            "status",
            "from_version",
            "to_version",
            "load_us",
            "compile_ms",
        ],
    );
    assert_eq!(reload["status"], json!("reloaded"));
    assert_eq!(
        (reload["from_version"].clone(), reload["to_version"].clone()),
        (json!(1), json!(2))
    );
    assert_eq!(d.call_answer("shapes"), json!(42));
    let again = d.json(&["reload", "shapes", "--lib", lib42.to_str().unwrap()]);
    assert_eq!(again["status"], json!("no_change"));

    let back = d.json(&["rollback", "shapes", "1"]);
    assert_eq!(
        (back["from_version"].clone(), back["to_version"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(d.call_answer("shapes"), json!(41));
    let human = d.ok(&["rollback", "shapes", "2"]);
    assert!(
        human.starts_with("rolled back shapes: v1 -> v2 (swap "),
        "{human}"
    );

    let workers = d.json(&["workers", "shapes"]);
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1, "{workers}");
    let workers = d.json(&["workers", "shapes", "--add", "2"]);
    assert_eq!(workers["workers"].as_array().unwrap().len(), 3, "{workers}");
    assert!(
        d.ok(&["workers", "shapes"])
            .starts_with("shapes: 3 worker(s)")
    );

    let restarted = d.json(&["restart", "shapes"]);
    assert_eq!(restarted["restart_count"], json!(1));
    assert_ne!(restarted["pid"], info["pid"]);
    assert_eq!(d.call_answer("shapes"), json!(42));

    assert!(
        d.ok(&["info", "shapes"])
            .contains("  started in ms: install "),
        "the human info shows the startup phases"
    );
    for human in [
        d.ok(&["info", "shapes"]),
        d.ok(&["usage", "shapes"]),
        d.ok(&["list"]),
    ] {
        assert!(human.contains("shapes"), "{human}");
    }

    assert_eq!(
        d.json(&["destroy", "shapes"]),
        json!({"destroyed": "shapes"})
    );
    // Failures: non-zero, one line on stderr, the error as JSON on stdout with --json.
    let out = d.host(&["info", "shapes", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], json!("not_found"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim(), "host: sandbox shapes not found");
    let out = d.host(&["call", "nope", "answer", "{not json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid JSON"));
    let out = d.host(&[
        "create",
        "bad id!",
        "--lib",
        lib41.to_str().unwrap(),
        "--json",
    ]);
    let error: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(error["error"]["kind"], json!("invalid_id"));
}

#[test]
fn no_daemon_says_how_to_start_one() {
    let dir = scratch();
    let socket = dir.path().join("host.sock");
    let out = client(&socket).args(["list"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("no daemon at"), "{stderr}");
    assert!(
        stderr.contains(&format!("host serve --socket {}", socket.display())),
        "{stderr}"
    );
}

#[test]
fn bad_requests_never_crash_the_daemon() {
    let d = Serve::start(&[]);
    let mut conn = Conn::open(&d.socket);
    for (request, kind) in [
        ("not json", "bad_request"),
        (r#"{"op":"explode"}"#, "bad_request"),
        (r#"{"op":"info"}"#, "bad_request"),
        (
            r#"{"op":"create","id":"x","spec":{"app":{"crate":"relative/dir"}}}"#,
            "bad_request",
        ),
        (
            r#"{"op":"call","id":"missing","function":"answer"}"#,
            "not_found",
        ),
    ] {
        let answer = conn.ask(request);
        assert_eq!(answer["error"]["kind"], json!(kind), "{request}: {answer}");
    }
    let hello = conn.ask(r#"{"op":"ping"}"#);
    assert_eq!(hello["ok"]["pid"], json!(d.pid()));

    // A client that hangs up mid-line, and one that sends an endless line.
    let mut half = UnixStream::connect(&d.socket).unwrap();
    half.write_all(br#"{"op":"pi"#).unwrap();
    drop(half);
    let mut flood = UnixStream::connect(&d.socket).unwrap();
    let chunk = vec![b'x'; 1 << 20];
    for _ in 0..20 {
        if flood.write_all(&chunk).is_err() {
            break;
        }
    }
    drop(flood);
    assert_eq!(conn.ask(r#"{"op":"list"}"#), json!({"ok": []}));
    assert_eq!(d.json(&["list"]), json!([]));
}

#[test]
fn two_clients_calling_and_reloading_at_once_lose_nothing() {
    let d = Serve::start(&[]);
    let lib41 = block_on(built("sandbox_app"));
    let lib43 = block_on(demo_lib_answering(43));
    d.ok(&["create", "busy", "--lib", lib41.to_str().unwrap()]);
    const ROUNDS: usize = 30;

    // Each client keeps one connection open and fires requests back to back (so reloads
    // overlap), and goes through the binary every few rounds.
    // Each client keeps one connection open and fires requests back to back, switching
    // libraries every round (so nearly every reload swaps, and the two clients' reloads
    // overlap), and goes through the binary every few rounds.
    let client = |first: usize| {
        let libs = [&lib41, &lib43];
        let mut conn = Conn::open(&d.socket);
        let call = json!({"op": "call", "id": "busy", "function": "answer"});
        let mut answers = Vec::new();
        let mut reloads = Vec::new();
        for round in 0..ROUNDS {
            let lib = libs[(first + round) % 2];
            if round % 8 == 0 {
                answers.push(d.call_answer("busy"));
                reloads.push(d.json(&["reload", "busy", "--lib", lib.to_str().unwrap()]));
            } else {
                answers.push(conn.ok(&call));
                let reload = json!({"op": "reload", "id": "busy", "source": {"library": lib}});
                reloads.push(conn.ok(&reload));
            }
            answers.push(conn.ok(&call));
        }
        (answers, reloads)
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| client(1));
        let b = s.spawn(|| client(0));
        (a.join().unwrap(), b.join().unwrap())
    });

    let answers: Vec<&Value> = a.0.iter().chain(&b.0).collect();
    assert_eq!(answers.len(), 4 * ROUNDS);
    assert!(
        answers.iter().all(|v| **v == json!(41) || **v == json!(43)),
        "{answers:?}"
    );
    let reports: Vec<&Value> = a.1.iter().chain(&b.1).collect();
    assert_eq!(reports.len(), 2 * ROUNDS);
    let new_versions: Vec<u64> = reports
        .iter()
        .filter(|r| r["status"] == json!("reloaded"))
        .map(|r| r["to_version"].as_u64().unwrap())
        .collect();
    let unique: BTreeSet<u64> = new_versions.iter().copied().collect();
    assert_eq!(
        unique.len(),
        new_versions.len(),
        "a version number twice: {new_versions:?}"
    );

    let info = d.json(&["info", "busy"]);
    let versions: Vec<u64> = info["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["version"].as_u64().unwrap())
        .collect();
    let expected: Vec<u64> = (1..=1 + new_versions.len() as u64).collect();
    let mut sorted = versions.clone();
    sorted.sort();
    assert_eq!(sorted, expected, "history: {versions:?}");
    let current = info["app"]["version"].as_u64().unwrap();
    assert_eq!(
        Some(current),
        new_versions.iter().copied().max().or(Some(1))
    );
    let want = if info["app"]["sha256"] == info["versions"][0]["sha256"] {
        json!(41)
    } else {
        json!(43)
    };
    assert_eq!(d.call_answer("busy"), want);
}

#[test]
fn operate_reports_a_calm_sandbox_healthy_and_a_spiking_one_warning() {
    let d = Serve::start(&[]);
    d.ok(&["create", "op-1"]);
    // The client's provider variables travel with the request; none are set, so: the mock.
    let calm = d.ok(&["operate", "op-1", "--provider", "mock"]);
    assert_eq!(
        calm,
        "[operator] state=healthy summary=\"sandbox stable\"\n[operator] notifications=0"
    );
    d.ok(&["workers", "op-1", "--add", "20"]);
    let spiking = d.json(&[
        "operate",
        "op-1",
        "--skill",
        "anomaly",
        "--provider",
        "mock",
    ]);
    assert_eq!(spiking["state"], "warning");
    assert_eq!(spiking["notifications"].as_array().unwrap().len(), 1);
    assert_eq!(spiking["summary"], "process count elevated");
    // A missing key is a clear error, and the daemon keeps serving.
    let out = d.host(&["operate", "op-1", "--provider", "anthropic"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ANTHROPIC_API_KEY not set"),
        "{out:?}"
    );
    d.ok(&["destroy", "op-1"]);
}
