//! The `host serve` flags of the event stream and the detector (in a module of their own, so
//! `cli` stays short).

use std::path::PathBuf;
use std::time::Duration;

use ::watch::detector::Rule;
use ::watch::{WatchConfig, parse_duration};

/// Event stream and detector options of `host serve`; see docs/watching.md.
#[derive(Debug, Clone, clap::Args)]
#[command(next_help_heading = "Events and watching")]
pub struct WatchArgs {
    /// Events kept for `host events` (the ring; followers get new ones live).
    #[arg(long, value_name = "N", default_value_t = sandbox::events::DEFAULT_RING)]
    pub event_ring: usize,
    /// Watch every sandbox (unless created with --no-watch): sample usage, flag anomalies,
    /// run the operator on them.
    #[arg(long)]
    pub watch: bool,
    /// Time between samples: 200ms, 5s, 1m.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "5s")]
    pub watch_interval: Duration,
    /// Span a baseline learns over (as a number of samples: this / the interval).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "2h")]
    pub watch_learn: Duration,
    /// Samples a baseline needs before its z-scores count.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub watch_min_samples: u64,
    /// |z| at or above which a sample is out of line.
    #[arg(long, value_name = "Z", default_value_t = 3.0)]
    pub watch_z: f64,
    /// Out-of-line samples in a row that flag a metric.
    #[arg(long, value_name = "K", default_value_t = 3)]
    pub watch_consecutive: u32,
    /// A static rule that flags at once, e.g. processes>10 (repeatable; given ones replace the
    /// default processes>10). Metrics: processes, memory_bytes, threads, cpu_percent, open_fds.
    #[arg(long, value_name = "RULE")]
    pub watch_rule: Vec<Rule>,
    /// Time after a detector run before the next may start on the same sandbox.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "15m")]
    pub watch_cooldown: Duration,
    /// Detector runs per sandbox in any hour.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub watch_max_per_hour: u32,
    /// Provider of the detector's runs [default: the daemon's BEAMLENS_DEMO_PROVIDER, else
    /// anthropic when the daemon has ANTHROPIC_API_KEY, else mock].
    #[arg(long, value_name = "PROVIDER")]
    pub watch_provider: Option<String>,
    /// Model of the detector's runs.
    #[arg(long, value_name = "MODEL")]
    pub watch_model: Option<String>,
    /// Deadline of each detector run in milliseconds; each model request may take what is
    /// left of it (raise it for a local model on a small machine).
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    pub watch_timeout: u64,
    /// Turns of each detector run.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub watch_max_iterations: u32,
    /// Append each verdict and anomaly to FILE as a JSON line.
    #[arg(long, value_name = "FILE")]
    pub watch_jsonl: Option<PathBuf>,
    /// Size at which the JSONL file is rotated to FILE.1; K, M, G suffixes.
    #[arg(long, value_name = "SIZE", value_parser = crate::limit_args::parse_size, default_value = "64M")]
    pub watch_jsonl_max: u64,
    /// POST each verdict as JSON to URL (5 s timeout, 3 retries).
    #[arg(long, value_name = "URL")]
    pub watch_webhook: Option<String>,
    /// After a detector run that notified, run the coordinator over the sandboxes flagged
    /// lately and put its insights in the event stream.
    #[arg(long)]
    pub watch_coordinator: bool,
}

/// Detector flags no detector can run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WatchArgsError {
    /// `--watch-interval` below 10 ms.
    #[error("--watch-interval must be at least 10ms")]
    IntervalTooShort,
    /// `--watch-z` not a positive number.
    #[error("--watch-z must be a positive number")]
    ZNotPositive,
}

impl WatchArgs {
    /// The detector's configuration.
    pub fn config(&self) -> Result<WatchConfig, WatchArgsError> {
        if self.watch_interval < Duration::from_millis(10) {
            return Err(WatchArgsError::IntervalTooShort);
        }
        if !(self.watch_z.is_finite() && self.watch_z > 0.0) {
            return Err(WatchArgsError::ZNotPositive);
        }
        let defaults = WatchConfig::default();
        Ok(WatchConfig {
            default_on: self.watch,
            interval: self.watch_interval,
            learn: self.watch_learn,
            min_samples: self.watch_min_samples,
            z: self.watch_z,
            consecutive: self.watch_consecutive.max(1),
            rules: if self.watch_rule.is_empty() {
                defaults.rules
            } else {
                self.watch_rule.clone()
            },
            cooldown: self.watch_cooldown,
            max_per_hour: self.watch_max_per_hour,
            provider: self.watch_provider.clone(),
            model: self.watch_model.clone(),
            run_timeout: Duration::from_millis(self.watch_timeout),
            max_iterations: self.watch_max_iterations.max(1),
            jsonl: self.watch_jsonl.clone(),
            jsonl_max: self.watch_jsonl_max,
            webhook: self.watch_webhook.clone(),
            coordinate: self.watch_coordinator,
        })
    }
}
