//! Ollama's native `/api/chat`: `"stream": false`, arguments as objects, no call ids, no key;
//! and the probe of `/api/tags`.

use llm::{OllamaProvider, ProviderConfig, ProviderErrorKind, ProviderKind};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::{Call, Failing, Failure, RETRY_NOW, USAGE, Vendor, function_tools};
use crate::common::{PROMPT, SYSTEM, dead_port, request_count};

const MODEL: &str = "qwen3:4b";

/// Ollama as the shared tests see it.
pub fn vendor() -> Vendor {
    Vendor {
        kind: ProviderKind::Ollama,
        model: MODEL,
        key: "",
        path: "/api/chat",
        headers: &[],
        native_ids: false,
        signatures: false,
        strips_think: true,
        reply,
        failing,
        malformed: "{\"message\": {\"role\": ",
        history_ids: ["call_1", "call_2"],
        second_turn_body,
        // Not retried in vain: says how to start the server.
        unreachable: (
            ProviderErrorKind::Unavailable,
            "Ollama not available: connection failed: ",
            ". Start with: ollama serve",
        ),
        tool_choice: None,
    }
}

/// Calls without ids (newer servers add an `index`); `done_reason` has no tool value.
fn reply(text: Option<&str>, calls: &[Call]) -> Value {
    let mut message = json!({"role": "assistant", "content": text.unwrap_or_default()});
    if !calls.is_empty() {
        message["tool_calls"] = calls
            .iter()
            .enumerate()
            .map(|(i, call)| {
                json!({"function": {"index": i, "name": call.name, "arguments": call.args}})
            })
            .collect();
    }
    json!({
        "model": MODEL, "created_at": "2024-07-22T20:33:28.123648Z",
        "message": message, "done_reason": "stop", "done": true,
        "total_duration": 885_095_291, "prompt_eval_count": USAGE.0, "eval_count": USAGE.1
    })
}

fn failing(failure: Failure) -> Failing {
    let (status, headers, message): (u16, &'static [_], _) = match failure {
        Failure::RateLimited => (429, RETRY_NOW, "too many requests"),
        Failure::Overloaded => (503, &[], "server busy, please try again"),
        Failure::Unauthorized => (401, &[], "unauthorized"),
        Failure::QuotaExhausted => {
            return Failing {
                status: 429,
                headers: RETRY_NOW,
                body: json!({"error": "you (user) have reached your weekly usage limit, \
                                       please upgrade to continue"}),
                message: "you (user) have reached your weekly usage limit, please upgrade to \
                          continue (quota or spend limit exhausted; not retried)",
            };
        }
    };
    Failing {
        status,
        headers,
        body: json!({"error": message}),
        message,
    }
}

/// Arguments as objects, no ids; results name their tool in `tool_name`.
fn second_turn_body() -> Value {
    json!({
        "model": MODEL,
        "stream": false,
        "options": {"num_predict": 512},
        "tools": function_tools(),
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "take_snapshot", "arguments": {}}},
                {"function": {"name": "set_state",
                              "arguments": {"state": "degraded", "reason": "CPU pegged"}}}
            ]},
            {"role": "tool", "content": "{\"cpu_percent\":100.0}", "tool_name": "take_snapshot"},
            {"role": "tool", "content": "{\"ok\":true}", "tool_name": "set_state"}
        ]
    })
}

fn provider(base_url: String) -> OllamaProvider {
    OllamaProvider::new(ProviderConfig::new(base_url, "", MODEL)).unwrap()
}

#[tokio::test]
async fn unknown_model_is_a_bad_request() {
    let body = json!({"error": "model \"qwen3:4b\" not found, try pulling it first"});
    let vendor = vendor();
    let server = vendor
        .serve(ResponseTemplate::new(404).set_body_json(body))
        .await;
    let err = vendor.first_turn(&server).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::BadRequest);
    assert!(err.message.contains("try pulling it first"), "{err}");
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn probe_lists_models() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/tags"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"models": [
            {"name": "qwen3:4b", "model": "qwen3:4b", "size": 2_500_000_000_u64}]})))
        .mount(&server)
        .await;
    assert_eq!(provider(server.uri()).probe().await.unwrap(), ["qwen3:4b"]);
}

#[tokio::test]
async fn probe_failure_says_how_to_start_ollama() {
    // A bare `host:port`, as OLLAMA_HOST allows.
    let provider = provider(format!("127.0.0.1:{}", dead_port()));
    assert!(provider.endpoint().starts_with("http://127.0.0.1:"));
    let err = provider.probe().await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Unavailable);
    assert!(err.message.starts_with("Ollama not available: "), "{err}");
    assert!(err.message.ends_with(". Start with: ollama serve"), "{err}");
}
