//! Every LLM call an operator run makes, through the real daemon: `host operate` with a first
//! provider that fails with 500 and a fallback (`BEAMLENS_DEMO_FALLBACK`) that answers, both
//! stand-ins on 127.0.0.1 speaking their vendor's format. The run reaches its verdict through
//! the fallback; each call is an `llm.call` event (provider, model, tokens, latency, retries,
//! outcome, the provider it stood in for) and is counted in `/metrics`.

use std::io::{Read, Write};
use std::time::Duration;

use e2e::apps::block_on;
use e2e::prelude::*;
use e2e::serve::Serve;
use serde_json::{Value, json};
use testkit::http::{loopback, read_request, respond};

/// A stand-in server answering every request with `status` and `body`; returns its base URL
/// and a counter of requests.
fn standin(
    status: &'static str,
    body: Value,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let (listener, url) = loopback();
    let count = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = count.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            if read_request(&stream).is_ok() {
                seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                respond(&stream, status, &body.to_string());
            }
        }
    });
    (url, count)
}

/// `GET url` over plain HTTP/1.1; the body.
fn get(url: &str) -> String {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(out)
}

#[test]
fn a_failing_provider_falls_back_and_every_call_is_an_event_and_a_metric() {
    let lib = block_on(built("sandbox_app"));
    let (openai, openai_calls) = standin(
        "500 Internal Server Error",
        json!({"error": {"message": "the server had an error", "type": "server_error"}}),
    );
    // One reply with the whole healthy workflow, in Anthropic's Messages format.
    let (anthropic, _) = standin(
        "200 OK",
        json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "fake",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "take_snapshot", "input": {}},
                {"type": "tool_use", "id": "toolu_2", "name": "set_state", "input": {"state": "healthy", "reason": "calm"}},
                {"type": "tool_use", "id": "toolu_3", "name": "done", "input": {}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 412, "output_tokens": 61}}),
    );
    let d = Serve::start(&["--metrics", "127.0.0.1:0"]);
    d.create("llm", &lib, &[]);
    let mut events = d.follow(Some("llm"));
    let out = d
        .cmd()
        .args(["operate", "llm", "--json", "--timeout", "60000"])
        .env("BEAMLENS_DEMO_PROVIDER", "openai")
        .env("OPENAI_API_KEY", "test-key")
        .env("OPENAI_BASE_URL", &openai)
        .env("BEAMLENS_DEMO_FALLBACK", "anthropic")
        .env("ANTHROPIC_API_KEY", "test-key")
        .env("ANTHROPIC_BASE_URL", &anthropic)
        .env("BEAMLENS_DEMO_MODEL", "")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{stdout}\n{}", d.log());
    let outcome: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(outcome["state"], "healthy", "{outcome}");
    // The first provider's retry policy ran its course (4 attempts) before the fallback.
    assert_eq!(openai_calls.load(std::sync::atomic::Ordering::SeqCst), 4);

    let failed = events.event("llm.call", "llm", Duration::from_secs(10));
    assert_eq!(failed["provider"], "openai", "{failed}");
    assert_eq!(failed["model"], "gpt-4o-mini", "{failed}");
    assert_eq!(failed["outcome"], "server", "{failed}");
    assert_eq!(failed["retries"], 3, "{failed}");
    assert_eq!(failed["input_tokens"], 0, "{failed}");
    assert!(failed["run"].is_string(), "{failed}");
    let (answered, _) = events.until(Duration::from_secs(10), |v| {
        v["event"] == "llm.call" && v["provider"] == "anthropic"
    });
    assert_eq!(answered["outcome"], "ok", "{answered}");
    assert_eq!(answered["fallback_from"], "openai", "{answered}");
    assert_eq!(answered["model"], "claude-haiku-4-5-20251001", "{answered}");
    assert_eq!(answered["input_tokens"], 412, "{answered}");
    assert_eq!(answered["output_tokens"], 61, "{answered}");
    assert_eq!(answered["retries"], 0, "{answered}");
    assert!(answered["latency_ms"].is_u64(), "{answered}");
    assert_eq!(answered["run"], failed["run"], "{answered}");

    let url = d.url("metrics").unwrap();
    let mut text = String::new();
    let counted = wait_until(Duration::from_secs(10), || {
        text = get(&url);
        text.contains(r#"sandbox_host_llm_calls_total{provider="anthropic",outcome="ok"} 1"#)
    });
    assert!(counted, "{text}");
    for line in [
        r#"sandbox_host_llm_calls_total{provider="openai",outcome="server"} 1"#,
        r#"sandbox_host_llm_tokens_total{provider="anthropic",direction="output"} 61"#,
        r#"sandbox_host_llm_retries_total{provider="openai"} 3"#,
        r#"sandbox_host_llm_fallbacks_total{provider="anthropic"} 1"#,
        r#"sandbox_host_llm_call_duration_seconds_count{provider="openai"} 1"#,
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    d.ok(&["destroy", "llm"]);
}
