//! The real operator loop against each real provider, talking to a local wiremock server on
//! 127.0.0.1 that answers in that vendor's wire format.
//!
//! Every server plays the same four-turn script ([`script`]):
//!
//! 1. `take_snapshot`
//! 2. `reboot_host` (a tool nobody offered) and `send_notification` in the same reply
//! 3. `set_state(warning)`
//! 4. `done`
//!
//! and every test checks the [`operator::Outcome`] and what the loop sent back: the
//! snapshot id the model was shown, the error result for the unknown tool, and the state
//! line of each turn. Other tests make the provider fail to answer, answer in prose only,
//! or fail: the run then has no verdict. [`provider_loop_tests!`] runs each test for every
//! vendor.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use llm::{OllamaProvider, Provider, ProviderConfig, ProviderKind, RetryPolicy};
use operator::{HealthState, Operator, OperatorConfig, Outcome, Severity, Stop, ids};
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::common::FakeSkill;
use crate::vendors::{OLLAMA_MODEL, Vendor};

/// Instantiates every test below for every named vendor of [`crate::vendors`].
macro_rules! provider_loop_tests {
    (@tests $vendor:ident: $($test:ident),+ $(,)?) => {$(
        #[tokio::test]
        async fn $test() {
            super::$test(&crate::vendors::$vendor()).await;
        }
    )+};
    ($($vendor:ident),+ $(,)?) => {$(
        mod $vendor {
            provider_loop_tests!(@tests $vendor:
                full_run_with_an_unknown_tool,
                a_silent_provider_gives_no_verdict,
                prose_only_gives_no_verdict,
                server_errors_give_no_verdict,
                a_model_that_calls_only_when_told_which_tool_reaches_a_verdict,
            );
        }
    )+};
}

provider_loop_tests!(anthropic, openai, gemini, ollama);

/// The summary the model sends in turn 2.
pub const SUMMARY: &str = "process count elevated";
/// The tool the model invents in turn 2.
pub const UNKNOWN: &str = "reboot_host";
/// What a model that answers only in prose says.
pub const PROSE: &str = "The sandbox looks fine to me; nothing to report.";
/// Prompt and completion tokens every scripted reply reports.
pub const USAGE: (u64, u64) = (100, 10);

/// Ids of the calls of turn 2.
pub const REBOOT_ID: &str = "call_reboot";
/// See [`REBOOT_ID`].
pub const NOTIFY_ID: &str = "call_notify";

/// A tool call of the script: id (for vendors whose replies carry one), name, arguments.
pub type Call = (&'static str, &'static str, Value);

/// The arguments of the unknown tool's call.
pub fn unknown_args() -> Value {
    json!({"force": true})
}

/// The tool calls of the four turns.
fn script() -> [Vec<Call>; 4] {
    let notification = json!({"type": "process_spike", "severity": "warning",
                              "summary": SUMMARY, "snapshot_ids": ["latest"]});
    let state = json!({"state": "warning", "reason": "processes above threshold"});
    [
        vec![("call_snap", "take_snapshot", json!({}))],
        vec![
            (REBOOT_ID, UNKNOWN, unknown_args()),
            (NOTIFY_ID, "send_notification", notification),
        ],
        vec![("call_state", "set_state", state)],
        vec![("call_done", "done", json!({}))],
    ]
}

/// Retries in milliseconds so the tests stay fast.
fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(1),
        cap: Duration::from_millis(5),
        deadline: Duration::from_secs(10),
    }
}

/// The vendor's provider pointed at `server`.
fn provider(vendor: &Vendor, server: &MockServer) -> Arc<dyn Provider> {
    let config =
        ProviderConfig::new(server.uri(), vendor.key, vendor.model).with_retry(fast_retry());
    Arc::from(llm::provider_from_config(vendor.kind, config).expect("provider"))
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

// ---------------------------------------------------------------- the full run

/// Starts the vendor's server, builds the real provider against it (probing Ollama first,
/// as the demo does) and runs the real operator with a skill whose snapshot breaches the
/// rule. Returns the outcome, the chat request bodies and every request's method and path.
async fn run(vendor: &Vendor) -> (Outcome, Vec<Value>, Vec<(String, String)>) {
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
    let mut mock = Mock::given(method("POST")).and(path(vendor.path));
    for (name, value) in vendor.headers {
        mock = mock.and(header(*name, *value));
    }
    let turns = script()
        .iter()
        .enumerate()
        .map(|(i, calls)| (vendor.reply)((i == 0).then_some("Taking a snapshot first."), calls))
        .collect();
    mock.respond_with(Script {
        turns,
        next: AtomicUsize::new(0),
    })
    .expect(4)
    .mount(&server)
    .await;

    if vendor.kind == ProviderKind::Ollama {
        let config = ProviderConfig::new(server.uri(), vendor.key, vendor.model);
        let models = OllamaProvider::new(config).unwrap().probe().await;
        assert_eq!(models.expect("probe"), [OLLAMA_MODEL]);
    }
    let provider = provider(vendor, &server);
    assert_eq!(provider.name(), vendor.kind.id());

    let skill = Arc::new(FakeSkill::new(
        json!({"processes": 42, "sandbox_id": "demo-1"}),
    ));
    let outcome = Operator::new(skill.clone(), provider)
        .with_config(OperatorConfig {
            // More than the script needs: the run must end at `done`, not at the cap.
            max_iterations: 10,
            request_timeout: Some(Duration::from_secs(5)),
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
    (outcome, bodies, requests)
}

/// The four-turn script, checked on the outcome, on what the loop sent back, and by the
/// vendor's own checks of its requests.
async fn full_run_with_an_unknown_tool(vendor: &Vendor) {
    let (outcome, bodies, requests) = run(vendor).await;

    // The run: ended by `done`, after exactly the four scripted requests.
    assert_eq!(outcome.stop, Stop::Done, "error: {:?}", outcome.error);
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.iterations, 4);
    let mut expected: Vec<(String, String)> = vec![("POST".into(), vendor.path.into()); 4];
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

    let [snap, unknown_and_notify, state, _] = script();
    let find = |body: &Value, call| (vendor.find_result)(body, vendor.result_ref(call));

    // Turn 2 showed the model the snapshot the run stored.
    let shown = find(&bodies[1], &snap[0]).expect("turn 2 carries the take_snapshot result");
    assert_ne!(shown.is_error, Some(true));
    assert_eq!(shown.content["id"], json!(snapshot.id));
    assert_eq!(shown.content["data"]["processes"], 42);

    // Turn 3 carries an error result for the unknown tool, and the loop went on to run
    // the notification in the same reply.
    let [unknown, notify] = &unknown_and_notify[..] else {
        unreachable!("turn 2 has two calls")
    };
    let unknown = find(&bodies[2], unknown).expect("turn 3 carries a result for reboot_host");
    assert_ne!(unknown.is_error, Some(false), "{unknown:?}");
    let message = unknown.content["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message: {unknown:?}"));
    assert!(message.contains("unknown tool"), "{message}");
    assert!(message.contains(UNKNOWN), "{message}");
    let sent = find(&bodies[2], notify).expect("turn 3 carries the notification result");
    assert_ne!(sent.is_error, Some(true), "{sent:?}");
    assert_eq!(sent.content["sent"], true);
    assert_eq!(sent.content["id"], json!(notification.id));
    assert_eq!(sent.content["snapshot_ids"], json!([snapshot.id]));

    // Turn 4 answers set_state.
    let state = find(&bodies[3], &state[0]).expect("turn 4 carries the set_state result");
    assert_eq!(state.content["state"], "warning");
    assert_eq!(state.content["previous"], "unknown");

    // Each turn told the model the state: unknown before set_state, warning after.
    for (i, body) in bodies.iter().enumerate() {
        let text = body.to_string();
        let warned = text.contains("Current state: warning");
        assert_eq!(warned, i == 3, "request {} state line", i + 1);
        assert!(text.contains("Current state: unknown"), "request {}", i + 1);
    }
    (vendor.check_requests)(&bodies);
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

/// Runs the real operator against `vendor`'s stand-in misbehaving as `fault`. No
/// `set_state`, so state `unknown` and a reason that names what happened, never the
/// default `healthy`. Returns the outcome, its no-verdict line and the request count.
async fn run_faulty(vendor: &Vendor, fault: Fault) -> (Outcome, String, usize) {
    let server = MockServer::start().await;
    let reply = match fault {
        // Longer than any deadline below: the provider accepted and does not answer.
        Fault::Silent => ResponseTemplate::new(200)
            .set_body_json(vendor.prose())
            .set_delay(Duration::from_secs(600)),
        Fault::Prose => ResponseTemplate::new(200).set_body_json(vendor.prose()),
        Fault::ServerError => ResponseTemplate::new(500)
            .set_body_json(json!({"error": {"message": "internal error", "code": 500}})),
    };
    Mock::given(method("POST"))
        .and(path(vendor.path))
        .respond_with(reply)
        .mount(&server)
        .await;
    let skill = Arc::new(FakeSkill::new(
        json!({"processes": 3, "sandbox_id": "demo-1"}),
    ));
    let outcome = Operator::new(skill, provider(vendor, &server))
        .with_config(OperatorConfig {
            max_iterations: 4,
            request_timeout: Some(Duration::from_secs(30)),
            deadline: Duration::from_millis(match fault {
                Fault::Silent => 400,
                _ => 20_000,
            }),
            ..OperatorConfig::default()
        })
        .run(json!({"reason": "sandbox health check"}))
        .await;
    let requests = server.received_requests().await.expect("recording").len();

    assert_eq!(outcome.state, HealthState::Unknown, "{outcome:?}");
    let line = outcome
        .no_verdict()
        .unwrap_or_else(|| panic!("{outcome:?}"));
    let json = serde_json::to_value(&outcome).unwrap();
    assert_eq!(json["state"], "unknown");
    assert_eq!(json["stop_reason"], outcome.stop_reason);
    (outcome, line, requests)
}

async fn a_silent_provider_gives_no_verdict(vendor: &Vendor) {
    let (outcome, line, _) = run_faulty(vendor, Fault::Silent).await;
    assert_eq!(outcome.stop, Stop::Deadline);
    assert_eq!(
        line,
        "operator gave no verdict: the provider did not answer within 400 ms"
    );
    assert_eq!(outcome.usage.output_tokens, 0);
}

/// Prose every time, even when the request names the tool: turn 1 asks twice (the second
/// time naming `take_snapshot`), every later turn names its tool at once. Ollama cannot be
/// told, and the reason says so.
async fn prose_only_gives_no_verdict(vendor: &Vendor) {
    let (outcome, line, requests) = run_faulty(vendor, Fault::Prose).await;
    assert_eq!(outcome.stop, Stop::IterationCap);
    assert!(outcome.forced.is_empty(), "{:?}", outcome.forced);
    if vendor.kind == ProviderKind::Ollama {
        assert_eq!(
            line,
            "operator gave no verdict: 4 iterations without set_state (the model \
             answered in prose only, never calling a tool; ollama cannot be asked to call \
             a named tool)"
        );
        assert_eq!(requests, 4);
    } else {
        assert_eq!(
            line,
            "operator gave no verdict: 4 iterations without set_state (the model \
             answered in prose only, never calling a tool)"
        );
        assert_eq!(requests, 5);
    }
}

async fn server_errors_give_no_verdict(vendor: &Vendor) {
    let (outcome, line, requests) = run_faulty(vendor, Fault::ServerError).await;
    assert_eq!(outcome.stop, Stop::LlmError);
    assert!(
        line.starts_with("operator gave no verdict: the provider failed: "),
        "{line}"
    );
    assert!(line.contains("HTTP 500"), "{line}");
    assert_eq!(requests, fast_retry().max_attempts as usize);
}

// ---------------------------------------------------------------- told which tool

/// What the model writes when the request does not name a tool: a call, as JSON text, to a
/// tool nobody offered (what Qwen2.5-Coder 0.5B did behind llama-cpp-python).
const INVENTED: &str = r#"{"name": "health", "arguments": {"sandbox_id": "demo-1"}}"#;

/// A model that calls a tool only when the request names it, and then calls that one with
/// sensible arguments; otherwise it writes [`INVENTED`].
struct CallsWhenTold {
    vendor: Vendor,
    next: AtomicUsize,
}

impl Respond for CallsWhenTold {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        let body: Value = serde_json::from_slice(&request.body).expect("JSON body");
        let Some(tool) = (self.vendor.forced_tool)(&body) else {
            return ResponseTemplate::new(200)
                .set_body_json((self.vendor.reply)(Some(INVENTED), &[]));
        };
        let args = match tool.as_str() {
            "set_state" => json!({"state": "warning", "reason": "42 processes, above 10"}),
            "send_notification" => json!({"type": "process_spike", "severity": "warning",
                                          "summary": SUMMARY, "snapshot_ids": ["latest"]}),
            _ => json!({}),
        };
        let id: &'static str = Box::leak(format!("call_forced_{n}").into_boxed_str());
        let name: &'static str = Box::leak(tool.into_boxed_str());
        ResponseTemplate::new(200).set_body_json((self.vendor.reply)(None, &[(id, name, args)]))
    }
}

/// Turn 1: the invented call is answered as an unknown tool, naming the tools there are;
/// from turn 2 on each request names the tool the workflow needs next (snapshot, verdict,
/// then, for the model's warning, the notification, then done) and the run reaches a
/// verdict. Ollama cannot name a tool: the model goes on inventing, and the reason says so.
async fn a_model_that_calls_only_when_told_which_tool_reaches_a_verdict(vendor: &Vendor) {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path(vendor.path))
        .respond_with(CallsWhenTold {
            vendor: (match vendor.kind {
                ProviderKind::Anthropic => crate::vendors::anthropic,
                ProviderKind::OpenAi => crate::vendors::openai,
                ProviderKind::GoogleAi => crate::vendors::gemini,
                ProviderKind::Ollama => crate::vendors::ollama,
            })(),
            next: AtomicUsize::new(0),
        })
        .mount(&server)
        .await;
    let skill = Arc::new(FakeSkill::new(
        json!({"processes": 42, "sandbox_id": "demo-1"}),
    ));
    let outcome = Operator::new(skill, provider(vendor, &server))
        .with_config(OperatorConfig {
            max_iterations: 6,
            deadline: Duration::from_secs(20),
            ..OperatorConfig::default()
        })
        .run(json!({"reason": "sandbox health check"}))
        .await;
    let received = server.received_requests().await.expect("recording");
    let bodies: Vec<Value> = received
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();

    // Turn 2 carries the unknown-tool error for the invented call, naming the tools.
    let reference = if vendor.native_ids {
        "call_1"
    } else {
        "health"
    };
    let sent = (vendor.find_result)(&bodies[1], reference).expect("a result for health");
    assert_ne!(sent.is_error, Some(false), "{sent:?}");
    let message = sent.content["error"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("unknown tool `health`; the tools are take_snapshot, "),
        "{message}"
    );
    assert!(
        message.contains("set_state") && message.contains("echo"),
        "{message}"
    );

    if vendor.kind == ProviderKind::Ollama {
        assert_eq!(outcome.state, HealthState::Unknown);
        assert!(outcome.forced.is_empty());
        assert_eq!(
            outcome.stop_reason,
            "6 iterations without set_state (the model called only tools it was not \
             offered: health)"
        );
        assert!(bodies.iter().all(|b| (vendor.forced_tool)(b).is_none()));
        return;
    }
    assert_eq!(outcome.stop, Stop::Done, "{}", outcome.stop_reason);
    assert_eq!(outcome.state, HealthState::Warning);
    assert_eq!(outcome.notifications.len(), 1);
    assert_eq!(outcome.iterations, 5);
    assert_eq!(
        outcome.forced,
        ["take_snapshot", "set_state", "send_notification", "done"]
    );
    let named: Vec<Option<String>> = bodies.iter().map(|b| (vendor.forced_tool)(b)).collect();
    assert_eq!(
        named,
        [
            None,
            Some("take_snapshot".into()),
            Some("set_state".into()),
            Some("send_notification".into()),
            Some("done".into()),
        ]
    );
    // The transcript says which calls were forced.
    let text = serde_json::to_string(&outcome.transcript).unwrap();
    assert!(
        text.contains("This request requires a call to set_state"),
        "{text}"
    );
}
