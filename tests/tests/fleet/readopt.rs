//! A node restarted under the same name runs again the sandboxes it still owns (none could
//! move: only it has their labels), from their specs and libraries, saying so, and no more of
//! them than its new `--capacity` (the rest go to another node); one restarted after the
//! others took its sandboxes does not run them a second time.

use std::collections::BTreeSet;

use super::*;

#[test]
fn a_node_restarted_under_its_name_runs_its_sandboxes_again() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let mut fleet = Fleet::start(&binary, 1, &[]);
    let solo = ["--labels", "only=solo"];
    fleet.join("solo", &solo);
    fleet.wait_nodes(2);
    for id in ["r0", "r1"] {
        let info = fleet.create(id, &lib, &["--label", "only=solo"]);
        assert_eq!(info["node"], "solo", "{info}");
    }
    fleet.nodes[1].crash();
    // Nobody else may take them: they wait.
    let waiting = wait_until(UP, || {
        let list = fleet.json(&["list"]);
        let waiting = list.as_array().unwrap().iter().filter(|s| {
            s["status"] == "waiting"
                && s["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("no live node has the labels only=solo"))
        });
        waiting.count() == 2
    });
    assert!(waiting, "{}\n{}", fleet.json(&["list"]), fleet.logs());
    fleet.rejoin(1, "solo", &solo);
    let back = wait_until(UP, || {
        let list = fleet.json(&["list"]);
        let list = list.as_array().unwrap();
        list.len() == 2
            && list
                .iter()
                .all(|s| s["node"] == "solo" && s["status"] == "running")
    });
    assert!(back, "{}\n{}", fleet.json(&["list"]), fleet.logs());
    for id in ["r0", "r1"] {
        assert_eq!(fleet.json(&["call", id, "answer"]), 41);
        let said = wait_until(UP, || {
            fleet.events(Some(id)).iter().any(|e| {
                e["event"] == "fleet.recreated"
                    && e["node"] == "solo"
                    && e["message"].as_str().is_some_and(|m| {
                        m.contains("re-adopted after restart") && m.contains("in-memory state lost")
                    })
            })
        });
        assert!(said, "{:?}", fleet.events(Some(id)));
    }
    // Killed and started again at once (its record has not even lapsed): the same.
    fleet.nodes[1].crash();
    fleet.rejoin(1, "solo", &solo);
    let again = wait_until(UP, || {
        ["r0", "r1"].iter().all(|id| {
            fleet
                .events(Some(id))
                .iter()
                .filter(|e| {
                    e["event"] == "fleet.recreated"
                        && e["message"]
                            .as_str()
                            .is_some_and(|m| m.contains("re-adopted after restart"))
                })
                .count()
                == 2
        })
    });
    assert!(again, "{:?}\n{}", fleet.events(None), fleet.logs());
    for id in ["r0", "r1"] {
        assert_eq!(fleet.json(&["call", id, "answer"]), 41);
    }
    let local = fleet.nodes[1].json(&["list"]);
    assert_eq!(local.as_array().unwrap().len(), 2, "{local}");
    // The unlabelled node never ran them.
    assert!(
        fleet.nodes[0]
            .json(&["list"])
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_node_restarted_after_its_sandboxes_moved_does_not_run_them_again() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let mut fleet = Fleet::start(&binary, 3, &[]);
    for i in 0..6 {
        fleet.create(&format!("m{i}"), &lib, &[]);
    }
    let moved: BTreeSet<String> = fleet
        .owners()
        .into_iter()
        .filter(|(_, n)| n == "node0")
        .map(|(id, _)| id)
        .collect();
    assert_eq!(moved.len(), 2);
    fleet.nodes[0].crash();
    let elsewhere = wait_until(UP, || {
        let owners = fleet.owners();
        owners.len() == 6 && owners.iter().all(|(_, n)| n == "node1" || n == "node2")
    });
    assert!(elsewhere, "{:?}\n{}", fleet.owners(), fleet.logs());
    let restarted_ms = now_ms();
    fleet.rejoin(0, "node0", &[]);
    // Several failover ticks of the restarted node later (its heartbeat well past its
    // first), it still runs nothing and each sandbox runs once.
    let ticked = wait_until(UP, || {
        let out = fleet.host(&["nodes", "--json"]);
        serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|nodes| {
            nodes.as_array().unwrap().iter().any(|n| {
                n["node"] == "node0" && n["seen_ms"].as_u64().unwrap_or(0) > restarted_ms + 4_000
            })
        })
    });
    assert!(ticked, "{}", fleet.logs());
    assert!(
        fleet.nodes[0]
            .json(&["list"])
            .as_array()
            .unwrap()
            .is_empty(),
        "{}",
        fleet.logs()
    );
    let owners = fleet.owners();
    let ids: BTreeSet<&String> = owners.iter().map(|(id, _)| id).collect();
    assert_eq!((owners.len(), ids.len()), (6, 6), "{owners:?}");
    assert!(owners.iter().all(|(_, n)| n != "node0"), "{owners:?}");
}

#[test]
fn a_node_restarted_with_less_capacity_gives_the_rest_up_for_another_node() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    // node0 has no zone=x: it may never take them.
    let mut fleet = Fleet::start(&binary, 1, &[]);
    fleet.join("big", &["--labels", "zone=x", "--capacity", "3"]);
    fleet.wait_nodes(2);
    for i in 0..3 {
        let info = fleet.create(&format!("c{i}"), &lib, &["--label", "zone=x"]);
        assert_eq!(info["node"], "big", "{info}");
    }
    fleet.nodes[1].crash();
    fleet.rejoin(1, "big", &["--labels", "zone=x", "--capacity", "1"]);
    // It runs one; the two past its capacity wait, given up, for a node with zone=x.
    let split = wait_until(UP, || {
        let list = fleet.json(&["list"]);
        let list = list.as_array().unwrap();
        let running = list
            .iter()
            .filter(|s| s["node"] == "big" && s["status"] == "running")
            .count();
        let given_up = list
            .iter()
            .filter(|s| {
                s["status"] == "waiting"
                    && s["owner"] == "big"
                    && s["reason"]
                        .as_str()
                        .is_some_and(|r| r.contains("big came back with --capacity 1"))
            })
            .count();
        (list.len(), running, given_up) == (3, 1, 2)
    });
    assert!(split, "{}\n{}", fleet.json(&["list"]), fleet.logs());
    assert_eq!(fleet.nodes[1].json(&["list"]).as_array().unwrap().len(), 1);
    // A node that may take them does, each once, saying why.
    fleet.join("other", &["--labels", "zone=x"]);
    let moved = wait_until(UP, || {
        let owners = fleet.owners();
        owners.len() == 3
            && owners.iter().filter(|(_, n)| n == "other").count() == 2
            && owners.iter().filter(|(_, n)| n == "big").count() == 1
    });
    assert!(moved, "{:?}\n{}", fleet.owners(), fleet.logs());
    // The owner is written (the claim) before the daemon re-creates and the event is said.
    let said = wait_until(UP, || {
        fleet
            .events(None)
            .iter()
            .filter(|e| {
                e["event"] == "fleet.recreated"
                    && e["node"] == "other"
                    && e["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("node big came back with a lower --capacity"))
            })
            .count()
            == 2
    });
    assert!(said, "{:?}", fleet.events(None));
    for i in 0..3 {
        assert_eq!(fleet.json(&["call", &format!("c{i}"), "answer"]), 41);
    }
    assert_eq!(fleet.nodes[1].json(&["list"]).as_array().unwrap().len(), 1);
}
