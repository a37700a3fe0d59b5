//! The coordinator: when the detector fires or when asked, it runs the relevant operators
//! (one per sandbox or skill: its [`Member`]s, skills as trait objects), collects their
//! notifications and the host's recent events, and has a model turn them into
//! [`Insight`]s, or answer a question with the figures it used. Every insight and figure is
//! checked by the guardrail ([`grounding`]) against what the run's snapshots hold and what
//! the kernel says now.
//!
//! One look is one operator loop over the [`CoordinatorSkill`](skill), so it has the loop's
//! deadline, cancellation and tolerance of unknown or malformed tool calls (fed back to the
//! model). A look may `schedule` one later look (at most [`MAX_LOOKS`] in all, each put off
//! at most a minute, all within the deadline).

pub mod ask;
pub mod detector;
pub mod grounding;
mod registry;
mod skill;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use operator::{
    Answer, HealthState, Insight, MockProvider, Operator, OperatorConfig, RunError, Scheduled,
    Skill, Stop,
};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use grounding::{Evidence, Live};
pub use registry::{members_for, sandbox_members};
use sandbox::Manager;
use sandbox::events::{EventBus, EventKind};
use skill::CoordinatorSkill;

pub use skill::{MAX_SCHEDULE_MS, MAX_SCHEDULED};

/// Looks one coordinator run makes at most (the first and the scheduled ones).
pub const MAX_LOOKS: u32 = 2;

/// One operator the coordinator runs: a skill, where its figures come from, and the sandbox
/// it watches (if it watches one: its host events are shown, its figures held against the
/// kernel).
#[derive(Clone)]
pub struct Member {
    /// How the member is named to the model, e.g. `sandbox w-1`.
    pub source: String,
    /// The sandbox it watches, if one.
    pub sandbox_id: Option<String>,
    /// What it watches with.
    pub skill: Arc<dyn Skill>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("source", &self.source)
            .field("sandbox_id", &self.sandbox_id)
            .field("skill", &self.skill.title())
            .finish()
    }
}

/// What one member's run ended with.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberReport {
    /// The member.
    pub source: String,
    /// Its sandbox.
    pub sandbox_id: Option<String>,
    /// Its verdict.
    pub state: HealthState,
    /// Notifications it raised.
    pub notifications: usize,
    /// Why its loop stopped.
    pub stop: Stop,
}

/// Who answers: the offline mock (a careful coordinator, careful members), or one model for
/// the coordinator and its members.
#[derive(Debug, Clone)]
pub enum Providers {
    /// `MockProvider::coordinator()` and `MockProvider::careful(rule)` per member.
    Mock,
    /// This model, for all.
    Model(Arc<dyn llm::Provider>),
}

impl Providers {
    /// The provider of the coordinator's own loop.
    fn coordinator(&self) -> Arc<dyn llm::Provider> {
        match self {
            Providers::Mock => Arc::new(MockProvider::coordinator()),
            Providers::Model(p) => Arc::clone(p),
        }
    }

    /// The provider of a member's loop.
    fn member(&self, skill: &dyn Skill) -> Arc<dyn llm::Provider> {
        match self {
            Providers::Mock => Arc::new(MockProvider::careful(skill.alert_rule())),
            Providers::Model(p) => Arc::clone(p),
        }
    }

    /// The provider's name, for events.
    pub fn name(&self) -> String {
        match self {
            Providers::Mock => "mock".into(),
            Providers::Model(p) => p.name().to_string(),
        }
    }
}

/// Bounds of a coordinator run.
#[derive(Debug, Clone, PartialEq)]
pub struct CoordinatorConfig {
    /// Wall-clock bound on the whole run (all looks, member runs included).
    pub deadline: Duration,
    /// Turns of each look's loop.
    pub max_iterations: u32,
    /// Turns of each member's loop.
    pub member_iterations: u32,
    /// Process count above which a sandbox counts as spiking (held against a claim of health).
    pub threshold: u64,
}

impl Default for CoordinatorConfig {
    fn default() -> CoordinatorConfig {
        CoordinatorConfig {
            deadline: Duration::from_secs(30),
            max_iterations: 6,
            member_iterations: 5,
            threshold: crate::skill::PROCESS_THRESHOLD,
        }
    }
}

/// Why the coordinator runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Something happened (the detector fired, a flow asked): the members' operators run.
    Incident(String),
    /// A person asks: the members are measured, not judged.
    Question(String),
}

/// What a coordinator run produced.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CoordinatorReport {
    /// The run's id (its insights' events carry it).
    pub run: String,
    /// The state the last look set (`unknown`: none).
    pub state: HealthState,
    /// Insights of all looks, checked.
    pub insights: Vec<Insight>,
    /// The answer to the question, its figures checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
    /// Later looks asked for.
    pub scheduled: Vec<Scheduled>,
    /// Looks made.
    pub looks: u32,
    /// The members' runs of the last look.
    pub members: Vec<MemberReport>,
    /// Why the last look stopped.
    pub stop: Stop,
    /// In words.
    pub stop_reason: String,
    /// The provider's failure, when `stop` is `llm_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<RunError>,
    /// Tool results the model got back as errors (unknown tools, malformed arguments), all
    /// looks together.
    pub tool_errors: usize,
}

/// Runs members' operators and correlates what they noticed.
#[derive(Debug, Clone)]
pub struct Coordinator {
    manager: Manager,
    members: Vec<Member>,
    providers: Providers,
    config: CoordinatorConfig,
}

impl Coordinator {
    /// A coordinator over `members` of `manager`'s sandboxes, answered by `providers`.
    pub fn new(manager: Manager, members: Vec<Member>, providers: Providers) -> Coordinator {
        Coordinator {
            manager,
            members,
            providers,
            config: CoordinatorConfig::default(),
        }
    }

    /// Replaces the bounds.
    pub fn with_config(mut self, config: CoordinatorConfig) -> Coordinator {
        self.config = config;
        self
    }

    /// Runs to the end, a scheduled later look included; cancelling `cancel` ends it at once
    /// (what was checked so far is kept).
    pub async fn run(&self, trigger: Trigger, cancel: CancellationToken) -> CoordinatorReport {
        let deadline = Instant::now() + self.config.deadline;
        let mut report = CoordinatorReport {
            run: operator::ids::new_id(),
            state: HealthState::Unknown,
            insights: Vec::new(),
            answer: None,
            scheduled: Vec::new(),
            looks: 0,
            members: Vec::new(),
            stop: Stop::Deadline,
            stop_reason: String::new(),
            error: None,
            tool_errors: 0,
        };
        let question = match &trigger {
            Trigger::Question(q) => Some(q.clone()),
            Trigger::Incident(_) => None,
        };
        let mut context = match &trigger {
            Trigger::Incident(reason) => json!({"reason": reason}),
            Trigger::Question(q) => json!({"question": q}),
        };
        while report.looks < MAX_LOOKS {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                report.stop = Stop::Deadline;
                report.stop_reason = "the deadline passed before the scheduled look".into();
                break;
            }
            report.looks += 1;
            let skill = Arc::new(CoordinatorSkill {
                members: self.members.clone(),
                question: question.clone(),
                providers: self.providers.clone(),
                member_config: OperatorConfig {
                    max_iterations: self.config.member_iterations,
                    deadline: left,
                    ..OperatorConfig::default()
                },
                events: Some(self.manager.events().clone()),
                gathered: Mutex::new(Default::default()),
            });
            let config = OperatorConfig {
                max_iterations: self.config.max_iterations,
                deadline: left,
                ..OperatorConfig::default()
            };
            let outcome = Operator::new(
                Arc::clone(&skill) as Arc<dyn Skill>,
                self.providers.coordinator(),
            )
            .with_config(config)
            .run_with_cancel(context.clone(), cancel.clone())
            .await;
            let gathered = skill.take();
            let evidence = self.evidence(&outcome, &gathered).await;
            for mut insight in gathered.insights {
                evidence.ground(&mut insight);
                report.insights.push(insight);
            }
            if let Some((text, figures)) = gathered.answer {
                report.answer = Some(Answer {
                    text,
                    figures: evidence.figures(figures),
                });
            }
            report.tool_errors += outcome
                .transcript
                .iter()
                .map(|m| match m {
                    llm::Message::Tool { results } => results.iter().filter(|r| r.is_error).count(),
                    _ => 0,
                })
                .sum::<usize>();
            report.state = outcome.state;
            report.stop = outcome.stop;
            report.stop_reason = outcome.stop_reason.clone();
            report.error = outcome.error.clone();
            report.members = gathered.members;
            let later = gathered.scheduled.first().cloned();
            report.scheduled.extend(gathered.scheduled);
            let ended = matches!(
                outcome.stop,
                Stop::Cancelled | Stop::Deadline | Stop::LlmError
            );
            let Some(later) = later.filter(|_| !ended && report.looks < MAX_LOOKS) else {
                break;
            };
            let wait = Duration::from_millis(later.ms)
                .min(deadline.saturating_duration_since(Instant::now()));
            tokio::select! {
                _ = cancel.cancelled() => {
                    report.stop = Stop::Cancelled;
                    report.stop_reason = "the run was cancelled".into();
                    break;
                }
                _ = tokio::time::sleep(wait) => {}
            }
            let earlier: Vec<Value> = report
                .insights
                .iter()
                .map(|i| json!({"hypothesis": i.hypothesis, "grounded": i.grounded}))
                .collect();
            context = json!({
                "reason": format!("the later look you scheduled: {}", later.reason),
                "earlier_insights": earlier,
            });
            if let Some(q) = &question {
                context["question"] = json!(q);
            }
        }
        report
    }

    /// What the insights of one look are checked against: its snapshots (the coordinator's
    /// own and its members'), the members' notifications, and the kernel's figures now.
    async fn evidence(&self, outcome: &operator::Outcome, gathered: &skill::Gathered) -> Evidence {
        let mut evidence = Evidence {
            threshold: self.config.threshold,
            ..Evidence::default()
        };
        for s in outcome.snapshots.iter().chain(&gathered.snapshots) {
            evidence.snapshots.insert(s.id.clone(), s.data.clone());
        }
        evidence
            .notifications
            .extend(gathered.notifications.iter().cloned());
        for id in self.members.iter().filter_map(|m| m.sandbox_id.as_deref()) {
            if evidence.live.contains_key(id) {
                continue;
            }
            let (Ok(info), Ok(usage)) = (self.manager.info(id).await, self.manager.usage(id).await)
            else {
                continue;
            };
            let status = serde_json::to_value(&info.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            evidence.live.insert(
                id.to_string(),
                Live {
                    processes: usage.processes,
                    status,
                },
            );
        }
        evidence
    }
}

/// Puts a coordinator run's insights into the event stream, one `operator.insight` each
/// (about its sandbox when it covers one, daemon-wide otherwise).
pub fn report_insights(events: &EventBus, report: &CoordinatorReport) {
    for i in &report.insights {
        let kind = EventKind::OperatorInsight {
            run: report.run.clone(),
            id: i.id.clone(),
            correlation: i.correlation.as_str().to_string(),
            hypothesis: i.hypothesis.clone(),
            grounded: i.grounded,
            ungrounded: i.ungrounded.clone(),
            state: i.state.as_str().to_string(),
            confidence: i.confidence,
            notifications: i.notification_ids.len(),
            sandboxes: i.sources.clone(),
        };
        match i.sources.as_slice() {
            [one] => events.sandbox(one, kind),
            _ => events.emit(None, kind),
        };
    }
}
