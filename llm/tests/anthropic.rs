//! Anthropic Messages API against a local wiremock server.

mod common;

use common::{bodies, fast_retry, first_turn, request_count, second_turn};
use llm::{AnthropicProvider, Provider, ProviderConfig, ProviderErrorKind, StopReason, ToolCall};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const MODEL: &str = "claude-haiku-4-5-20251001";

fn provider(server: &MockServer) -> AnthropicProvider {
    let config = ProviderConfig::new(server.uri(), "test-key", MODEL).with_retry(fast_retry());
    AnthropicProvider::new(config).unwrap()
}

fn reply(content: Value, stop_reason: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "id": "msg_01X", "type": "message", "role": "assistant", "model": MODEL,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": 412, "output_tokens": 61}
    }))
}

fn end_turn() -> ResponseTemplate {
    reply(json!([{"type": "text", "text": "All good."}]), "end_turn")
}

async fn mount_error(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(response)
        .up_to_n_times(1)
        .mount(server)
        .await;
}

async fn mount_ok(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .respond_with(response)
        .mount(server)
        .await;
}

#[tokio::test]
async fn full_tool_call_round_uses_the_real_wire_shape() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/messages"))
        .and(header("x-api-key", "test-key"))
        .and(header("anthropic-version", "2023-06-01"))
        .and(header("content-type", "application/json"))
        .respond_with(reply(
            json!([
                {"type": "text", "text": "Marking degraded."},
                {"type": "tool_use", "id": "toolu_01C", "name": "set_state",
                 "input": {"state": "degraded", "reason": "CPU pegged"}}
            ]),
            "tool_use",
        ))
        .expect(1)
        .mount(&server)
        .await;

    let request = second_turn(MODEL, ["toolu_01A", "toolu_01B"], None);
    let response = provider(&server).chat(&request).await.unwrap();

    assert_eq!(response.text.as_deref(), Some("Marking degraded."));
    assert_eq!(response.stop_reason, StopReason::ToolUse);
    assert_eq!(
        response.tool_calls,
        vec![ToolCall {
            id: "toolu_01C".into(),
            name: "set_state".into(),
            arguments: json!({"state": "degraded", "reason": "CPU pegged"}),
            thought_signature: None,
        }]
    );
    assert_eq!(response.usage.input_tokens, 412);
    assert_eq!(response.usage.output_tokens, 61);

    let body = &bodies(&server).await[0];
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["max_tokens"], 512);
    assert_eq!(body["system"], "You are an operator monitoring a sandbox.");
    assert_eq!(body["tool_choice"], json!({"type": "auto"}));
    assert_eq!(body["tools"][0]["name"], "set_state");
    assert_eq!(
        body["tools"][0]["input_schema"]["required"],
        json!(["state", "reason"])
    );
    assert_eq!(
        body["tools"][1]["input_schema"],
        json!({"type": "object", "properties": {}})
    );
    assert_eq!(
        body["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "CPU 100% for 10 min. Assess."}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_01A", "name": "take_snapshot", "input": {}},
                {"type": "tool_use", "id": "toolu_01B", "name": "set_state",
                 "input": {"state": "degraded", "reason": "CPU pegged"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A",
                 "content": "{\"cpu_percent\":100.0}", "is_error": false},
                {"type": "tool_result", "tool_use_id": "toolu_01B",
                 "content": "{\"ok\":true}", "is_error": false}
            ]}
        ])
    );
}

#[tokio::test]
async fn rate_limit_with_retry_after_zero_is_retried() {
    let server = MockServer::start().await;
    mount_error(
        &server,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "0")
            .set_body_json(json!({"type": "error",
                "error": {"type": "rate_limit_error", "message": "Rate limited"}})),
    )
    .await;
    mount_ok(&server, end_turn()).await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert_eq!(response.text.as_deref(), Some("All good."));
    assert_eq!(response.stop_reason, StopReason::EndTurn);
    assert_eq!(request_count(&server).await, 2);
}

#[tokio::test]
async fn overloaded_529_is_retried() {
    let server = MockServer::start().await;
    mount_error(
        &server,
        ResponseTemplate::new(529).set_body_json(json!({"type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"}})),
    )
    .await;
    mount_ok(&server, end_turn()).await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert_eq!(response.text.as_deref(), Some("All good."));
    assert_eq!(request_count(&server).await, 2);
}

#[tokio::test]
async fn persistent_overload_gives_up_after_the_attempt_bound() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(529).set_body_json(json!({"type": "error",
            "error": {"type": "overloaded_error", "message": "Overloaded"}})),
    )
    .await;
    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Overloaded);
    assert_eq!(err.status, Some(529));
    assert_eq!(request_count(&server).await, 4);
}

#[tokio::test]
async fn unauthorized_fails_at_once_with_a_clear_message() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(401).set_body_json(json!({"type": "error",
            "error": {"type": "authentication_error", "message": "invalid x-api-key"},
            "request_id": "req_1"})),
    )
    .await;

    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Auth);
    assert_eq!(err.status, Some(401));
    assert!(!err.retryable);
    assert_eq!(err.provider, "anthropic");
    assert!(err.message.contains("invalid x-api-key"), "{err}");
    assert!(err.message.contains("ANTHROPIC_API_KEY"), "{err}");
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn exhausted_spend_limit_is_not_retried() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "0")
            .set_body_json(json!({"type": "error", "error": {
                "type": "rate_limit_error", "message": "Spend limit reached",
                "details": {"error_code": "enforced_spend_limit_reached"}}})),
    )
    .await;

    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::RateLimited);
    assert!(!err.retryable);
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn malformed_reply_is_a_bad_request() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(200).set_body_raw("{\"content\": [oops", "application/json"),
    )
    .await;

    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::BadRequest);
    assert!(err.message.contains("unparseable reply"), "{err}");
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn two_tool_calls_in_one_reply() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        reply(
            json!([
                {"type": "tool_use", "id": "toolu_1", "name": "take_snapshot", "input": {}},
                {"type": "tool_use", "id": "toolu_2", "name": "set_state",
                 "input": {"state": "healthy", "reason": "idle"}}
            ]),
            "tool_use",
        ),
    )
    .await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    let names: Vec<_> = response
        .tool_calls
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    assert_eq!(names, ["take_snapshot", "set_state"]);
    assert_eq!(response.tool_calls[1].id, "toolu_2");
    assert_eq!(response.tool_calls[1].arguments["state"], "healthy");
    assert_eq!(response.text, None);
}

#[tokio::test]
async fn tool_call_written_as_fenced_json_is_parsed() {
    let server = MockServer::start().await;
    let text = "Let me look.\n```json\n{\"name\": \"take_snapshot\", \"arguments\": {}}\n```";
    mount_ok(
        &server,
        reply(json!([{"type": "text", "text": text}]), "end_turn"),
    )
    .await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert_eq!(response.tool_calls.len(), 1);
    assert_eq!(response.tool_calls[0].name, "take_snapshot");
    assert_eq!(response.tool_calls[0].id, "call_1");
    assert_eq!(response.tool_calls[0].arguments, json!({}));
    assert_eq!(response.stop_reason, StopReason::ToolUse);
    assert_eq!(response.text.as_deref(), Some("Let me look."));
}

#[tokio::test]
async fn connection_refused_is_a_network_error() {
    // Bind and drop a listener to get a port nobody listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = ProviderConfig::new(format!("http://127.0.0.1:{port}"), "k", MODEL)
        .with_retry(fast_retry());
    let err = AnthropicProvider::new(config)
        .unwrap()
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Network);
    assert!(err.message.contains("gave up after 4 attempt(s)"), "{err}");
}
