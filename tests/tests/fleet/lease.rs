//! `--watch-coordinator` on every node: each node coordinates its own sandboxes, and one node
//! correlates across nodes, the one holding the leader lease (key `lease.coordinator` of bucket `sandbox_nodes`), said with a
//! `fleet.leader` event; when the leader is killed another node takes the lease within
//! seconds, and never two at once.

use std::time::Instant;

use super::*;

/// The `fleet.leader` events of the fleet, oldest first, as `(node, role)`.
fn leader_events(fleet: &Fleet) -> Vec<(String, String)> {
    fleet
        .events(None)
        .iter()
        .filter(|e| e["event"] == "fleet.leader" && e["lease"] == "coordinator")
        .map(|e| {
            (
                e["node"].as_str().unwrap_or("").to_string(),
                e["role"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

/// The holder of the coordinator's lease as its key says, read with a NATS client.
fn holder(fleet: &Fleet) -> Option<String> {
    let url = fleet.nats.urls().split(',').next().unwrap().to_string();
    e2e::apps::block_on(async move {
        let client = async_nats::connect(url).await.ok()?;
        let js = async_nats::jetstream::new(client);
        let kv = js.get_key_value("sandbox_nodes").await.ok()?;
        let value = kv.get("lease.coordinator").await.ok()??;
        let record: Value = serde_json::from_slice(&value).ok()?;
        record["holder"].as_str().map(str::to_string)
    })
}

#[test]
fn one_node_holds_the_coordinator_lease_and_another_takes_it_when_it_dies() {
    let Some(binary) = nats_server() else {
        return;
    };
    let mut fleet = Fleet::start(&binary, 3, &["--watch", "--watch-coordinator"]);
    let first = testkit::wait::wait_for(UP, || {
        let events = leader_events(&fleet);
        let (node, role) = events.first()?;
        (role == "leader").then(|| node.clone())
    })
    .unwrap_or_else(|| panic!("no leader: {:?}\n{}", fleet.events(None), fleet.logs()));
    assert_eq!(holder(&fleet).as_deref(), Some(first.as_str()));
    // Some heartbeats later, still that one alone.
    let later = now_ms() + 3_000;
    assert!(wait_until(UP, || {
        let out = fleet.host(&["nodes", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|nodes| {
            nodes
                .as_array()
                .unwrap()
                .iter()
                .all(|n| n["seen_ms"].as_u64().unwrap_or(0) > later)
        })
    }));
    assert_eq!(leader_events(&fleet), [(first.clone(), "leader".into())]);
    assert_eq!(holder(&fleet).as_deref(), Some(first.as_str()));
    // The leader dies: another takes the lease once its key lapsed (3 s).
    let index: usize = first.strip_prefix("node").unwrap().parse().unwrap();
    let killed = Instant::now();
    fleet.nodes[index].crash();
    let second = testkit::wait::wait_for(Duration::from_secs(10), || {
        let events = leader_events(&fleet);
        let (node, role) = events.get(1)?;
        (role == "leader").then(|| node.clone())
    })
    .unwrap_or_else(|| {
        panic!(
            "no new leader: {:?}\n{}",
            leader_events(&fleet),
            fleet.logs()
        )
    });
    eprintln!(
        "the coordinator lease moved from {first} to {second} in {:?}",
        killed.elapsed()
    );
    assert_ne!(second, first);
    assert_eq!(holder(&fleet).as_deref(), Some(second.as_str()));
    assert_eq!(
        leader_events(&fleet).len(),
        2,
        "{:?}",
        leader_events(&fleet)
    );
    let log = fleet.nodes[second
        .strip_prefix("node")
        .unwrap()
        .parse::<usize>()
        .unwrap()]
    .log();
    assert!(log.contains("leader lease changed"), "{log}");
}

#[test]
fn each_node_coordinates_its_own_and_only_the_leader_correlates_across_nodes() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let watch = [
        "--watch",
        "--watch-interval",
        "200ms",
        "--watch-provider",
        "mock",
        "--watch-coordinator",
    ];
    let fleet = Fleet::start(&binary, 2, &watch);
    let leader = testkit::wait::wait_for(UP, || {
        let events = leader_events(&fleet);
        let (node, role) = events.first()?;
        (role == "leader").then(|| node.clone())
    })
    .unwrap_or_else(|| panic!("no leader: {}", fleet.logs()));
    // A spike on each node: each node's detector flags its own and its operator notifies.
    for node in ["node0", "node1"] {
        let id = format!("spike-{node}");
        fleet.create(&id, &lib, &["--node", node]);
        fleet.json(&["workers", &id, "--add", "12"]);
    }
    let long = Duration::from_secs(120);
    // Each node's coordinator covers its own sandbox: no node's notification goes without.
    let insight_from = |node: &str| {
        fleet
            .events(None)
            .iter()
            .any(|e| e["event"] == "operator.insight" && e["node"] == node)
    };
    assert!(
        wait_until(long, || insight_from("node0") && insight_from("node1")),
        "{:?}\n{}",
        fleet.events(None),
        fleet.logs()
    );
    // The leader reports the notifications on both nodes together, from the events alone.
    let correlated = testkit::wait::wait_for(long, || {
        fleet
            .events(None)
            .into_iter()
            .find(|e| e["event"] == "fleet.correlated")
    })
    .unwrap_or_else(|| panic!("{:?}\n{}", fleet.events(None), fleet.logs()));
    assert_eq!(correlated["node"], leader.as_str(), "{correlated}");
    assert_eq!(correlated["nodes"], serde_json::json!(["node0", "node1"]));
    let message = correlated["message"].as_str().unwrap();
    assert!(
        message.contains("spike-node0 on node0") && message.contains("spike-node1 on node1"),
        "{message}"
    );
}
