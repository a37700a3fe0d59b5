//! The real operator loop against each real provider, talking to a local wiremock server on
//! 127.0.0.1 that answers in that vendor's wire format.
//!
//! Every server plays the same four-turn script:
//!
//! 1. `take_snapshot`
//! 2. `reboot_host` (a tool nobody offered) and `send_notification` in the same reply
//! 3. `set_state(warning)`
//! 4. `done`
//!
//! and every test checks the [`operator::Outcome`] and what the loop sent back: the
//! snapshot id the model was shown, the error result for the unknown tool, and the state
//! line of each turn.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::FakeSkill;
use llm::{OllamaProvider, Provider, ProviderConfig, ProviderKind, RetryPolicy};
use operator::{HealthState, Operator, OperatorConfig, Outcome, Severity, Stop, ids};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// The summary the model sends in turn 2.
const SUMMARY: &str = "process count elevated";
/// The tool the model invents in turn 2.
const UNKNOWN: &str = "reboot_host";
/// What a model that answers only in prose says.
const PROSE: &str = "The sandbox looks fine to me; nothing to report.";
/// Prompt and completion tokens every scripted reply reports.
const USAGE: (u64, u64) = (100, 10);

/// Retries in milliseconds so the tests stay fast (as in `llm/tests/common`).
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
        deadline: Duration::from_secs(10),
    }
}

/// Answers the n-th request with the n-th body of the script; past its end, a 400 (not
/// retried), so a loop that asks once too often ends in `llm_error` and fails the test.
struct Script {
    turns: Vec<Value>,
    next: AtomicUsize,
}

impl Respond for Script {
    fn respond(&self, _request: &Request) -> ResponseTemplate {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        match self.turns.get(n) {
            Some(body) => ResponseTemplate::new(200).set_body_json(body),
            None => ResponseTemplate::new(400).set_body_json(
                json!({"error": {"message": format!("script over at request {}", n + 1)}}),
            ),
        }
    }
}

/// The arguments of the scripted calls.
fn notification_args() -> Value {
    json!({"type": "process_spike", "severity": "warning", "summary": SUMMARY,
           "snapshot_ids": ["latest"]})
}

fn unknown_args() -> Value {
    json!({"force": true})
}

fn set_state_args() -> Value {
    json!({"state": "warning", "reason": "processes above threshold"})
}

/// A tool result as the loop sent it back, decoded from one vendor's request format.
#[derive(Debug)]
struct SentResult {
    /// The result content as JSON (for Gemini: the value under `response.result` or
    /// `response.error`).
    content: Value,
    /// The error flag, where the format has one (Anthropic `is_error`; Gemini: `error` vs
    /// `result`); `None` for OpenAI and Ollama.
    is_error: Option<bool>,
}

/// How one vendor speaks.
struct Vendor {
    kind: ProviderKind,
    model: &'static str,
    key: &'static str,
    chat_path: String,
    /// Headers every chat request must carry (else the mock does not match: a 404).
    headers: Vec<(&'static str, String)>,
    /// The four replies, in the vendor's format.
    turns: Vec<Value>,
    /// The calls of turns 1 to 3 as the result lookup knows them: id or name of
    /// `take_snapshot`, of the unknown tool, of `send_notification`, of `set_state`.
    refs: [&'static str; 4],
    /// Finds the result for a call (by id, or by tool name where the format has no id).
    find_result: fn(&Value, &str) -> Option<SentResult>,
    /// A reply in prose only: no tool call.
    prose: Value,
}

fn parse_content(raw: &Value) -> Value {
    match raw {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| raw.clone()),
        other => other.clone(),
    }
}

// ---------------------------------------------------------------- Anthropic

fn anthropic_reply(content: Value) -> Value {
    json!({"id": "msg_01X", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
           "content": content, "stop_reason": "tool_use", "stop_sequence": null,
           "usage": {"input_tokens": USAGE.0, "output_tokens": USAGE.1}})
}

fn anthropic_use(id: &str, name: &str, input: Value) -> Value {
    json!({"type": "tool_use", "id": id, "name": name, "input": input})
}

fn anthropic() -> Vendor {
    Vendor {
        kind: ProviderKind::Anthropic,
        model: "claude-haiku-4-5-20251001",
        key: "sk-ant-test",
        chat_path: "/v1/messages".into(),
        headers: vec![
            ("x-api-key", "sk-ant-test".into()),
            ("anthropic-version", "2023-06-01".into()),
        ],
        turns: vec![
            anthropic_reply(json!([
                {"type": "text", "text": "Taking a snapshot first."},
                anthropic_use("toolu_01", "take_snapshot", json!({})),
            ])),
            anthropic_reply(json!([
                anthropic_use("toolu_02", UNKNOWN, unknown_args()),
                anthropic_use("toolu_03", "send_notification", notification_args()),
            ])),
            anthropic_reply(json!([anthropic_use(
                "toolu_04",
                "set_state",
                set_state_args()
            )])),
            anthropic_reply(json!([anthropic_use("toolu_05", "done", json!({}))])),
        ],
        refs: ["toolu_01", "toolu_02", "toolu_03", "toolu_04"],
        prose: json!({"id": "msg_p", "type": "message", "role": "assistant",
                      "model": "claude-haiku-4-5",
                      "content": [{"type": "text", "text": PROSE}],
                      "stop_reason": "end_turn", "stop_sequence": null,
                      "usage": {"input_tokens": USAGE.0, "output_tokens": USAGE.1}}),
        find_result: |body, id| {
            body["messages"]
                .as_array()?
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
    }
}

// ---------------------------------------------------------------- OpenAI

fn openai_reply(tool_calls: Value) -> Value {
    json!({"id": "chatcmpl-1", "object": "chat.completion", "created": 1_730_000_000,
           "model": "gpt-4o-mini",
           "choices": [{"index": 0, "finish_reason": "tool_calls",
                        "message": {"role": "assistant", "content": null, "refusal": null,
                                    "tool_calls": tool_calls}}],
           "usage": {"prompt_tokens": USAGE.0, "completion_tokens": USAGE.1,
                     "total_tokens": USAGE.0 + USAGE.1}})
}

/// OpenAI sends arguments as a JSON string.
fn openai_call(id: &str, name: &str, arguments: Value) -> Value {
    json!({"id": id, "type": "function",
           "function": {"name": name, "arguments": arguments.to_string()}})
}

fn openai() -> Vendor {
    Vendor {
        kind: ProviderKind::OpenAi,
        model: "gpt-4o-mini",
        key: "sk-test",
        chat_path: "/v1/chat/completions".into(),
        headers: vec![("authorization", "Bearer sk-test".into())],
        turns: vec![
            openai_reply(json!([openai_call(
                "call_snap",
                "take_snapshot",
                json!({})
            )])),
            openai_reply(json!([
                openai_call("call_reboot", UNKNOWN, unknown_args()),
                openai_call("call_notify", "send_notification", notification_args()),
            ])),
            openai_reply(json!([openai_call(
                "call_state",
                "set_state",
                set_state_args()
            )])),
            openai_reply(json!([openai_call("call_done", "done", json!({}))])),
        ],
        refs: ["call_snap", "call_reboot", "call_notify", "call_state"],
        prose: json!({"id": "chatcmpl-p", "object": "chat.completion", "created": 1_730_000_000,
                      "model": "gpt-4o-mini",
                      "choices": [{"index": 0, "finish_reason": "stop",
                                   "message": {"role": "assistant", "content": PROSE}}],
                      "usage": {"prompt_tokens": USAGE.0, "completion_tokens": USAGE.1,
                                "total_tokens": USAGE.0 + USAGE.1}}),
        find_result: |body, id| {
            body["messages"]
                .as_array()?
                .iter()
                .find(|m| m["role"] == "tool" && m["tool_call_id"] == id)
                .map(|m| SentResult {
                    content: parse_content(&m["content"]),
                    is_error: None,
                })
        },
    }
}

// ---------------------------------------------------------------- Gemini

const GEMINI_MODEL: &str = "gemini-flash-lite-latest";
/// The opaque signature Gemini 3 puts on the first function call of a reply.
const SIGNATURE: &str = "CiQBsig-turn-1";

fn gemini_reply(parts: Value) -> Value {
    // A tool call ends with STOP: there is no tool-specific finishReason.
    json!({"candidates": [{"index": 0, "finishReason": "STOP",
                           "content": {"role": "model", "parts": parts}}],
           "usageMetadata": {"promptTokenCount": USAGE.0, "candidatesTokenCount": USAGE.1,
                             "totalTokenCount": USAGE.0 + USAGE.1},
           "modelVersion": "gemini-2.5-flash-lite", "responseId": "abc"})
}

/// A `functionCall` part without an id (the API gives none), signed like Gemini 3 does.
fn gemini_call(name: &str, args: Value) -> Value {
    json!({"functionCall": {"name": name, "args": args}, "thoughtSignature": SIGNATURE})
}

fn gemini() -> Vendor {
    Vendor {
        kind: ProviderKind::GoogleAi,
        model: GEMINI_MODEL,
        key: "g-key",
        chat_path: format!("/v1beta/models/{GEMINI_MODEL}:generateContent"),
        headers: vec![("x-goog-api-key", "g-key".into())],
        turns: vec![
            gemini_reply(json!([
                {"text": "Taking a snapshot first."},
                gemini_call("take_snapshot", json!({})),
            ])),
            gemini_reply(json!([
                gemini_call(UNKNOWN, unknown_args()),
                {"functionCall": {"name": "send_notification", "args": notification_args()}},
            ])),
            gemini_reply(json!([gemini_call("set_state", set_state_args())])),
            gemini_reply(json!([gemini_call("done", json!({}))])),
        ],
        // No ids on the wire: results are found by name.
        refs: ["take_snapshot", UNKNOWN, "send_notification", "set_state"],
        prose: gemini_reply(json!([{"text": PROSE}])),
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
                    let response = &r["response"];
                    match (response.get("result"), response.get("error")) {
                        (Some(v), None) => SentResult {
                            content: v.clone(),
                            is_error: Some(false),
                        },
                        (None, Some(v)) => SentResult {
                            content: v.clone(),
                            is_error: Some(true),
                        },
                        _ => panic!("functionResponse.response is neither result nor error: {r}"),
                    }
                })
        },
    }
}

// ---------------------------------------------------------------- Ollama

const OLLAMA_MODEL: &str = "qwen3:4b";

fn ollama_reply(tool_calls: Value) -> Value {
    // Ollama has no tool-specific done_reason.
    json!({"model": OLLAMA_MODEL, "created_at": "2024-07-22T20:33:28.123648Z",
           "message": {"role": "assistant", "content": "", "tool_calls": tool_calls},
           "done_reason": "stop", "done": true, "total_duration": 885_095_291,
           "prompt_eval_count": USAGE.0, "eval_count": USAGE.1})
}

/// An Ollama call: arguments are an object, and (older servers) no id.
fn ollama_call(name: &str, arguments: Value) -> Value {
    json!({"function": {"name": name, "arguments": arguments}})
}

fn ollama() -> Vendor {
    Vendor {
        kind: ProviderKind::Ollama,
        model: OLLAMA_MODEL,
        key: "",
        chat_path: "/api/chat".into(),
        headers: vec![],
        turns: vec![
            ollama_reply(json!([ollama_call("take_snapshot", json!({}))])),
            ollama_reply(json!([
                ollama_call(UNKNOWN, unknown_args()),
                ollama_call("send_notification", notification_args()),
            ])),
            ollama_reply(json!([ollama_call("set_state", set_state_args())])),
            ollama_reply(json!([ollama_call("done", json!({}))])),
        ],
        // Tool messages carry `tool_name`, no id.
        refs: ["take_snapshot", UNKNOWN, "send_notification", "set_state"],
        prose: json!({"model": OLLAMA_MODEL, "created_at": "2024-07-22T20:33:28.123648Z",
                      "message": {"role": "assistant", "content": PROSE},
                      "done_reason": "stop", "done": true,
                      "prompt_eval_count": USAGE.0, "eval_count": USAGE.1}),
        find_result: |body, name| {
            body["messages"]
                .as_array()?
                .iter()
                .find(|m| m["role"] == "tool" && m["tool_name"] == name)
                .map(|m| SentResult {
                    content: parse_content(&m["content"]),
                    is_error: None,
                })
        },
    }
}

// ---------------------------------------------------------------- the run

/// Everything a test checks after a run.
struct Run {
    outcome: Outcome,
    /// The chat request bodies, in order.
    bodies: Vec<Value>,
    /// Every request the server got (method, path), in order.
    requests: Vec<(String, String)>,
}

/// Starts the vendor's server, builds the real provider against it (probing Ollama first,
/// as the demo does) and runs the real operator with a skill whose snapshot breaches the
/// rule.
async fn run(vendor: &Vendor) -> Run {
    let server = MockServer::start().await;
    assert!(
        server.uri().starts_with("http://127.0.0.1:"),
        "{}",
        server.uri()
    );
    if vendor.kind == ProviderKind::Ollama {
        Mock::given(method("GET"))
            .and(path("/api/tags"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"models": [
                {"name": OLLAMA_MODEL, "model": OLLAMA_MODEL, "size": 2_500_000_000_u64}]})))
            .expect(1)
            .mount(&server)
            .await;
    }
    let mut mock = Mock::given(method("POST")).and(path(vendor.chat_path.as_str()));
    for (name, value) in &vendor.headers {
        mock = mock.and(header(*name, value.as_str()));
    }
    mock.respond_with(Script {
        turns: vendor.turns.clone(),
        next: AtomicUsize::new(0),
    })
    .expect(4)
    .mount(&server)
    .await;

    let config =
        ProviderConfig::new(server.uri(), vendor.key, vendor.model).with_retry(fast_retry());
    if vendor.kind == ProviderKind::Ollama {
        let models = OllamaProvider::new(config.clone())
            .unwrap()
            .probe()
            .await
            .expect("probe");
        assert_eq!(models, [OLLAMA_MODEL]);
    }
    let provider: Arc<dyn Provider> =
        Arc::from(llm::provider_from_config(vendor.kind, config).expect("provider"));
    assert_eq!(provider.name(), vendor.kind.id());

    let skill = Arc::new(FakeSkill::new(
        json!({"processes": 42, "sandbox_id": "demo-1"}),
    ));
    let outcome = Operator::new(skill.clone(), provider)
        .with_config(OperatorConfig {
            // More than the script needs: the run must end at `done`, not at the cap.
            max_iterations: 10,
            request_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(20),
            ..OperatorConfig::default()
        })
        .run(json!({"reason": "sandbox health check"}))
        .await;
    assert_eq!(
        skill.snapshots_taken.load(Ordering::SeqCst),
        1,
        "the skill is measured once"
    );

    let received = server.received_requests().await.expect("recording is on");
    let requests = received
        .iter()
        .map(|r| (r.method.to_string(), r.url.path().to_string()))
        .collect();
    let bodies = received
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| serde_json::from_slice(&r.body).expect("request body is JSON"))
        .collect();
    // Checks the `expect`s now (dropping the server would too, and frees the port).
    server.verify().await;
    Run {
        outcome,
        bodies,
        requests,
    }
}

/// The shared assertions on a run of the four-turn script; returns the chat request
/// bodies for the vendor-specific checks.
async fn check(vendor: &Vendor) -> Vec<Value> {
    let Run {
        outcome,
        bodies,
        requests,
    } = run(vendor).await;
    let chat_path = vendor.chat_path.as_str();

    // The run: ended by `done`, after exactly the four scripted requests.
    assert_eq!(outcome.stop, Stop::Done, "error: {:?}", outcome.error);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.iterations, 4);
    let mut expected: Vec<(String, String)> = vec![("POST".into(), chat_path.into()); 4];
    if vendor.kind == ProviderKind::Ollama {
        expected.insert(0, ("GET".into(), "/api/tags".into()));
    }
    assert_eq!(requests, expected);
    assert_eq!(bodies.len(), 4);

    // The verdict.
    assert_eq!(outcome.state, HealthState::Warning);
    assert_eq!(outcome.summary, SUMMARY);
    assert_eq!(outcome.snapshots.len(), 1);
    let snapshot = &outcome.snapshots[0];
    assert!(ids::is_id(&snapshot.id), "{}", snapshot.id);
    assert_eq!(snapshot.data["processes"], 42);
    assert_eq!(
        outcome.notifications.len(),
        1,
        "{:?}",
        outcome.notifications
    );
    let notification = &outcome.notifications[0];
    assert_eq!(notification.summary, SUMMARY);
    assert_eq!(notification.kind, "process_spike");
    assert_eq!(notification.severity, Severity::Warning);
    assert_eq!(notification.snapshot_ids, vec![snapshot.id.clone()]);

    // Usage was read from the vendor's reply on every turn.
    assert_eq!(outcome.usage.input_tokens, 4 * USAGE.0);
    assert_eq!(outcome.usage.output_tokens, 4 * USAGE.1);

    // Turn 1 offered the built-in tools (and the skill's callbacks), not the unknown one.
    let first = bodies[0].to_string();
    for tool in [
        "take_snapshot",
        "send_notification",
        "set_state",
        "done",
        "echo",
    ] {
        assert!(first.contains(&format!("\"{tool}\"")), "{tool} not offered");
    }
    assert!(!first.contains(UNKNOWN));

    let [snap_ref, unknown_ref, notify_ref, state_ref] = vendor.refs;
    let find = vendor.find_result;

    // Turn 2 showed the model the snapshot the run stored.
    let shown = find(&bodies[1], snap_ref).expect("turn 2 carries the take_snapshot result");
    assert_ne!(shown.is_error, Some(true));
    assert_eq!(shown.content["id"], json!(snapshot.id));
    assert_eq!(shown.content["data"]["processes"], 42);

    // Turn 3 carries an error result for the unknown tool, and the loop went on to run
    // the notification in the same reply.
    let unknown = find(&bodies[2], unknown_ref).expect("turn 3 carries a result for reboot_host");
    assert_ne!(unknown.is_error, Some(false), "{unknown:?}");
    let message = unknown.content["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {unknown:?}"));
    assert!(message.contains("unknown tool"), "{message}");
    assert!(message.contains(UNKNOWN), "{message}");
    let sent = find(&bodies[2], notify_ref).expect("turn 3 carries the notification result");
    assert_ne!(sent.is_error, Some(true), "{sent:?}");
    assert_eq!(sent.content["sent"], true);
    assert_eq!(sent.content["id"], json!(notification.id));
    assert_eq!(sent.content["snapshot_ids"], json!([snapshot.id]));

    // Turn 4 answers set_state.
    let state = find(&bodies[3], state_ref).expect("turn 4 carries the set_state result");
    assert_eq!(state.content["state"], "warning");
    assert_eq!(state.content["previous"], "unknown");

    // Each turn told the model the state: unknown before set_state, warning after.
    for (i, body) in bodies.iter().enumerate() {
        let text = body.to_string();
        let warned = text.contains("Current state: warning");
        assert_eq!(warned, i == 3, "request {} state line", i + 1);
        assert!(text.contains("Current state: unknown"), "request {}", i + 1);
    }
    bodies
}

#[tokio::test]
async fn anthropic_full_run_with_an_unknown_tool() {
    let bodies = check(&anthropic()).await;
    // Turn 3: the assistant's two tool_use blocks replayed, then ONE user message with
    // both results in call order, then the state line.
    let messages = bodies[2]["messages"].as_array().unwrap();
    let n = messages.len();
    assert_eq!(messages[n - 2]["role"], "assistant");
    let ids: Vec<&Value> = messages[n - 2]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| &b["id"])
        .collect();
    assert_eq!(ids, [&json!("toolu_02"), &json!("toolu_03")]);
    assert_eq!(messages[n - 1]["role"], "user");
    let blocks = messages[n - 1]["content"].as_array().unwrap();
    assert_eq!(blocks.len(), 3, "{blocks:?}");
    assert_eq!(blocks[0]["tool_use_id"], "toolu_02");
    assert_eq!(blocks[0]["is_error"], true);
    assert_eq!(blocks[1]["tool_use_id"], "toolu_03");
    assert_eq!(blocks[1]["is_error"], false);
    assert_eq!(blocks[2]["type"], "text");
    assert_eq!(blocks[2]["text"], "Current state: unknown");
}

#[tokio::test]
async fn openai_full_run_with_an_unknown_tool() {
    let bodies = check(&openai()).await;
    // Turn 3: the assistant message with both calls (content "" not null), then one tool
    // message per call in call order, then the state line.
    let messages = bodies[2]["messages"].as_array().unwrap();
    let n = messages.len();
    let assistant = &messages[n - 4];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["content"], "");
    assert_eq!(assistant["tool_calls"][0]["id"], "call_reboot");
    assert_eq!(assistant["tool_calls"][0]["function"]["name"], UNKNOWN);
    assert_eq!(
        assistant["tool_calls"][0]["function"]["arguments"],
        unknown_args().to_string()
    );
    assert_eq!(assistant["tool_calls"][1]["id"], "call_notify");
    assert_eq!(messages[n - 3]["tool_call_id"], "call_reboot");
    assert_eq!(messages[n - 2]["tool_call_id"], "call_notify");
    assert_eq!(messages[n - 1]["role"], "user");
}

#[tokio::test]
async fn google_ai_full_run_with_an_unknown_tool() {
    let bodies = check(&gemini()).await;
    // Turn 2 and 3: the model content replayed with its thought signatures; the results
    // of one reply form one user content, in call order, before the state line.
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
    assert!(
        user[0]["functionResponse"]["response"]
            .get("error")
            .is_some()
    );
    assert_eq!(user[1]["functionResponse"]["name"], "send_notification");
    assert_eq!(user[2]["text"], "Current state: unknown");
}

#[tokio::test]
async fn ollama_full_run_with_an_unknown_tool() {
    let bodies = check(&ollama()).await;
    // Every request is non-streaming; turn 3 replays both calls, then one tool message
    // per call (with tool_name) in call order, then the state line.
    for body in &bodies {
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
    let messages = bodies[2]["messages"].as_array().unwrap();
    let n = messages.len();
    let assistant = &messages[n - 4];
    assert_eq!(assistant["role"], "assistant");
    assert_eq!(assistant["tool_calls"][0]["function"]["name"], UNKNOWN);
    assert_eq!(
        assistant["tool_calls"][0]["function"]["arguments"],
        unknown_args()
    );
    assert_eq!(
        assistant["tool_calls"][1]["function"]["name"],
        "send_notification"
    );
    assert_eq!(messages[n - 3]["tool_name"], UNKNOWN);
    assert_eq!(messages[n - 2]["tool_name"], "send_notification");
    assert_eq!(messages[n - 1]["role"], "user");
}

// ---------------------------------------------------------------- no verdict

/// How a provider stand-in misbehaves.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Accepts the request and never answers (within the run's deadline).
    Silent,
    /// Answers every request in prose, never with a tool call.
    Prose,
    /// Fails every request with HTTP 500, so the retries give up.
    ServerError,
}

/// Runs the real operator against `vendor`'s stand-in misbehaving as `fault`.
async fn run_faulty(vendor: &Vendor, fault: Fault) -> (Outcome, usize) {
    let server = MockServer::start().await;
    let reply = match fault {
        // Longer than any deadline below: the provider accepted and does not answer.
        Fault::Silent => ResponseTemplate::new(200)
            .set_body_json(&vendor.prose)
            .set_delay(Duration::from_secs(600)),
        Fault::Prose => ResponseTemplate::new(200).set_body_json(&vendor.prose),
        Fault::ServerError => ResponseTemplate::new(500)
            .set_body_json(json!({"error": {"message": "internal error", "code": 500}})),
    };
    Mock::given(method("POST"))
        .and(path(vendor.chat_path.as_str()))
        .respond_with(reply)
        .mount(&server)
        .await;
    let config =
        ProviderConfig::new(server.uri(), vendor.key, vendor.model).with_retry(fast_retry());
    let provider: Arc<dyn Provider> =
        Arc::from(llm::provider_from_config(vendor.kind, config).expect("provider"));
    let skill = Arc::new(FakeSkill::new(
        json!({"processes": 3, "sandbox_id": "demo-1"}),
    ));
    let outcome = Operator::new(skill, provider)
        .with_config(OperatorConfig {
            max_iterations: 4,
            request_timeout: Duration::from_secs(30),
            deadline: Duration::from_millis(match fault {
                Fault::Silent => 400,
                _ => 20_000,
            }),
            ..OperatorConfig::default()
        })
        .run(json!({"reason": "sandbox health check"}))
        .await;
    let requests = server.received_requests().await.expect("recording").len();
    (outcome, requests)
}

/// For every vendor and every fault: no `set_state`, so state `unknown` and a reason
/// that names what happened, never the default `healthy`.
#[tokio::test]
async fn a_run_without_set_state_has_no_verdict_for_every_vendor() {
    for vendor in [anthropic(), openai(), gemini(), ollama()] {
        for fault in [Fault::Silent, Fault::Prose, Fault::ServerError] {
            let (outcome, requests) = run_faulty(&vendor, fault).await;
            let what = format!("{:?} {fault:?}: {outcome:?}", vendor.kind);
            assert_eq!(outcome.state, HealthState::Unknown, "{what}");
            let line = outcome.no_verdict().unwrap_or_else(|| panic!("{what}"));
            let json = serde_json::to_value(&outcome).unwrap();
            assert_eq!(json["state"], "unknown", "{what}");
            assert_eq!(json["stop_reason"], outcome.stop_reason, "{what}");
            match fault {
                Fault::Silent => {
                    assert_eq!(outcome.stop, Stop::Deadline, "{what}");
                    assert_eq!(
                        line,
                        "operator gave no verdict: the provider did not answer within 400 ms"
                    );
                    assert_eq!(outcome.usage.output_tokens, 0, "{what}");
                }
                Fault::Prose => {
                    assert_eq!(outcome.stop, Stop::IterationCap, "{what}");
                    assert_eq!(
                        line,
                        "operator gave no verdict: 4 iterations without set_state (the model \
                         answered in prose only, never calling a tool)"
                    );
                    assert_eq!(requests, 4, "{what}");
                }
                Fault::ServerError => {
                    assert_eq!(outcome.stop, Stop::LlmError, "{what}");
                    assert!(
                        line.starts_with("operator gave no verdict: the provider failed: "),
                        "{line}"
                    );
                    assert!(line.contains("HTTP 500"), "{line}");
                    assert_eq!(requests, fast_retry().max_attempts as usize, "{what}");
                }
            }
        }
    }
}
