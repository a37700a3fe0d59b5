//! The detector's decisions, free of I/O so they can be tested with made-up samples and
//! clocks: which metrics of a sample are out of line ([`SandboxWatch`]), and whether an
//! operator run may start now ([`Gate`]).

use std::collections::VecDeque;
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::baseline::Baseline;

/// A metric the detector watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Metric {
    /// Live processes.
    Processes,
    /// Memory in bytes.
    MemoryBytes,
    /// Threads.
    Threads,
    /// CPU in percent of one core, from the detector's own CPU-time deltas.
    CpuPercent,
    /// Open file descriptors.
    OpenFds,
}

impl Metric {
    /// Every metric, in the order samples list them.
    pub const ALL: [Metric; 5] = [
        Metric::Processes,
        Metric::MemoryBytes,
        Metric::Threads,
        Metric::CpuPercent,
        Metric::OpenFds,
    ];

    /// The metric's name, as `Usage` and the events spell it.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Processes => "processes",
            Metric::MemoryBytes => "memory_bytes",
            Metric::Threads => "threads",
            Metric::CpuPercent => "cpu_percent",
            Metric::OpenFds => "open_fds",
        }
    }

    /// The smallest standard deviation a z-score divides by: a metric that never moved has
    /// none, and then a single extra process, fd or page would be infinitely unusual.
    fn min_std(self, mean: f64) -> f64 {
        let absolute: f64 = match self {
            Metric::Processes | Metric::Threads | Metric::OpenFds => 1.0,
            Metric::MemoryBytes => 1024.0 * 1024.0,
            Metric::CpuPercent => 2.0,
        };
        absolute.max(0.05 * mean.abs())
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One sample of a sandbox: a value per metric, in [`Metric::ALL`] order.
pub type Sample = [f64; 5];

/// A comparison of a static rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
}

/// A static rule, e.g. `processes>10`: holds, and flags its metric, on any one sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The metric.
    pub metric: Metric,
    /// How it compares.
    pub cmp: Cmp,
    /// With what.
    pub value: f64,
}

/// Why a rule did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rule {text:?}: {why} (expected METRIC>N, >=, < or <=, METRIC one of processes, memory_bytes, threads, cpu_percent, open_fds)"
)]
pub struct RuleError {
    /// The rule as given.
    pub text: String,
    /// What is wrong with it.
    pub why: &'static str,
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(text: &str) -> Result<Rule, RuleError> {
        let err = |why| RuleError {
            text: text.to_string(),
            why,
        };
        let at = text.find(['>', '<']).ok_or_else(|| err("no comparison"))?;
        let (name, rest) = text.split_at(at);
        let (cmp, number) = match rest.as_bytes() {
            [b'>', b'=', ..] => (Cmp::Ge, &rest[2..]),
            [b'<', b'=', ..] => (Cmp::Le, &rest[2..]),
            [b'>', ..] => (Cmp::Gt, &rest[1..]),
            _ => (Cmp::Lt, &rest[1..]),
        };
        let metric = Metric::ALL
            .into_iter()
            .find(|m| m.name() == name.trim())
            .ok_or_else(|| err("unknown metric"))?;
        let value: f64 = number
            .trim()
            .parse()
            .map_err(|_| err("the limit is not a number"))?;
        if !value.is_finite() {
            return Err(err("the limit is not a finite number"));
        }
        Ok(Rule { metric, cmp, value })
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.cmp {
            Cmp::Gt => ">",
            Cmp::Ge => ">=",
            Cmp::Lt => "<",
            Cmp::Le => "<=",
        };
        write!(f, "{} {op} {}", self.metric, self.value)
    }
}

impl Rule {
    /// Whether the rule holds for `x`.
    pub fn holds(&self, x: f64) -> bool {
        match self.cmp {
            Cmp::Gt => x > self.value,
            Cmp::Ge => x >= self.value,
            Cmp::Lt => x < self.value,
            Cmp::Le => x <= self.value,
        }
    }
}

/// How the detector judges samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Samples a baseline learns over.
    pub window: u64,
    /// Samples a baseline needs before its z-scores count.
    pub min_samples: u64,
    /// |z| at or above which a sample is out of line.
    pub z: f64,
    /// Out-of-line samples in a row that flag a metric.
    pub consecutive: u32,
    /// Static rules.
    pub rules: Vec<Rule>,
}

/// A metric found out of line.
#[derive(Debug, Clone, PartialEq)]
pub struct Flag {
    /// The metric.
    pub metric: Metric,
    /// Its value.
    pub value: f64,
    /// The baseline's mean, once there is one.
    pub mean: Option<f64>,
    /// The z-score (absent when a static rule flagged it).
    pub z: Option<f64>,
    /// `zscore` or the rule, e.g. `processes > 10`.
    pub rule: String,
    /// Whether the metric was not flagged on the sample before (a new episode).
    pub new: bool,
}

/// What the detector keeps about one sandbox: a baseline and a streak per metric, and its
/// own previous CPU time (the manager's `cpu_percent` is "since anyone's previous sample").
#[derive(Debug, Clone)]
pub struct SandboxWatch {
    baselines: [Baseline; 5],
    streaks: [u32; 5],
    flagged: [bool; 5],
    cpu_prev: Option<(Instant, u64)>,
}

impl SandboxWatch {
    /// A sandbox not seen before.
    pub fn new(window: u64) -> SandboxWatch {
        SandboxWatch {
            baselines: std::array::from_fn(|_| Baseline::new(window)),
            streaks: [0; 5],
            flagged: [false; 5],
            cpu_prev: None,
        }
    }

    /// CPU percent of one core since this watch's previous sample (0 on the first).
    pub fn cpu_percent(&mut self, now: Instant, cpu_time_ms: u64) -> f64 {
        let rate = match self.cpu_prev {
            Some((then, before)) => {
                let wall_ms = now.duration_since(then).as_secs_f64() * 1000.0;
                if wall_ms > 0.0 {
                    cpu_time_ms.saturating_sub(before) as f64 / wall_ms * 100.0
                } else {
                    0.0
                }
            }
            None => 0.0,
        };
        self.cpu_prev = Some((now, cpu_time_ms));
        rate
    }

    /// Judges one sample: returns the flagged metrics, and folds the others into their
    /// baselines (an anomalous value must not become normal by being seen).
    pub fn observe(&mut self, sample: &Sample, t: &Thresholds) -> Vec<Flag> {
        let mut flags = Vec::new();
        for (i, metric) in Metric::ALL.into_iter().enumerate() {
            let x = sample[i];
            let base = &self.baselines[i];
            let rule = t.rules.iter().find(|r| r.metric == metric && r.holds(x));
            let z = (base.count() >= t.min_samples.max(1))
                .then(|| base.z(x, metric.min_std(base.mean().unwrap_or(0.0))))
                .flatten();
            let out_of_line = z.is_some_and(|z| z.abs() >= t.z);
            self.streaks[i] = if out_of_line { self.streaks[i] + 1 } else { 0 };
            let by_z = self.streaks[i] >= t.consecutive.max(1);
            if rule.is_some() || by_z {
                flags.push(Flag {
                    metric,
                    value: x,
                    mean: base.mean(),
                    z: if rule.is_some() { None } else { z },
                    rule: rule.map_or_else(|| "zscore".to_string(), |r| r.to_string()),
                    new: !self.flagged[i],
                });
                self.flagged[i] = true;
            } else {
                self.flagged[i] = false;
                if !out_of_line {
                    self.baselines[i].add(x);
                }
            }
        }
        flags
    }

    /// The baseline of `metric`.
    pub fn baseline(&self, metric: Metric) -> &Baseline {
        let i = Metric::ALL.iter().position(|m| *m == metric).unwrap_or(0);
        &self.baselines[i]
    }
}

/// Whether a run may start: one at a time per sandbox, `cooldown` after the last, at most
/// `per_hour` in any hour.
#[derive(Debug, Clone)]
pub struct Gate {
    cooldown: Duration,
    per_hour: usize,
    started: VecDeque<Instant>,
    running: bool,
    /// The hold last reported since the last run started: one `detector.held` per held
    /// period and reason (a cooldown that ends in the hourly cap reports both), not one per
    /// sample.
    held_reported: Option<&'static str>,
}

/// What the gate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Start a run.
    Run,
    /// Held back; report it (the first hold since the last run).
    Held(&'static str),
    /// Held back, already reported (or a run is still going).
    Quiet,
}

impl Gate {
    /// A gate with these limits.
    pub fn new(cooldown: Duration, per_hour: u32) -> Gate {
        Gate {
            cooldown,
            per_hour: per_hour as usize,
            started: VecDeque::new(),
            running: false,
            held_reported: None,
        }
    }

    /// Asks to start a run at `now`; on [`Decision::Run`] the run counts as started.
    pub fn ask(&mut self, now: Instant) -> Decision {
        const HOUR: Duration = Duration::from_secs(3600);
        while self
            .started
            .front()
            .is_some_and(|t| now.duration_since(*t) >= HOUR)
        {
            self.started.pop_front();
        }
        let reason = if self.running {
            return Decision::Quiet;
        } else if self
            .started
            .back()
            .is_some_and(|t| now.duration_since(*t) < self.cooldown)
        {
            "cooldown"
        } else if self.started.len() >= self.per_hour {
            "hourly_cap"
        } else {
            self.started.push_back(now);
            self.running = true;
            self.held_reported = None;
            return Decision::Run;
        };
        if self.held_reported.replace(reason) == Some(reason) {
            Decision::Quiet
        } else {
            Decision::Held(reason)
        }
    }

    /// The run that started ended.
    pub fn finished(&mut self) {
        self.running = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_and_print() {
        let ok = [
            ("processes>10", Metric::Processes, Cmp::Gt, 10.0),
            ("memory_bytes >= 1e9", Metric::MemoryBytes, Cmp::Ge, 1e9),
            (" open_fds<3", Metric::OpenFds, Cmp::Lt, 3.0),
            ("cpu_percent<=99.5", Metric::CpuPercent, Cmp::Le, 99.5),
        ];
        for (text, metric, cmp, value) in ok {
            let rule: Rule = text.parse().unwrap();
            assert_eq!(rule, Rule { metric, cmp, value }, "{text}");
        }
        assert_eq!(
            "processes>10".parse::<Rule>().unwrap().to_string(),
            "processes > 10"
        );
        for bad in [
            "processes",
            "disk>3",
            "processes>lots",
            "processes>inf",
            ">3",
            "",
        ] {
            assert!(bad.parse::<Rule>().is_err(), "{bad}");
        }
    }

    fn thresholds(rules: &str) -> Thresholds {
        Thresholds {
            window: 100,
            min_samples: 5,
            z: 3.0,
            consecutive: 3,
            rules: rules
                .split(',')
                .filter(|r| !r.is_empty())
                .map(|r| r.parse().unwrap())
                .collect(),
        }
    }

    fn procs(n: f64) -> Sample {
        [n, 1e6, n, 0.0, 10.0]
    }

    #[test]
    fn a_rule_flags_at_once_and_z_needs_a_baseline_and_a_streak() {
        // (rules, samples (process counts), the sample index of the first flag, if any)
        let cases: &[(&str, &[f64], Option<usize>)] = &[
            ("processes>10", &[2.0, 27.0], Some(1)),
            ("", &[2.0, 27.0, 27.0, 27.0], None), // no baseline yet (min 5 samples)
            ("", &[2.0, 2.0, 2.0, 2.0, 2.0, 27.0, 27.0, 27.0], Some(7)),
            ("", &[2.0, 2.0, 2.0, 2.0, 2.0, 27.0, 2.0, 27.0, 27.0], None), // broken streak
            ("", &[2.0, 2.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0], None),    // within the floor
        ];
        for (rules, samples, first) in cases {
            let t = thresholds(rules);
            let mut w = SandboxWatch::new(t.window);
            let got = samples
                .iter()
                .position(|&n| !w.observe(&procs(n), &t).is_empty());
            assert_eq!(got, *first, "{rules:?} {samples:?}");
        }
    }

    #[test]
    fn flagged_samples_stay_out_of_the_baseline_and_episodes_are_marked_new() {
        let t = thresholds("processes>10");
        let mut w = SandboxWatch::new(t.window);
        for _ in 0..5 {
            assert!(w.observe(&procs(2.0), &t).is_empty());
        }
        let first = w.observe(&procs(27.0), &t);
        assert_eq!(
            first.len(),
            1,
            "processes by rule; threads only after a streak: {first:?}"
        );
        assert!(first.iter().all(|f| f.new));
        let again = w.observe(&procs(27.0), &t);
        assert!(
            again
                .iter()
                .any(|f| f.metric == Metric::Processes && !f.new)
        );
        assert_eq!(w.baseline(Metric::Processes).mean(), Some(2.0));
        assert_eq!(w.baseline(Metric::Processes).count(), 5);
    }

    #[test]
    fn the_gate_runs_one_at_a_time_then_cools_down_then_caps() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut g = Gate::new(15 * min, 3);
        assert_eq!(g.ask(t0), Decision::Run);
        assert_eq!(g.ask(t0 + min), Decision::Quiet, "still running");
        g.finished();
        assert_eq!(g.ask(t0 + min), Decision::Held("cooldown"));
        assert_eq!(g.ask(t0 + 2 * min), Decision::Quiet, "reported once");
        assert_eq!(g.ask(t0 + 15 * min), Decision::Run);
        g.finished();
        assert_eq!(g.ask(t0 + 30 * min), Decision::Run);
        g.finished();
        assert_eq!(g.ask(t0 + 45 * min), Decision::Held("hourly_cap"));
        assert_eq!(
            g.ask(t0 + 61 * min),
            Decision::Run,
            "the first run is an hour old"
        );
    }

    #[test]
    fn a_cooldown_that_ends_in_the_hourly_cap_reports_the_cap() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut g = Gate::new(5 * min, 1);
        assert_eq!(g.ask(t0), Decision::Run);
        g.finished();
        assert_eq!(g.ask(t0 + min), Decision::Held("cooldown"));
        assert_eq!(g.ask(t0 + 2 * min), Decision::Quiet);
        // The cooldown is over; the hour is not: the sandbox is held for another reason.
        assert_eq!(g.ask(t0 + 6 * min), Decision::Held("hourly_cap"));
        assert_eq!(g.ask(t0 + 7 * min), Decision::Quiet);
        assert_eq!(g.ask(t0 + 60 * min), Decision::Run);
    }
}
