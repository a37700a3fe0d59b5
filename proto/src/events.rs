//! The event record: one typed record for everything that happens to a sandbox, an operator
//! run or the detector (the stream itself, a bounded ring with live followers, is
//! `sandbox::events::EventBus`).
//!
//! Every event is one JSON object: `seq` (from 1, without gaps within a daemon's life),
//! `time` (RFC 3339 UTC, milliseconds), `event` (a stable dotted name, see [`EventKind`]),
//! `sandbox` (absent for daemon-wide events) and the kind's own fields. Names and fields are
//! a contract (`docs/events.md`): new fields may appear, none is renamed or removed.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub const MAX_TEXT: usize = 512;

/// What happened. Serialized with its name in `event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event")]
pub enum EventKind {
    /// A sandbox was created and its app loaded.
    #[serde(rename = "sandbox.created")]
    SandboxCreated {
        /// The runner's host pid.
        pid: i32,
        /// The host's version number of the loaded library (1).
        version: u32,
        /// The isolation level asked for.
        isolation: String,
        /// Microseconds from the request to ready.
        ready_us: u64,
    },
    /// A new version was swapped in.
    #[serde(rename = "sandbox.reloaded")]
    SandboxReloaded {
        /// The version that served before.
        from: u32,
        /// The version that serves now.
        to: u32,
        /// Microseconds the app process took to load and swap.
        load_us: u64,
    },
    /// A reload was refused or failed; the old version serves.
    #[serde(rename = "sandbox.reload_failed")]
    SandboxReloadFailed {
        /// The version that still serves.
        version: u32,
        /// Why.
        reason: String,
    },
    /// An earlier version was swapped back in.
    #[serde(rename = "sandbox.rolled_back")]
    SandboxRolledBack {
        /// The version that served before.
        from: u32,
        /// The version that serves now.
        to: u32,
    },
    /// Supervised workers were added.
    #[serde(rename = "sandbox.workers_added")]
    WorkersAdded {
        /// How many were asked for.
        count: u32,
        /// How many workers run now.
        total: u32,
    },
    /// The runner's init restarted a worker that died.
    #[serde(rename = "sandbox.worker_restarted")]
    WorkerRestarted {
        /// The worker's index.
        index: u32,
        /// Why it died, as init saw it.
        reason: String,
    },
    /// The sandbox's runner died without being asked to.
    #[serde(rename = "sandbox.crashed")]
    SandboxCrashed {
        /// `signal`, `oom`, `exit` or `unknown`: what the host observed (never the app's word).
        cause: String,
        /// How it died, e.g. `out of memory: limit 64 MiB, app process signal SIGKILL`.
        how: String,
        /// Whether the sandbox stays down (past the crash intensity) rather than restarting.
        #[serde(rename = "final")]
        final_: bool,
    },
    /// The sandbox's runner was started again (after a crash, or on request).
    #[serde(rename = "sandbox.restarted")]
    SandboxRestarted {
        /// The new runner's host pid.
        pid: i32,
        /// `crash` or `request`.
        after: String,
    },
    /// The sandbox is gone: every process dead.
    #[serde(rename = "sandbox.destroyed")]
    SandboxDestroyed {},
    /// A canary reload swapped a new version in; the previous one stays installed, ready
    /// to be swapped back, while the sandbox is watched for `window_ms`.
    #[serde(rename = "sandbox.canary_started")]
    CanaryStarted {
        /// The version on trial.
        version: u32,
        /// The version it replaced, kept ready.
        previous: u32,
        /// How long it is watched.
        window_ms: u64,
    },
    /// A canary's window passed without a flag: the new version stays.
    #[serde(rename = "sandbox.canary_passed")]
    CanaryPassed {
        /// The version kept.
        version: u32,
        /// How long it was watched.
        watched_ms: u64,
    },
    /// A canary was flagged within its window and the daemon swapped the previous version
    /// back by itself.
    #[serde(rename = "sandbox.canary_rolled_back")]
    CanaryRolledBack {
        /// The version given up.
        from: u32,
        /// The version serving again.
        to: u32,
        /// What flagged it (the host's observation, e.g. `worker 0 restarted: signal SIGABRT`).
        reason: String,
        /// Milliseconds from the swap to the flag.
        after_ms: u64,
    },
    /// An operator run began.
    #[serde(rename = "operator.started")]
    OperatorStarted {
        /// The run's id (shared by the run's other events).
        run: String,
        /// The skill that watches.
        skill: String,
        /// The provider that answers.
        provider: String,
        /// Why it runs: `request` or `detector`.
        trigger: String,
    },
    /// The operator took a snapshot.
    #[serde(rename = "operator.snapshot")]
    OperatorSnapshot {
        /// The run.
        run: String,
        /// The snapshot's id.
        id: String,
        /// The snapshot's data (the telemetry the host measured).
        data: serde_json::Value,
    },
    /// The operator raised a notification.
    #[serde(rename = "operator.notification")]
    OperatorNotification {
        /// The run.
        run: String,
        /// `info`, `warning` or `critical`.
        severity: String,
        /// What it says.
        summary: String,
    },
    /// The model called a tool because the request named it: its reply to the turn had no
    /// tool call (or only calls to tools that do not exist), so the operator asked again
    /// with the tool the workflow needs next (OpenAI-compatible `tool_choice`, Anthropic
    /// `tool_choice`, Gemini `allowedFunctionNames`; Ollama has no way to name one).
    #[serde(rename = "operator.forced")]
    OperatorForced {
        /// The run.
        run: String,
        /// The tool the request named and the model called.
        tool: String,
    },
    /// The operator's verdict: the state the model set, as the operator recorded it. The
    /// guardrail's judgment of it goes to the detector's sinks (`accepted`, `reason`).
    #[serde(rename = "operator.state")]
    OperatorState {
        /// The run.
        run: String,
        /// `healthy`, `warning`, `critical` or `unknown`.
        state: String,
        /// Its one-line summary.
        summary: String,
    },
    /// An operator run ended with a verdict.
    #[serde(rename = "operator.done")]
    OperatorDone {
        /// The run.
        run: String,
        /// The final state.
        state: String,
        /// Why the loop stopped.
        stop: String,
        /// Notifications raised.
        notifications: usize,
    },
    /// An operator run ended without a verdict backed by evidence.
    #[serde(rename = "operator.no_verdict")]
    OperatorNoVerdict {
        /// The run.
        run: String,
        /// Why.
        reason: String,
    },
    /// A coordinator's insight: notifications that belong together, how, and why, checked
    /// against the snapshots and the kernel (`grounded`). About one sandbox (`sandbox` is
    /// set) or several (`sandboxes`).
    #[serde(rename = "operator.insight")]
    OperatorInsight {
        /// The coordinator run.
        run: String,
        /// The insight's id.
        id: String,
        /// `temporal`, `causal` or `symptomatic`.
        correlation: String,
        /// The root-cause hypothesis (the model's words).
        hypothesis: String,
        /// Whether what it cites is in the snapshots and the kernel does not contradict it.
        grounded: bool,
        /// Why it is not grounded.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ungrounded: Option<String>,
        /// The state it claims (`unknown` for an ungrounded claim of health).
        state: String,
        /// The model's confidence, 0 to 1.
        confidence: f64,
        /// How many notifications it ties together.
        notifications: usize,
        /// The sandboxes it covers.
        sandboxes: Vec<String>,
    },
    /// One request to an LLM provider (its retries included), as the host timed it.
    #[serde(rename = "llm.call")]
    LlmCall {
        /// The provider that answered or failed (`anthropic`, `openai`, …).
        provider: String,
        /// The model asked.
        model: String,
        /// Prompt tokens the provider reported (0 when it reported none).
        input_tokens: u64,
        /// Completion tokens the provider reported.
        output_tokens: u64,
        /// Wall time of the call, retries and their waits included, milliseconds.
        latency_ms: u64,
        /// Attempts after the first (the retry policy's).
        retries: u32,
        /// `ok`, or the failure's kind (`server`, `rate_limited`, `auth`, …).
        outcome: String,
        /// The provider this one stood in for after it failed, when it is a fallback.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback_from: Option<String>,
        /// The operator run that made the call, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        run: Option<String>,
    },
    /// The detector saw a metric out of line.
    #[serde(rename = "detector.anomaly")]
    DetectorAnomaly {
        /// The metric, e.g. `processes`.
        metric: String,
        /// Its value.
        value: f64,
        /// The baseline's mean (absent for a static rule before the baseline is learnt).
        mean: Option<f64>,
        /// The z-score (absent for a static rule).
        z: Option<f64>,
        /// `zscore` or the static rule, e.g. `processes > 10`.
        rule: String,
    },
    /// The detector called the operator.
    #[serde(rename = "detector.trigger")]
    DetectorTrigger {
        /// The metric that triggered it.
        metric: String,
        /// The operator run it started.
        run: String,
    },
    /// The detector held back a run it would have started.
    #[serde(rename = "detector.held")]
    DetectorHeld {
        /// The metric.
        metric: String,
        /// `cooldown` or `hourly_cap`.
        reason: String,
    },
}

impl EventKind {
    /// The event's stable name, e.g. `sandbox.created`.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::SandboxCreated { .. } => "sandbox.created",
            EventKind::SandboxReloaded { .. } => "sandbox.reloaded",
            EventKind::SandboxReloadFailed { .. } => "sandbox.reload_failed",
            EventKind::SandboxRolledBack { .. } => "sandbox.rolled_back",
            EventKind::WorkersAdded { .. } => "sandbox.workers_added",
            EventKind::WorkerRestarted { .. } => "sandbox.worker_restarted",
            EventKind::SandboxCrashed { .. } => "sandbox.crashed",
            EventKind::SandboxRestarted { .. } => "sandbox.restarted",
            EventKind::SandboxDestroyed {} => "sandbox.destroyed",
            EventKind::CanaryStarted { .. } => "sandbox.canary_started",
            EventKind::CanaryPassed { .. } => "sandbox.canary_passed",
            EventKind::CanaryRolledBack { .. } => "sandbox.canary_rolled_back",
            EventKind::LlmCall { .. } => "llm.call",
            EventKind::OperatorStarted { .. } => "operator.started",
            EventKind::OperatorSnapshot { .. } => "operator.snapshot",
            EventKind::OperatorNotification { .. } => "operator.notification",
            EventKind::OperatorForced { .. } => "operator.forced",
            EventKind::OperatorState { .. } => "operator.state",
            EventKind::OperatorDone { .. } => "operator.done",
            EventKind::OperatorNoVerdict { .. } => "operator.no_verdict",
            EventKind::OperatorInsight { .. } => "operator.insight",
            EventKind::DetectorAnomaly { .. } => "detector.anomaly",
            EventKind::DetectorTrigger { .. } => "detector.trigger",
            EventKind::DetectorHeld { .. } => "detector.held",
        }
    }
}

/// One event as stored and sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the daemon's stream, from 1.
    pub seq: u64,
    /// When, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The sandbox it is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// Now as RFC 3339 UTC with milliseconds (`2026-12-07T12:00:00.123Z`), the events' `time`.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_millis(SystemTime::now()).to_string()
}

impl EventKind {
    /// This kind with its free text cut to [`MAX_TEXT`] bytes (at a char boundary): a reason
    /// can quote what an app printed, and the ring must stay small whatever it printed.
    pub fn clipped(mut self) -> EventKind {
        let cut = |s: &mut String| {
            if s.len() > MAX_TEXT {
                let mut end = MAX_TEXT;
                while !s.is_char_boundary(end) {
                    end -= 1;
                }
                s.truncate(end);
                s.push('…');
            }
        };
        match &mut self {
            EventKind::SandboxReloadFailed { reason, .. }
            | EventKind::WorkerRestarted { reason, .. }
            | EventKind::OperatorNoVerdict { reason, .. }
            | EventKind::CanaryRolledBack { reason, .. } => cut(reason),
            EventKind::SandboxCrashed { how, .. } => cut(how),
            EventKind::LlmCall { model, .. } => cut(model),
            EventKind::OperatorNotification { summary, .. }
            | EventKind::OperatorState { summary, .. } => cut(summary),
            EventKind::OperatorInsight {
                hypothesis,
                ungrounded,
                ..
            } => {
                cut(hypothesis);
                if let Some(why) = ungrounded {
                    cut(why);
                }
            }
            _ => {}
        }
        self
    }
}
