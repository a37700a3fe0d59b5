//! A node's heartbeat (its record in the nodes bucket, refreshed every second while its
//! daemon answers, gone three seconds after it stops) and the failover: every second each
//! node looks for sandboxes whose owner is no longer live, and takes over those that
//! rendezvous hashing gives it among the live nodes that may take them (every label asked
//! for, capacity left; any of those once they stayed orphaned a while) by compare-and-set on
//! the record's revision, so exactly one node wins each; the winner re-creates the sandbox
//! from its spec and library and says so on the events stream. An orphan no live node may
//! take waits, said once (`fleet.orphaned`), and is looked at again every tick. The same
//! tick re-creates what this node owns but its daemon does not run (`recreate`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use proto::control::{Hello, Request};

use crate::lattice::{HEARTBEAT, NodeRecord, SpecRecord, Waiting, now_ms};
use crate::node::Node;
use crate::orphans::{self, chosen, owned_counts};
use crate::recreate::{self, Retries, Why};

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

/// What the failover remembers from one tick to the next.
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    /// Since when each orphan was seen orphaned here.
    orphaned: HashMap<String, Instant>,
    /// The sandboxes this node owned when it joined (an earlier run of a node of this name
    /// left them): those its daemon does not run are re-created on the first tick.
    inherited: HashSet<String>,
    /// Re-creations that failed here, tried again.
    retries: Retries,
}

/// The sandboxes the specs bucket gives this node as it joins (before it answers any
/// request, so none of them is one it is creating); empty when JetStream does not answer.
pub(crate) async fn inherited(node: &Node) -> HashSet<String> {
    for _ in 0..10 {
        let read = tokio::time::timeout(Duration::from_secs(5), node.lattice.all_specs()).await;
        match read {
            Ok(Ok(specs)) => {
                return specs
                    .into_values()
                    .filter(|(r, _)| r.node == node.name)
                    .map(|(r, _)| r.id)
                    .collect();
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "fleet: this node's specs not read yet"),
            Err(_) => tracing::warn!("fleet: this node's specs not read in 5 s"),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    HashSet::new()
}

/// Takes over the sandboxes of vanished nodes and re-creates those of its own its daemon
/// does not run, for ever; `inherited` are the sandboxes it owned as it joined.
pub(crate) async fn watch(node: Arc<Node>, inherited: HashSet<String>) {
    let mut state = Sweep {
        inherited,
        ..Sweep::default()
    };
    let mut tick = tokio::time::interval(HEARTBEAT);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(e) = sweep(&node, &mut state).await {
            tracing::warn!(error = %e, "fleet: failover sweep failed");
        }
    }
}

async fn sweep(node: &Node, state: &mut Sweep) -> Result<(), crate::FleetError> {
    let live = node.lattice.live_nodes().await?;
    if !live.contains_key(&node.name) {
        // Not (or no longer) a live member: taking over now could race our own comeback.
        return Ok(());
    }
    let specs = node.lattice.all_specs().await?;
    reconcile(node, state, &specs).await;
    let mut owned = owned_counts(specs.values().map(|(r, _)| r));
    state.orphaned.retain(|id, _| specs.contains_key(id));
    for (id, (record, revision)) in specs {
        if live.contains_key(&record.node) {
            state.orphaned.remove(&id);
            continue;
        }
        let since = *state
            .orphaned
            .entry(id.clone())
            .or_insert_with(Instant::now);
        // Only a live node with every label its creator asked for and capacity left may take
        // it; with none, it waits (said once, by one node) and is taken on the first tick
        // one can.
        let candidates = orphans::candidates(&record, &live, &owned);
        if candidates.is_empty() {
            if record.waiting.is_none() && orphans::announcer(&id, live.keys()) == Some(&node.name)
            {
                let reason = orphans::why_waiting(&record, &live, &owned).unwrap_or_default();
                announce(node, record, revision, reason).await;
            }
            continue;
        }
        if !candidates.contains(&&node.name) {
            continue;
        }
        let ours = chosen(&id, candidates.into_iter()) == Some(&node.name);
        if !ours && since.elapsed() < GRACE {
            continue;
        }
        if take_over(node, record, revision, &mut state.retries).await {
            state.orphaned.remove(&id);
            *owned.entry(node.name.clone()).or_insert(0) += 1;
        }
    }
    Ok(())
}

/// Re-creates the sandboxes this node owns that its daemon does not run: those it inherited
/// as it joined (first tick only) and those whose re-creation failed (after their pause).
async fn reconcile(node: &Node, state: &mut Sweep, specs: &BTreeMap<String, (SpecRecord, u64)>) {
    let mine = |id: &str| specs.get(id).is_some_and(|(r, _)| r.node == node.name);
    state.retries.retain(mine);
    if state.inherited.is_empty() && state.retries.is_empty() {
        return;
    }
    let Some(running) = running(node).await else {
        return;
    };
    let now = Instant::now();
    // What the daemon runs counts against `--capacity`: a node restarted with a lower one
    // gives the sandboxes past it up for another node instead of running more than it may.
    let mut load = running.len();
    for (id, (record, revision)) in specs {
        if record.node != node.name || running.contains(id) {
            continue;
        }
        let why = if state.inherited.contains(id) {
            Why::Readopt
        } else if state.retries.due(id, *revision, now) {
            Why::Retry
        } else {
            continue;
        };
        if load >= node.capacity as usize {
            state.retries.retain(|other| other != id);
            release(node, record.clone(), *revision, load).await;
            continue;
        }
        recreate::readopt(node, record.clone(), *revision, why, &mut state.retries).await;
        load += 1;
    }
    // Each inherited sandbox ran or was re-created (a failure is retried): done with them.
    state.inherited.clear();
}

/// The ids the daemon runs, None when it does not answer.
async fn running(node: &Node) -> Option<HashSet<String>> {
    let list = node.forward(Request::List).await.ok()?;
    Some(
        list.as_array()?
            .iter()
            .filter_map(|s| s["id"].as_str().map(str::to_string))
            .collect(),
    )
}

/// Records why orphan `record` waits (compare-and-set, so one node says it once) and says so
/// with a `fleet.orphaned` event.
async fn announce(node: &Node, record: SpecRecord, revision: u64, reason: String) {
    let id = record.id.clone();
    let from = record.node.clone();
    let marked = SpecRecord {
        waiting: Some(Waiting {
            from: from.clone(),
            reason: reason.clone(),
            since_ms: now_ms(),
        }),
        ..record
    };
    if recreate::claim(node, &marked, revision).await.is_none() {
        return;
    }
    tracing::info!(id, from, reason, "fleet: an orphan waits for a node");
    node.event(
        "orphaned",
        &id,
        format!(
            "waiting: node {from} vanished and {reason}; re-created as soon as a node may \
             take it (a node joins or a sandbox goes)"
        ),
    )
    .await;
}

/// Gives up `record`, which this node owns but may not run (it runs `load` sandboxes, its
/// `--capacity` or more): an orphan with no owner (node `""`), taken by the next node that
/// may, as any orphan is; said once.
async fn release(node: &Node, record: SpecRecord, revision: u64, load: usize) {
    let id = record.id.clone();
    let reason = format!(
        "node {} came back with --capacity {} and runs {load} already",
        node.name, node.capacity
    );
    let released = SpecRecord {
        node: String::new(),
        waiting: Some(Waiting {
            from: node.name.clone(),
            reason: reason.clone(),
            since_ms: now_ms(),
        }),
        ..record
    };
    if recreate::claim(node, &released, revision).await.is_none() {
        return;
    }
    tracing::info!(id, reason, "fleet: gave a sandbox up for another node");
    node.event(
        "orphaned",
        &id,
        format!("given up: {reason}; re-created as soon as another node may take it"),
    )
    .await;
}

/// Claims `record` by compare-and-set and re-creates its sandbox here; false when another
/// node won the claim.
async fn take_over(node: &Node, record: SpecRecord, revision: u64, retries: &mut Retries) -> bool {
    let waited = record.waiting.clone();
    // A sandbox given up by its node has none: the one that gave it up is in `waiting`.
    let why = match (record.node.as_str(), waited) {
        ("", Some(w)) => Why::Released { from: w.from },
        (owner, waited) => Why::Failover {
            from: owner.to_string(),
            waited,
        },
    };
    let claimed = SpecRecord {
        node: node.name.clone(),
        generation: record.generation + 1,
        waiting: None,
        ..record
    };
    let Some(revision) = recreate::claim(node, &claimed, revision).await else {
        return false;
    };
    recreate::recreate(node, &claimed, revision, why, retries).await;
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
