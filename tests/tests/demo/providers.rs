//! Models and providers that misbehave: a model that always claims healthy or never notifies
//! fails the guardrail; a provider that never answers, answers in prose only, or keeps
//! failing gives no verdict, for every vendor. The providers are stand-ins on 127.0.0.1
//! speaking each vendor's format.

use std::path::Path;

use e2e::prelude::*;
use serde_json::{Value, json};
use testkit::http::{Request, loopback, read_request, respond};

use super::{Run, assert_clean, run, stdout};

/// A stand-in HTTP server on an ephemeral loopback port: `answer` gets each request (and its
/// number) and gives the status and JSON body to answer with, or `None` to never answer (the
/// connection is held open). Returns its base URL; its thread ends with the test process.
fn standin(
    mut answer: impl FnMut(usize, &Request) -> Option<(&'static str, Value)> + Send + 'static,
) -> String {
    let (listener, url) = loopback();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(stream) = stream else { return };
            let Ok(request) = read_request(&stream) else {
                continue;
            };
            match answer(n, &request) {
                Some((status, reply)) => respond(&stream, status, &reply.to_string()),
                None => held.push(stream),
            }
        }
    });
    url
}

/// A fake Anthropic Messages API that answers every request with the same tool calls.
fn fake_anthropic(tool_calls: Value) -> String {
    standin(move |n, _| {
        let content: Vec<Value> = tool_calls
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(i, c)| json!({"type": "tool_use", "id": format!("toolu_{n}_{i}"), "name": c["name"], "input": c["input"]}))
            .collect();
        Some((
            "200 OK",
            json!({"id": format!("msg_{n}"), "type": "message", "role": "assistant", "model": "fake", "content": content, "stop_reason": "tool_use", "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 5}}),
        ))
    })
}

fn anomaly_against(fake: &str, dir: &Path) -> Run {
    run(
        &["anomaly", "--load", "25"],
        &[
            ("BEAMLENS_DEMO_PROVIDER", "anthropic"),
            ("ANTHROPIC_API_KEY", "test-key"),
            ("ANTHROPIC_BASE_URL", fake),
        ],
        dir,
    )
}

#[test]
fn a_model_that_always_claims_healthy_fails_the_guardrail() {
    let fake = fake_anthropic(json!([
        {"name": "set_state", "input": {"state": "healthy", "reason": "looks fine"}},
        {"name": "done", "input": {}},
    ]));
    let dir = scratch();
    let out = anomaly_against(&fake, dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("[operator] state=healthy"), "{text}");
    // 28 = init + the app process + the initial worker + 25 injected.
    assert!(text.contains("[demo] error: anomaly_state_mismatch: live processes=28, threshold=10, operator state=healthy"), "{text}");
    assert!(text.contains("[demo] sandbox destroyed"), "{text}");
    assert_clean(dir.path(), &out);
}

#[test]
fn a_model_that_never_notifies_fails_the_guardrail() {
    let fake = fake_anthropic(json!([
        {"name": "take_snapshot", "input": {}},
        {"name": "set_state", "input": {"state": "warning", "reason": "many processes"}},
        {"name": "done", "input": {}},
    ]));
    let dir = scratch();
    let out = anomaly_against(&fake, dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("[demo] error: anomaly_notification_missing: live processes=28"),
        "{text}"
    );
    assert_clean(dir.path(), &out);
}

/// How a provider stand-in misbehaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    /// Accepts the connection, reads the request and never answers.
    Silent,
    /// Answers every request in prose, never with a tool call.
    Prose,
    /// Answers every request with HTTP 500, so the provider's retries give up.
    ServerError,
}

/// One vendor's provider variables (pointing at `url`) and its prose-only reply.
struct Vendor {
    name: &'static str,
    env: fn(&str) -> Vec<(&'static str, String)>,
    prose: fn() -> Value,
}

const PROSE: &str = "Everything looks fine to me.";

fn vendors() -> [Vendor; 4] {
    [
        Vendor {
            name: "anthropic",
            env: |url| {
                vec![
                    ("ANTHROPIC_API_KEY", "k".into()),
                    ("ANTHROPIC_BASE_URL", url.into()),
                ]
            },
            prose: || {
                json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "fake",
                       "content": [{"type": "text", "text": PROSE}], "stop_reason": "end_turn",
                       "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 5}})
            },
        },
        Vendor {
            name: "openai",
            env: |url| {
                vec![
                    ("OPENAI_API_KEY", "k".into()),
                    ("OPENAI_BASE_URL", url.into()),
                ]
            },
            prose: || {
                json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "fake",
                       "choices": [{"index": 0, "finish_reason": "stop",
                                    "message": {"role": "assistant", "content": PROSE}}],
                       "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}})
            },
        },
        Vendor {
            name: "google-ai",
            env: |url| {
                vec![
                    ("GOOGLE_API_KEY", "k".into()),
                    ("GOOGLE_AI_BASE_URL", url.into()),
                ]
            },
            prose: || {
                json!({"candidates": [{"index": 0, "finishReason": "STOP",
                                       "content": {"role": "model", "parts": [{"text": PROSE}]}}],
                       "usageMetadata": {"promptTokenCount": 10, "candidatesTokenCount": 5,
                                         "totalTokenCount": 15}})
            },
        },
        Vendor {
            name: "ollama",
            env: |url| vec![("OLLAMA_HOST", url.into())],
            prose: || {
                json!({"model": "qwen3:4b", "created_at": "2024-07-22T20:33:28.123648Z",
                       "message": {"role": "assistant", "content": PROSE},
                       "done_reason": "stop", "done": true,
                       "prompt_eval_count": 10, "eval_count": 5})
            },
        },
    ]
}

/// For each vendor: `demo` (text) and `anomaly --load 25 --json` against a stand-in
/// misbehaving as `fault` exit 1 with the no-verdict line and `state: unknown`, and never
/// reach the guardrail.
fn no_verdict_for_every_vendor(fault: Fault, expected_reason: &dyn Fn(&str) -> String) {
    for vendor in vendors() {
        let prose = (vendor.prose)();
        let url = standin(move |_, request| {
            if request.line.starts_with("GET /api/tags") {
                // Ollama's probe: always one model.
                return Some((
                    "200 OK",
                    json!({"models": [{"name": "qwen3:4b", "model": "qwen3:4b"}]}),
                ));
            }
            match fault {
                Fault::Silent => None,
                Fault::Prose => Some(("200 OK", prose.clone())),
                Fault::ServerError => Some((
                    "500 Internal Server Error",
                    json!({"error": {"message": "internal error", "type": "api_error"}}),
                )),
            }
        });
        let mut env: Vec<(&str, String)> = (vendor.env)(&url);
        env.push(("BEAMLENS_DEMO_PROVIDER", vendor.name.into()));
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let timeout = if fault == Fault::Silent {
            "1500"
        } else {
            "30000"
        };
        let dir = scratch();

        let out = run(&["demo", "--timeout", timeout], &env, dir.path());
        let text = stdout(&out);
        let what = format!("{} {fault:?} demo: {text}", vendor.name);
        assert_eq!(out.status.code(), Some(1), "{what}");
        assert!(
            text.contains("[operator] state=unknown summary=\"no verdict\""),
            "{what}"
        );
        let line = format!(
            "[demo] error: operator gave no verdict: {}",
            expected_reason("demo")
        );
        assert!(
            text.lines().any(|l| l.starts_with(&line)),
            "want {line:?}: {what}"
        );
        assert!(!text.contains("mismatch"), "{what}");
        assert!(text.contains("[demo] sandbox destroyed"), "{what}");
        assert_clean(dir.path(), &out);

        let out = run(
            &["anomaly", "--load", "25", "--json", "--timeout", timeout],
            &env,
            dir.path(),
        );
        let what = format!("{} {fault:?} anomaly: {}", vendor.name, stdout(&out));
        assert_eq!(out.status.code(), Some(1), "{what}");
        let report: Value = serde_json::from_str(stdout(&out).trim()).expect(&what);
        assert_eq!(report["ok"], false, "{what}");
        assert_eq!(report["operator"]["state"], "unknown", "{what}");
        let reason = expected_reason("anomaly");
        assert!(
            report["operator"]["stop_reason"]
                .as_str()
                .is_some_and(|r| r.starts_with(&reason)),
            "want {reason:?}: {what}"
        );
        assert_eq!(
            report["error"],
            json!(format!(
                "operator gave no verdict: {}",
                report["operator"]["stop_reason"].as_str().unwrap()
            )),
            "{what}"
        );
        assert!(report.get("guardrail").is_none(), "{what}");
        assert_clean(dir.path(), &out);
    }
}

#[test]
fn a_provider_that_never_answers_gives_no_verdict() {
    no_verdict_for_every_vendor(Fault::Silent, &|_| {
        "the provider did not answer within 1500 ms".into()
    });
}

#[test]
fn a_model_that_only_answers_in_prose_gives_no_verdict() {
    no_verdict_for_every_vendor(Fault::Prose, &|flow| {
        let cap = if flow == "anomaly" { 5 } else { 4 };
        format!("{cap} iterations without set_state (the model answered in prose only")
    });
}

#[test]
fn a_provider_failing_after_its_retries_gives_no_verdict() {
    no_verdict_for_every_vendor(Fault::ServerError, &|_| "the provider failed: ".into());
}
