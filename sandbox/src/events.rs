//! The event stream: the records of `proto::events`, kept in a bounded ring for late
//! subscribers and fanned out to live ones.
//!
//! Memory is bounded twice: the ring holds the last `ring` events, and live subscribers
//! share one broadcast channel of `channel` slots. A subscriber that falls further behind
//! than the channel is not waited for: its next receive reports how many it lost (the
//! `lagged` marker of `host events`), and the daemon never blocks on it.
//!
//! This module knows nothing of sandboxes or operators: it is below both.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

pub use proto::events::{Event, EventKind, MAX_TEXT, now_rfc3339};
use tokio::sync::broadcast;

/// Events kept for late subscribers by default.
pub const DEFAULT_RING: usize = 1_000;
/// Slots of the live channel by default (what a follower may fall behind before it lags).
pub const DEFAULT_CHANNEL: usize = 1_024;

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
        let kind = kind.clipped();
        let mut ring = self.inner.ring.lock().unwrap();
        let event = Arc::new(Event {
            seq: ring.next_seq,
            time: now_rfc3339(),
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
