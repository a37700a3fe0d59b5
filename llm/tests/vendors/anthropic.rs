//! Anthropic Messages API: `POST /v1/messages`, content blocks, `x-api-key`.

use llm::ProviderKind;
use serde_json::{Value, json};

use super::{Call, Failing, Failure, NETWORK_ERROR, RETRY_NOW, USAGE, Vendor};
use crate::common::{PROMPT, SYSTEM, tools};

const MODEL: &str = "claude-haiku-4-5-20251001";

/// Anthropic as the shared tests see it.
pub fn vendor() -> Vendor {
    Vendor {
        kind: ProviderKind::Anthropic,
        model: MODEL,
        key: "test-key",
        path: "/v1/messages",
        headers: &[
            ("x-api-key", "test-key"),
            ("anthropic-version", "2023-06-01"),
        ],
        native_ids: true,
        signatures: false,
        strips_think: false,
        reply,
        failing,
        malformed: "{\"content\": [oops",
        history_ids: ["toolu_01A", "toolu_01B"],
        second_turn_body,
        unreachable: NETWORK_ERROR,
        tool_choice: Some(("/tool_choice", |tool| match tool {
            Some(name) => json!({"type": "tool", "name": name}),
            None => json!({"type": "auto"}),
        })),
    }
}

fn reply(text: Option<&str>, calls: &[Call]) -> Value {
    let mut content: Vec<Value> = text
        .map(|text| json!({"type": "text", "text": text}))
        .into_iter()
        .collect();
    content.extend(calls.iter().map(
        |call| json!({"type": "tool_use", "id": call.id, "name": call.name, "input": call.args}),
    ));
    let stop_reason = if calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    json!({
        "id": "msg_01X", "type": "message", "role": "assistant", "model": MODEL,
        "content": content, "stop_reason": stop_reason, "stop_sequence": null,
        "usage": {"input_tokens": USAGE.0, "output_tokens": USAGE.1}
    })
}

fn failing(failure: Failure) -> Failing {
    let error = |kind: &str, message: &str| json!({"type": "error", "error": {"type": kind, "message": message}});
    match failure {
        Failure::RateLimited => Failing {
            status: 429,
            headers: RETRY_NOW,
            body: error("rate_limit_error", "Rate limited"),
            message: "rate_limit_error: Rate limited",
        },
        Failure::Overloaded => Failing {
            status: 529,
            headers: &[],
            body: error("overloaded_error", "Overloaded"),
            message: "overloaded_error: Overloaded",
        },
        Failure::Unauthorized => Failing {
            status: 401,
            headers: &[],
            body: json!({"type": "error",
                "error": {"type": "authentication_error", "message": "invalid x-api-key"},
                "request_id": "req_1"}),
            message: "authentication_error: invalid x-api-key. Check ANTHROPIC_API_KEY",
        },
        Failure::QuotaExhausted => Failing {
            status: 429,
            headers: RETRY_NOW,
            body: json!({"type": "error", "error": {
                "type": "rate_limit_error", "message": "Spend limit reached",
                "details": {"error_code": "enforced_spend_limit_reached"}}}),
            message: "rate_limit_error: Spend limit reached \
                      (quota or spend limit exhausted; not retried)",
        },
    }
}

/// Calls and results are content blocks; all results of a turn form ONE user message.
fn second_turn_body() -> Value {
    let tools: Vec<Value> = tools()
        .into_iter()
        .map(
            |t| json!({"name": t.name, "description": t.description, "input_schema": t.parameters}),
        )
        .collect();
    json!({
        "model": MODEL,
        "max_tokens": 512,
        "system": SYSTEM,
        "tools": tools,
        "tool_choice": {"type": "auto"},
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": PROMPT}]},
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
        ]
    })
}
