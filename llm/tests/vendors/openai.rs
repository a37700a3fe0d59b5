//! OpenAI Chat Completions: `POST /v1/chat/completions`, arguments as JSON strings, a bearer
//! key; plus what OpenAI-compatible servers need.

use llm::{OpenAiProvider, Provider, ProviderConfig, ProviderKind};
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

use super::{Call, Failing, Failure, NETWORK_ERROR, RETRY_NOW, USAGE, Vendor, function_tools};
use crate::common::{PROMPT, SYSTEM, bodies, fast_retry, first_turn};

const MODEL: &str = "gpt-4o-mini";

/// OpenAI as the shared tests see it.
pub fn vendor() -> Vendor {
    Vendor {
        kind: ProviderKind::OpenAi,
        model: MODEL,
        key: "sk-test",
        path: "/v1/chat/completions",
        headers: &[("authorization", "Bearer sk-test")],
        native_ids: true,
        signatures: false,
        strips_think: true,
        reply,
        failing,
        malformed: "not json at all",
        history_ids: ["call_abc", "call_def"],
        second_turn_body,
        unreachable: NETWORK_ERROR,
        tool_choice: Some(("/tool_choice", |tool| match tool {
            Some(name) => json!({"type": "function", "function": {"name": name}}),
            None => json!("auto"),
        })),
    }
}

/// A call on the wire: arguments travel as a JSON string.
fn wire_call(id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

fn reply_with(message: Value, finish_reason: &str) -> Value {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_730_000_000, "model": MODEL,
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": message}],
        "usage": {"prompt_tokens": USAGE.0, "completion_tokens": USAGE.1,
                  "total_tokens": USAGE.0 + USAGE.1}
    })
}

fn reply(text: Option<&str>, calls: &[Call]) -> Value {
    let mut message = json!({"role": "assistant", "content": text, "refusal": null});
    if calls.is_empty() {
        return reply_with(message, "stop");
    }
    message["tool_calls"] = calls
        .iter()
        .map(|call| wire_call(call.id, call.name, &call.args.to_string()))
        .collect();
    reply_with(message, "tool_calls")
}

fn failing(failure: Failure) -> Failing {
    match failure {
        Failure::RateLimited => Failing {
            status: 429,
            headers: RETRY_NOW,
            body: json!({"error": {"message": "Rate limit reached",
                "type": "requests", "param": null, "code": "rate_limit_exceeded"}}),
            message: "requests: Rate limit reached",
        },
        Failure::Overloaded => Failing {
            status: 503,
            headers: &[("retry-after-ms", "1")],
            body: json!({"error": {"message": "overloaded", "type": "server_error"}}),
            message: "server_error: overloaded",
        },
        Failure::Unauthorized => Failing {
            status: 401,
            headers: &[],
            body: json!({"error": {
                "message": "Incorrect API key provided: sk-test.", "type": "invalid_request_error",
                "param": null, "code": "invalid_api_key"}}),
            message: "invalid_request_error: Incorrect API key provided: sk-test.. \
                      Check OPENAI_API_KEY",
        },
        Failure::QuotaExhausted => Failing {
            status: 429,
            headers: RETRY_NOW,
            body: json!({"error": {
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}),
            message: "insufficient_quota: You exceeded your current quota, please check your \
                      plan and billing details. (quota or spend limit exhausted; not retried)",
        },
    }
}

/// The system prompt is the first message; one `tool` message per result. Not
/// api.openai.com, so `max_tokens` goes along with `max_completion_tokens`.
fn second_turn_body() -> Value {
    json!({
        "model": MODEL,
        "max_completion_tokens": 512,
        "max_tokens": 512,
        "tools": function_tools(),
        "tool_choice": "auto",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": PROMPT},
            {"role": "assistant", "content": "", "tool_calls": [
                wire_call("call_abc", "take_snapshot", "{}"),
                wire_call("call_def", "set_state", r#"{"reason":"CPU pegged","state":"degraded"}"#)
            ]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "{\"cpu_percent\":100.0}"},
            {"role": "tool", "tool_call_id": "call_def", "content": "{\"ok\":true}"}
        ]
    })
}

#[tokio::test]
async fn a_base_url_ending_in_v1_is_not_doubled() {
    let vendor = vendor();
    let server = vendor.serve(vendor.ok(Some("All good."), &[])).await;
    let config =
        ProviderConfig::new(format!("{}/v1/", server.uri()), "", MODEL).with_retry(fast_retry());
    let provider = OpenAiProvider::new(config).unwrap();
    assert_eq!(
        provider.endpoint(),
        format!("{}/v1/chat/completions", server.uri())
    );
    let response = provider.chat(&first_turn(MODEL)).await.unwrap();
    assert_eq!(response.text.as_deref(), Some("All good."));
    // No key: no Authorization header (local OpenAI-compatible servers).
    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].headers.get("authorization").is_none());
    // Not api.openai.com: `max_tokens` is sent too, for servers that only know it.
    assert_eq!(bodies(&server).await[0]["max_tokens"], 512);
}

#[tokio::test]
async fn an_empty_argument_string_means_no_arguments() {
    let message = json!({"role": "assistant", "content": null, "tool_calls": [
        wire_call("call_1a", "take_snapshot", ""),
        wire_call("call_1b", "set_state", r#"{"state":"healthy","reason":"idle"}"#)
    ]});
    let reply = ResponseTemplate::new(200).set_body_json(reply_with(message, "tool_calls"));
    let vendor = vendor();
    let response = vendor.first_turn(&vendor.serve(reply).await).await.unwrap();
    let ids: Vec<_> = response.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["call_1a", "call_1b"]);
    assert_eq!(response.tool_calls[0].arguments, json!({}));
    assert_eq!(response.tool_calls[1].arguments["reason"], "idle");
}
