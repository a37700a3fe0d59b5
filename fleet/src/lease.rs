//! A leader lease: one node of the fleet holds it at a time, e.g. the fleet-wide correlation of
//! the coordinator (`host serve --cluster ... --watch-coordinator` on several nodes: each
//! node's coordinator covers its own sandboxes, and the holder alone correlates across nodes,
//! see `correlate`). The lease is the key `lease.NAME` of the nodes bucket, whose entries lapse
//! three seconds after their last write: a node takes it with a create-only put (only one
//! such put of a missing key succeeds), the holder refreshes it every second by
//! compare-and-set on its revision, and when the holder dies the key lapses and the next
//! create wins. The holder counts itself leader only while its last refresh is younger than
//! [`TRUST`], so it stops before the key can lapse and another node take it. Each change of
//! leader is a `fleet.leader` event on the events stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};

use crate::lattice::{HEARTBEAT, NODE_TTL, now_ms};
use crate::node::Node;

/// The coordinator's lease.
pub const COORDINATOR: &str = "coordinator";
/// How long after its last refresh the holder still counts itself leader (below the key's
/// lapse of [`NODE_TTL`], so two nodes never both count themselves leader).
pub const TRUST: Duration = Duration::from_millis(2_000);

/// The lease's key in the nodes bucket (node names have no dot, so it is no node's key).
pub fn key(name: &str) -> String {
    format!("lease.{name}")
}

/// What the lease's key holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The lease's name.
    pub lease: String,
    /// The node that holds it.
    pub holder: String,
    /// Since when it holds it, in milliseconds since the Unix epoch.
    pub since_ms: u64,
    /// Its last refresh, likewise.
    pub renewed_ms: u64,
}

/// Holds lease `name` whenever it can, for ever; `leader` is set while this node holds it.
pub(crate) async fn hold(node: Arc<Node>, name: &'static str, leader: Arc<AtomicBool>) {
    const _: () = assert!(TRUST.as_millis() + 500 < NODE_TTL.as_millis());
    let key = key(name);
    let mut held: Option<(u64, Instant, u64)> = None; // (revision, last refresh, since)
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let was = leader.load(Ordering::SeqCst);
        held = step(&node, name, &key, held).await;
        let now = held.is_some_and(|(_, at, _)| at.elapsed() < TRUST);
        leader.store(now, Ordering::SeqCst);
        if now != was {
            tracing::info!(lease = name, leader = now, "fleet: leader lease changed");
            announce(&node, name, now).await;
        }
    }
}

/// One turn: takes the lease when nobody holds it, refreshes it when this node does.
async fn step(
    node: &Node,
    name: &str,
    key: &str,
    held: Option<(u64, Instant, u64)>,
) -> Option<(u64, Instant, u64)> {
    let store = &node.lattice.nodes;
    let current = match store.entry(key).await {
        Ok(entry) => entry.filter(|e| e.operation == kv::Operation::Put),
        // JetStream does not answer: keep what we had (it lapses by TRUST).
        Err(e) => {
            tracing::debug!(error = %e, "fleet: the lease was not read");
            return held;
        }
    };
    let record = |since_ms: u64| LeaseRecord {
        lease: name.to_string(),
        holder: node.name.clone(),
        since_ms,
        renewed_ms: now_ms(),
    };
    let encode = |r: &LeaseRecord| serde_json::to_vec(r).unwrap_or_default();
    match current {
        None => {
            let since = now_ms();
            match store.create(key, encode(&record(since)).into()).await {
                Ok(revision) => Some((revision, Instant::now(), since)),
                Err(_) => None,
            }
        }
        Some(entry) => {
            let found = serde_json::from_slice::<LeaseRecord>(&entry.value).ok();
            match found {
                // Ours (maybe an earlier run of a node of this name): refreshed.
                Some(found) if found.holder == node.name => {
                    let since = held.map_or(found.since_ms, |(_, _, since)| since);
                    match store
                        .update(key, encode(&record(since)).into(), entry.revision)
                        .await
                    {
                        Ok(revision) => Some((revision, Instant::now(), since)),
                        Err(_) => None,
                    }
                }
                _ => None,
            }
        }
    }
}

/// Says on the events stream that this node now is (or no longer is) the lease's leader.
async fn announce(node: &Node, name: &str, leader: bool) {
    let message = match leader {
        true => format!("node {} is the fleet's {name} leader", node.name),
        false => format!("node {} is no longer the fleet's {name} leader", node.name),
    };
    let event = serde_json::json!({
        "time": humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        "event": "fleet.leader",
        "lease": name,
        "role": if leader { "leader" } else { "follower" },
        "node": node.name,
        "message": message,
    });
    node.publish(event).await;
}

/// Who holds lease `name` now, if anyone.
pub async fn holder(
    lattice: &crate::lattice::Lattice,
    name: &str,
) -> Result<Option<LeaseRecord>, crate::FleetError> {
    let key = key(name);
    let entry = lattice.nodes.entry(&key).await.map_err(|e| {
        crate::FleetError::js(format!("reading {}/{key}", crate::lattice::NODES), e)
    })?;
    Ok(entry
        .filter(|e| e.operation == kv::Operation::Put)
        .and_then(|e| serde_json::from_slice(&e.value).ok()))
}
