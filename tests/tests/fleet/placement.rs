//! Placement spreads sandboxes over the nodes by free capacity and honours `--node` and
//! `--label`; every other command is routed to the owner; `host list` and `host nodes` show
//! the whole fleet.

use std::collections::BTreeMap;

use super::*;

#[test]
fn thirty_sandboxes_spread_over_three_nodes_and_calls_reach_their_owner() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let fleet = Fleet::start(&binary, 3, &["--capacity", "20"]);
    for i in 0..30 {
        let info = fleet.create(&format!("s{i:02}"), &lib, &[]);
        assert_eq!(info["status"], "running", "{info}");
    }
    let owners = fleet.owners();
    assert_eq!(owners.len(), 30, "{owners:?}");
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (_, node) in &owners {
        *per_node.entry(node.clone()).or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{per_node:?}"
    );
    // Each daemon runs exactly the sandboxes the fleet says it owns.
    for (i, daemon) in fleet.nodes.iter().enumerate() {
        let local = daemon.json(&["list"]);
        let mut local: Vec<String> = local
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        local.sort();
        let said: Vec<String> = owners
            .iter()
            .filter(|(_, n)| n == &format!("node{i}"))
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(local, said);
    }
    // Calls, info, usage, a reload and a destroy are routed to the owner.
    assert_eq!(fleet.json(&["call", "s07", "answer"]), 41);
    let info = fleet.json(&["info", "s07"]);
    assert_eq!(info["id"], "s07");
    let usage = fleet.json(&["usage", "s07"]);
    assert!(
        usage["memory_bytes"].as_u64().is_some() || usage.is_object(),
        "{usage}"
    );
    let lib42 = e2e::apps::block_on(demo_lib_answering(42));
    let reload = fleet.json(&["reload", "s07", "--lib", lib42.to_str().unwrap()]);
    assert_eq!(reload["to_version"], 2, "{reload}");
    assert_eq!(fleet.json(&["call", "s07", "answer"]), 42);
    fleet.json(&["destroy", "s07"]);
    let out = fleet.host(&["info", "s07"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // A taken id is refused fleet-wide, wherever placement would have put it.
    let out = fleet.host(&["create", "s08", "--lib", lib.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    // `host nodes` shows the three nodes and what each owns.
    let nodes = fleet.json(&["nodes"]);
    let owned: usize = nodes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["owned"].as_u64().unwrap() as usize)
        .sum();
    assert_eq!(owned, 29, "{nodes}");
    let text = String::from_utf8(fleet.host(&["list"]).stdout).unwrap();
    assert!(text.starts_with("NODE"), "{text}");
    assert_eq!(text.lines().count(), 30, "{text}");
}

#[test]
fn placement_honours_node_and_label_constraints() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let mut fleet = Fleet::start(&binary, 2, &[]);
    fleet.join("gpu0", &["--labels", "gpu=yes,zone=b"]);
    fleet.wait_nodes(3);
    for i in 0..3 {
        let info = fleet.create(&format!("g{i}"), &lib, &["--label", "gpu=yes"]);
        assert_eq!(info["node"], "gpu0", "{info}");
    }
    let info = fleet.create("pinned", &lib, &["--node", "node1"]);
    assert_eq!(info["node"], "node1", "{info}");
    let out = fleet.host(&[
        "create",
        "nowhere",
        "--lib",
        lib.to_str().unwrap(),
        "--label",
        "gpu=no",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no live node"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a library: a crate is not built for a fleet.
    let app = demo_app();
    let out = fleet.host(&["create", "crate", "--app", app.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lib"));
    // Commands the fleet does not route say so instead of using a local daemon.
    let out = fleet.host(&["deps", "fetch", "--app", app.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not routed in a fleet"));
}
