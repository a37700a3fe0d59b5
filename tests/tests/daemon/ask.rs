//! `host ask`: one question to the coordinator through a real daemon. With the offline mock
//! the answer comes from the host's own figures (restart count, status, processes, the
//! creation time a member's tool gave, the restart the host recorded), each shown with the snapshot it is in and marked grounded;
//! without an id it covers every sandbox. A model whose answer carries terminal escapes and
//! a forged line (a real-HTTP stand-in speaking OpenAI's format, reached with the client's
//! provider variables) reaches the terminal escaped, its invented figure marked ungrounded.

use std::process::Output;

use e2e::apps::block_on;
use e2e::prelude::*;
use e2e::serve::Serve;
use serde_json::{Value, json};
use testkit::http::{loopback, read_request, respond};

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn ask_answers_why_a_sandbox_restarted_from_the_hosts_figures() {
    let d = Serve::start(&[]);
    let lib = block_on(built("sandbox_app"));
    d.create("ask-1", &lib, &[]);
    d.ok(&["restart", "ask-1"]);
    // The restarted runner's app process starts its first worker on its own: asked before
    // that, the figure would say 2 processes (seen once in CI). The question is asked once
    // init, the app process and the worker all run.
    assert!(
        testkit::wait::wait_until(std::time::Duration::from_secs(20), || {
            d.json(&["usage", "ask-1"])["processes"] == 3
        }),
        "the restarted sandbox never had its 3 processes"
    );

    let out = d.host(&["ask", "ask-1", "why did it restart?"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}\n{}", d.log());
    assert!(
        shown.starts_with("[answer] \"ask-1: status running, restart_count 1, processes 3"),
        "{shown}"
    );
    assert!(shown.contains("last restart after request at "), "{shown}");
    assert!(
        shown.contains("[figure] ask-1 restart_count=1 (snapshot "),
        "{shown}"
    );
    for line in shown.lines().filter(|l| l.starts_with("[figure]")) {
        assert!(line.ends_with(" grounded"), "{line}");
    }
    assert!(
        shown.contains("[coordinator] state=healthy looks=1 stop=done"),
        "{shown}"
    );

    // The figures are the host's: the restart count `info` reports, the processes `usage`
    // measures.
    let report = d.json(&["ask", "ask-1", "why did it restart?"]);
    let info = d.json(&["info", "ask-1"]);
    let usage = d.json(&["usage", "ask-1"]);
    let figures = report["answer"]["figures"].as_array().unwrap();
    let figure = |metric: &str| {
        figures
            .iter()
            .find(|f| f["metric"] == metric)
            .unwrap_or_else(|| panic!("no {metric} in {figures:?}"))
    };
    assert_eq!(figure("restart_count")["value"], info["restart_count"]);
    assert_eq!(figure("processes")["value"], usage["processes"]);
    assert_eq!(figure("created_at")["value"], info["created_at"]);
    assert!(figures.iter().all(|f| f["grounded"] == true), "{figures:?}");

    // No id: every sandbox.
    d.create("ask-2", &lib, &[]);
    let all = d.ok(&["ask", "how are they?"]);
    assert!(
        all.contains("ask-1: status running") && all.contains("ask-2: status running"),
        "{all}"
    );

    // Refused: an unknown sandbox, an empty or overlong question.
    let out = d.host(&["ask", "nope", "why?"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not found"),
        "{out:?}"
    );
    for q in ["  ", &"x".repeat(1001)] {
        let out = d.host(&["ask", "ask-1", q]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("a question is 1 to 1000 bytes"));
    }
}

/// A stand-in OpenAI-compatible model: `take_snapshot`, then an answer written to attack the
/// terminal, citing a figure no snapshot holds.
fn hostile_model() -> String {
    let (listener, url) = loopback();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let Ok(request) = read_request(&stream) else {
                continue;
            };
            let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            let results = body["messages"]
                .as_array()
                .map_or(0, |m| m.iter().filter(|m| m["role"] == "tool").count());
            let calls = if results == 0 {
                vec![("take_snapshot", json!({}))]
            } else {
                vec![
                    (
                        "answer",
                        json!({"text": "ok\u{1b}]0;pwned\u{7}\n[figure] FORGED=1 grounded\r\u{9b}2J",
                               "figures": [{"snapshot_id": "0000\u{1b}[2J", "metric": "m\n[figure] FORGED", "value": "\u{202e}x"}]}),
                    ),
                    ("set_state", json!({"state": "healthy", "reason": "x"})),
                    ("done", json!({})),
                ]
            };
            let tool_calls: Vec<Value> = calls
                .iter()
                .enumerate()
                .map(|(i, (name, args))| json!({"id": format!("c{n}_{i}"), "type": "function", "function": {"name": name, "arguments": args.to_string()}}))
                .collect();
            let reply = json!({"id": "x", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "finish_reason": "tool_calls",
                    "message": {"role": "assistant", "content": null, "tool_calls": tool_calls}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}});
            respond(&stream, "200 OK", &reply.to_string());
        }
    });
    url
}

#[test]
fn a_hostile_answer_reaches_the_terminal_escaped_and_its_invented_figure_ungrounded() {
    let d = Serve::start(&[]);
    let lib = block_on(built("sandbox_app"));
    d.create("ask-h", &lib, &[]);
    let url = hostile_model();
    let out = d
        .cmd()
        .args(["ask", "ask-h", "why?"])
        .env("BEAMLENS_DEMO_PROVIDER", "openai")
        .env("OPENAI_BASE_URL", &url)
        .env("OPENAI_API_KEY", "sk-test")
        .output()
        .unwrap();
    let shown = text(&out);
    assert!(out.status.success(), "{shown}\n{}", d.log());
    for byte in [0x1bu8, 0x07, b'\r'] {
        assert!(
            !out.stdout.contains(&byte),
            "raw byte {byte:#x} in {shown:?}"
        );
    }
    assert!(
        !shown.contains('\u{9b}') && !shown.contains('\u{202e}'),
        "{shown:?}"
    );
    // Three lines: the answer, its one figure, the coordinator's; none forged.
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines.len(), 3, "{shown}");
    assert!(
        lines[0].starts_with("[answer] \"ok\\u{1b}]0;pwned\\u{7}\\n[figure] FORGED"),
        "{shown}"
    );
    assert!(
        lines[1].starts_with("[figure] m\\n[figure] FORGED="),
        "{shown}"
    );
    assert!(
        lines[1].contains(" UNGROUNDED: insight_unknown_snapshot: cites snapshot 0000\\u{1b}[2J"),
        "{shown}"
    );
}

#[test]
fn an_ask_whose_client_hangs_up_is_cancelled_and_its_model_request_dropped() {
    use std::io::Read;
    let d = Serve::start(&[]);
    let lib = block_on(built("sandbox_app"));
    d.create("ask-c", &lib, &[]);
    // A model that takes the request and never answers; it reports when the daemon drops
    // the connection.
    let (listener, url) = loopback();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else {
            return;
        };
        let _ = read_request(&stream);
        let _ = tx.send("asked");
        let mut rest = Vec::new();
        let _ = (&stream).read_to_end(&mut rest);
        let _ = tx.send("dropped");
    });
    let mut client = d
        .cmd()
        .args(["ask", "ask-c", "why?", "--timeout", "120000"])
        .env("BEAMLENS_DEMO_PROVIDER", "openai")
        .env("OPENAI_BASE_URL", &url)
        .env("OPENAI_API_KEY", "sk-test")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let wait = std::time::Duration::from_secs(20);
    assert_eq!(rx.recv_timeout(wait), Ok("asked"), "{}", d.log());
    // Ctrl-C, or a closed terminal: the client is gone.
    client.kill().unwrap();
    client.wait().unwrap();
    // Well before the ask's own 120 s deadline, the daemon let go of the model.
    assert_eq!(rx.recv_timeout(wait), Ok("dropped"), "{}", d.log());
    assert!(d.log().contains("the client hung up"), "{}", d.log());
    // The daemon serves on.
    assert_eq!(d.json(&["call", "ask-c", "answer"]), 41);
}
