//! Gemini `generateContent`: `POST /v1beta/models/{model}:generateContent`, parts, no call
//! ids, thought signatures, `x-goog-api-key`.

use std::time::{Duration, Instant};

use llm::{ProviderKind, StopReason};
use serde_json::{Value, json};
use wiremock::{MockServer, ResponseTemplate};

use super::{Call, Failing, Failure, NETWORK_ERROR, RETRY_NOW, USAGE, Vendor};
use crate::common::{PROMPT, SYSTEM, bodies, request_count, second_turn, tools};

const MODEL: &str = "gemini-flash-lite-latest";

/// Gemini as the shared tests see it.
pub fn vendor() -> Vendor {
    Vendor {
        kind: ProviderKind::GoogleAi,
        model: MODEL,
        key: "g-key",
        path: "/v1beta/models/gemini-flash-lite-latest:generateContent",
        headers: &[("x-goog-api-key", "g-key")],
        native_ids: false,
        signatures: true,
        strips_think: false,
        reply,
        failing,
        malformed: "{\"candidates\": [",
        history_ids: ["call_1", "call_2"],
        second_turn_body,
        unreachable: NETWORK_ERROR,
        tool_choice: Some(("/toolConfig/functionCallingConfig", |tool| match tool {
            Some(name) => json!({"mode": "ANY", "allowedFunctionNames": [name]}),
            None => json!({"mode": "AUTO"}),
        })),
    }
}

/// Text and `functionCall` parts (no ids); a tool call ends with `STOP` too. Output tokens
/// are the candidates' plus the thoughts'.
fn reply(text: Option<&str>, calls: &[Call]) -> Value {
    let mut parts: Vec<Value> = text.map(|text| json!({"text": text})).into_iter().collect();
    parts.extend(calls.iter().map(|call| {
        let mut part = json!({"functionCall": {"name": call.name, "args": call.args}});
        if let Some(signature) = call.signature {
            part["thoughtSignature"] = json!(signature);
        }
        part
    }));
    json!({
        "candidates": [{"index": 0, "finishReason": "STOP",
                        "content": {"role": "model", "parts": parts}}],
        "usageMetadata": {"promptTokenCount": USAGE.0, "candidatesTokenCount": USAGE.1 - 11,
                          "thoughtsTokenCount": 11, "totalTokenCount": USAGE.0 + USAGE.1},
        "modelVersion": "gemini-2.5-flash-lite", "responseId": "abc"
    })
}

/// A 429 body with a quota violation on `quota_id` and a `RetryInfo` of `retry_delay`.
fn rate_limited(retry_delay: &str, quota_id: &str) -> Value {
    json!({"error": {"code": 429, "message": "You exceeded your current quota.",
        "status": "RESOURCE_EXHAUSTED", "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"quotaMetric": "generativelanguage.googleapis.com/generate_content_free_tier_requests",
                 "quotaId": quota_id, "quotaValue": "15"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}]}})
}

fn failing(failure: Failure) -> Failing {
    let error = |code: u16, status: &str, message: &str| json!({"error": {"code": code, "message": message, "status": status}});
    match failure {
        Failure::RateLimited => Failing {
            status: 429,
            headers: RETRY_NOW,
            body: rate_limited("0s", "GenerateRequestsPerMinutePerProjectPerModel"),
            message: "RESOURCE_EXHAUSTED: You exceeded your current quota.",
        },
        Failure::Overloaded => Failing {
            status: 503,
            headers: &[],
            body: error(
                503,
                "UNAVAILABLE",
                "The model is overloaded. Please try again later.",
            ),
            message: "UNAVAILABLE: The model is overloaded. Please try again later.",
        },
        Failure::Unauthorized => Failing {
            status: 401,
            headers: &[],
            body: error(
                401,
                "UNAUTHENTICATED",
                "API key not valid. Please pass a valid API key.",
            ),
            message: "UNAUTHENTICATED: API key not valid. Please pass a valid API key.. \
                      Check GOOGLE_API_KEY",
        },
        // No header: the zero hint is the body's RetryInfo.
        Failure::QuotaExhausted => Failing {
            status: 429,
            headers: &[],
            body: rate_limited("0s", "GenerateRequestsPerDayPerProjectPerModel-FreeTier"),
            message: "RESOURCE_EXHAUSTED: You exceeded your current quota. \
                      (quota or spend limit exhausted; not retried)",
        },
    }
}

/// Calls keep their signature; synthesised ids are not sent; results answer by name; a
/// tool without arguments has no `parameters` at all.
fn second_turn_body() -> Value {
    let [set_state, snapshot] = <[_; 2]>::try_from(tools()).unwrap();
    json!({
        "systemInstruction": {"parts": [{"text": SYSTEM}]},
        "generationConfig": {"maxOutputTokens": 512},
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "tools": [{"functionDeclarations": [
            {"name": "set_state", "description": set_state.description,
             "parameters": set_state.parameters},
            {"name": "take_snapshot", "description": snapshot.description}
        ]}],
        "contents": [
            {"role": "user", "parts": [{"text": PROMPT}]},
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
        ]
    })
}

#[tokio::test]
async fn history_without_signatures_gets_the_documented_stand_in() {
    let vendor = vendor();
    let server = vendor.serve(vendor.ok(Some("All good."), &[])).await;
    let request = second_turn(MODEL, ["call_1", "call_2"], None);
    vendor.provider(&server).chat(&request).await.unwrap();
    let body = &bodies(&server).await[0];
    let parts = &body["contents"][1]["parts"];
    assert_eq!(
        parts[0]["thoughtSignature"],
        "skip_thought_signature_validator"
    );
    assert!(parts[1].get("thoughtSignature").is_none());
}

#[tokio::test]
async fn retry_info_delay_is_honoured() {
    let server = MockServer::start().await;
    let vendor = vendor();
    let body = rate_limited(
        "0.050s",
        "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
    );
    vendor
        .mount_once(&server, ResponseTemplate::new(429).set_body_json(body))
        .await;
    vendor
        .mount(&server, vendor.ok(Some("All good."), &[]))
        .await;

    let started = Instant::now();
    let response = vendor.first_turn(&server).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(50));
    assert_eq!(response.text.as_deref(), Some("All good."));
    assert_eq!(request_count(&server).await, 2);
}

#[tokio::test]
async fn blocked_prompt_is_a_reply_without_calls() {
    let blocked = json!({
        "promptFeedback": {"blockReason": "SAFETY"},
        "usageMetadata": {"promptTokenCount": 9}});
    let vendor = vendor();
    let server = vendor
        .serve(ResponseTemplate::new(200).set_body_json(blocked))
        .await;
    let response = vendor.first_turn(&server).await.unwrap();
    assert!(response.tool_calls.is_empty());
    assert_eq!(
        response.stop_reason,
        StopReason::Other("blocked: SAFETY".into())
    );
}
