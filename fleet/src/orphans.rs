//! Orphaned sandboxes: specs whose owner is no longer live. Which live nodes may take one
//! (every label it asks for, capacity left), why it waits when none may, and how `host list
//! --cluster` shows those that wait (node `-`, status `waiting`). The failover (`failover`)
//! and the client compute this from the same two buckets, so they agree.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::error::FleetError;
use crate::lattice::{Lattice, NodeRecord, SpecRecord};

/// Nodes named at most in a reason (the rest are counted).
const NAMED: usize = 8;

/// How many sandboxes the specs bucket gives each node.
pub fn owned_counts<'a>(specs: impl Iterator<Item = &'a SpecRecord>) -> BTreeMap<String, usize> {
    let mut owned = BTreeMap::new();
    for record in specs {
        *owned.entry(record.node.clone()).or_insert(0) += 1;
    }
    owned
}

/// The live nodes that may take `record` now: every label it asks for, and fewer sandboxes
/// than their capacity.
pub fn candidates<'a>(
    record: &SpecRecord,
    live: &'a BTreeMap<String, NodeRecord>,
    owned: &BTreeMap<String, usize>,
) -> Vec<&'a String> {
    live.iter()
        .filter(|(name, n)| {
            record.fits(&n.labels) && owned.get(*name).copied().unwrap_or(0) < n.capacity as usize
        })
        .map(|(name, _)| name)
        .collect()
}

/// Why no live node may take `record` (None when one may).
pub fn why_waiting(
    record: &SpecRecord,
    live: &BTreeMap<String, NodeRecord>,
    owned: &BTreeMap<String, usize>,
) -> Option<String> {
    if !candidates(record, live, owned).is_empty() {
        return None;
    }
    let fitting: Vec<(&String, &NodeRecord)> = live
        .iter()
        .filter(|(_, n)| record.fits(&n.labels))
        .collect();
    if fitting.is_empty() {
        let labels: Vec<String> = record
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        return Some(format!(
            "no live node has the labels {}",
            bounded(&labels, NAMED)
        ));
    }
    let full: Vec<String> = fitting
        .iter()
        .map(|(name, n)| {
            let used = owned.get(*name).copied().unwrap_or(0);
            format!("{name} {used}/{}", n.capacity)
        })
        .collect();
    Some(format!(
        "every live node it fits is at capacity ({})",
        bounded(&full, NAMED)
    ))
}

/// `items` joined with `, `, the first `n` of them and a count of the rest.
fn bounded(items: &[String], n: usize) -> String {
    let mut out = items.iter().take(n).cloned().collect::<Vec<_>>().join(", ");
    if items.len() > n {
        out.push_str(&format!(" and {} more", items.len() - n));
    }
    out
}

/// The live node rendezvous hashing gives `id` to.
pub(crate) fn chosen<'a>(id: &str, live: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    live.max_by_key(|node| {
        let digest = Sha256::digest(format!("{id}/{node}").as_bytes());
        u64::from_be_bytes(digest[..8].try_into().unwrap_or([0; 8]))
    })
}

/// The node that announces `id`'s wait (rendezvous hashing over the live nodes), so that
/// one node, not every node, says it.
pub fn announcer<'a>(id: &str, live: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    chosen(id, live)
}

/// The entries `host list --cluster` adds for sandboxes whose owner is not live: node `-`,
/// status `waiting`, the owner that vanished and why it waits (re-created as soon as a node
/// may take it).
pub async fn list_entries(
    lattice: &Lattice,
    live: &BTreeMap<String, NodeRecord>,
) -> Result<Vec<Value>, FleetError> {
    let specs = lattice.all_specs().await?;
    let owned = owned_counts(specs.values().map(|(r, _)| r));
    Ok(specs
        .values()
        .filter(|(record, _)| !live.contains_key(&record.node))
        .map(|(record, _)| {
            let reason = record
                .waiting
                .as_ref()
                .map(|w| w.reason.clone())
                .or_else(|| why_waiting(record, live, &owned))
                .unwrap_or_else(|| "being re-created on a live node".into());
            // Given up by a node over its capacity (no owner): its reason says so.
            let (owner, reason) = match (record.node.as_str(), &record.waiting) {
                ("", Some(w)) => (w.from.clone(), format!("given up: {reason}")),
                (owner, _) => (
                    owner.to_string(),
                    format!("owner {owner} vanished; {reason}"),
                ),
            };
            json!({
                "id": record.id,
                "node": "-",
                "status": "waiting",
                "pid": 0,
                "app_version": 0,
                "owner": owner,
                "reason": reason,
                "since_ms": record.waiting.as_ref().map(|w| w.since_ms),
            })
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, capacity: u32, labels: &[(&str, &str)]) -> (String, NodeRecord) {
        let record = NodeRecord {
            node: name.into(),
            capacity,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sandboxes: 0,
            free_memory: 0,
            version: "0".into(),
            seen_ms: 0,
        };
        (name.to_string(), record)
    }

    fn spec(labels: &[(&str, &str)]) -> SpecRecord {
        serde_json::from_value(json!({
            "id": "x", "node": "gone",
            "spec": {"app": {"library": format!("sha256:{}", "a".repeat(64))}},
            "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        }))
        .unwrap()
    }

    #[test]
    fn a_full_or_unlabelled_fleet_says_why_it_waits() {
        let live: BTreeMap<_, _> = [node("a", 1, &[]), node("b", 2, &[("zone", "b")])].into();
        let full: BTreeMap<String, usize> = [("a".into(), 1), ("b".into(), 2)].into();
        let free: BTreeMap<String, usize> = [("a".into(), 1), ("b".into(), 1)].into();
        let plain = spec(&[]);
        let zoned = spec(&[("zone", "b")]);
        let elsewhere = spec(&[("zone", "c")]);
        assert_eq!(candidates(&plain, &live, &free), vec!["b"]);
        assert!(why_waiting(&plain, &live, &free).is_none());
        let why = why_waiting(&plain, &live, &full).unwrap();
        assert_eq!(why, "every live node it fits is at capacity (a 1/1, b 2/2)");
        let why = why_waiting(&zoned, &live, &full).unwrap();
        assert_eq!(why, "every live node it fits is at capacity (b 2/2)");
        let why = why_waiting(&elsewhere, &live, &free).unwrap();
        assert_eq!(why, "no live node has the labels zone=c");
        let many: Vec<String> = (0..20).map(|i| i.to_string()).collect();
        assert!(bounded(&many, NAMED).ends_with("7 and 12 more"));
    }
}
