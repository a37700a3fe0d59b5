//! Provider fallback and per-call telemetry against real HTTP servers on 127.0.0.1 speaking
//! each vendor's wire format: a 500 or an exhausted quota (429) from the first provider
//! sends the call to the second, with its own model; a bad key does not fall back; every
//! call, the failed one included, is one record with provider, model, tokens, latency,
//! retries and outcome.

use std::sync::{Arc, Mutex};

use llm::{CallRecord, FallbackProvider, Observed, Provider, ProviderErrorKind};
use serde_json::json;
use wiremock::ResponseTemplate;

use crate::common::{bodies, first_turn, request_count};
use crate::vendors::{self, Call, Failure, USAGE};

/// A sink that keeps every record.
fn recorder() -> (llm::CallSink, Arc<Mutex<Vec<CallRecord>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = Arc::clone(&seen);
    let sink: llm::CallSink = Arc::new(move |r: &CallRecord| kept.lock().unwrap().push(r.clone()));
    (sink, seen)
}

fn call() -> Call {
    Call {
        id: "call_1",
        name: "take_snapshot",
        args: json!({}),
        signature: None,
    }
}

#[tokio::test]
async fn a_server_error_from_the_first_provider_falls_back_to_the_second() {
    let openai = vendors::openai::vendor();
    let anthropic = vendors::anthropic::vendor();
    let first =
        openai
            .serve(ResponseTemplate::new(500).set_body_json(
                json!({"error": {"message": "internal error", "type": "server_error"}}),
            ))
            .await;
    let second = anthropic.serve(anthropic.ok(None, &[call()])).await;
    let (sink, seen) = recorder();
    let chain = FallbackProvider::new(
        Arc::from(openai.provider(&first)),
        vec![Arc::from(anthropic.provider(&second))],
    )
    .with_sink(sink);
    assert_eq!(chain.names(), ["openai", "anthropic"]);
    // The operator asks with the first provider's model; the second gets its own.
    let reply = chain.chat(&first_turn(openai.model)).await.unwrap();
    assert_eq!(reply.tool_calls[0].name, "take_snapshot");
    // The first was retried by its policy (4 attempts), then left.
    assert_eq!(request_count(&first).await, 4);
    assert_eq!(bodies(&second).await[0]["model"], anthropic.model);
    let records = seen.lock().unwrap().clone();
    assert_eq!(records.len(), 2, "{records:?}");
    let failed = &records[0];
    assert_eq!(failed.provider, "openai");
    assert_eq!(failed.model, openai.model);
    assert_eq!(failed.outcome, "server");
    assert_eq!(failed.retries, 3);
    assert_eq!((failed.input_tokens, failed.output_tokens), (0, 0));
    assert_eq!(failed.fallback_from, None);
    let answered = &records[1];
    assert_eq!(answered.provider, "anthropic");
    assert_eq!(answered.model, anthropic.model);
    assert_eq!(answered.outcome, "ok");
    assert_eq!(answered.retries, 0);
    assert_eq!((answered.input_tokens, answered.output_tokens), USAGE);
    assert_eq!(answered.fallback_from.as_deref(), Some("openai"));
    assert!(answered.latency > std::time::Duration::ZERO);
}

#[tokio::test]
async fn an_exhausted_quota_falls_back_at_once_and_a_bad_key_does_not() {
    let openai = vendors::openai::vendor();
    let gemini = vendors::gemini::vendor();
    let (quota, _) = openai.fail(Failure::QuotaExhausted);
    let first = openai.serve(quota).await;
    let second = gemini.serve(gemini.ok(Some("fine"), &[])).await;
    let (sink, seen) = recorder();
    let chain = FallbackProvider::new(
        Arc::from(openai.provider(&first)),
        vec![Arc::from(gemini.provider(&second))],
    )
    .with_sink(sink);
    let reply = chain.chat(&first_turn(openai.model)).await.unwrap();
    assert_eq!(reply.text.as_deref(), Some("fine"));
    // A quota is not waited for: one attempt, then the next provider.
    assert_eq!(request_count(&first).await, 1);
    let records = seen.lock().unwrap().clone();
    assert_eq!(records[0].outcome, "rate_limited");
    assert_eq!(records[0].retries, 0);
    assert_eq!(records[1].provider, "google-ai");
    assert_eq!(records[1].outcome, "ok");

    // A bad key is the caller's to fix: no fallback, the error says so.
    let (unauthorized, _) = openai.fail(Failure::Unauthorized);
    let bad = openai.serve(unauthorized).await;
    let untouched = gemini.serve(gemini.ok(Some("fine"), &[])).await;
    let chain = FallbackProvider::new(
        Arc::from(openai.provider(&bad)),
        vec![Arc::from(gemini.provider(&untouched))],
    );
    let err = chain.chat(&first_turn(openai.model)).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Auth);
    assert_eq!(request_count(&untouched).await, 0);
}

#[tokio::test]
async fn every_call_of_an_observed_provider_is_recorded_with_its_retries() {
    let openai = vendors::openai::vendor();
    let server = wiremock::MockServer::start().await;
    let (limited, _) = openai.fail(Failure::RateLimited);
    openai.mount_once(&server, limited).await;
    openai.mount(&server, openai.ok(None, &[call()])).await;
    let (sink, seen) = recorder();
    let observed = Observed::new(Arc::from(openai.provider(&server)), sink);
    assert_eq!(observed.name(), "openai");
    observed.chat(&first_turn(openai.model)).await.unwrap();
    let records = seen.lock().unwrap().clone();
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(
        (r.provider.as_str(), r.model.as_str(), r.outcome.as_str()),
        ("openai", openai.model, "ok")
    );
    assert_eq!(r.retries, 1);
    assert_eq!((r.input_tokens, r.output_tokens), USAGE);
}
