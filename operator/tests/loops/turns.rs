//! What the loop asks of the model turn by turn: a reply without a tool call asked again
//! with the tool named, the wording of stop reasons, and the time each request may take.

use std::sync::Arc;
use std::time::Duration;

use crate::scripted::{calm, config, done, run_script, snap};
use llm::Message;
use operator::mock::tool_call;
use operator::operator::NUDGE;
use operator::{MockProvider, Operator, OperatorConfig};
use serde_json::json;

#[tokio::test]
async fn a_reply_without_tool_calls_is_asked_again_naming_the_tool() {
    let turns = vec![
        vec![],
        vec![snap()],
        vec![tool_call("think", json!({"thought": "x"}))],
        vec![tool_call("think", json!({"thought": "x"}))],
    ];
    let (out, provider) = run_script(turns, 3).await;
    let requests = provider.requests();
    let choices: Vec<Option<&str>> = requests.iter().map(|r| r.tool_choice.forced()).collect();
    // Turn 1 twice (the second time naming take_snapshot), then every turn names its tool.
    assert_eq!(
        choices,
        [
            None,
            Some("take_snapshot"),
            Some("set_state"),
            Some("set_state")
        ]
    );
    assert_eq!(out.iterations, 3);
    assert_eq!(out.forced, ["take_snapshot"]);
    let Some(Message::User { text }) = requests[1].messages.last() else {
        panic!("expected the forced line");
    };
    assert!(text.starts_with(NUDGE), "{text}");
    assert!(
        text.ends_with(
            "This request requires a call to take_snapshot: call it now (forced by the operator)."
        ),
        "{text}"
    );
    assert_eq!(out.stop_reason, "3 iterations without set_state");
    let json = serde_json::to_value(&out).unwrap();
    assert_eq!(json["forced"], json!(["take_snapshot"]));
}

#[tokio::test]
async fn one_iteration_is_singular() {
    let think = vec![tool_call("think", json!({"thought": "x"}))];
    let (out, _) = run_script(vec![think], 1).await;
    assert_eq!(out.stop_reason, "1 iteration without set_state");
}

#[tokio::test]
async fn each_request_may_take_what_is_left_of_the_deadline() {
    let provider = Arc::new(MockProvider::scripted(vec![vec![done()]]));
    Operator::new(calm(), provider.clone())
        .with_config(OperatorConfig {
            deadline: Duration::from_secs(300),
            ..OperatorConfig::default()
        })
        .run(json!({}))
        .await;
    let timeout = provider.requests()[0].timeout;
    assert!(
        timeout > Duration::from_secs(290) && timeout <= Duration::from_secs(300),
        "{timeout:?}"
    );
    // Its own bound, when set, is kept (and still clipped to the deadline).
    let provider = Arc::new(MockProvider::scripted(vec![vec![done()]]));
    Operator::new(calm(), provider.clone())
        .with_config(OperatorConfig {
            request_timeout: Some(Duration::from_secs(5)),
            deadline: Duration::from_secs(300),
            ..OperatorConfig::default()
        })
        .run(json!({}))
        .await;
    assert_eq!(provider.requests()[0].timeout, Duration::from_secs(5));
}

/// A model that writes a call-like object naming a tool nobody offered, in a shape too
/// loose to be taken for a call.
#[derive(Debug)]
struct WritesLooseCalls;

#[async_trait::async_trait]
impl llm::Provider for WritesLooseCalls {
    fn name(&self) -> &str {
        "loose"
    }

    fn model(&self) -> &str {
        "loose"
    }

    async fn chat(
        &self,
        _request: &llm::ChatRequest,
    ) -> Result<llm::ChatResponse, llm::ProviderError> {
        Ok(llm::ChatResponse {
            text: Some(r#"{"tool": "health"}"#.into()),
            tool_calls: vec![],
            stop_reason: llm::StopReason::EndTurn,
            usage: Default::default(),
        })
    }
}

#[tokio::test]
async fn the_stop_reason_says_the_model_wrote_calls_as_text() {
    let out = Operator::new(calm(), Arc::new(WritesLooseCalls))
        .with_config(OperatorConfig {
            force_tools: false,
            ..config(2)
        })
        .run(json!({}))
        .await;
    assert_eq!(
        out.stop_reason,
        "2 iterations without set_state (the model wrote calls as JSON text naming health, \
         never calling a tool it was offered)"
    );
}
