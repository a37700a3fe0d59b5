//! Gemini `generateContent` against a local wiremock server.

mod common;

use common::{bodies, fast_retry, first_turn, request_count, second_turn};
use llm::{GeminiProvider, Provider, ProviderConfig, ProviderErrorKind, StopReason};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const MODEL: &str = "gemini-flash-lite-latest";
const PATH: &str = "/v1beta/models/gemini-flash-lite-latest:generateContent";

fn provider(server: &MockServer) -> GeminiProvider {
    let config = ProviderConfig::new(server.uri(), "g-key", MODEL).with_retry(fast_retry());
    GeminiProvider::new(config).unwrap()
}

fn reply(parts: Value, finish_reason: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({
        "candidates": [{"index": 0, "finishReason": finish_reason,
                        "content": {"role": "model", "parts": parts}}],
        "usageMetadata": {"promptTokenCount": 90, "candidatesTokenCount": 12, "totalTokenCount": 102},
        "modelVersion": "gemini-2.5-flash-lite", "responseId": "abc"
    }))
}

fn end_turn() -> ResponseTemplate {
    reply(json!([{"text": "All good."}]), "STOP")
}

fn rate_limited(retry_delay: &str, quota_id: &str) -> Value {
    json!({"error": {"code": 429, "message": "You exceeded your current quota.",
        "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                 "quotaId": quota_id, "quotaValue": "15"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}]}})
}

async fn mount_error(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(response)
        .up_to_n_times(1)
        .mount(server)
        .await;
}

async fn mount_ok(server: &MockServer, response: ResponseTemplate) {
    Mock::given(method("POST"))
        .and(path(PATH))
        .respond_with(response)
        .mount(server)
        .await;
}

#[tokio::test]
async fn full_tool_call_round_uses_the_real_wire_shape() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(PATH))
        .and(header("x-goog-api-key", "g-key"))
        .and(header("content-type", "application/json"))
        .respond_with(reply(
            json!([{"functionCall": {"name": "set_state",
                                     "args": {"state": "degraded", "reason": "CPU pegged"}},
                    "thoughtSignature": "CiQBnext"}]),
            "STOP",
        ))
        .expect(1)
        .mount(&server)
        .await;

    let request = second_turn(MODEL, ["call_1", "call_2"], Some("CiQB...opaque..."));
    let response = provider(&server).chat(&request).await.unwrap();

    assert_eq!(response.stop_reason, StopReason::ToolUse);
    assert_eq!(response.tool_calls.len(), 1);
    let call = &response.tool_calls[0];
    assert_eq!(call.id, "call_3", "ids continue the conversation");
    assert_eq!(call.name, "set_state");
    assert_eq!(
        call.arguments,
        json!({"state": "degraded", "reason": "CPU pegged"})
    );
    assert_eq!(call.thought_signature.as_deref(), Some("CiQBnext"));
    assert_eq!(response.usage.input_tokens, 90);
    assert_eq!(response.usage.output_tokens, 12);

    let body = &bodies(&server).await[0];
    assert_eq!(
        body["systemInstruction"],
        json!({"parts": [{"text": "You are an operator monitoring a sandbox."}]})
    );
    assert_eq!(body["generationConfig"]["maxOutputTokens"], 512);
    assert_eq!(
        body["toolConfig"],
        json!({"functionCallingConfig": {"mode": "AUTO"}})
    );
    let declarations = &body["tools"][0]["functionDeclarations"];
    assert_eq!(declarations[0]["name"], "set_state");
    assert_eq!(
        declarations[0]["parameters"]["required"],
        json!(["state", "reason"])
    );
    // A tool without arguments has no `parameters` at all.
    assert_eq!(
        declarations[1],
        json!({"name": "take_snapshot", "description": "Take a snapshot of the sandbox"})
    );
    assert_eq!(
        body["contents"],
        json!([
            {"role": "user", "parts": [{"text": "CPU 100% for 10 min. Assess."}]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "take_snapshot", "args": {}},
                 "thoughtSignature": "CiQB...opaque..."},
                {"functionCall": {"name": "set_state",
                                  "args": {"state": "degraded", "reason": "CPU pegged"}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "take_snapshot",
                                      "response": {"result": {"cpu_percent": 100.0}}}},
                {"functionResponse": {"name": "set_state", "response": {"result": {"ok": true}}}}
            ]}
        ])
    );
}

#[tokio::test]
async fn history_without_signatures_gets_the_documented_stand_in() {
    let server = MockServer::start().await;
    mount_ok(&server, end_turn()).await;
    let request = second_turn(MODEL, ["call_1", "call_2"], None);
    provider(&server).chat(&request).await.unwrap();
    let body = &bodies(&server).await[0];
    let parts = &body["contents"][1]["parts"];
    assert_eq!(
        parts[0]["thoughtSignature"],
        "skip_thought_signature_validator"
    );
    assert!(parts[1].get("thoughtSignature").is_none());
}

#[tokio::test]
async fn rate_limit_with_retry_after_zero_is_retried() {
    let server = MockServer::start().await;
    mount_error(
        &server,
        ResponseTemplate::new(429)
            .insert_header("retry-after", "0")
            .set_body_json(rate_limited(
                "0s",
                "GenerateRequestsPerMinutePerProjectPerModel",
            )),
    )
    .await;
    mount_ok(&server, end_turn()).await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert_eq!(response.text.as_deref(), Some("All good."));
    assert_eq!(request_count(&server).await, 2);
}

#[tokio::test]
async fn retry_info_delay_is_honoured() {
    let server = MockServer::start().await;
    mount_error(
        &server,
        ResponseTemplate::new(429).set_body_json(rate_limited(
            "0.050s",
            "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
        )),
    )
    .await;
    mount_ok(&server, end_turn()).await;

    let started = std::time::Instant::now();
    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(50));
    assert_eq!(response.text.as_deref(), Some("All good."));
    assert_eq!(request_count(&server).await, 2);
}

#[tokio::test]
async fn overloaded_503_is_retried() {
    let server = MockServer::start().await;
    mount_error(
        &server,
        ResponseTemplate::new(503).set_body_json(json!({"error": {"code": 503,
            "message": "The model is overloaded. Please try again later.",
            "status": "UNAVAILABLE"}})),
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
        ResponseTemplate::new(401).set_body_json(json!({"error": {"code": 401,
            "message": "API key not valid. Please pass a valid API key.",
            "status": "UNAUTHENTICATED"}})),
    )
    .await;

    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Auth);
    assert_eq!(err.provider, "google-ai");
    assert!(err.message.contains("API key not valid"), "{err}");
    assert!(err.message.contains("GOOGLE_API_KEY"), "{err}");
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn daily_quota_exhaustion_is_not_retried() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(429).set_body_json(rate_limited(
            "0s",
            "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
        )),
    )
    .await;

    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::RateLimited);
    assert!(!err.retryable);
    assert_eq!(err.retry_after, Some(std::time::Duration::ZERO));
    assert_eq!(request_count(&server).await, 1);
}

#[tokio::test]
async fn malformed_reply_is_a_bad_request() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(200).set_body_raw("{\"candidates\": [", "application/json"),
    )
    .await;

    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::BadRequest);
    assert_eq!(request_count(&server).await, 1);

    // Valid JSON without candidates or a block reason is not a reply either.
    let server = MockServer::start().await;
    mount_ok(&server, ResponseTemplate::new(200).set_body_json(json!({}))).await;
    let err = provider(&server)
        .chat(&first_turn(MODEL))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::BadRequest);
}

#[tokio::test]
async fn two_tool_calls_in_one_reply() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        reply(
            json!([
                {"text": "Checking."},
                {"functionCall": {"name": "take_snapshot", "args": {}}, "thoughtSignature": "sig1"},
                {"functionCall": {"name": "set_state", "args": {"state": "healthy", "reason": "idle"}}}
            ]),
            "STOP",
        ),
    )
    .await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    let ids: Vec<_> = response.tool_calls.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["call_1", "call_2"]);
    assert_eq!(
        response.tool_calls[0].thought_signature.as_deref(),
        Some("sig1")
    );
    assert_eq!(response.tool_calls[1].thought_signature, None);
    assert_eq!(response.text.as_deref(), Some("Checking."));
    assert_eq!(response.stop_reason, StopReason::ToolUse);
}

#[tokio::test]
async fn tool_call_written_as_fenced_json_is_parsed() {
    let server = MockServer::start().await;
    let text =
        "```json\n{\"intent\": \"set_state\", \"state\": \"failed\", \"reason\": \"OOM\"}\n```";
    mount_ok(&server, reply(json!([{"text": text}]), "STOP")).await;

    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert_eq!(response.tool_calls.len(), 1);
    assert_eq!(response.tool_calls[0].id, "call_1");
    assert_eq!(response.tool_calls[0].name, "set_state");
    assert_eq!(
        response.tool_calls[0].arguments,
        json!({"state": "failed", "reason": "OOM"})
    );
    assert_eq!(response.stop_reason, StopReason::ToolUse);
}

#[tokio::test]
async fn blocked_prompt_is_a_reply_without_calls() {
    let server = MockServer::start().await;
    mount_ok(
        &server,
        ResponseTemplate::new(200).set_body_json(json!({
            "promptFeedback": {"blockReason": "SAFETY"},
            "usageMetadata": {"promptTokenCount": 9}})),
    )
    .await;
    let response = provider(&server).chat(&first_turn(MODEL)).await.unwrap();
    assert!(response.tool_calls.is_empty());
    assert_eq!(
        response.stop_reason,
        StopReason::Other("blocked: SAFETY".into())
    );
}
