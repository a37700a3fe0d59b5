//! Ollama's native `/api/chat` against a local wiremock server.

mod common;

use common::{bodies, fast_retry, first_turn, request_count, second_turn};
use llm::{OllamaProvider, Provider, ProviderConfig, ProviderErrorKind, StopReason};
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const MODEL: &str = "qwen3:4b";

fn provider(server: &MockServer) -> OllamaProvider {
    let config = ProviderConfig::new(server.uri(), "", MODEL).with_retry(fast_retry());
    OllamaProvider::new(config).unwrap()
}

fn reply(message: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "model": MODEL, "created_at": "2024-07-22T20:33:28.123648Z",
        "message": message, "done_reason": "stop", "done": true,
        "total_duration": 885_095_291, "prompt_eval_count": 122, "eval_count": 33
    }))
}

fn end_turn() -> ResponseTemplate {
    reply(json!({"role": "assistant", "content": "All good."}))
}

/// A port nobody listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn mount_error(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(response)
        .up_to_n_times(1)
        .mount(server)
        .await;
}

async fn mount_ok(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(response)
        .mount(server)
        .await;
}

#[tokio::test]
async fn full_tool_call_round_uses_the_real_wire_shape() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/chat"))
        .respond_with(reply(json!({"role": "assistant", "content": "",
            "tool_calls": [{"function": {"name": "set_state",
                                         "arguments": {"state": "degraded", "reason": "CPU pegged"}}}]})))
        .expect(1)
        .mount(&server)
        .await;

    let request = second_turn(MODEL, ["call_1", "call_2"], None);
    let response = provider(&server).chat(&request).await.unwrap();

    assert_eq!(response.stop_reason, StopReason::ToolUse);
    assert_eq!(response.tool_calls.len(), 1);
    assert_eq!(response.tool_calls[0].id, "call_3");
    assert_eq!(
        response.tool_calls[0].arguments,
        json!({"state": "degraded", "reason": "CPU pegged"})
    );
    assert_eq!(response.text, None);
    assert_eq!(response.usage.input_tokens, 122);
    assert_eq!(response.usage.output_tokens, 33);

    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].headers.get("authorization").is_none());
    let body = &bodies(&server).await[0];
    assert_eq!(body["model"], MODEL);
    assert_eq!(body["stream"], false);
    assert_eq!(body["options"]["num_predict"], 512);
    assert_eq!(body["tools"][0]["type"], "function");
    assert_eq!(body["tools"][0]["function"]["name"], "set_state");
    assert_eq!(body["tools"][1]["function"]["name"], "take_snapshot");
    assert_eq!(
        body["messages"],
        json!([
            {"role": "system", "content": "You are an operator monitoring a sandbox."},
            {"role": "user", "content": "CPU 100% for 10 min. Assess."},
            {"role": "assistant", "content": "", "tool_calls": [
                {"function": {"name": "take_snapshot", "arguments": {}}},
                {"function": {"name": "set_state",
                              "arguments": {"state": "degraded", "reason": "CPU pegged"}}}
            ]},
            {"role": "tool", "content": "{\"cpu_percent\":100.0}", "tool_name": "take_snapshot"},
            {"role": "tool", "content": "{\"ok\":true}", "tool_name": "set_state"}
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
            .set_body_json(json!({"error": "too many requests"})),
    )
    .await;
    mount_ok(&server, end_turn()).await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert_eq!(response.text.as_deref(), Some("All good."));
    assert_eq!(request_count(&server).await, 2);
}

#[tokio::test]
async fn model_loading_503_is_retried() {
    let server = MockServer::start().await;
    mount_error(
        &server,
        ResponseTemplate::new(503).set_body_json(json!({"error": "server busy, please try again"})),
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
        ResponseTemplate::new(401).set_body_json(json!({"error": "unauthorized"})),
    )
    .await;

    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Auth);
    assert_eq!(err.status, Some(401));
    assert_eq!(err.to_string(), "ollama: Auth (HTTP 401): unauthorized");
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn exhausted_usage_limit_is_not_retried() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(429).set_body_json(json!({"error":
            "you (user) have reached your weekly usage limit, please upgrade to continue"})),
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
async fn unknown_model_is_a_bad_request() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(404)
            .set_body_json(json!({"error": "model \"qwen3:4b\" not found, try pulling it first"})),
    )
    .await;
    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::BadRequest);
    assert!(err.message.contains("try pulling it first"), "{err}");
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn malformed_reply_is_a_bad_request() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(200).set_body_raw("{\"message\": {\"role\": ", "application/json"),
    )
    .await;

    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::BadRequest);
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn two_tool_calls_in_one_reply() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        reply(json!({"role": "assistant", "content": "", "tool_calls": [
            {"function": {"name": "take_snapshot", "arguments": {}}},
            {"function": {"index": 1, "name": "set_state",
                          "arguments": {"state": "healthy", "reason": "idle"}}}
        ]})),
    )
    .await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    let ids: Vec<_> = response.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["call_1", "call_2"]);
    assert_eq!(response.tool_calls[1].name, "set_state");
    assert_eq!(response.stop_reason, StopReason::ToolUse);
}

#[tokio::test]
async fn tool_call_written_as_fenced_json_is_parsed() {
    let server = MockServer::start().await;
    let text = "<think>The user wants a look first.</think>\n```json\n\
                [{\"name\": \"take_snapshot\", \"arguments\": {}}]\n```";
    mount_ok(
        &server,
        reply(json!({"role": "assistant", "content": text})),
    )
    .await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert_eq!(response.tool_calls.len(), 1);
    assert_eq!(response.tool_calls[0].id, "call_1");
    assert_eq!(response.tool_calls[0].name, "take_snapshot");
    assert_eq!(response.text, None);
    assert_eq!(response.stop_reason, StopReason::ToolUse);
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
    assert_eq!(provider(&server).probe().await.unwrap(), ["qwen3:4b"]);
}

#[tokio::test]
async fn probe_failure_says_how_to_start_ollama() {
    // A bare `host:port`, as OLLAMA_HOST allows.
    let config = ProviderConfig::new(format!("127.0.0.1:{}", dead_port()), "", MODEL);
    let provider = OllamaProvider::new(config).unwrap();
    assert!(provider.endpoint().starts_with("http://127.0.0.1:"));
    let err = provider.probe().await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Unavailable);
    assert!(err.message.starts_with("Ollama not available: "), "{err}");
    assert!(err.message.ends_with(". Start with: ollama serve"), "{err}");
}

#[tokio::test]
async fn chat_without_a_server_is_unavailable() {
    let config = ProviderConfig::new(format!("http://127.0.0.1:{}", dead_port()), "", MODEL)
        .with_retry(fast_retry());
    let err = OllamaProvider::new(config)
        .unwrap()
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Unavailable);
    assert!(err.message.starts_with("Ollama not available: "), "{err}");
    assert!(err.message.contains("Start with: ollama serve"), "{err}");
    eprintln!("{err}");
}
