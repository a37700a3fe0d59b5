//! The detector: `host serve --watch` samples every watched sandbox's usage at an interval,
//! learns a baseline per metric, flags what is out of line (a z-score held for K samples, or
//! a static rule at once), and then runs the operator on that sandbox, under a cooldown and an
//! hourly cap, sending its verdict (checked by the guardrail) to the event stream and the
//! sinks. See `docs/watching.md`.
//!
//! `sandbox` knows nothing of this module; it uses `sandbox`, `operate` and `skill`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::sync::watch as signal;

use crate::detector::{Decision, Flag, Gate, Metric, Rule, Sample, SandboxWatch, Thresholds};
use crate::operate::{OperateRequest, SkillKind};
use crate::sinks::{JsonlSink, SinkError, Verdict, WebhookSink};
use crate::skill::{Check, PROCESS_THRESHOLD, guardrail};
use sandbox::events::EventKind;
use sandbox::{Gauges, Manager};

/// How the detector works; `host serve --watch*` (see [`args::WatchArgs`]).
#[derive(Debug, Clone, PartialEq)]
pub struct WatchConfig {
    /// Whether sandboxes are watched unless their create says otherwise (`--watch`).
    pub default_on: bool,
    /// Time between samples.
    pub interval: Duration,
    /// The span a baseline learns over (as `learn / interval` samples).
    pub learn: Duration,
    /// Samples a baseline needs before its z-scores count.
    pub min_samples: u64,
    /// |z| that counts as out of line.
    pub z: f64,
    /// Out-of-line samples in a row that flag a metric.
    pub consecutive: u32,
    /// Static rules (default `processes > 10`).
    pub rules: Vec<Rule>,
    /// Time after a run before the next may start on the same sandbox.
    pub cooldown: Duration,
    /// Runs per sandbox in any hour.
    pub max_per_hour: u32,
    /// Provider for the detector's runs (else the daemon's environment decides, else mock).
    pub provider: Option<String>,
    /// Model for the detector's runs.
    pub model: Option<String>,
    /// Deadline of each detector run (each model request may take up to what is left of
    /// it: a local model on a small machine can take a minute over a cold prompt).
    pub run_timeout: Duration,
    /// Turns of each detector run.
    pub max_iterations: u32,
    /// File to append verdicts and anomalies to.
    pub jsonl: Option<PathBuf>,
    /// Size at which that file is rotated.
    pub jsonl_max: u64,
    /// URL to POST verdicts to.
    pub webhook: Option<String>,
    /// After a run that notified, run the coordinator over the sandboxes flagged lately
    /// (`--watch-coordinator`; see `coordinator::detector`).
    pub coordinate: bool,
}

impl Default for WatchConfig {
    fn default() -> WatchConfig {
        WatchConfig {
            default_on: false,
            interval: Duration::from_secs(5),
            learn: Duration::from_secs(2 * 3600),
            min_samples: 5,
            z: 3.0,
            consecutive: 3,
            rules: vec![default_rule()],
            cooldown: Duration::from_secs(15 * 60),
            max_per_hour: 3,
            provider: None,
            model: None,
            run_timeout: Duration::from_secs(30),
            max_iterations: 5,
            jsonl: None,
            jsonl_max: 64 << 20,
            webhook: None,
            coordinate: false,
        }
    }
}

/// The demo's rule: more than [`PROCESS_THRESHOLD`] processes.
pub fn default_rule() -> Rule {
    Rule {
        metric: Metric::Processes,
        cmp: crate::detector::Cmp::Gt,
        value: PROCESS_THRESHOLD as f64,
    }
}

impl WatchConfig {
    fn thresholds(&self) -> Thresholds {
        let window = (self.learn.as_secs_f64() / self.interval.as_secs_f64().max(1e-3)) as u64;
        Thresholds {
            window: window.max(2),
            min_samples: self.min_samples,
            z: self.z,
            consecutive: self.consecutive,
            rules: self.rules.clone(),
        }
    }
}

/// Which sandboxes are watched: the daemon's default, and each create's own choice.
#[derive(Debug, Default)]
pub struct WatchSet {
    default_on: bool,
    chosen: Mutex<HashMap<String, bool>>,
}

impl WatchSet {
    /// Sandboxes are watched when `default_on`, unless their create said otherwise.
    pub fn new(default_on: bool) -> WatchSet {
        WatchSet {
            default_on,
            chosen: Mutex::new(HashMap::new()),
        }
    }

    /// Records a new sandbox's choice (`None`: the default).
    pub fn set(&self, id: &str, watch: Option<bool>) {
        let mut chosen = self.chosen.lock().unwrap_or_else(|e| e.into_inner());
        match watch {
            Some(on) => chosen.insert(id.to_string(), on),
            None => chosen.remove(id),
        };
    }

    /// Forgets a destroyed sandbox.
    pub fn remove(&self, id: &str) {
        self.set(id, None);
    }

    /// Whether sandbox `id` is watched.
    pub fn watched(&self, id: &str) -> bool {
        let chosen = self.chosen.lock().unwrap_or_else(|e| e.into_inner());
        chosen.get(id).copied().unwrap_or(self.default_on)
    }

    /// Whether any sandbox can be watched now (else a tick samples nothing).
    pub fn any(&self) -> bool {
        self.default_on
            || self
                .chosen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .any(|on| *on)
    }
}

/// A duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No number.
    #[error("{0:?} is not a duration (e.g. 200ms, 5s, 15m, 2h)")]
    NotANumber(String),
    /// A unit other than ms, s, m, h.
    #[error("{text:?}: unknown unit {unit:?} (ms, s, m, h)")]
    UnknownUnit {
        /// What was given.
        text: String,
        /// The unit in it.
        unit: String,
    },
    /// Negative, infinite or too large.
    #[error("{0:?} is not a non-negative duration that fits")]
    OutOfRange(String),
}

/// Parses a duration: `200ms`, `5s`, `15m`, `2h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let t = text.trim();
    let (number, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(at) => t.split_at(at),
        None => (t, "s"),
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| DurationError::NotANumber(text.to_string()))?;
    let scale = match unit {
        "ms" => 0.001,
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(DurationError::UnknownUnit {
                text: text.to_string(),
                unit: unit.to_string(),
            });
        }
    };
    if !(n.is_finite() && n >= 0.0) {
        return Err(DurationError::OutOfRange(text.to_string()));
    }
    Duration::try_from_secs_f64(n * scale).map_err(|_| DurationError::OutOfRange(text.to_string()))
}

/// The sinks verdicts go to besides the event stream.
#[derive(Debug, Clone, Default)]
struct Sinks {
    jsonl: Option<JsonlSink>,
    webhook: Option<WebhookSink>,
}

/// One watched sandbox's state: its baselines and its gate (shared with its run).
#[derive(Debug)]
struct Watched {
    watch: SandboxWatch,
    gate: Arc<Mutex<Gate>>,
}

/// Starts the detector (inside a tokio runtime); it stops when `stop` turns true.
pub fn spawn(
    manager: Manager,
    config: WatchConfig,
    set: Arc<WatchSet>,
    stop: signal::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, SinkError> {
    let sinks = Sinks {
        jsonl: match &config.jsonl {
            Some(path) => Some(JsonlSink::open(path, config.jsonl_max)?),
            None => None,
        },
        webhook: match &config.webhook {
            Some(url) => Some(WebhookSink::start(url)?),
            None => None,
        },
    };
    Ok(tokio::spawn(run(manager, config, set, sinks, stop)))
}

async fn run(
    manager: Manager,
    config: WatchConfig,
    set: Arc<WatchSet>,
    sinks: Sinks,
    mut stop: signal::Receiver<bool>,
) {
    let thresholds = config.thresholds();
    // The daemon's own provider variables: the detector runs on nobody's request.
    let env = proto::operate::forwarded_env();
    let mut state: HashMap<String, Watched> = HashMap::new();
    let flagged = Arc::new(crate::coordinator::detector::Flagged::default());
    let mut tick = tokio::time::interval(config.interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(
        interval_ms = config.interval.as_millis() as u64,
        default = config.default_on,
        "detector started"
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if !set.any() {
            state.clear();
            continue;
        }
        let ids: Vec<String> = manager
            .ids()
            .into_iter()
            .filter(|id| set.watched(id))
            .collect();
        state.retain(|id, _| ids.binary_search(id).is_ok());
        // One blocking pass for all of them; a sandbox restarting or crashed is left out.
        let sampled = manager.gauges(&ids).await;
        let now = Instant::now();
        for (id, usage) in sampled {
            let entry = state.entry(id.clone()).or_insert_with(|| Watched {
                watch: SandboxWatch::new(thresholds.window),
                gate: Arc::new(Mutex::new(Gate::new(config.cooldown, config.max_per_hour))),
            });
            let sample = sample_of(&usage, entry.watch.cpu_percent(now, usage.cpu_time_ms));
            let flags = entry.watch.observe(&sample, &thresholds);
            if flags.is_empty() {
                continue;
            }
            flagged.mark(&id, now);
            for flag in flags.iter().filter(|f| f.new) {
                manager.events().sandbox(&id, anomaly_event(flag));
                if let Some(j) = &sinks.jsonl {
                    j.write(
                        &json!({"kind": "anomaly", "time": sandbox::events::now_rfc3339(),
                        "sandbox": id, "anomaly": anomaly_json(flag)}),
                    );
                }
            }
            // A rule's flag first: it is what the operator's skill checks.
            let flag = flags
                .iter()
                .find(|f| f.z.is_none())
                .unwrap_or(&flags[0])
                .clone();
            let decision = entry
                .gate
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .ask(now);
            match decision {
                Decision::Run => {
                    let run = operator::ids::new_id();
                    manager.events().sandbox(
                        &id,
                        EventKind::DetectorTrigger {
                            metric: flag.metric.name().to_string(),
                            run: run.clone(),
                        },
                    );
                    let job = Job {
                        manager: manager.clone(),
                        config: config.clone(),
                        env: env.clone(),
                        id: id.clone(),
                        run,
                        flags: flags.clone(),
                        flag,
                        sinks: sinks.clone(),
                        gate: Arc::clone(&entry.gate),
                        flagged: Arc::clone(&flagged),
                    };
                    // Runs take seconds (a model's answer): never inside the sampling loop.
                    tokio::spawn(job.run());
                }
                Decision::Held(reason) => {
                    manager.events().sandbox(
                        &id,
                        EventKind::DetectorHeld {
                            metric: flag.metric.name().to_string(),
                            reason: reason.to_string(),
                        },
                    );
                }
                Decision::Quiet => {}
            }
        }
    }
}

fn sample_of(u: &Gauges, cpu_percent: f64) -> Sample {
    [
        u.processes as f64,
        u.memory_bytes as f64,
        u.threads as f64,
        cpu_percent,
        u.open_fds as f64,
    ]
}

fn anomaly_event(flag: &Flag) -> EventKind {
    EventKind::DetectorAnomaly {
        metric: flag.metric.name().to_string(),
        value: flag.value,
        mean: flag.mean,
        z: flag.z,
        rule: flag.rule.clone(),
    }
}

fn anomaly_json(flag: &Flag) -> serde_json::Value {
    json!({"metric": flag.metric.name(), "value": flag.value, "mean": flag.mean,
        "z": flag.z, "rule": flag.rule})
}

/// One operator run the detector started.
struct Job {
    manager: Manager,
    config: WatchConfig,
    env: std::collections::BTreeMap<String, String>,
    id: String,
    run: String,
    flags: Vec<Flag>,
    flag: Flag,
    sinks: Sinks,
    gate: Arc<Mutex<Gate>>,
    flagged: Arc<crate::coordinator::detector::Flagged>,
}

impl Job {
    async fn run(self) {
        let began = Instant::now();
        let req = OperateRequest {
            id: self.id.clone(),
            skill: SkillKind::Anomaly,
            provider: self.config.provider.clone(),
            model: self.config.model.clone(),
            env: self.env.clone(),
            max_iterations: Some(self.config.max_iterations),
            timeout_ms: Some(self.config.run_timeout.as_millis().min(u64::MAX as u128) as u64),
        };
        let flagged: Vec<_> = self.flags.iter().map(anomaly_json).collect();
        let context = json!({
            "reason": format!(
                "the host's detector flagged this sandbox: {} = {} ({}). Take a snapshot \
                 (only it is the truth), notify if a threshold is exceeded, set_state, then done.",
                self.flag.metric, self.flag.value, self.flag.rule
            ),
            "anomaly": flagged,
        });
        let ran =
            crate::operate::operate_run(&self.manager, req, "detector", &self.run, context).await;
        let mut verdict = Verdict {
            kind: "verdict",
            time: sandbox::events::now_rfc3339(),
            sandbox: self.id.clone(),
            run: self.run.clone(),
            anomaly: anomaly_json(&self.flag),
            state: "unknown".into(),
            summary: String::new(),
            notifications: Vec::new(),
            accepted: false,
            guardrail: None,
        };
        match ran {
            Ok(outcome) => {
                verdict.state = outcome.state.as_str().to_string();
                verdict.summary = outcome.summary.clone();
                verdict.notifications = outcome
                    .notifications
                    .iter()
                    .filter_map(|n| serde_json::to_value(n).ok())
                    .collect();
                // The same check as the demo's, against the sandbox as it is now.
                let checked = match (outcome.no_verdict(), &outcome.error) {
                    (Some(why), _) => Err(why),
                    (None, Some(e)) => Err(format!("operator failed: {e}")),
                    (None, None) => match self.manager.usage(&self.id).await {
                        Ok(live) => {
                            guardrail(Check::Anomaly, live.processes, PROCESS_THRESHOLD, &outcome)
                                .map_err(|c| c.to_string())
                        }
                        Err(e) => Err(format!("no live telemetry to check against: {e}")),
                    },
                };
                verdict.accepted = checked.is_ok();
                verdict.guardrail = checked.err();
            }
            Err(e) => {
                // No run began (e.g. the provider is misconfigured): close the trigger's run.
                self.manager.events().sandbox(
                    &self.id,
                    EventKind::OperatorNoVerdict {
                        run: self.run.clone(),
                        reason: e.to_string(),
                    },
                );
                verdict.guardrail = Some(e.to_string());
            }
        }
        tracing::info!(sandbox = %self.id, run = %self.run, state = %verdict.state,
            accepted = verdict.accepted, "detector verdict");
        if let Some(j) = &self.sinks.jsonl {
            j.write(&verdict);
        }
        let notified = !verdict.notifications.is_empty();
        if let Some(w) = &self.sinks.webhook {
            w.send(verdict);
        }
        if self.config.coordinate && notified {
            let setup = crate::coordinator::detector::Setup {
                provider: self.config.provider.clone(),
                model: self.config.model.clone(),
                env: self.env.clone(),
                deadline: self.config.run_timeout,
                window: self.config.interval * (self.config.consecutive + 2),
            };
            crate::coordinator::detector::coordinate(
                &self.manager,
                &self.flagged,
                &setup,
                &self.id,
                began,
            )
            .await;
        }
        self.gate
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finished();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        let cases = [
            ("200ms", Some(Duration::from_millis(200))),
            ("5s", Some(Duration::from_secs(5))),
            ("5", Some(Duration::from_secs(5))),
            ("15m", Some(Duration::from_secs(900))),
            ("2h", Some(Duration::from_secs(7200))),
            ("1.5s", Some(Duration::from_millis(1500))),
            ("5 parsecs", None),
            ("-1s", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_duration(text).ok(), want, "{text}");
        }
    }

    #[test]
    fn a_create_choice_beats_the_default() {
        let off = WatchSet::new(false);
        assert!(!off.any());
        off.set("a", Some(true));
        assert!(off.watched("a") && !off.watched("b") && off.any());
        off.remove("a");
        assert!(!off.any());
        let on = WatchSet::new(true);
        on.set("a", Some(false));
        assert!(!on.watched("a") && on.watched("b"));
    }

    #[test]
    fn the_learning_window_is_counted_in_samples() {
        let c = WatchConfig::default();
        assert_eq!(c.thresholds().window, 1440);
        assert_eq!(c.rules[0].to_string(), "processes > 10");
        assert_eq!(
            (c.run_timeout, c.max_iterations),
            (Duration::from_secs(30), 5)
        );
    }
}
