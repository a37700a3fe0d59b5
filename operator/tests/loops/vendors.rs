//! One [`Vendor`] per provider: how to reach it on a local server, how its replies look, how
//! the loop's tool results read back out of its requests, and what else its requests must
//! show.

use llm::ProviderKind;
use serde_json::{Value, json};

use crate::providers::{Call, NOTIFY_ID, PROSE, REBOOT_ID, UNKNOWN, USAGE, unknown_args};

/// A tool result as the loop sent it back, decoded from one vendor's request format.
#[derive(Debug)]
pub struct SentResult {
    /// The result content as JSON (for Gemini: the value under `response.result` or
    /// `response.error`).
    pub content: Value,
    /// The error flag, where the format has one (Anthropic `is_error`; Gemini: `error` vs
    /// `result`); `None` for OpenAI and Ollama.
    pub is_error: Option<bool>,
}

/// How one vendor speaks.
#[derive(Debug)]
pub struct Vendor {
    /// Which provider.
    pub kind: ProviderKind,
    /// The configured model.
    pub model: &'static str,
    /// The configured key.
    pub key: &'static str,
    /// The path chat requests are posted to.
    pub path: &'static str,
    /// Headers every chat request must carry (else the mock does not match: a 404).
    pub headers: &'static [(&'static str, &'static str)],
    /// Whether replies carry call ids; where they do not, results are found by tool name.
    pub native_ids: bool,
    /// A 200 reply body with optional text and tool calls.
    pub reply: fn(Option<&str>, &[Call]) -> Value,
    /// Finds the result for a call (by id, or by tool name where the format has no id).
    pub find_result: fn(&Value, &str) -> Option<SentResult>,
    /// The vendor's own checks on the four chat request bodies of the script.
    pub check_requests: fn(&[Value]),
    /// The tool a request body names as the one the model must call, if any (never, for a
    /// vendor whose API has no way to say so).
    pub forced_tool: fn(&Value) -> Option<String>,
}

impl Vendor {
    /// How [`Vendor::find_result`] knows `call`.
    pub fn result_ref(&self, (id, name, _): &Call) -> &'static str {
        if self.native_ids { id } else { name }
    }

    /// A reply in prose only: no tool call.
    pub fn prose(&self) -> Value {
        (self.reply)(Some(PROSE), &[])
    }
}

/// Tool result content: JSON text parsed, anything else as is.
fn parse_content(raw: &Value) -> Value {
    match raw {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| raw.clone()),
        other => other.clone(),
    }
}

/// The chat messages of a request body (OpenAI, Ollama, Anthropic).
fn messages(body: &Value) -> &[Value] {
    body["messages"].as_array().expect("messages")
}

/// The result in a Chat Completions request (OpenAI, Ollama): the `tool` message whose
/// `key` is `reference`. The format has no error flag.
fn tool_message(body: &Value, key: &str, reference: &str) -> Option<SentResult> {
    messages(body)
        .iter()
        .find(|m| m["role"] == "tool" && m[key] == reference)
        .map(|m| SentResult {
            content: parse_content(&m["content"]),
            is_error: None,
        })
}

/// Turn 3 of a Chat Completions request: the assistant message with both calls, then one
/// tool message per call in call order (named by `key`: `refs`), then the state line.
/// Returns the assistant message.
fn chat_turn_3<'a>(bodies: &'a [Value], key: &str, refs: [&str; 2]) -> &'a Value {
    let messages = messages(&bodies[2]);
    let n = messages.len();
    let assistant = &messages[n - 4];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["tool_calls"][0]["function"]["name"], UNKNOWN);
    let second = &assistant["tool_calls"][1]["function"]["name"];
    assert_eq!(second, "send_notification");
    assert_eq!(messages[n - 3][key], refs[0]);
    assert_eq!(messages[n - 2][key], refs[1]);
    assert_eq!(messages[n - 1]["role"], "user");
    assistant
}

// ---------------------------------------------------------------- Anthropic

/// Anthropic's Messages API.
pub fn anthropic() -> Vendor {
    Vendor {
        kind: ProviderKind::Anthropic,
        model: "claude-haiku-4-5-20251001",
        key: "sk-ant-test",
        path: "/v1/messages",
        headers: &[
            ("x-api-key", "sk-ant-test"),
            ("anthropic-version", "2023-06-01"),
        ],
        native_ids: true,
        reply: |text, calls| {
            let mut content: Vec<Value> = text
                .map(|text| json!({"type": "text", "text": text}))
                .into_iter()
                .collect();
            content.extend(calls.iter().map(|(id, name, input)| {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }));
            let stop = if calls.is_empty() {
                "end_turn"
            } else {
                "tool_use"
            };
            json!({"id": "msg_01X", "type": "message", "role": "assistant",
                   "model": "claude-haiku-4-5", "content": content, "stop_reason": stop,
                   "stop_sequence": null,
                   "usage": {"input_tokens": USAGE.0, "output_tokens": USAGE.1}})
        },
        find_result: |body, id| {
            messages(body)
                .iter()
                .filter(|m| m["role"] == "user")
                .filter_map(|m| m["content"].as_array())
                .flatten()
                .find(|b| b["type"] == "tool_result" && b["tool_use_id"] == id)
                .map(|b| SentResult {
                    content: parse_content(&b["content"]),
                    is_error: b["is_error"].as_bool(),
                })
        },
        // Turn 3: the assistant's two tool_use blocks replayed, then ONE user message with
        // both results in call order, then the state line.
        check_requests: |bodies| {
            let messages = messages(&bodies[2]);
            let n = messages.len();
            assert_eq!(messages[n - 2]["role"], "assistant");
            let ids: Vec<&Value> = messages[n - 2]["content"]
                .as_array()
                .unwrap()
                .iter()
                .map(|b| &b["id"])
                .collect();
            assert_eq!(ids, [&json!(REBOOT_ID), &json!(NOTIFY_ID)]);
            assert_eq!(messages[n - 1]["role"], "user");
            let blocks = messages[n - 1]["content"].as_array().unwrap();
            assert_eq!(blocks.len(), 3, "{blocks:?}");
            assert_eq!(blocks[0]["tool_use_id"], REBOOT_ID);
            assert_eq!(blocks[0]["is_error"], true);
            assert_eq!(blocks[1]["tool_use_id"], NOTIFY_ID);
            assert_eq!(blocks[1]["is_error"], false);
            assert_eq!(blocks[2]["type"], "text");
            assert_eq!(blocks[2]["text"], "Current state: unknown");
        },
        forced_tool: |body| {
            (body["tool_choice"]["type"] == "tool")
                .then(|| body["tool_choice"]["name"].as_str().map(str::to_string))
                .flatten()
        },
    }
}

// ---------------------------------------------------------------- OpenAI

/// OpenAI's Chat Completions.
pub fn openai() -> Vendor {
    Vendor {
        kind: ProviderKind::OpenAi,
        model: "gpt-4o-mini",
        key: "sk-test",
        path: "/v1/chat/completions",
        headers: &[("authorization", "Bearer sk-test")],
        native_ids: true,
        // Arguments travel as a JSON string.
        reply: |text, calls| {
            let mut message = json!({"role": "assistant", "content": text, "refusal": null});
            let mut finish_reason = "stop";
            if !calls.is_empty() {
                finish_reason = "tool_calls";
                message["tool_calls"] = calls
                    .iter()
                    .map(|(id, name, args)| {
                        json!({"id": id, "type": "function",
                               "function": {"name": name, "arguments": args.to_string()}})
                    })
                    .collect();
            }
            json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1_730_000_000,
                   "model": "gpt-4o-mini",
                   "choices": [{"index": 0, "finish_reason": finish_reason, "message": message}],
                   "usage": {"prompt_tokens": USAGE.0, "completion_tokens": USAGE.1,
                             "total_tokens": USAGE.0 + USAGE.1}})
        },
        find_result: |body, id| tool_message(body, "tool_call_id", id),
        // Turn 3 replays the calls with their ids and string arguments, and content "" (not
        // null, which llama-cpp-python rejects).
        check_requests: |bodies| {
            let assistant = chat_turn_3(bodies, "tool_call_id", [REBOOT_ID, NOTIFY_ID]);
            assert_eq!(assistant["content"], "");
            assert_eq!(assistant["tool_calls"][0]["id"], REBOOT_ID);
            assert_eq!(
                assistant["tool_calls"][0]["function"]["arguments"],
                unknown_args().to_string()
            );
            assert_eq!(assistant["tool_calls"][1]["id"], NOTIFY_ID);
        },
        forced_tool: |body| {
            (body["tool_choice"]["type"] == "function")
                .then(|| {
                    body["tool_choice"]["function"]["name"]
                        .as_str()
                        .map(str::to_string)
                })
                .flatten()
        },
    }
}

// ---------------------------------------------------------------- Gemini

/// The opaque signature Gemini 3 puts on the first function call of a reply.
const SIGNATURE: &str = "CiQBsig-turn-1";

/// Gemini's `generateContent`.
pub fn gemini() -> Vendor {
    Vendor {
        kind: ProviderKind::GoogleAi,
        model: "gemini-flash-lite-latest",
        key: "g-key",
        path: "/v1beta/models/gemini-flash-lite-latest:generateContent",
        headers: &[("x-goog-api-key", "g-key")],
        native_ids: false,
        // No call ids; the first call of a reply is signed; a tool call ends with STOP: there
        // is no tool-specific finishReason.
        reply: |text, calls| {
            let mut parts: Vec<Value> =
                text.map(|text| json!({"text": text})).into_iter().collect();
            parts.extend(calls.iter().enumerate().map(|(i, (_, name, args))| {
                let mut part = json!({"functionCall": {"name": name, "args": args}});
                if i == 0 {
                    part["thoughtSignature"] = json!(SIGNATURE);
                }
                part
            }));
            json!({"candidates": [{"index": 0, "finishReason": "STOP",
                                   "content": {"role": "model", "parts": parts}}],
                   "usageMetadata": {"promptTokenCount": USAGE.0,
                                     "candidatesTokenCount": USAGE.1,
                                     "totalTokenCount": USAGE.0 + USAGE.1},
                   "modelVersion": "gemini-2.5-flash-lite", "responseId": "abc"})
        },
        find_result: |body, name| {
            body["contents"]
                .as_array()?
                .iter()
                .filter(|c| c["role"] == "user")
                .filter_map(|c| c["parts"].as_array())
                .flatten()
                .filter_map(|p| p.get("functionResponse"))
                .find(|r| r["name"] == name)
                .map(|r| {
                    let (content, is_error) =
                        match (r["response"].get("result"), r["response"].get("error")) {
                            (Some(v), None) => (v.clone(), false),
                            (None, Some(v)) => (v.clone(), true),
                            _ => {
                                panic!("functionResponse.response is neither result nor error: {r}")
                            }
                        };
                    SentResult {
                        content,
                        is_error: Some(is_error),
                    }
                })
        },
        // Turns 2 and 3: the model content replayed with its thought signatures; the
        // results of one reply form one user content, in call order, before the state line.
        check_requests: |bodies| {
            let contents = bodies[1]["contents"].as_array().unwrap();
            let model = contents.iter().find(|c| c["role"] == "model").unwrap();
            let call = model["parts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p.get("functionCall").is_some())
                .unwrap();
            assert_eq!(call["functionCall"]["name"], "take_snapshot");
            assert_eq!(call["thoughtSignature"], SIGNATURE);

            let contents = bodies[2]["contents"].as_array().unwrap();
            let n = contents.len();
            let parts = contents[n - 2]["parts"].as_array().unwrap();
            assert_eq!(contents[n - 2]["role"], "model");
            assert_eq!(parts[0]["functionCall"]["name"], UNKNOWN);
            assert_eq!(parts[0]["functionCall"]["args"], unknown_args());
            assert_eq!(parts[0]["thoughtSignature"], SIGNATURE);
            assert_eq!(parts[1]["functionCall"]["name"], "send_notification");
            assert!(parts[1].get("thoughtSignature").is_none(), "{}", parts[1]);
            // Synthesised call ids (call_<n>) are never sent to Gemini.
            assert!(parts.iter().all(|p| p["functionCall"].get("id").is_none()));
            let user = contents[n - 1]["parts"].as_array().unwrap();
            assert_eq!(contents[n - 1]["role"], "user");
            assert_eq!(user.len(), 3, "{user:?}");
            assert_eq!(user[0]["functionResponse"]["name"], UNKNOWN);
            let response = &user[0]["functionResponse"]["response"];
            assert!(response.get("error").is_some(), "{response}");
            assert_eq!(user[1]["functionResponse"]["name"], "send_notification");
            assert_eq!(user[2]["text"], "Current state: unknown");
        },
        forced_tool: |body| {
            let config = &body["toolConfig"]["functionCallingConfig"];
            (config["mode"] == "ANY")
                .then(|| {
                    config["allowedFunctionNames"][0]
                        .as_str()
                        .map(str::to_string)
                })
                .flatten()
        },
    }
}

// ---------------------------------------------------------------- Ollama

/// The model the Ollama server lists and runs.
pub const OLLAMA_MODEL: &str = "qwen3:4b";

/// Ollama's native `/api/chat`.
pub fn ollama() -> Vendor {
    Vendor {
        kind: ProviderKind::Ollama,
        model: OLLAMA_MODEL,
        key: "",
        path: "/api/chat",
        headers: &[],
        native_ids: false,
        // Arguments are an object, and (older servers) no id; no tool-specific done_reason.
        reply: |text, calls| {
            let mut message = json!({"role": "assistant", "content": text.unwrap_or_default()});
            if !calls.is_empty() {
                message["tool_calls"] = calls
                    .iter()
                    .map(|(_, name, args)| json!({"function": {"name": name, "arguments": args}}))
                    .collect();
            }
            json!({"model": OLLAMA_MODEL, "created_at": "2024-07-22T20:33:28.123648Z",
                   "message": message, "done_reason": "stop", "done": true,
                   "total_duration": 885_095_291,
                   "prompt_eval_count": USAGE.0, "eval_count": USAGE.1})
        },
        // Tool messages carry `tool_name`, no id.
        find_result: |body, name| tool_message(body, "tool_name", name),
        // Every request is non-streaming; turn 3 replays the calls with object arguments and
        // names its results in `tool_name`.
        check_requests: |bodies| {
            for body in bodies {
                assert_eq!(body["stream"], false);
            }
            // Ollama's schema has no minimum/maximum: the bounds reach the model in the text.
            let tool = |name: &str| {
                bodies[0]["tools"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|t| t["function"]["name"] == name)
                    .unwrap()["function"]["parameters"]
                    .clone()
            };
            let ms = &tool("wait")["properties"]["ms"];
            assert!(
                ms.get("maximum").is_none() && ms.get("minimum").is_none(),
                "{ms}"
            );
            assert_eq!(ms["description"], "(minimum 0, maximum 5000)");
            let limit = &tool("get_snapshots")["properties"]["limit"];
            assert_eq!(limit["description"], "default 10 (minimum 0)");
            let assistant = chat_turn_3(bodies, "tool_name", [UNKNOWN, "send_notification"]);
            let arguments = &assistant["tool_calls"][0]["function"]["arguments"];
            assert_eq!(arguments, &unknown_args());
        },
        // The API has no tool_choice: nothing in the body may claim otherwise.
        forced_tool: |body| {
            assert!(body.get("tool_choice").is_none(), "{body}");
            None
        },
    }
}
