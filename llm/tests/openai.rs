//! OpenAI Chat Completions against a local wiremock server.

mod common;

use common::{bodies, fast_retry, first_turn, request_count, second_turn};
use llm::{OpenAiProvider, Provider, ProviderConfig, ProviderErrorKind, StopReason};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const MODEL: &str = "gpt-4o-mini";

fn provider(server: &MockServer) -> OpenAiProvider {
    let config = ProviderConfig::new(server.uri(), "sk-test", MODEL).with_retry(fast_retry());
    OpenAiProvider::new(config).unwrap()
}

fn reply(message: Value, finish_reason: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1_730_000_000, "model": MODEL,
        "choices": [{"index": 0, "finish_reason": finish_reason, "message": message}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 25, "total_tokens": 145}
    }))
}

fn end_turn() -> ResponseTemplate {
    reply(json!({"role": "assistant", "content": "All good."}), "stop")
}

fn tool_call(id: &str, name: &str, arguments: &str) -> Value {
    json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}})
}

async fn mount_error(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(response)
        .up_to_n_times(1)
        .mount(server)
        .await;
}

async fn mount_ok(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .respond_with(response)
        .mount(server)
        .await;
}

#[tokio::test]
async fn full_tool_call_round_uses_the_real_wire_shape() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/chat/completions"))
        .and(header("authorization", "Bearer sk-test"))
        .and(header("content-type", "application/json"))
        .respond_with(reply(
            json!({"role": "assistant", "content": null, "refusal": null, "tool_calls": [
                tool_call("call_xyz", "set_state", r#"{"state":"degraded","reason":"CPU pegged"}"#)
            ]}),
            "tool_calls",
        ))
        .expect(1)
        .mount(&server)
        .await;

    let request = second_turn(MODEL, ["call_abc", "call_def"], None);
    let response = provider(&server).chat(&request).await.unwrap();

    assert_eq!(response.text, None);
    assert_eq!(response.stop_reason, StopReason::ToolUse);
    assert_eq!(response.tool_calls.len(), 1);
    assert_eq!(response.tool_calls[0].id, "call_xyz");
    assert_eq!(
        response.tool_calls[0].arguments,
        json!({"state": "degraded", "reason": "CPU pegged"})
    );
    assert_eq!(response.usage.input_tokens, 120);
    assert_eq!(response.usage.output_tokens, 25);

    let body = &bodies(&server).await[0];
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["max_completion_tokens"], 512);
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "set_state");
    assert_eq!(
        body["tools"][0]["function"]["parameters"]["required"],
        json!(["state", "reason"])
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are an operator monitoring a sandbox."},
            {"role": "user", "content": "CPU 100% for 10 min. Assess."},
            {"role": "assistant", "content": "", "tool_calls": [
                tool_call("call_abc", "take_snapshot", "{}"),
                tool_call("call_def", "set_state", r#"{"reason":"CPU pegged","state":"degraded"}"#)
            ]},
            {"role": "tool", "tool_call_id": "call_abc", "content": "{\"cpu_percent\":100.0}"},
            {"role": "tool", "tool_call_id": "call_def", "content": "{\"ok\":true}"}
        ])
    );
    // Arguments travel as a JSON string, never as an object.
    assert!(body["messages"][2]["tool_calls"][1]["function"]["arguments"].is_string());
}

#[tokio::test]
async fn a_base_url_ending_in_v1_is_not_doubled() {
    let server = MockServer::start().await;
    mount_ok(&server, end_turn()).await;
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
async fn rate_limit_with_retry_after_zero_is_retried() {
    let server = MockServer::start().await;
    mount_error(
        &server,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "0")
            .set_body_json(json!({"error": {"message": "Rate limit reached",
                "type": "requests", "param": null, "code": "rate_limit_exceeded"}})),
    )
    .await;
    mount_ok(&server, end_turn()).await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert_eq!(response.text.as_deref(), Some("All good."));
    assert_eq!(request_count(&server).await, 2);
}

#[tokio::test]
async fn unavailable_503_is_retried() {
    let server = MockServer::start().await;
    mount_error(
        &server,
        ResponseTemplate::new(503)
            .insert_header("retry-after-ms", "1")
            .set_body_json(json!({"error": {"message": "overloaded", "type": "server_error"}})),
    )
    .await;
    mount_ok(&server, end_turn()).await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert_eq!(response.stop_reason, StopReason::EndTurn);
    assert_eq!(request_count(&server).await, 2);
}

#[tokio::test]
async fn unauthorized_fails_at_once_with_a_clear_message() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(401).set_body_json(json!({"error": {
            "message": "Incorrect API key provided: sk-test.", "type": "invalid_request_error",
            "param": null, "code": "invalid_api_key"}})),
    )
    .await;

    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Auth);
    assert_eq!(err.status, Some(401));
    assert!(err.message.contains("Incorrect API key provided"), "{err}");
    assert!(err.message.contains("OPENAI_API_KEY"), "{err}");
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn insufficient_quota_is_not_retried() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "0")
            .set_body_json(json!({"error": {
                "message": "You exceeded your current quota, please check your plan and billing details.",
                "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}})),
    )
    .await;

    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::RateLimited);
    assert!(!err.retryable);
    assert!(err.message.contains("exceeded your current quota"), "{err}");
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn malformed_reply_is_a_bad_request() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(200).set_body_raw("not json at all", "application/json"),
    )
    .await;

    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::BadRequest);
    assert!(err.message.contains("not json at all"), "{err}");
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn two_tool_calls_in_one_reply() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        reply(
            json!({"role": "assistant", "content": null, "tool_calls": [
                tool_call("call_1a", "take_snapshot", ""),
                tool_call("call_1b", "set_state", r#"{"state":"healthy","reason":"idle"}"#)
            ]}),
            "tool_calls",
        ),
    )
    .await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    let ids: Vec<_> = response.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["call_1a", "call_1b"]);
    assert_eq!(response.tool_calls[0].arguments, json!({}));
    assert_eq!(response.tool_calls[1].arguments["reason"], "idle");
}

#[tokio::test]
async fn tool_call_written_as_fenced_json_is_parsed() {
    let server = MockServer::start().await;
    let text = "```json\n{\"tool\": \"set_state\", \"args\": {\"state\": \"healthy\", \"reason\": \"ok\"}}\n```";
    mount_ok(
        &server,
        reply(json!({"role": "assistant", "content": text}), "stop"),
    )
    .await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert_eq!(response.tool_calls.len(), 1);
    assert_eq!(response.tool_calls[0].id, "call_1");
    assert_eq!(response.tool_calls[0].name, "set_state");
    assert_eq!(
        response.tool_calls[0].arguments,
        json!({"state": "healthy", "reason": "ok"})
    );
    assert_eq!(response.stop_reason, StopReason::ToolUse);
    assert_eq!(response.text, None);
}
