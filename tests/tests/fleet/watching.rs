//! `host serve --cluster --watch`: each node's detector watches the sandboxes its daemon
//! runs, so each sandbox once; a sandbox re-created after its node died keeps its watch
//! choice (the spec carries it) and the new owner's detector watches it.

use super::*;

#[test]
fn a_recreated_sandbox_is_watched_by_its_new_owner_as_its_create_said() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    // A rule every sandbox meets: each watched one is flagged on the first sample.
    let watch = [
        "--watch",
        "--watch-interval",
        "300ms",
        "--watch-rule",
        "processes>0",
        "--watch-provider",
        "mock",
    ];
    let mut fleet = Fleet::start(&binary, 2, &watch);
    fleet.create("watched", &lib, &["--node", "node0"]);
    fleet.create("unwatched", &lib, &["--node", "node0", "--no-watch"]);
    assert!(
        wait_until(UP, || anomaly_on(&fleet, "watched", "node0")),
        "{:?}",
        fleet.events(None)
    );
    fleet.nodes[0].crash();
    let moved = wait_until(UP, || {
        let owners = fleet.owners();
        owners.len() == 2 && owners.iter().all(|(_, n)| n == "node1")
    });
    assert!(moved, "{:?}\n{}", fleet.owners(), fleet.logs());
    assert!(
        wait_until(UP, || anomaly_on(&fleet, "watched", "node1")),
        "the new owner does not watch it: {:?}\n{}",
        fleet.events(Some("watched")),
        fleet.logs()
    );
    // A sandbox created with --no-watch is not watched on either node.
    assert!(!anomaly_on(&fleet, "unwatched", "node0") && !anomaly_on(&fleet, "unwatched", "node1"));
}

/// Whether `node` flagged `id` (a `detector.anomaly` event of its on the fleet's stream).
fn anomaly_on(fleet: &Fleet, id: &str, node: &str) -> bool {
    fleet
        .events(Some(id))
        .iter()
        .any(|e| e["event"] == "detector.anomaly" && e["node"] == node)
}
