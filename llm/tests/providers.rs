//! Every provider against a local wiremock server that answers in its vendor's wire format.
//!
//! The tests below run once per vendor: [`provider_tests!`] makes a module per vendor
//! (`anthropic::retries_a_rate_limit`, ...) from the [`vendors::Vendor`] description, which
//! says how that vendor writes replies and errors and what its requests must look like.
//! What only one vendor does is tested in its own file under `vendors/`.

mod common;
mod fallback;
mod vendors;

use std::time::Duration;

use llm::{ProviderConfig, ProviderErrorKind, RetryPolicy, StopReason, ToolCall, ToolChoice};
use serde_json::json;
use wiremock::matchers::header;
use wiremock::{MockServer, ResponseTemplate};

use common::{HISTORY_SIGNATURE, bodies, dead_port, first_turn, request_count, second_turn};
use vendors::{Call, Failure, USAGE, Vendor};

/// Instantiates every shared test for every named vendor module of [`vendors`].
macro_rules! provider_tests {
    ($($vendor:ident),+ $(,)?) => {$(
        mod $vendor {
            provider_tests!(@tests $vendor:
                sends_the_vendor_wire_format,
                retries_a_rate_limit,
                retries_an_overload,
                gives_up_on_a_persistent_overload,
                fails_at_once_on_a_bad_key,
                does_not_retry_an_exhausted_quota,
                a_malformed_reply_is_a_bad_request,
                reads_text_and_two_tool_calls,
                parses_tool_calls_written_as_json,
                a_missing_server_is_reported,
                names_the_tool_the_model_must_call,
                a_call_to_an_unknown_tool_written_as_json_is_a_call,
                a_slow_attempt_is_not_cut_by_the_retry_deadline,
            );
        }
    )+};
    (@tests $vendor:ident: $($test:ident),+ $(,)?) => {$(
        #[tokio::test]
        async fn $test() {
            super::$test(&crate::vendors::$vendor::vendor()).await;
        }
    )+};
}

provider_tests!(anthropic, openai, gemini, ollama);

/// A second-turn request goes out in the vendor's exact wire format, with its headers, and
/// the reply's tool call, stop reason and usage come back.
async fn sends_the_vendor_wire_format(vendor: &Vendor) {
    let server = MockServer::start().await;
    let call = Call {
        id: "call_xyz",
        name: "set_state",
        args: json!({"state": "degraded", "reason": "CPU pegged"}),
        signature: Some("CiQBnext"),
    };
    let mut mock = vendor
        .chat()
        .and(header("content-type", "application/json"));
    for (name, value) in vendor.headers {
        mock = mock.and(header(*name, *value));
    }
    mock.respond_with(vendor.ok(None, std::slice::from_ref(&call)))
        .expect(1)
        .mount(&server)
        .await;

    let request = second_turn(vendor.model, vendor.history_ids, Some(HISTORY_SIGNATURE));
    let response = vendor.provider(&server).chat(&request).await.unwrap();

    assert_eq!(response.text, None);
    assert_eq!(response.stop_reason, StopReason::ToolUse);
    // Ids continue the conversation where the vendor gives none.
    assert_eq!(response.tool_calls, vec![vendor.expected(&call, 3)]);
    assert_eq!(response.usage.input_tokens, USAGE.0);
    assert_eq!(response.usage.output_tokens, USAGE.1);

    assert_eq!(bodies(&server).await, [(vendor.second_turn_body)()]);
    if !vendor
        .headers
        .iter()
        .any(|(name, _)| *name == "authorization")
    {
        let requests = server.received_requests().await.unwrap();
        assert!(requests[0].headers.get("authorization").is_none());
    }
}

/// Mounts `failure` once, then a plain answer, and checks the call got the answer on its
/// second attempt.
async fn retries(vendor: &Vendor, failure: Failure) {
    let server = MockServer::start().await;
    vendor.mount_once(&server, vendor.fail(failure).0).await;
    vendor
        .mount(&server, vendor.ok(Some("All good."), &[]))
        .await;

    let response = vendor.first_turn(&server).await.unwrap();
    assert_eq!(response.text.as_deref(), Some("All good."));
    assert_eq!(response.stop_reason, StopReason::EndTurn);
    assert_eq!(request_count(&server).await, 2);
}

async fn retries_a_rate_limit(vendor: &Vendor) {
    retries(vendor, Failure::RateLimited).await;
}

async fn retries_an_overload(vendor: &Vendor) {
    retries(vendor, Failure::Overloaded).await;
}

/// Answers every request with `failure`; returns the error and how many requests came.
async fn fails(vendor: &Vendor, failure: Failure) -> (llm::ProviderError, usize) {
    let server = vendor.serve(vendor.fail(failure).0).await;
    let err = vendor.first_turn(&server).await.unwrap_err();
    (err, request_count(&server).await)
}

async fn gives_up_on_a_persistent_overload(vendor: &Vendor) {
    let (err, requests) = fails(vendor, Failure::Overloaded).await;
    let failing = vendor.fail(Failure::Overloaded).1;
    assert_eq!(err.kind, ProviderErrorKind::Overloaded);
    assert_eq!(err.status, Some(failing.status));
    assert_eq!(
        err.message,
        format!(
            "{} (gave up after 4 attempt(s): attempts exhausted)",
            failing.message
        )
    );
    assert_eq!(requests, 4);
}

async fn fails_at_once_on_a_bad_key(vendor: &Vendor) {
    let (err, requests) = fails(vendor, Failure::Unauthorized).await;
    assert_eq!(err.kind, ProviderErrorKind::Auth);
    assert_eq!(err.status, Some(401));
    assert!(!err.retryable);
    assert_eq!(err.provider, vendor.kind.id());
    // The vendor's words, and the variable to check where there is a key.
    assert_eq!(
        err.to_string(),
        format!(
            "{}: Auth (HTTP 401): {}",
            vendor.kind.id(),
            vendor.fail(Failure::Unauthorized).1.message
        )
    );
    assert_eq!(requests, 1);
}

async fn does_not_retry_an_exhausted_quota(vendor: &Vendor) {
    let (err, requests) = fails(vendor, Failure::QuotaExhausted).await;
    assert_eq!(err.kind, ProviderErrorKind::RateLimited);
    assert!(!err.retryable);
    assert_eq!(err.message, vendor.fail(Failure::QuotaExhausted).1.message);
    assert_eq!(err.retry_after, Some(std::time::Duration::ZERO));
    assert_eq!(requests, 1);
}

/// Broken JSON, or JSON that is not a reply: a bad request that quotes the body, not retried.
async fn a_malformed_reply_is_a_bad_request(vendor: &Vendor) {
    for body in [vendor.malformed, "{}"] {
        let reply = ResponseTemplate::new(200).set_body_raw(body, "application/json");
        let server = vendor.serve(reply).await;
        let err = vendor.first_turn(&server).await.unwrap_err();
        assert_eq!(err.kind, ProviderErrorKind::BadRequest, "{body}");
        assert!(err.message.starts_with("unparseable reply: "), "{err}");
        if body != "{}" {
            assert!(err.message.contains(body.trim()), "{err}");
        }
        assert_eq!(request_count(&server).await, 1);
    }
}

async fn reads_text_and_two_tool_calls(vendor: &Vendor) {
    let calls = [
        Call {
            id: "call_1a",
            name: "take_snapshot",
            args: json!({}),
            signature: Some("sig1"),
        },
        Call {
            id: "call_1b",
            name: "set_state",
            args: json!({"state": "healthy", "reason": "idle"}),
            signature: None,
        },
    ];
    let server = vendor.serve(vendor.ok(Some("Checking."), &calls)).await;
    let response = vendor.first_turn(&server).await.unwrap();
    let expected: Vec<ToolCall> = calls
        .iter()
        .enumerate()
        .map(|(i, call)| vendor.expected(call, i + 1))
        .collect();
    assert_eq!(response.tool_calls, expected);
    assert_eq!(response.text.as_deref(), Some("Checking."));
    assert_eq!(response.stop_reason, StopReason::ToolUse);
}

/// Calls written as JSON text (the shapes small local models use) become calls `call_1`,
/// ..., and leave the rest of the text.
async fn parses_tool_calls_written_as_json(vendor: &Vendor) {
    let think = "<think>The user wants a look first.</think>";
    let cases = [
        (
            "Let me look.\n```json\n{\"name\": \"take_snapshot\", \"arguments\": {}}\n```"
                .to_string(),
            "take_snapshot",
            json!({}),
            Some("Let me look."),
        ),
        (
            "```json\n{\"tool\": \"set_state\", \"args\": {\"state\": \"healthy\", \
             \"reason\": \"ok\"}}\n```"
                .to_string(),
            "set_state",
            json!({"state": "healthy", "reason": "ok"}),
            None,
        ),
        (
            "```json\n{\"intent\": \"set_state\", \"state\": \"failed\", \"reason\": \"OOM\"}\n```"
                .to_string(),
            "set_state",
            json!({"state": "failed", "reason": "OOM"}),
            None,
        ),
        (
            format!(
                "{think}\n```json\n[{{\"name\": \"take_snapshot\", \"arguments\": {{}}}}]\n```"
            ),
            "take_snapshot",
            json!({}),
            (!vendor.strips_think).then_some(think),
        ),
    ];
    for (text, name, arguments, rest) in cases {
        let server = vendor.serve(vendor.ok(Some(&text), &[])).await;
        let response = vendor.first_turn(&server).await.unwrap();
        let expected = ToolCall {
            id: "call_1".into(),
            name: name.into(),
            arguments,
            thought_signature: None,
        };
        assert_eq!(response.tool_calls, [expected], "{text}");
        assert_eq!(response.stop_reason, StopReason::ToolUse, "{text}");
        assert_eq!(response.text.as_deref(), rest, "{text}");
    }
}

/// Nobody listens: retried, then reported as the vendor's kind of unreachable.
async fn a_missing_server_is_reported(vendor: &Vendor) {
    let err = vendor
        .provider_at(format!("http://127.0.0.1:{}", dead_port()))
        .chat(&first_turn(vendor.model))
        .await
        .unwrap_err();
    let (kind, start, end) = vendor.unreachable;
    assert_eq!(err.kind, kind);
    assert!(err.message.starts_with(start), "{err}");
    assert!(err.message.contains("(gave up after 4 attempt(s)"), "{err}");
    assert!(err.message.ends_with(end), "{err}");
}

/// `ToolChoice::Tool` goes out in the vendor's words (and `Auto` as its "the model
/// chooses"); a vendor without such a field sends neither, and its provider says it cannot
/// force a call.
async fn names_the_tool_the_model_must_call(vendor: &Vendor) {
    let server = vendor.serve(vendor.ok(Some("ok"), &[])).await;
    let provider = vendor.provider(&server);
    let mut request = first_turn(vendor.model);
    provider.chat(&request).await.unwrap();
    request.tool_choice = ToolChoice::Tool("set_state".into());
    provider.chat(&request).await.unwrap();
    let sent = bodies(&server).await;
    match vendor.tool_choice {
        Some((pointer, choice)) => {
            assert!(provider.can_force_tool());
            assert_eq!(sent[0].pointer(pointer), Some(&choice(None)), "{}", sent[0]);
            assert_eq!(
                sent[1].pointer(pointer),
                Some(&choice(Some("set_state"))),
                "{}",
                sent[1]
            );
        }
        None => {
            assert!(!provider.can_force_tool());
            assert_eq!(sent[0], sent[1], "a forced request goes out as any other");
            assert!(!sent[1].to_string().contains("tool_choice"), "{}", sent[1]);
        }
    }
}

/// A model that writes a call to a tool nobody offered, as JSON text in the shape of a call,
/// gets a call: the operator then answers it as it answers a native call to an unknown tool.
async fn a_call_to_an_unknown_tool_written_as_json_is_a_call(vendor: &Vendor) {
    let text = r#"{"name": "health", "arguments": {"sandbox_id": "demo-1"}}"#;
    let server = vendor.serve(vendor.ok(Some(text), &[])).await;
    let response = vendor.first_turn(&server).await.unwrap();
    let expected = ToolCall {
        id: "call_1".into(),
        name: "health".into(),
        arguments: json!({"sandbox_id": "demo-1"}),
        thought_signature: None,
    };
    assert_eq!(response.tool_calls, [expected]);
    assert_eq!(response.text, None);
    assert_eq!(response.stop_reason, StopReason::ToolUse);
}

/// A local model on a small machine may take longer than the retry policy's whole budget to
/// answer one request: the request's own timeout stretches that budget to one attempt.
async fn a_slow_attempt_is_not_cut_by_the_retry_deadline(vendor: &Vendor) {
    let reply = vendor
        .ok(Some("All good."), &[])
        .set_delay(Duration::from_millis(600));
    let server = vendor.serve(reply).await;
    let policy = RetryPolicy {
        deadline: Duration::from_millis(200),
        ..common::fast_retry()
    };
    let config = ProviderConfig::new(server.uri(), vendor.key, vendor.model).with_retry(policy);
    let provider = llm::provider_from_config(vendor.kind, config).unwrap();
    let mut request = first_turn(vendor.model);
    request.timeout = Duration::from_secs(5);
    let response = provider.chat(&request).await.unwrap();
    assert_eq!(response.text.as_deref(), Some("All good."));
    assert_eq!(request_count(&server).await, 1);
}
