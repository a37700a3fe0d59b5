//! Canary reloads: a reload whose new version is on trial for a window. The previous version
//! stays installed (its library in the sandbox's store, its record in the history), so
//! swapping it back is a rollback, not a rebuild. Within the window the sandbox is watched
//! through what the host itself observes: its event stream (a worker restarted, the runner
//! crashed, the detector saw an anomaly, an operator raised a warning or critical
//! notification) and its gauges against the baseline measured just before the reload (a
//! process or memory spike, a status other than running). The first flag rolls the sandbox
//! back by itself and says why, in a `sandbox.canary_rolled_back` event and in the report.

use super::*;
use crate::events::Event;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// The longest window a canary may be watched for.
pub const MAX_CANARY_WINDOW: Duration = Duration::from_secs(600);

/// How a canary is judged.
#[derive(Debug, Clone, PartialEq)]
pub struct CanaryOptions {
    /// How long the new version is watched (at most [`MAX_CANARY_WINDOW`]).
    pub window: Duration,
    /// How often the gauges are read.
    pub poll: Duration,
    /// More processes than `factor × baseline + slack` is a spike.
    pub process_factor: f64,
    /// See `process_factor`.
    pub process_slack: u64,
    /// More memory than `factor × baseline + slack` bytes is a spike.
    pub memory_factor: f64,
    /// See `memory_factor`.
    pub memory_slack: u64,
}

impl CanaryOptions {
    /// Watch for `window` with the default thresholds: processes above 2× + 4, memory above
    /// 2× + 64 MiB, gauges read every 200 ms.
    pub fn new(window: Duration) -> CanaryOptions {
        CanaryOptions {
            window: window.min(MAX_CANARY_WINDOW),
            poll: Duration::from_millis(200),
            process_factor: 2.0,
            process_slack: 4,
            memory_factor: 2.0,
            memory_slack: 64 << 20,
        }
    }
}

/// The host's figures of a sandbox at one moment of a canary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct CanaryFigures {
    /// Live processes.
    pub processes: u64,
    /// Memory, bytes.
    pub memory_bytes: u64,
    /// Runner restarts so far.
    pub restart_count: u32,
    /// Worker restarts so far.
    pub worker_restarts: u32,
    /// Calls answered so far (the host's count).
    #[serde(default)]
    pub calls: u64,
    /// Of those, the ones that failed.
    #[serde(default)]
    pub calls_failed: u64,
}

/// What a canary reload did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CanaryReport {
    /// The reload itself.
    pub reload: ReloadReport,
    /// `kept` (the window passed), `rolled_back` (flagged, the previous version serves
    /// again), `rollback_failed` (flagged, and swapping back failed: see `reason`), or
    /// `no_change` (the same library: nothing to watch).
    pub outcome: String,
    /// What flagged it, when something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How the previous version came back, when it did: swapped back with the state, or
    /// the runner restarted on it (the swap refused, the runner down).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<String>,
    /// The version serving when the canary ended.
    pub serving: u32,
    /// Milliseconds watched.
    pub watched_ms: u64,
    /// The figures before the reload.
    pub baseline: CanaryFigures,
    /// The highest figures seen in the window.
    pub peak: CanaryFigures,
}

impl Manager {
    /// Reloads `source` into sandbox `id` as a canary (see the module docs). Errors are the
    /// reload's own (nothing was swapped); a flagged canary is `Ok` with outcome
    /// `rolled_back`.
    pub async fn reload_canary(
        &self,
        id: &str,
        source: ReloadSource,
        options: CanaryOptions,
    ) -> Result<CanaryReport, SandboxError> {
        let sb = self.get(id)?;
        let baseline = self.canary_figures(&sb).await;
        let previous = sb.current.load(Ordering::Acquire);
        // Subscribed before the swap, so nothing the new version causes is missed.
        let mut live = self.events().subscribe(0, |_| false).live;
        let reload = self.reload(id, source).await?;
        if reload.status != "reloaded" {
            return Ok(CanaryReport {
                serving: reload.to_version,
                reload,
                outcome: "no_change".into(),
                reason: None,
                rollback: None,
                watched_ms: 0,
                baseline,
                peak: baseline,
            });
        }
        let version = reload.to_version;
        let window = options.window.min(MAX_CANARY_WINDOW);
        sb.emit(EventKind::CanaryStarted {
            version,
            previous,
            window_ms: window.as_millis() as u64,
        });
        let started = Instant::now();
        let deadline = tokio::time::Instant::now() + window;
        let mut peak = baseline;
        let mut ticker = tokio::time::interval(options.poll);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let flag = loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break None,
                received = live.recv() => match received {
                    Ok(event) => if let Some(why) = flag_of(&event, id) { break Some(why) },
                    Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => {}
                },
                _ = ticker.tick() => {
                    let now = self.canary_figures(&sb).await;
                    peak = CanaryFigures {
                        processes: peak.processes.max(now.processes),
                        memory_bytes: peak.memory_bytes.max(now.memory_bytes),
                        restart_count: now.restart_count,
                        worker_restarts: now.worker_restarts,
                        calls: now.calls,
                        calls_failed: now.calls_failed,
                    };
                    if let Some(why) = spike(&options, &baseline, &now, &sb) {
                        break Some(why);
                    }
                }
            }
        };
        let watched_ms = started.elapsed().as_millis() as u64;
        let Some(reason) = flag else {
            sb.emit(EventKind::CanaryPassed {
                version,
                watched_ms,
            });
            return Ok(CanaryReport {
                reload,
                outcome: "kept".into(),
                reason: None,
                rollback: None,
                serving: version,
                watched_ms,
                baseline,
                peak,
            });
        };
        tracing::warn!(sandbox = %id, version, previous, %reason, "canary flagged; rolling back");
        let mut how = None;
        let outcome = match self.canary_back(&sb, previous).await {
            Ok(back) => {
                how = Some(back);
                sb.emit(EventKind::CanaryRolledBack {
                    from: version,
                    to: previous,
                    reason: reason.clone(),
                    after_ms: watched_ms,
                });
                "rolled_back"
            }
            Err(e) => {
                sb.emit(EventKind::SandboxReloadFailed {
                    version: sb.current.load(Ordering::Acquire),
                    reason: format!("canary rollback to v{previous} failed: {e}"),
                });
                tracing::error!(sandbox = %id, error = %e, "canary rollback failed");
                "rollback_failed"
            }
        };
        Ok(CanaryReport {
            reload,
            outcome: outcome.into(),
            reason: Some(reason),
            rollback: how,
            serving: sb.current.load(Ordering::Acquire),
            watched_ms,
            baseline,
            peak,
        })
    }

    /// Swaps `previous` back in: a rollback while the runner lives; when the canary took the
    /// runner down (crashed, restarting), the record returns to `previous` and the runner is
    /// restarted on it.
    ///
    /// A swap the previous version refuses (its `restore_state` does not take what the
    /// canary saved) also ends in a restart on it: the version that worked serves again,
    /// without the state. Returns how it went back.
    async fn canary_back(&self, sb: &Arc<Sandbox>, previous: u32) -> Result<String, SandboxError> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let why = match self.rollback(&sb.id, previous).await {
                Ok(_) => return Ok("swapped back, state carried over".into()),
                Err(SandboxError::Crashed { .. }) => {
                    let status = sb.status.lock().unwrap().0.clone();
                    if status != Status::Crashed && Instant::now() < deadline {
                        // Restarting on the canary's version: wait for it to come up.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    "the canary took the runner down".to_string()
                }
                Err(e @ (SandboxError::ReloadRefused(_) | SandboxError::Timeout { .. })) => {
                    format!("the swap back was refused: {e}")
                }
                Err(e) => return Err(e),
            };
            {
                let _swap = sb.swap_lock.lock().await;
                sb.current.store(previous, Ordering::Release);
            }
            self.restart(&sb.id).await?;
            return Ok(format!(
                "restarted on v{previous} ({why}; state not carried over)"
            ));
        }
    }

    /// The host's figures of `sb` now (zeros where it cannot be measured).
    async fn canary_figures(&self, sb: &Arc<Sandbox>) -> CanaryFigures {
        let gauges = self.gauges(std::slice::from_ref(&sb.id)).await;
        let g = gauges.first().map(|(_, g)| *g);
        CanaryFigures {
            processes: g.map_or(0, |g| g.processes),
            memory_bytes: g.map_or(0, |g| g.memory_bytes),
            restart_count: sb.restart_count.load(Ordering::Acquire),
            worker_restarts: sb.worker_restarts.load(Ordering::Acquire),
            calls: sb.calls.load(Ordering::Relaxed),
            calls_failed: sb.calls_failed.load(Ordering::Relaxed),
        }
    }
}

/// What in `event` flags sandbox `id`'s canary, if anything: the host's own observations and
/// the detector's and operator's flags (which watch the same stream).
fn flag_of(event: &Event, id: &str) -> Option<String> {
    if event.sandbox.as_deref() != Some(id) {
        return None;
    }
    match &event.kind {
        EventKind::WorkerRestarted { index, reason } => Some(format!(
            "worker {index} crashed and was restarted: {reason}"
        )),
        EventKind::SandboxCrashed { how, .. } => Some(format!("the runner crashed: {how}")),
        EventKind::DetectorAnomaly {
            metric,
            value,
            rule,
            ..
        } => Some(format!("the detector flagged {metric}={value} ({rule})")),
        EventKind::OperatorNotification {
            severity, summary, ..
        } if severity == "warning" || severity == "critical" => Some(format!(
            "the operator raised a {severity} notification: {summary}"
        )),
        _ => None,
    }
}

/// A spike of `now` against `base`, or a sandbox no longer running.
fn spike(
    o: &CanaryOptions,
    base: &CanaryFigures,
    now: &CanaryFigures,
    sb: &Sandbox,
) -> Option<String> {
    let (status, _) = sb.status.lock().unwrap().clone();
    if status != Status::Running {
        return Some(format!(
            "the sandbox is {} after the reload",
            format!("{status:?}").to_lowercase()
        ));
    }
    if now.restart_count > base.restart_count {
        return Some(format!(
            "the runner restarted {} time(s) since the reload",
            now.restart_count - base.restart_count
        ));
    }
    if now.worker_restarts > base.worker_restarts {
        return Some(format!(
            "workers restarted {} time(s) since the reload",
            now.worker_restarts - base.worker_restarts
        ));
    }
    if let Some(why) = error_rate(base, now) {
        return Some(why);
    }
    let processes = (base.processes as f64 * o.process_factor) as u64 + o.process_slack;
    if now.processes > processes {
        return Some(format!(
            "process spike: {} processes against {} before the reload (limit {processes})",
            now.processes, base.processes
        ));
    }
    let memory = (base.memory_bytes as f64 * o.memory_factor) as u64 + o.memory_slack;
    if now.memory_bytes > memory {
        return Some(format!(
            "memory spike: {} against {} before the reload (limit {})",
            proto::spec::format_bytes(now.memory_bytes),
            proto::spec::format_bytes(base.memory_bytes),
            proto::spec::format_bytes(memory)
        ));
    }
    None
}

/// Fewest calls since the reload before their error rate is judged.
const MIN_CALLS: u64 = 4;

/// A rise in the share of failed calls: since the reload at least [`MIN_CALLS`] calls, at
/// least half of them failed, and that share is a quarter or more above the share before the
/// reload (an app that always failed half its calls is not flagged for going on doing so).
fn error_rate(base: &CanaryFigures, now: &CanaryFigures) -> Option<String> {
    let calls = now.calls.saturating_sub(base.calls);
    let failed = now.calls_failed.saturating_sub(base.calls_failed);
    if calls < MIN_CALLS || failed * 2 < calls {
        return None;
    }
    let share = failed as f64 / calls as f64;
    let before = if base.calls == 0 {
        0.0
    } else {
        base.calls_failed as f64 / base.calls as f64
    };
    (share >= before + 0.25).then(|| {
        format!(
            "error rate: {failed} of {calls} calls failed since the reload ({} of {} before)",
            base.calls_failed, base.calls
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(sandbox: &str, kind: EventKind) -> Event {
        Event {
            seq: 1,
            time: String::new(),
            sandbox: Some(sandbox.into()),
            kind,
        }
    }

    #[test]
    fn flags_come_from_the_hosts_observations_of_this_sandbox_only() {
        let restarted = EventKind::WorkerRestarted {
            index: 0,
            reason: "signal SIGABRT".into(),
        };
        assert_eq!(
            flag_of(&event("a", restarted.clone()), "a").as_deref(),
            Some("worker 0 crashed and was restarted: signal SIGABRT")
        );
        assert!(flag_of(&event("b", restarted), "a").is_none());
        let info = EventKind::OperatorNotification {
            run: "r".into(),
            severity: "info".into(),
            summary: "fine".into(),
        };
        assert!(flag_of(&event("a", info), "a").is_none());
        let warn = EventKind::OperatorNotification {
            run: "r".into(),
            severity: "warning".into(),
            summary: "process count elevated".into(),
        };
        assert!(flag_of(&event("a", warn), "a").unwrap().contains("warning"));
    }

    #[test]
    fn a_rise_in_failed_calls_flags_the_canary() {
        let figures = |calls, calls_failed| CanaryFigures {
            calls,
            calls_failed,
            ..CanaryFigures::default()
        };
        // (before: calls, failed), (now: calls, failed), flagged
        let table = [
            ((0, 0), (4, 2), true),      // half of four failed, none before
            ((0, 0), (3, 3), false),     // too few calls to judge
            ((10, 0), (14, 1), false),   // one of four
            ((10, 5), (14, 7), false),   // half before, half after
            ((10, 1), (20, 9), true),    // 8 of 10 against 1 of 10
            ((100, 0), (110, 10), true), // every call since the reload
        ];
        for ((bc, bf), (nc, nf), flagged) in table {
            let got = error_rate(&figures(bc, bf), &figures(nc, nf));
            assert_eq!(got.is_some(), flagged, "{bc}/{bf} -> {nc}/{nf}: {got:?}");
        }
        let why = error_rate(&figures(10, 1), &figures(20, 9)).unwrap();
        assert_eq!(
            why,
            "error rate: 8 of 10 calls failed since the reload (1 of 10 before)"
        );
    }

    #[test]
    fn the_window_is_capped() {
        let o = CanaryOptions::new(Duration::from_secs(100_000));
        assert_eq!(o.window, MAX_CANARY_WINDOW);
    }
}
