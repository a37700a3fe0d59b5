//! A node's heartbeat (its record in the nodes bucket, refreshed every second while its
//! daemon answers, gone three seconds after it stops) and the failover: every second each
//! node looks for sandboxes whose owner is no longer live, and takes over those that
//! rendezvous hashing gives it (any of them once they stayed orphaned a while) by
//! compare-and-set on the record's revision, so exactly one node wins each; the winner
//! re-creates the sandbox from its spec and library and says so on the events stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::control::{Hello, Request};
use proto::spec::AppSource;
use sha2::{Digest, Sha256};

use crate::lattice::{HEARTBEAT, NodeRecord, SpecRecord, now_ms};
use crate::node::Node;
use crate::wire;

/// How long an orphan waits for the node rendezvous hashing picked before any node takes it.
const GRACE: Duration = Duration::from_secs(3);

/// Refreshes the node's record while its daemon answers.
pub(crate) async fn heartbeat(node: Arc<Node>) {
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let hello = match node.forward(Request::Ping).await {
            Ok(v) => serde_json::from_value::<Hello>(v).ok(),
            Err(_) => None,
        };
        let Some(hello) = hello else {
            continue;
        };
        let record = NodeRecord {
            node: node.name.clone(),
            capacity: node.capacity,
            labels: node.labels.clone(),
            sandboxes: hello.sandboxes,
            free_memory: mem_available(),
            version: hello.version,
            seen_ms: now_ms(),
        };
        let Ok(bytes) = serde_json::to_vec(&record) else {
            continue;
        };
        if let Err(e) = node.lattice.nodes.put(&node.name, bytes.into()).await {
            tracing::warn!(error = %e, "fleet: heartbeat not stored");
        }
    }
}

/// The machine's available memory (`MemAvailable`), in bytes.
fn mem_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// The live node rendezvous hashing gives `id` to.
fn chosen<'a>(id: &str, live: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    live.max_by_key(|node| {
        let digest = Sha256::digest(format!("{id}/{node}").as_bytes());
        u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
    })
}

/// Takes over the sandboxes of vanished nodes, for ever.
pub(crate) async fn watch(node: Arc<Node>) {
    let mut orphaned: HashMap<String, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&node, &mut orphaned).await {
            tracing::warn!(error = %e, "fleet: failover sweep failed");
        }
    }
}

async fn sweep(
    node: &Node,
    orphaned: &mut HashMap<String, Instant>,
) -> Result<(), crate::FleetError> {
    let live = node.lattice.live_nodes().await?;
    if !live.contains_key(&node.name) {
        // Not (or no longer) a live member: taking over now could race our own comeback.
        return Ok(());
    }
    let specs = node.lattice.all_specs().await?;
    let mut mine = specs.values().filter(|(r, _)| r.node == node.name).count();
    orphaned.retain(|id, _| specs.contains_key(id));
    for (id, (record, revision)) in specs {
        if live.contains_key(&record.node) {
            orphaned.remove(&id);
            continue;
        }
        let since = *orphaned.entry(id.clone()).or_insert_with(Instant::now);
        // Only a node with every label its creator asked for may take it; with none alive it
        // stays orphaned until one joins.
        if !record.fits(&node.labels) {
            continue;
        }
        let fit = live.iter().filter(|(_, n)| record.fits(&n.labels));
        let ours = chosen(&id, fit.map(|(name, _)| name)) == Some(&node.name);
        if (!ours && since.elapsed() < GRACE) || mine >= node.capacity as usize {
            continue;
        }
        if take_over(node, record, revision).await {
            orphaned.remove(&id);
            mine += 1;
        }
    }
    Ok(())
}

/// Claims `record` by compare-and-set and re-creates its sandbox here; false when another
/// node won the claim.
async fn take_over(node: &Node, record: SpecRecord, revision: u64) -> bool {
    let from = record.node.clone();
    let id = record.id.clone();
    let claimed = SpecRecord {
        node: node.name.clone(),
        generation: record.generation + 1,
        ..record
    };
    let Ok(bytes) = serde_json::to_vec(&claimed) else {
        return false;
    };
    if node
        .lattice
        .specs
        .update(&id, bytes.into(), revision)
        .await
        .is_err()
    {
        return false;
    }
    let started = Instant::now();
    let result = async {
        let hash = wire::content_hash(&claimed.spec.app)?;
        let mut spec = claimed.spec.clone();
        spec.app = AppSource::Library(node.library(&hash).await?);
        node.forward(Request::Create {
            id: id.clone(),
            spec,
            watch: claimed.watch,
        })
        .await
    }
    .await;
    match result {
        Ok(_) => {
            tracing::info!(id, from, "fleet: re-created a vanished node's sandbox");
            node.event(
                "recreated",
                &id,
                format!(
                    "re-created from spec on node {} after node {from} vanished, in {} ms; \
                     in-memory state lost",
                    node.name,
                    started.elapsed().as_millis()
                ),
            )
            .await;
        }
        Err(e) => {
            tracing::warn!(id, from, error = %e, "fleet: re-creating failed");
            node.event(
                "recreate_failed",
                &id,
                format!(
                    "re-creating on node {} failed: {}: {}",
                    node.name, e.kind, e.message
                ),
            )
            .await;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_spreads_and_is_stable() {
        let nodes: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let mut counts = HashMap::new();
        for i in 0..300 {
            let id = format!("s{i}");
            let first = chosen(&id, nodes.iter()).unwrap().clone();
            assert_eq!(chosen(&id, nodes.iter()), Some(&first));
            *counts.entry(first).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 3);
        assert!(counts.values().all(|&n| n > 60), "{counts:?}");
    }
}
