//! The event stream: one typed record for everything that happens to a sandbox, an operator
//! run or the detector, kept in a bounded ring for late subscribers and fanned out to live
//! ones.
//!
//! Every event is one JSON object: `seq` (from 1, without gaps within a daemon's life),
//! `time` (RFC 3339 UTC, milliseconds), `event` (a stable dotted name, see [`EventKind`]),
//! `sandbox` (absent for daemon-wide events) and the kind's own fields. Names and fields are
//! a contract (`docs/events.md`): new fields may appear, none is renamed or removed.
//!
//! Memory is bounded twice: the ring holds the last `ring` events, and live subscribers
//! share one broadcast channel of `channel` slots. A subscriber that falls further behind
//! than the channel is not waited for: its next receive reports how many it lost (the
//! `lagged` marker of `host events`), and the daemon never blocks on it.
//!
//! This module knows nothing of sandboxes or operators: it is below both.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

/// Events kept for late subscribers by default.
pub const DEFAULT_RING: usize = 1_000;
/// Slots of the live channel by default (what a follower may fall behind before it lags).
pub const DEFAULT_CHANNEL: usize = 1_024;
/// Longest text field an event carries (a reason, a summary); longer ones are cut.
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
            EventKind::OperatorStarted { .. } => "operator.started",
            EventKind::OperatorSnapshot { .. } => "operator.snapshot",
            EventKind::OperatorNotification { .. } => "operator.notification",
            EventKind::OperatorState { .. } => "operator.state",
            EventKind::OperatorDone { .. } => "operator.done",
            EventKind::OperatorNoVerdict { .. } => "operator.no_verdict",
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

/// What a subscriber gets: the backlog it asked for and the live receiver, with no event
/// missing or repeated between the two.
#[derive(Debug)]
pub struct Subscription {
    /// The ring's events at the moment of subscribing (oldest first), filtered.
    pub backlog: Vec<Arc<Event>>,
    /// Everything after them.
    pub live: broadcast::Receiver<Arc<Event>>,
}

/// The daemon's event stream. Cheap to clone; every clone emits into the same stream.
#[derive(Debug, Clone)]
pub struct EventBus {
    inner: Arc<BusInner>,
}

#[derive(Debug)]
struct BusInner {
    ring: Mutex<Ring>,
    tx: broadcast::Sender<Arc<Event>>,
}

#[derive(Debug)]
struct Ring {
    next_seq: u64,
    cap: usize,
    events: VecDeque<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(DEFAULT_RING, DEFAULT_CHANNEL)
    }
}

impl EventBus {
    /// A stream that keeps the last `ring` events and lets followers fall `channel` behind.
    pub fn new(ring: usize, channel: usize) -> EventBus {
        let (tx, _) = broadcast::channel(channel.max(1));
        EventBus {
            inner: Arc::new(BusInner {
                ring: Mutex::new(Ring {
                    next_seq: 1,
                    cap: ring,
                    events: VecDeque::with_capacity(ring.min(4_096)),
                }),
                tx,
            }),
        }
    }

    /// Records an event and sends it to every follower; never blocks on one.
    pub fn emit(&self, sandbox: Option<&str>, kind: EventKind) -> Arc<Event> {
        let kind = clip(kind);
        let mut ring = self.inner.ring.lock().unwrap();
        let event = Arc::new(Event {
            seq: ring.next_seq,
            time: operator::ids::now_rfc3339(),
            sandbox: sandbox.map(str::to_string),
            kind,
        });
        ring.next_seq += 1;
        if ring.cap > 0 {
            if ring.events.len() == ring.cap {
                ring.events.pop_front();
            }
            ring.events.push_back(Arc::clone(&event));
        }
        // Sent under the ring's lock, so a subscriber (which takes the backlog and its
        // receiver under the same lock) sees each event exactly once. No receiver is fine.
        let _ = self.inner.tx.send(Arc::clone(&event));
        event
    }

    /// Emits an event about sandbox `id`.
    pub fn sandbox(&self, id: &str, kind: EventKind) -> Arc<Event> {
        self.emit(Some(id), kind)
    }

    /// Subscribes: the last `last` events of the ring that `filter` keeps, then everything
    /// new (unfiltered: the receiver filters).
    pub fn subscribe(&self, last: usize, filter: impl Fn(&Event) -> bool) -> Subscription {
        let ring = self.inner.ring.lock().unwrap();
        let live = self.inner.tx.subscribe();
        let mut backlog: Vec<Arc<Event>> = ring
            .events
            .iter()
            .rev()
            .filter(|e| filter(e))
            .take(last)
            .cloned()
            .collect();
        backlog.reverse();
        Subscription { backlog, live }
    }

    /// How many events the ring holds now.
    pub fn ring_len(&self) -> usize {
        self.inner.ring.lock().unwrap().events.len()
    }

    /// The sequence number the next event will get.
    pub fn next_seq(&self) -> u64 {
        self.inner.ring.lock().unwrap().next_seq
    }
}

/// Cuts the kind's free text to [`MAX_TEXT`] bytes (at a char boundary): a reason can quote
/// what an app printed, and the ring must stay small whatever it printed.
fn clip(mut kind: EventKind) -> EventKind {
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
    match &mut kind {
        EventKind::SandboxReloadFailed { reason, .. }
        | EventKind::WorkerRestarted { reason, .. }
        | EventKind::OperatorNoVerdict { reason, .. } => cut(reason),
        EventKind::SandboxCrashed { how, .. } => cut(how),
        EventKind::OperatorNotification { summary, .. }
        | EventKind::OperatorState { summary, .. } => cut(summary),
        _ => {}
    }
    kind
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destroyed() -> EventKind {
        EventKind::SandboxDestroyed {}
    }

    #[test]
    fn events_serialize_with_their_name_and_fields() {
        let bus = EventBus::new(4, 4);
        let cases = [
            (
                EventKind::SandboxReloaded {
                    from: 1,
                    to: 2,
                    load_us: 300,
                },
                r#""event":"sandbox.reloaded","from":1,"to":2,"load_us":300"#,
            ),
            (destroyed(), r#""event":"sandbox.destroyed""#),
        ];
        for (kind, fields) in cases {
            let name = kind.name();
            let event = bus.sandbox("a", kind);
            let text = serde_json::to_string(&*event).unwrap();
            assert!(text.contains(fields), "{text}");
            assert!(text.contains(r#""sandbox":"a""#), "{text}");
            assert!(text.contains(&format!(r#""event":"{name}""#)), "{text}");
            let back: Event = serde_json::from_str(&text).unwrap();
            assert_eq!(back, *event);
        }
    }

    #[test]
    fn the_ring_keeps_the_last_events_and_numbers_them_without_gaps() {
        let bus = EventBus::new(3, 8);
        for _ in 0..5 {
            bus.emit(None, destroyed());
        }
        let sub = bus.subscribe(10, |_| true);
        let seqs: Vec<u64> = sub.backlog.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [3, 4, 5]);
        assert_eq!(bus.subscribe(2, |_| true).backlog[0].seq, 4);
    }

    #[tokio::test]
    async fn a_subscriber_sees_each_event_once_across_backlog_and_live() {
        let bus = EventBus::new(10, 8);
        bus.emit(None, destroyed());
        let mut sub = bus.subscribe(10, |_| true);
        bus.emit(None, destroyed());
        assert_eq!(sub.backlog.len(), 1);
        assert_eq!(sub.backlog[0].seq, 1);
        assert_eq!(sub.live.recv().await.unwrap().seq, 2);
    }

    #[tokio::test]
    async fn a_slow_subscriber_lags_and_never_blocks_the_emitter() {
        let bus = EventBus::new(0, 4);
        let mut sub = bus.subscribe(0, |_| true);
        for _ in 0..100 {
            bus.emit(None, destroyed());
        }
        match sub.live.recv().await {
            Err(broadcast::error::RecvError::Lagged(n)) => assert_eq!(n, 96),
            other => panic!("expected a lag, got {other:?}"),
        }
        assert_eq!(sub.live.recv().await.unwrap().seq, 97);
    }

    #[test]
    fn long_text_is_clipped() {
        let bus = EventBus::new(1, 1);
        let e = bus.emit(
            None,
            EventKind::SandboxCrashed {
                cause: "signal".into(),
                how: "é".repeat(1000),
                final_: false,
            },
        );
        let EventKind::SandboxCrashed { how, .. } = &e.kind else {
            unreachable!()
        };
        assert!(how.len() <= MAX_TEXT + '…'.len_utf8());
    }
}
