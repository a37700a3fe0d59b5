//! An orphan no survivor may take (every survivor at capacity) waits, said once with a
//! `fleet.orphaned` event and shown by `host list` (node `-`, status `waiting`), and is
//! re-created as soon as capacity appears (a sandbox destroyed, a node joining), never over
//! a node's capacity, once each.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

/// The fleet's `list` entries of `id`.
fn entries(list: &Value, id: &str) -> Vec<Value> {
    list.as_array()
        .map(|a| a.iter().filter(|s| s["id"] == id).cloned().collect())
        .unwrap_or_default()
}

/// How many sandboxes the fleet's list gives each node.
fn per_node(list: &Value) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for s in list.as_array().unwrap() {
        *out.entry(s["node"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    out
}

#[test]
fn an_orphan_waits_for_capacity_and_is_recreated_once_some_appears() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let mut fleet = Fleet::start(&binary, 3, &["--capacity", "2"]);
    for i in 0..6 {
        fleet.create(&format!("o{i}"), &lib, &[]);
    }
    let before = fleet.owners();
    let owned_by = |node: &str| -> Vec<String> {
        before
            .iter()
            .filter(|(_, n)| n == node)
            .map(|(id, _)| id.clone())
            .collect()
    };
    let doomed: BTreeSet<String> = owned_by("node0").into_iter().collect();
    assert_eq!(doomed.len(), 2, "{before:?}");
    fleet.nodes[0].crash();
    // Both survivors are full: the two orphans wait, shown as such.
    let waiting = wait_until(UP, || {
        let list = fleet.json(&["list"]);
        doomed.iter().all(|id| {
            let e = entries(&list, id);
            e.len() == 1
                && e[0]["status"] == "waiting"
                && e[0]["node"] == "-"
                && e[0]["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("node0") && r.contains("at capacity"))
        })
    });
    assert!(waiting, "{}\n{}", fleet.json(&["list"]), fleet.logs());
    let text = String::from_utf8(fleet.host(&["list"]).stdout).unwrap();
    let row = text
        .lines()
        .find(|l| l.contains(doomed.first().unwrap().as_str()))
        .unwrap_or_default();
    assert!(
        row.starts_with('-') && row.contains("waiting") && row.contains("at capacity"),
        "{text}"
    );
    // One `fleet.orphaned` event each, saying why.
    let announced = wait_until(UP, || {
        let events = fleet.events(None);
        doomed.iter().all(|id| {
            events
                .iter()
                .any(|e| e["event"] == "fleet.orphaned" && e["sandbox"] == id.as_str())
        })
    });
    assert!(announced, "{:?}\n{}", fleet.events(None), fleet.logs());
    // A destroyed sandbox frees a place on node1: one orphan goes there, the other waits.
    let freed = owned_by("node1")[0].clone();
    fleet.json(&["destroy", &freed]);
    let destroyed = std::time::Instant::now();
    let placed = testkit::wait::wait_for(Duration::from_secs(10), || {
        let list = fleet.json(&["list"]);
        let running: Vec<&String> = doomed
            .iter()
            .filter(|id| {
                let e = entries(&list, id);
                e.len() == 1 && e[0]["status"] == "running" && e[0]["node"] == "node1"
            })
            .collect();
        (running.len() == 1).then(|| running[0].clone())
    });
    let first = placed.unwrap_or_else(|| panic!("{}\n{}", fleet.json(&["list"]), fleet.logs()));
    eprintln!(
        "an orphan ran again {:?} after a destroy freed a place",
        destroyed.elapsed()
    );
    let list = fleet.json(&["list"]);
    let other = doomed.iter().find(|id| **id != first).unwrap().clone();
    assert_eq!(entries(&list, &other)[0]["status"], "waiting", "{list}");
    // A fourth node with room takes the other.
    let joined = std::time::Instant::now();
    fleet.join("node3", &["--capacity", "2"]);
    let moved = wait_until(UP, || {
        let list = fleet.json(&["list"]);
        let e = entries(&list, &other);
        e.len() == 1 && e[0]["status"] == "running" && e[0]["node"] == "node3"
    });
    assert!(moved, "{}\n{}", fleet.json(&["list"]), fleet.logs());
    eprintln!(
        "an orphan ran again {:?} after a node with room was started",
        joined.elapsed()
    );
    // Each sandbox once (one of the six destroyed), no node over its capacity, the
    // re-created ones answer.
    let list = fleet.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 5, "{list}");
    let counts = per_node(&list);
    assert!(counts.values().all(|&n| n <= 2), "{counts:?}");
    assert!(
        !counts.contains_key("node0") && !counts.contains_key("-"),
        "{counts:?}"
    );
    for id in &doomed {
        assert_eq!(fleet.json(&["call", id, "answer"]), 41);
    }
    // Exactly one `fleet.orphaned` per orphan (not one per tick, nor one per node), and a
    // `fleet.recreated` for each that says it waited.
    let events = fleet.events(None);
    for id in &doomed {
        let about = |kind: &str| {
            events
                .iter()
                .filter(|e| e["event"] == kind && e["sandbox"] == id.as_str())
                .count()
        };
        assert_eq!(about("fleet.orphaned"), 1, "{id}: {events:?}");
        assert_eq!(about("fleet.recreated"), 1, "{id}: {events:?}");
    }
    let recreated = events
        .iter()
        .find(|e| e["event"] == "fleet.recreated" && e["sandbox"] == first.as_str())
        .unwrap();
    assert!(
        recreated["message"]
            .as_str()
            .unwrap()
            .contains("after waiting"),
        "{recreated}"
    );
}
