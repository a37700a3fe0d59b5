//! A node that dies (`kill -9` of its daemon) has its sandboxes re-created on the survivors
//! from their specs and libraries within 10 s, each by exactly one node, with an event
//! saying so; a stopped NATS server leaves the fleet working.

use std::collections::BTreeSet;
use std::time::Instant;

use futures_util::StreamExt;

use super::*;

#[test]
fn a_killed_nodes_sandboxes_are_recreated_on_the_survivors_once_each() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let mut fleet = Fleet::start(&binary, 3, &[]);
    for i in 0..12 {
        fleet.create(&format!("f{i:02}"), &lib, &[]);
    }
    let before = fleet.owners();
    let doomed: BTreeSet<String> = before
        .iter()
        .filter(|(_, n)| n == "node0")
        .map(|(id, _)| id.clone())
        .collect();
    assert_eq!(doomed.len(), 4, "{before:?}");
    // Every event the nodes publish, seen from here.
    let urls = fleet.nats.urls();
    let (events_tx, events_rx) = std::sync::mpsc::channel::<Value>();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = stop.clone();
    let listener = std::thread::spawn(move || {
        e2e::apps::block_on(async move {
            let client = async_nats::connect(urls.split(',').next().unwrap())
                .await
                .unwrap();
            let mut sub = client.subscribe("events.>").await.unwrap();
            client.flush().await.unwrap();
            let _ = events_tx.send(Value::Null);
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let tick = Duration::from_millis(100);
                if let Ok(Some(message)) = tokio::time::timeout(tick, sub.next()).await {
                    let event: Value = serde_json::from_slice(&message.payload).unwrap();
                    let _ = events_tx.send(event);
                }
            }
        })
    });
    assert_eq!(events_rx.recv_timeout(UP).unwrap(), Value::Null);
    let runner_pids = testkit::tree(fleet.nodes[0].pid());
    let killed = Instant::now();
    fleet.nodes[0].crash();
    let settled = testkit::wait::wait_for(Duration::from_secs(10), || {
        let out = fleet.host(&["list", "--json"]);
        let list: Value = serde_json::from_slice(&out.stdout).ok()?;
        let list = list.as_array()?;
        let all_running = list.len() == 12 && list.iter().all(|s| s["status"] == "running");
        all_running.then(|| killed.elapsed())
    });
    let took = settled.unwrap_or_else(|| {
        panic!(
            "not re-created within 10 s: {:?}\n{}",
            fleet.owners(),
            fleet.nodes[1].log()
        )
    });
    eprintln!("re-placed 4 sandboxes of a killed node in {took:?}");
    let after = fleet.owners();
    let ids: BTreeSet<&String> = after.iter().map(|(id, _)| id).collect();
    assert_eq!(ids.len(), 12, "a sandbox listed twice: {after:?}");
    assert!(after.iter().all(|(_, n)| n != "node0"), "{after:?}");
    // The survivors' own daemons agree: each runs each id at most once, together all 12.
    let mut local = Vec::new();
    for daemon in &fleet.nodes[1..] {
        for s in daemon.json(&["list"]).as_array().unwrap() {
            local.push(s["id"].as_str().unwrap().to_string());
        }
    }
    local.sort();
    assert_eq!(local.len(), 12, "{local:?}");
    local.dedup();
    assert_eq!(local.len(), 12, "owned twice: {local:?}");
    for id in &doomed {
        assert_eq!(fleet.json(&["call", id, "answer"]), 41);
    }
    // One `recreated` event per re-created sandbox, saying the in-memory state was lost.
    let mut recreated = Vec::new();
    while recreated.len() < doomed.len() {
        let event = events_rx.recv_timeout(UP).expect("a recreated event");
        if event["event"] == "fleet.recreated" {
            assert!(
                event["message"]
                    .as_str()
                    .unwrap()
                    .contains("in-memory state lost"),
                "{event}"
            );
            recreated.push(event["sandbox"].as_str().unwrap().to_string());
        }
    }
    recreated.sort();
    assert_eq!(recreated, doomed.iter().cloned().collect::<Vec<_>>());
    // `host events --cluster` reads them back from the stream, beside every daemon's own
    // events (each with its node).
    let one = doomed.iter().next().unwrap();
    let seen = wait_until(UP, || {
        let out = fleet.host(&["events", one, "--json"]);
        let text = String::from_utf8_lossy(&out.stdout);
        let events: Vec<Value> = text
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let created_on = |node: &str| {
            events
                .iter()
                .any(|e| e["event"] == "sandbox.created" && e["node"] == node)
        };
        events.iter().any(|e| e["event"] == "fleet.recreated")
            && created_on("node0")
            && (created_on("node1") || created_on("node2"))
    });
    assert!(
        seen,
        "{}",
        String::from_utf8_lossy(&fleet.host(&["events", one, "--json"]).stdout)
    );
    // The dead daemon's runners died with it.
    assert!(
        wait_until(UP, || runner_pids.iter().all(|p| !alive(*p))),
        "runners of the killed daemon outlived it"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    listener.join().unwrap();
}

#[test]
fn the_fleet_keeps_working_with_one_nats_server_stopped() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let mut fleet = Fleet::start(&binary, 3, &[]);
    for i in 0..3 {
        fleet.create(&format!("n{i}"), &lib, &[]);
    }
    fleet.nats.stop(0);
    let stopped_ms = now_ms();
    // After the servers elect new leaders, everything still works: creates, routed calls,
    // the nodes' heartbeats (well past their TTL).
    let lib_arg = lib.to_str().unwrap();
    let mut last = None;
    let created = wait_until(UP, || {
        let out = fleet.host(&["create", "n3", "--lib", lib_arg]);
        let ok = out.status.success();
        last = Some(out);
        ok
    });
    assert!(
        created,
        "the last create said: {}\n{}\nserver 1: {}",
        last.map_or(String::new(), |o| String::from_utf8_lossy(&o.stderr)
            .into_owned()),
        fleet.logs(),
        fleet.nats.log(1)
    );
    for i in 4..6 {
        fleet.create(&format!("n{i}"), &lib, &[]);
    }
    for i in 0..6 {
        assert_eq!(fleet.json(&["call", &format!("n{i}"), "answer"]), 41);
    }
    // Every node's record was refreshed well past its 3 s TTL after the stop.
    let fresh = wait_until(UP, || {
        let out = fleet.host(&["nodes", "--json"]);
        let Ok(nodes) = serde_json::from_slice::<Value>(&out.stdout) else {
            return false;
        };
        let nodes = nodes.as_array().cloned().unwrap_or_default();
        nodes.len() == 3
            && nodes
                .iter()
                .all(|n| n["seen_ms"].as_u64().unwrap_or(0) > stopped_ms + 4_000)
    });
    assert!(
        fresh,
        "the nodes' heartbeats stopped with the server (at {stopped_ms}): {}\n{}",
        String::from_utf8_lossy(&fleet.host(&["nodes", "--json"]).stdout),
        fleet.logs()
    );
    assert_eq!(fleet.owners().len(), 6);
}

/// The node rendezvous hashing gives `id` among `nodes` (as the fleet's failover computes it).
fn rendezvous<'a>(id: &str, nodes: &[&'a str]) -> &'a str {
    use sha2::{Digest, Sha256};
    nodes
        .iter()
        .copied()
        .max_by_key(|node| {
            let digest = Sha256::digest(format!("{id}/{node}").as_bytes());
            u64::from_be_bytes(digest[..8].try_into().unwrap())
        })
        .unwrap()
}

#[test]
fn a_labelled_sandbox_is_recreated_only_on_a_node_with_its_labels() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let mut fleet = Fleet::start(&binary, 1, &[]);
    fleet.join("zb0", &["--labels", "zone=b"]);
    fleet.join("zb1", &["--labels", "zone=b"]);
    fleet.wait_nodes(3);
    // An id that the unlabelled node0 would win against zb1 if labels were not kept: without
    // them, node0 re-creates it at once.
    let id = (0..)
        .map(|i| format!("zoned{i}"))
        .find(|id| rendezvous(id, &["node0", "zb1"]) == "node0")
        .unwrap();
    let info = fleet.create(&id, &lib, &["--label", "zone=b"]);
    assert_eq!(info["node"], "zb0", "{info}");
    // The labels are in the record from its first write (written after the create, a node
    // that died in between left a record without them, which any node could take).
    let history = fleet.spec_history(&id);
    assert_eq!(
        history[0]["labels"],
        serde_json::json!({"zone": "b"}),
        "{history:?}"
    );
    fleet.nodes[1].crash();
    let moved = testkit::wait::wait_for(Duration::from_secs(10), || {
        let list = fleet.json(&["list"]);
        let entry = list
            .as_array()?
            .iter()
            .find(|s| s["id"] == id.as_str())?
            .clone();
        (entry["node"] != "zb0" && entry["status"] == "running").then_some(entry)
    });
    let entry = moved.unwrap_or_else(|| panic!("{id} not re-created:\n{}", fleet.logs()));
    assert_eq!(entry["node"], "zb1", "{entry}");
    assert!(
        fleet.nodes[0]
            .json(&["list"])
            .as_array()
            .unwrap()
            .is_empty(),
        "the unlabelled node took it"
    );
    assert_eq!(fleet.json(&["call", &id, "answer"]), 41);
}
