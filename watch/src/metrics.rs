//! Prometheus metrics of the daemon (`host serve --metrics ADDR`, `GET /metrics`).
//!
//! Per-sandbox figures are read from [`Manager::usage`] when scraped, so they are as fresh
//! as `host usage`; the per-sandbox families are cleared first, so a destroyed sandbox's
//! series disappear with it. Latencies, operator verdicts and detector triggers are derived
//! from the event stream ([`Metrics::follow`]); call latency is recorded by the daemon around
//! each call ([`Metrics::observe_call`]).
//!
//! What a scrape can cost is bounded: per-sandbox series for at most [`Metrics::cap`]
//! sandboxes (the rest are counted in `sandbox_host_sandboxes_omitted`), usage reads
//! [`USAGE_PARALLEL`] at a time with a timeout each, one scrape computing at a time and at
//! most [`MAX_SCRAPES`] waiting (more get 503). Label values a client chose (sandbox ids)
//! are escaped by the encoder; label values the host chose are from small fixed sets.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};
use tokio::sync::{Semaphore, broadcast, watch};

use sandbox::events::{Event, EventBus, EventKind};
use sandbox::{Manager, Usage};

/// Sandboxes with per-sandbox series by default.
pub const DEFAULT_CAP: usize = 1_000;
/// Scrapes in the server at once (computing or waiting); more are answered 503.
pub const MAX_SCRAPES: usize = 4;
/// Usage reads of one scrape in parallel.
pub const USAGE_PARALLEL: usize = 8;
/// How long one sandbox's usage read may take before the scrape leaves it out.
const USAGE_TIMEOUT: Duration = Duration::from_secs(2);
/// Distinct detector metric names kept as label values; the rest count as `other`.
const MAX_DETECTOR_LABELS: usize = 32;
/// Verdicts an operator run ends with, as label values.
const VERDICTS: [&str; 5] = ["healthy", "warning", "critical", "unknown", "no_verdict"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SandboxLabel {
    sandbox: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabel {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InsightLabel {
    correlation: &'static str,
    grounded: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MetricLabel {
    metric: String,
}

type PerSandbox = Family<SandboxLabel, Gauge>;
type PerSandboxCounter = Family<SandboxLabel, Counter<f64, std::sync::atomic::AtomicU64>>;

/// The per-sandbox families, refilled by every scrape.
#[derive(Debug, Default)]
struct SandboxFamilies {
    memory: PerSandbox,
    processes: PerSandbox,
    threads: PerSandbox,
    cpu: PerSandboxCounter,
    runner_restarts: PerSandboxCounter,
    worker_restarts: PerSandboxCounter,
    oom_kills: PerSandboxCounter,
    disk: PerSandbox,
}

/// The daemon's metrics: one registry, its handles, and the scrape bounds.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    per: SandboxFamilies,
    sandboxes: Gauge,
    omitted: Gauge,
    create: Histogram,
    reload: Histogram,
    call: Family<OutcomeLabel, Histogram>,
    operator_runs: Family<VerdictLabel, Counter>,
    detector_triggers: Family<MetricLabel, Counter>,
    insights: Family<InsightLabel, Counter>,
    detector_labels: Mutex<HashSet<String>>,
    events_lagged: Counter,
    llm: crate::llm_metrics::LlmMetrics,
    cap: usize,
    scrapes: Semaphore,
    computing: tokio::sync::Mutex<()>,
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~105 s, doubling: a call, a reload and a create all fit.
    Histogram::new(exponential_buckets(0.000_1, 2.0, 21))
}

impl Metrics {
    /// A permit to compute one scrape, if fewer than [`MAX_SCRAPES`] wait already.
    pub fn try_scrape(&self) -> Option<tokio::sync::SemaphorePermit<'_>> {
        self.scrapes.try_acquire().ok()
    }

    /// Empty metrics with per-sandbox series for at most `cap` sandboxes.
    pub fn new(cap: usize) -> Metrics {
        let mut registry = Registry::with_prefix("sandbox_host");
        let per = SandboxFamilies::default();
        let m = Metrics {
            per,
            sandboxes: Gauge::default(),
            omitted: Gauge::default(),
            create: latency_histogram(),
            reload: latency_histogram(),
            call: Family::new_with_constructor(latency_histogram),
            operator_runs: Family::default(),
            detector_triggers: Family::default(),
            insights: Family::default(),
            detector_labels: Mutex::new(HashSet::new()),
            events_lagged: Counter::default(),
            llm: Default::default(),
            cap,
            scrapes: Semaphore::new(MAX_SCRAPES),
            computing: tokio::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        let p = &m.per;
        let r = &mut registry;
        r.register_with_unit(
            "sandbox_memory",
            "Memory of the sandbox (cgroup figure, else summed resident sets)",
            Unit::Bytes,
            p.memory.clone(),
        );
        r.register(
            "sandbox_processes",
            "Live processes in the sandbox",
            p.processes.clone(),
        );
        r.register(
            "sandbox_threads",
            "Threads over the sandbox's processes",
            p.threads.clone(),
        );
        r.register_with_unit(
            "sandbox_cpu",
            "CPU time of the sandbox, reaped children included",
            Unit::Seconds,
            p.cpu.clone(),
        );
        r.register(
            "sandbox_runner_restarts",
            "Runner restarts (crashes and explicit restarts)",
            p.runner_restarts.clone(),
        );
        r.register(
            "sandbox_worker_restarts",
            "Worker restarts by the current runner's supervisor",
            p.worker_restarts.clone(),
        );
        r.register(
            "sandbox_oom_kills",
            "Processes the kernel's OOM killer killed in the sandbox (cgroup only)",
            p.oom_kills.clone(),
        );
        r.register_with_unit(
            "sandbox_disk",
            "Bytes on the sandbox's capped disk (/work and /tmp)",
            Unit::Bytes,
            p.disk.clone(),
        );
        r.register(
            "sandboxes",
            "Sandboxes the daemon owns",
            m.sandboxes.clone(),
        );
        r.register(
            "sandboxes_omitted",
            "Sandboxes left out of the per-sandbox series (over the cap, or usage unreadable)",
            m.omitted.clone(),
        );
        r.register_with_unit(
            "create_duration",
            "Time from a create request to the sandbox being ready",
            Unit::Seconds,
            m.create.clone(),
        );
        r.register_with_unit(
            "reload_duration",
            "Time the app process took to load and swap in a new version",
            Unit::Seconds,
            m.reload.clone(),
        );
        r.register_with_unit(
            "call_duration",
            "Time of a call through the daemon, by outcome (ok, error)",
            Unit::Seconds,
            m.call.clone(),
        );
        r.register(
            "operator_runs",
            "Operator runs ended, by verdict",
            m.operator_runs.clone(),
        );
        r.register(
            "detector_triggers",
            "Operator runs the detector started, by metric",
            m.detector_triggers.clone(),
        );
        r.register(
            "insights",
            "Coordinator insights raised, by correlation and whether they are grounded",
            m.insights.clone(),
        );
        r.register(
            "metrics_events_lagged",
            "Events the metrics missed because they fell behind the event stream",
            m.events_lagged.clone(),
        );
        m.llm.register(r);
        Metrics { registry, ..m }
    }

    /// The most sandboxes with per-sandbox series.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Records one call through the daemon.
    pub fn observe_call(&self, elapsed: Duration, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        self.call
            .get_or_create(&OutcomeLabel { outcome })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts what one event says.
    pub fn record(&self, event: &Event) {
        match &event.kind {
            EventKind::SandboxCreated { ready_us, .. } => {
                self.create.observe(*ready_us as f64 / 1e6);
            }
            EventKind::SandboxReloaded { load_us, .. } => {
                self.reload.observe(*load_us as f64 / 1e6);
            }
            EventKind::OperatorDone { state, .. } => self.verdict(state),
            EventKind::LlmCall { .. } => self.llm.record(&event.kind),
            EventKind::OperatorNoVerdict { .. } => self.verdict("no_verdict"),
            EventKind::OperatorInsight {
                correlation,
                grounded,
                ..
            } => {
                let correlation = ["temporal", "causal", "symptomatic"]
                    .into_iter()
                    .find(|c| c == correlation)
                    .unwrap_or("other");
                let grounded = if *grounded { "true" } else { "false" };
                self.insights
                    .get_or_create(&InsightLabel {
                        correlation,
                        grounded,
                    })
                    .inc();
            }
            EventKind::DetectorTrigger { metric, .. } => {
                let mut seen = self.detector_labels.lock().unwrap();
                let metric = if seen.contains(metric) || seen.len() < MAX_DETECTOR_LABELS {
                    seen.insert(metric.clone());
                    metric.clone()
                } else {
                    "other".to_string()
                };
                self.detector_triggers
                    .get_or_create(&MetricLabel { metric })
                    .inc();
            }
            _ => {}
        }
    }

    fn verdict(&self, state: &str) {
        let verdict = VERDICTS
            .iter()
            .find(|v| **v == state)
            .copied()
            .unwrap_or("other");
        self.operator_runs
            .get_or_create(&VerdictLabel { verdict })
            .inc();
    }

    /// Follows the event stream until `stop` turns true; never holds the stream back (a lag
    /// is counted in `sandbox_host_metrics_events_lagged_total`).
    pub async fn follow(self: Arc<Self>, bus: EventBus, mut stop: watch::Receiver<bool>) {
        let mut live = bus.subscribe(0, |_| false).live;
        loop {
            tokio::select! {
                received = live.recv() => match received {
                    Ok(event) => self.record(&event),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        self.events_lagged.inc_by(n);
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                changed = stop.changed() => if changed.is_err() || *stop.borrow() {
                    return;
                },
            }
        }
    }

    /// Reads every live sandbox's usage and renders the registry in the text format.
    pub async fn render(&self, manager: &Manager) -> String {
        let _one = self.computing.lock().await;
        let ids = manager.ids();
        let total = ids.len();
        let usages: Vec<Usage> = futures_util::stream::iter(ids.into_iter().take(self.cap))
            .map(|id| async move {
                tokio::time::timeout(USAGE_TIMEOUT, manager.usage(&id))
                    .await
                    .ok()
                    .and_then(Result::ok)
            })
            .buffer_unordered(USAGE_PARALLEL)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let p = &self.per;
        for family in [&p.memory, &p.processes, &p.threads, &p.disk] {
            family.clear();
        }
        for family in [&p.cpu, &p.runner_restarts, &p.worker_restarts, &p.oom_kills] {
            family.clear();
        }
        let gauge = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        for u in &usages {
            let l = SandboxLabel {
                sandbox: u.sandbox_id.clone(),
            };
            p.memory.get_or_create(&l).set(gauge(u.memory_bytes));
            p.processes.get_or_create(&l).set(gauge(u.processes));
            p.threads.get_or_create(&l).set(gauge(u.threads));
            p.cpu
                .get_or_create(&l)
                .inc_by(u.cpu_time_ms as f64 / 1000.0);
            p.runner_restarts
                .get_or_create(&l)
                .inc_by(f64::from(u.restart_count));
            p.worker_restarts
                .get_or_create(&l)
                .inc_by(f64::from(u.worker_restarts));
            if let Some(n) = u.oom_kills {
                p.oom_kills.get_or_create(&l).inc_by(n as f64);
            }
            if let Some(n) = u.disk_bytes {
                p.disk.get_or_create(&l).set(gauge(n));
            }
        }
        self.sandboxes.set(gauge(total as u64));
        self.omitted.set(gauge((total - usages.len()) as u64));
        let mut out = String::with_capacity(4096 + usages.len() * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Rewrites OpenMetrics text as the classic format: a counter's family is named with its
/// `_total` suffix (OpenMetrics names it without), and `# UNIT` and `# EOF` are dropped.
pub fn to_classic(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut help: Option<(&str, &str)> = None;
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# HELP ") {
            help = rest.split_once(' ').or(Some((rest, "")));
            continue;
        }
        if let Some((name, kind)) = line.strip_prefix("# TYPE ").and_then(|r| r.split_once(' ')) {
            let (name, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "gauge" | "histogram" | "summary" => (name.to_string(), kind),
                _ => (name.to_string(), "untyped"),
            };
            if let Some((_, text)) = help.take() {
                out.push_str(&format!("# HELP {name} {text}\n"));
            }
            out.push_str(&format!("# TYPE {name} {kind}\n"));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sandbox: Option<&str>, kind: EventKind) -> Event {
        Event {
            seq: 1,
            time: String::new(),
            sandbox: sandbox.map(str::to_string),
            kind,
        }
    }

    #[test]
    fn events_feed_histograms_and_counters_with_bounded_labels() {
        let m = Metrics::new(10);
        m.record(&event(
            Some("a"),
            EventKind::SandboxCreated {
                pid: 1,
                version: 1,
                isolation: "standard".into(),
                ready_us: 20_000,
            },
        ));
        m.record(&event(
            Some("a"),
            EventKind::OperatorDone {
                run: "r".into(),
                state: "<weird>".into(),
                stop: "done".into(),
                notifications: 0,
            },
        ));
        for i in 0..40 {
            m.record(&event(
                None,
                EventKind::DetectorTrigger {
                    metric: format!("m{i}"),
                    run: "r".into(),
                },
            ));
        }
        m.record(&event(
            None,
            EventKind::OperatorInsight {
                run: "r".into(),
                id: "i".into(),
                correlation: "causal".into(),
                hypothesis: "h".into(),
                grounded: false,
                ungrounded: Some("x".into()),
                state: "warning".into(),
                confidence: 0.5,
                notifications: 1,
                sandboxes: vec![],
            },
        ));
        m.observe_call(Duration::from_millis(3), true);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &m.registry).unwrap();
        assert!(
            out.contains("sandbox_host_create_duration_seconds_count 1"),
            "{out}"
        );
        assert!(out.contains(r#"sandbox_host_operator_runs_total{verdict="other"} 1"#));
        assert!(out.contains(r#"sandbox_host_detector_triggers_total{metric="other"} 8"#));
        assert!(out.contains(r#"sandbox_host_call_duration_seconds_count{outcome="ok"} 1"#));
        assert!(
            out.contains(r#"sandbox_host_insights_total{correlation="causal",grounded="false"} 1"#),
            "{out}"
        );
        assert_eq!(m.detector_labels.lock().unwrap().len(), MAX_DETECTOR_LABELS);
        let classic = to_classic(&out);
        assert!(classic.contains("# TYPE sandbox_host_operator_runs_total counter\n"));
        assert!(classic.contains("# HELP sandbox_host_operator_runs_total Operator runs"));
        assert!(!classic.contains("# EOF") && !classic.contains("# UNIT"));
    }
}
