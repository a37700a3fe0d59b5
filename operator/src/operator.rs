//! The agent loop: send the prompt and tools to a provider, run the tool calls it returns,
//! feed the results back, and stop at `done`, the iteration cap, the deadline, a
//! cancellation or a provider error.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use llm::{ChatRequest, Message, Provider, TokenUsage, ToolChoice, ToolResult, ToolSpec};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::outcome::{NO_VERDICT_SUMMARY, Outcome, RunError, Stop, summarize};
use crate::skill::Skill;
use crate::tools::{self, BUILTIN_TOOLS, RunState};

/// Bounds of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OperatorConfig {
    /// Most turns per run. A turn is one model request, plus at most one forced retry
    /// (see `force_tools`). Default 4.
    pub max_iterations: u32,
    /// Per-attempt timeout handed to the provider in [`ChatRequest::timeout`] (clipped to
    /// the time left before the deadline). `None` (the default): the time left before the
    /// deadline, so an attempt is never abandoned while the run may still wait for it (a
    /// local model on a small machine can take a minute over a cold prompt). The whole call,
    /// retries included, is bounded by `deadline`.
    pub request_timeout: Option<Duration>,
    /// Wall-clock bound on the whole run, from the start of [`Operator::run`]. Default 60 s.
    pub deadline: Duration,
    /// Output token cap per request. Default 1024.
    pub max_tokens: u32,
    /// When a reply has no tool call, ask again at once with the request naming the tool
    /// the loop needs next ([`ToolChoice::Tool`]): small local models often write a call as
    /// text unless the request names the tool. Once a turn needed that, every later turn of
    /// the run names its tool from the start. Not done for a provider that cannot name one
    /// ([`Provider::can_force_tool`]: Ollama). Default true.
    pub force_tools: bool,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        OperatorConfig {
            max_iterations: 4,
            request_timeout: None,
            deadline: Duration::from_secs(60),
            max_tokens: 1024,
            force_tools: true,
        }
    }
}

pub use crate::workflow::{NUDGE, forced_line, next_tool};

/// Runs a [`Skill`] against a [`Provider`].
#[derive(Clone)]
pub struct Operator {
    /// What is watched.
    skill: Arc<dyn Skill>,
    /// Who decides.
    provider: Arc<dyn Provider>,
    /// Bounds of each run.
    config: OperatorConfig,
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator")
            .field("skill", &self.skill.title())
            .field("provider", &self.provider)
            .field("config", &self.config)
            .finish()
    }
}

/// Where the run was when the deadline passed.
enum DeadlineAt {
    /// Between steps.
    Between,
    /// Waiting for the provider's answer to request `n` (1-based).
    Provider(u32),
    /// Running the named tool.
    Tool(String),
}

/// How a step ended when it did not simply complete.
enum Ended {
    /// The caller cancelled.
    Cancelled,
    /// The deadline passed.
    Deadline,
    /// The provider failed (after its own retries).
    Failed(llm::ProviderError),
}

/// What the model's replies held, for the stop reason.
#[derive(Debug, Default)]
struct Tally {
    /// Replies that carried at least one tool call.
    tool_replies: u32,
    /// Calls that named an offered tool.
    known_calls: u32,
    /// Names of the tools called that were not offered, first seen first.
    unknown: Vec<String>,
    /// Names in call-shaped JSON written as text that no call was made of.
    text_calls: Vec<String>,
}

impl Tally {
    /// A reply without a tool call, with its text.
    fn no_call(&mut self, text: Option<&str>) {
        let Some(text) = text else { return };
        let (calls, _) = llm::text_tool_calls::parse_text_tool_calls(text, &[]);
        for call in calls {
            if !self.text_calls.contains(&call.name) {
                self.text_calls.push(call.name);
            }
        }
    }

    /// A reply with `calls`, of which those not in `offered` are unknown.
    fn calls(&mut self, calls: &[llm::ToolCall], offered: &[String]) {
        self.tool_replies += 1;
        for call in calls {
            if offered.contains(&call.name) {
                self.known_calls += 1;
            } else if !self.unknown.contains(&call.name) {
                self.unknown.push(call.name.clone());
            }
        }
    }
}

impl Operator {
    /// An operator with the default [`OperatorConfig`].
    pub fn new(skill: Arc<dyn Skill>, provider: Arc<dyn Provider>) -> Self {
        Operator {
            skill,
            provider,
            config: OperatorConfig::default(),
        }
    }

    /// Replaces the configuration.
    pub fn with_config(mut self, config: OperatorConfig) -> Self {
        self.config = config;
        self
    }

    /// The configuration.
    pub fn config(&self) -> &OperatorConfig {
        &self.config
    }

    /// The skill's callbacks that are offered as tools (those not clashing with a
    /// built-in tool).
    fn callback_specs(&self) -> Vec<crate::skill::CallbackSpec> {
        self.skill
            .callbacks()
            .into_iter()
            .filter(|c| {
                let clash = BUILTIN_TOOLS.contains(&c.name.as_str());
                if clash {
                    tracing::warn!(
                        target: "operator",
                        event = "callback_skipped",
                        callback = %c.name,
                        "callback name clashes with a built-in tool; not offered"
                    );
                }
                !clash
            })
            .collect()
    }

    /// The tools offered to the model: the built-ins the skill uses
    /// ([`Skill::builtin_tools`]), then the skill's callbacks.
    pub fn tool_specs(&self) -> Vec<ToolSpec> {
        let wanted = self.skill.builtin_tools();
        let mut specs: Vec<ToolSpec> = tools::builtin_tool_specs()
            .into_iter()
            .filter(|t| {
                wanted.contains(&t.name.as_str()) || tools::REQUIRED.contains(&t.name.as_str())
            })
            .collect();
        specs.extend(self.callback_specs().into_iter().map(|c| ToolSpec {
            name: c.name,
            description: c.doc,
            parameters: c.parameters,
        }));
        specs
    }

    /// The system prompt: the skill's prompt, then the state model and the tool rules.
    pub fn system_prompt(&self) -> String {
        format!(
            "You are an operator watching \"{title}\" ({description}).\n\n\
             {skill_prompt}\n\n\
             ## State model\n\
             Your verdict is one of: healthy, observing, warning, critical. There is none \
             (state unknown) until you call set_state; each turn you are told \
             \"Current state: <state>\". A run that ends without set_state has no verdict.\n\n\
             ## Rules\n\
             - Act only through tool calls; you may make several calls in one reply, they run \
             in order.\n\
             - take_snapshot returns {{id, captured_at, data}}; the data is the source of truth.\n\
             - send_notification needs snapshot_ids: ids from take_snapshot, or [\"latest\"] \
             for the most recent snapshot.\n\
             - Workflow: 1) take_snapshot 2) investigate if needed 3) send_notification for \
             an anomaly 4) set_state 5) done.\n\
             - You have at most {max} turns. Call done as soon as your verdict is set.",
            title = self.skill.title(),
            description = self.skill.description(),
            skill_prompt = self.skill.system_prompt().trim(),
            max = self.config.max_iterations,
        )
    }

    /// Runs to completion without outside cancellation. See [`Operator::run_with_cancel`].
    pub async fn run(&self, context: Value) -> Outcome {
        self.run_with_cancel(context, CancellationToken::new())
            .await
    }

    /// Runs the loop. `context` (e.g. `{"reason": "sandbox health check"}`) is sent in the
    /// first user message as `{"context": ...}`; each turn the model is told
    /// `Current state: <state>`. Cancelling `cancel` ends the run at once with
    /// `stop: cancelled`. Never panics on model output; everything gathered is kept.
    pub async fn run_with_cancel(&self, context: Value, cancel: CancellationToken) -> Outcome {
        let deadline = Instant::now() + self.config.deadline;
        let system = self.system_prompt();
        let tool_specs = self.tool_specs();
        let offered: Vec<String> = tool_specs.iter().map(|t| t.name.clone()).collect();
        let callbacks: Vec<String> = self.callback_specs().into_iter().map(|c| c.name).collect();
        let can_force = self.config.force_tools && self.provider.can_force_tool();
        let mut run = RunState::default();
        let mut transcript: Vec<Message> = Vec::new();
        let mut usage = TokenUsage::default();
        let mut iterations: u32 = 0;
        let mut error: Option<RunError> = None;
        let mut deadline_at = DeadlineAt::Between;
        let mut tally = Tally::default();
        // Set once a turn needed a forced call: every later turn names its tool at once.
        let mut forcing = false;
        let mut forced: Vec<String> = Vec::new();

        tracing::info!(
            target: "operator",
            event = "started",
            skill = %self.skill.title(),
            provider = %self.provider.name(),
            model = %self.provider.model(),
            max_iterations = self.config.max_iterations,
            deadline_ms = self.config.deadline.as_millis() as u64,
            "operator started"
        );

        let has_context = match &context {
            Value::Null => false,
            Value::Object(m) => !m.is_empty(),
            _ => true,
        };
        let first = if has_context {
            format!(
                "{}\n\nCurrent state: {}",
                json!({ "context": context }),
                run.state
            )
        } else {
            format!("Current state: {}", run.state)
        };
        transcript.push(Message::User { text: first });

        let stop = loop {
            if cancel.is_cancelled() {
                break Stop::Cancelled;
            }
            if Instant::now() >= deadline {
                break Stop::Deadline;
            }
            if iterations >= self.config.max_iterations {
                break Stop::IterationCap;
            }
            let next = match self.skill.pending_tool() {
                Some(tool) if !run.snapshots.is_empty() && !run.state.is_verdict() => tool,
                _ => next_tool(run.snapshots.len(), run.state, run.notifications.len()),
            };

            // Tell the model the state, after tool results or after a reply without calls.
            match transcript.last() {
                Some(Message::Tool { .. }) => transcript.push(Message::User {
                    text: format!("Current state: {}", run.state),
                }),
                Some(Message::Assistant { .. }) => transcript.push(Message::User {
                    text: format!(
                        "{NUDGE} The next step is {next}.\n\nCurrent state: {}",
                        run.state
                    ),
                }),
                _ => {}
            }
            let mut choice = ToolChoice::Auto;
            if forcing {
                choice = ToolChoice::Tool(next.to_string());
                if let Some(Message::User { text }) = transcript.last_mut() {
                    text.push_str("\n\n");
                    text.push_str(&forced_line(next));
                }
            }

            iterations += 1;
            tracing::info!(
                target: "operator",
                event = "iteration",
                iteration = iterations,
                state = %run.state,
                forced = choice.forced().unwrap_or(""),
                "iteration start"
            );

            let mut asked = self
                .ask(
                    &system,
                    &transcript,
                    &tool_specs,
                    &choice,
                    deadline,
                    &cancel,
                )
                .await;
            // No call: record the reply, then ask again at once naming the tool.
            if can_force
                && choice == ToolChoice::Auto
                && matches!(&asked, Ok(r) if r.tool_calls.is_empty())
                && let Ok(response) = asked
            {
                usage += response.usage;
                tally.no_call(response.text.as_deref());
                transcript.push(Message::Assistant {
                    text: response.text,
                    tool_calls: Vec::new(),
                });
                transcript.push(Message::User {
                    text: format!("{NUDGE}\n\n{}", forced_line(next)),
                });
                tracing::info!(
                    target: "operator",
                    event = "forcing",
                    iteration = iterations,
                    tool = next,
                    "reply without tool calls; asking again with the tool named"
                );
                forcing = true;
                choice = ToolChoice::Tool(next.to_string());
                asked = self
                    .ask(
                        &system,
                        &transcript,
                        &tool_specs,
                        &choice,
                        deadline,
                        &cancel,
                    )
                    .await;
            }
            let response = match asked {
                Ok(response) => response,
                Err(Ended::Cancelled) => break Stop::Cancelled,
                Err(Ended::Deadline) => {
                    deadline_at = DeadlineAt::Provider(iterations);
                    break Stop::Deadline;
                }
                Err(Ended::Failed(e)) => {
                    tracing::error!(
                        target: "operator",
                        event = "llm_error",
                        iteration = iterations,
                        error = %e,
                        "provider failed"
                    );
                    error = Some(RunError::from(&e));
                    break Stop::LlmError;
                }
            };
            usage += response.usage;
            let calls = response.tool_calls;
            if let Some(tool) = choice.forced()
                && calls.iter().any(|c| c.name == tool)
            {
                tracing::info!(
                    target: "operator",
                    event = "forced_call",
                    iteration = iterations,
                    tool,
                    "the model called the tool the request named"
                );
                forced.push(tool.to_string());
            }
            if calls.is_empty() {
                tally.no_call(response.text.as_deref());
            }
            transcript.push(Message::Assistant {
                text: response.text,
                tool_calls: calls.clone(),
            });
            if calls.is_empty() {
                tracing::info!(
                    target: "operator",
                    event = "no_tool_calls",
                    iteration = iterations,
                    "reply without tool calls; nudging"
                );
                continue;
            }
            tally.calls(&calls, &offered);
            // Only tools that do not exist: they get their error results, and the next
            // turn names the tool the loop needs.
            if can_force && !calls.iter().any(|c| offered.contains(&c.name)) {
                forcing = true;
            }

            let mut results: Vec<ToolResult> = Vec::with_capacity(calls.len());
            let mut interrupted = None;
            for call in &calls {
                let step = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => Err(Ended::Cancelled),
                    _ = tokio::time::sleep_until(deadline) => Err(Ended::Deadline),
                    r = tools::execute(call, self.skill.as_ref(), &offered, &callbacks, &mut run, deadline) => Ok(r),
                };
                match step {
                    Ok(result) => {
                        if result.is_error {
                            tracing::warn!(
                                target: "operator",
                                event = "tool_error",
                                tool = %call.name,
                                result = %result.content,
                                "tool call failed"
                            );
                        } else {
                            tracing::debug!(target: "operator", event = "tool", tool = %call.name);
                        }
                        results.push(result);
                    }
                    Err(i) => {
                        if matches!(i, Ended::Deadline) {
                            deadline_at = DeadlineAt::Tool(call.name.clone());
                        }
                        interrupted = Some(i);
                        break;
                    }
                }
            }
            transcript.push(Message::Tool { results });
            match interrupted {
                Some(Ended::Deadline) => break Stop::Deadline,
                Some(_) => break Stop::Cancelled,
                None => {}
            }
            if run.done {
                break Stop::Done;
            }
        };

        let summary = if run.state.is_verdict() || !run.notifications.is_empty() {
            summarize(&run.notifications)
        } else {
            NO_VERDICT_SUMMARY.to_string()
        };
        let stop_reason =
            self.stop_reason(stop, &run, iterations, &tally, &deadline_at, error.as_ref());
        tracing::info!(
            target: "operator",
            event = "done",
            stop = %stop,
            state = %run.state,
            iterations,
            notifications = run.notifications.len(),
            snapshots = run.snapshots.len(),
            summary = %summary,
            stop_reason = %stop_reason,
            "operator finished"
        );
        Outcome {
            state: run.state,
            summary,
            notifications: run.notifications,
            snapshots: run.snapshots,
            iterations,
            usage,
            transcript,
            stop,
            error,
            stop_reason,
            forced,
        }
    }

    /// One request with `choice`, bounded by the deadline and the cancellation.
    async fn ask(
        &self,
        system: &str,
        transcript: &[Message],
        tools: &[ToolSpec],
        choice: &ToolChoice,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Result<llm::ChatResponse, Ended> {
        let left = deadline.saturating_duration_since(Instant::now());
        let request = ChatRequest {
            model: self.provider.model().to_string(),
            system: system.to_string(),
            messages: transcript.to_vec(),
            tools: tools.to_vec(),
            max_tokens: self.config.max_tokens,
            timeout: self.config.request_timeout.map_or(left, |t| t.min(left)),
            tool_choice: choice.clone(),
        };
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(Ended::Cancelled),
            _ = tokio::time::sleep_until(deadline) => Err(Ended::Deadline),
            r = self.provider.chat(&request) => r.map_err(Ended::Failed),
        }
    }

    /// Why the run ended, in words (see [`Outcome::stop_reason`]).
    fn stop_reason(
        &self,
        stop: Stop,
        run: &RunState,
        iterations: u32,
        tally: &Tally,
        deadline_at: &DeadlineAt,
        error: Option<&RunError>,
    ) -> String {
        let verdict = run.state.is_verdict();
        let ms = self.config.deadline.as_millis();
        match stop {
            Stop::Done if verdict => "the model called done".into(),
            Stop::Done => "the model called done without set_state".into(),
            Stop::IterationCap => {
                let missing = if verdict { "done" } else { "set_state" };
                let noun = if iterations == 1 {
                    "iteration"
                } else {
                    "iterations"
                };
                let mut text = format!("{iterations} {noun} without {missing}");
                if tally.tool_replies == 0 && iterations > 0 {
                    if tally.text_calls.is_empty() {
                        text.push_str(" (the model answered in prose only, never calling a tool");
                    } else {
                        text.push_str(&format!(
                            " (the model wrote calls as JSON text naming {}, never calling \
                             a tool it was offered",
                            tally.text_calls.join(", ")
                        ));
                    }
                    if !self.provider.can_force_tool() {
                        text.push_str(&format!(
                            "; {} cannot be asked to call a named tool",
                            self.provider.name()
                        ));
                    }
                    text.push(')');
                } else if tally.known_calls == 0 && !tally.unknown.is_empty() {
                    text.push_str(&format!(
                        " (the model called only tools it was not offered: {})",
                        tally.unknown.join(", ")
                    ));
                }
                text
            }
            Stop::Deadline => match deadline_at {
                DeadlineAt::Provider(1) => format!("the provider did not answer within {ms} ms"),
                DeadlineAt::Provider(n) => {
                    format!("the provider did not answer request {n} within the {ms} ms deadline")
                }
                DeadlineAt::Tool(name) => {
                    format!("the {ms} ms deadline passed while running {name}")
                }
                DeadlineAt::Between => format!("the {ms} ms deadline passed"),
            },
            Stop::Cancelled => "the run was cancelled".into(),
            Stop::LlmError => match error {
                Some(e) => format!("the provider failed: {e}"),
                None => "the provider failed".into(),
            },
        }
    }
}
