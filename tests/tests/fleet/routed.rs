//! The commands routed beyond one request and one answer: batches fanned out over the fleet
//! (placement counting the batch's own creates, selectors resolved from the specs bucket,
//! one result per item), `events --follow` over every node, `operate` and `ask` on the
//! owner (and `ask` on every node), `logs` and `destroy --purge` on the owner.

use std::collections::BTreeMap;
use std::process::Child;

use super::*;

/// `host ARGS --json` through the fleet: exit code and one JSON value per stdout line.
fn lines(fleet: &Fleet, args: &[&str]) -> (Option<i32>, Vec<Value>) {
    let mut args = args.to_vec();
    args.push("--json");
    let out = fleet.host(&args);
    let values = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    (out.status.code(), values)
}

/// The items of a batch's `--json` lines by index, and its summary.
fn batch(fleet: &Fleet, args: &[&str]) -> (Option<i32>, BTreeMap<u64, Value>, Value) {
    let (code, values) = lines(fleet, args);
    let mut items = BTreeMap::new();
    let mut summary = Value::Null;
    for v in values {
        if v.get("summary").is_some() {
            summary = v["summary"].clone();
        } else {
            let index = v["index"].as_u64().unwrap_or_else(|| panic!("{v}"));
            assert!(items.insert(index, v).is_none(), "an item twice");
        }
    }
    (code, items, summary)
}

/// The keys of the specs bucket, read straight from NATS.
fn spec_keys(urls: &str) -> Vec<String> {
    let url = urls.split(',').next().unwrap().to_string();
    e2e::apps::block_on(async move {
        let client = async_nats::connect(url).await.unwrap();
        let js = async_nats::jetstream::new(client);
        let mut stream = js.get_stream("KV_sandbox_specs").await.unwrap();
        let state = stream.info().await.unwrap().state.clone();
        let mut keys = Vec::new();
        let kv = js.get_key_value("sandbox_specs").await.unwrap();
        if state.messages > 0 {
            let mut listed = kv.keys().await.unwrap();
            while let Some(key) = futures_util::StreamExt::next(&mut listed).await {
                keys.push(key.unwrap());
            }
        }
        keys
    })
}

#[test]
fn batches_fan_out_over_the_fleet_with_one_result_per_item() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let lib = lib.to_str().unwrap();
    let fleet = Fleet::start(&binary, 3, &["--capacity", "20"]);
    let mut create = vec![
        "batch", "create", "--count", "30", "--prefix", "b", "--lib", lib,
    ];
    let parent = testkit::cgroup::cgroup_parent();
    if let Some(parent) = &parent {
        create.extend(["--cgroup-parent", parent.to_str().unwrap()]);
    }
    let (code, items, summary) = batch(&fleet, &create);
    assert_eq!(code, Some(0), "{items:?}\n{}", fleet.logs());
    assert_eq!(items.len(), 30, "{items:?}");
    assert_eq!(summary["ok"], 30, "{summary}");
    for (i, item) in &items {
        assert_eq!(item["id"], format!("b-{i}"), "{item}");
        assert_eq!(item["ok"]["status"], "running", "{item}");
    }
    // The batch counted its own creates: 30 spread as 30 single creates would.
    let owners = fleet.owners();
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for (_, node) in &owners {
        *per_node.entry(node.clone()).or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [10, 10, 10],
        "{per_node:?}"
    );
    for item in items.values() {
        let id = item["id"].as_str().unwrap();
        let owner = owners.iter().find(|(i, _)| i == id).unwrap();
        assert_eq!(item["ok"]["node"], owner.1.as_str(), "{item}");
    }

    // `--all` resolves from the specs bucket: every owner is reached.
    let (code, items, summary) = batch(&fleet, &["batch", "call", "--all", "--function", "answer"]);
    assert_eq!(code, Some(0), "{items:?}");
    assert_eq!(summary["total"], 30, "{summary}");
    assert!(items.values().all(|i| i["ok"] == 41), "{items:?}");
    // `--node` keeps the sandboxes that node owns.
    let (code, items, _) = batch(
        &fleet,
        &[
            "batch",
            "call",
            "--all",
            "--node",
            "node1",
            "--function",
            "answer",
        ],
    );
    assert_eq!(code, Some(0));
    let on_node1: Vec<&str> = owners
        .iter()
        .filter(|(_, n)| n == "node1")
        .map(|(id, _)| id.as_str())
        .collect();
    let called: Vec<&str> = items.values().map(|i| i["id"].as_str().unwrap()).collect();
    assert_eq!(called, on_node1);

    // A duplicate, an unknown and a taken id fail alone; the exit status says some failed.
    let (code, items, summary) = batch(&fleet, &["batch", "destroy", "b-0", "nosuch", "b-0"]);
    assert_eq!(code, Some(4), "{items:?}");
    assert!(!items[&0]["ok"].is_null(), "{items:?}");
    assert_eq!(items[&1]["error"]["kind"], "not_found", "{items:?}");
    assert_eq!(items[&2]["error"]["kind"], "duplicate_id", "{items:?}");
    assert_eq!(
        (summary["ok"].clone(), summary["failed"].clone()),
        (1.into(), 2.into())
    );
    let specs = std::env::temp_dir().join(format!("fleet-batch-{}.json", std::process::id()));
    std::fs::write(
        &specs,
        serde_json::json!([{"id": "b-1", "lib": lib}, {"id": "fresh", "lib": lib}]).to_string(),
    )
    .unwrap();
    let (code, items, _) = batch(
        &fleet,
        &["batch", "create", "--file", specs.to_str().unwrap()],
    );
    std::fs::remove_file(&specs).unwrap();
    assert_eq!(code, Some(4), "{items:?}");
    assert_eq!(items[&0]["error"]["kind"], "already_exists", "{items:?}");
    assert_eq!(items[&1]["ok"]["status"], "running", "{items:?}");
    // The text form is the local batch's.
    let out = fleet.host(&["batch", "destroy", "nosuch"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("batch destroy: 0 ok, 1 failed of 1\nID"),
        "{text}"
    );
    // What builds on this machine is refused, saying so.
    let app = demo_app();
    let out = fleet.host(&["reload", "b-2", "--watch", app.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("reload --watch is not routed"), "{said}");
    // `--app` is not built for a fleet.
    let out = fleet.host(&["batch", "create", "--count", "1", "--prefix", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--lib"));

    // `--all` destroys every sandbox: no spec left, none on any node.
    let (code, items, _) = batch(&fleet, &["batch", "destroy", "--all"]);
    assert_eq!(code, Some(0), "{items:?}");
    assert_eq!(items.len(), 30, "{items:?}");
    assert_eq!(spec_keys(&fleet.nats.urls()), Vec::<String>::new());
    for daemon in &fleet.nodes {
        assert_eq!(daemon.json(&["list"]), serde_json::json!([]));
    }

    // Past the batch timeout nothing more starts, and the create in flight is rolled back:
    // every item says `timeout`, and nothing of them remains anywhere.
    let (code, items, summary) = batch(
        &fleet,
        &[
            "batch",
            "create",
            "--count",
            "4",
            "--prefix",
            "t",
            "--lib",
            lib,
            "--timeout",
            "1",
            "--max-concurrency",
            "1",
        ],
    );
    assert_eq!(code, Some(4), "{items:?}");
    assert_eq!(summary["timed_out"], 4, "{summary}");
    assert!(
        items.values().all(|i| i["error"]["kind"] == "timeout"),
        "{items:?}"
    );
    assert_eq!(spec_keys(&fleet.nats.urls()), Vec::<String>::new());
    for daemon in &fleet.nodes {
        assert_eq!(daemon.json(&["list"]), serde_json::json!([]));
    }

    // A client ended mid-batch: what a node was sent it finishes, so the fleet settles with
    // a running sandbox for each spec and a spec for each sandbox.
    let dir = tempfile::tempdir().unwrap();
    let client = spawn(
        &fleet,
        dir.path(),
        &[
            "batch",
            "create",
            "--count",
            "40",
            "--prefix",
            "k",
            "--lib",
            lib,
            "--json",
            "--max-concurrency",
            "1",
        ],
    );
    let started = wait_until(UP, || {
        std::fs::read_to_string(dir.path().join("out")).is_ok_and(|o| o.lines().count() >= 2)
    });
    assert!(started);
    drop(client);
    let settled = wait_until(UP, || {
        let list = fleet.json(&["list"]);
        let mut running: Vec<String> = list
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["status"] == "running")
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect();
        running.sort();
        let mut specs = spec_keys(&fleet.nats.urls());
        specs.sort();
        running.len() == list.as_array().unwrap().len() && running == specs
    });
    assert!(
        settled,
        "{}\n{:?}",
        fleet.json(&["list"]),
        spec_keys(&fleet.nats.urls())
    );
    assert!(fleet.host(&["batch", "destroy", "--all"]).status.success());
}

/// A `host` child with its output in files under `dir`.
fn spawn(fleet: &Fleet, dir: &Path, args: &[&str]) -> ChildGuard {
    let child: Child = fleet_client(&fleet.nats.urls())
        .args(args)
        .stdout(std::fs::File::create(dir.join("out")).unwrap())
        .stderr(std::fs::File::create(dir.join("err")).unwrap())
        .spawn()
        .unwrap();
    ChildGuard::terminate(child, Duration::from_secs(5))
}

/// `host ARGS` with the offline mock model.
fn mock(fleet: &Fleet, args: &[&str]) -> Output {
    fleet_client(&fleet.nats.urls())
        .env("BEAMLENS_DEMO_PROVIDER", "mock")
        .env_remove("ANTHROPIC_API_KEY")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn events_follow_operate_ask_logs_and_purge_reach_every_node() {
    let Some(binary) = nats_server() else {
        return;
    };
    let lib = demo_lib();
    let fleet = Fleet::start(&binary, 3, &[]);
    let dir = tempfile::tempdir().unwrap();
    let follower = spawn(&fleet, dir.path(), &["events", "--follow", "--json"]);
    let ready = wait_until(UP, || {
        std::fs::read_to_string(dir.path().join("err")).is_ok_and(|e| e.contains("following"))
    });
    assert!(
        ready,
        "{}",
        std::fs::read_to_string(dir.path().join("err")).unwrap_or_default()
    );
    for i in 0..3 {
        let node = format!("node{i}");
        let info = fleet.create(&format!("e{i}"), &lib, &["--node", &node]);
        assert_eq!(info["node"], node.as_str());
    }
    // The follower sees each node's `sandbox.created`, whichever server each is on.
    let seen = testkit::wait::wait_for(UP, || {
        let out = std::fs::read_to_string(dir.path().join("out")).ok()?;
        let created: Vec<(String, String)> = out
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|e| e["event"] == "sandbox.created")
            .map(|e| {
                (
                    e["sandbox"].as_str().unwrap_or("").to_string(),
                    e["node"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        (created.len() >= 3).then_some(created)
    });
    drop(follower);
    let mut created = seen.unwrap_or_else(|| {
        panic!(
            "{}",
            std::fs::read_to_string(dir.path().join("out")).unwrap_or_default()
        )
    });
    created.sort();
    assert_eq!(
        created,
        [("e0", "node0"), ("e1", "node1"), ("e2", "node2")]
            .map(|(s, n)| (s.to_string(), n.to_string()))
    );

    // operate and ask go to the owner, with the client's provider.
    let out = mock(&fleet, &["operate", "e1", "--json"]);
    assert!(out.status.success(), "{out:?}");
    let outcome: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(outcome["state"], "healthy", "{outcome}");
    let out = mock(&fleet, &["ask", "e2", "how is it?"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.starts_with("[answer] \"e2: status running"), "{text}");
    // ask without an id: every node answers about its own, under its name.
    let out = mock(&fleet, &["ask", "how are they?"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    for i in 0..3 {
        let at = text
            .find(&format!("[node] node{i}\n"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(
            text[at..].contains(&format!("e{i}: status running")),
            "{text}"
        );
    }
    let out = mock(&fleet, &["ask", "--node", "node1", "how are they?"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("[node] node1\n"), "{text}");
    assert!(!text.contains("[node] node0"), "{text}");
    // A canary reload goes to the owner too, and waits its window there.
    let lib42 = e2e::apps::block_on(demo_lib_answering(42));
    let out = fleet.host(&[
        "reload",
        "e0",
        "--lib",
        lib42.to_str().unwrap(),
        "--canary",
        "--watch-for",
        "500ms",
        "--json",
    ]);
    assert!(out.status.success(), "{out:?}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["outcome"], "kept", "{report}");
    assert_eq!(fleet.json(&["call", "e0", "answer"]), 42);
    let out = mock(&fleet, &["operate", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // logs from the owner; destroy --purge there; then nothing is kept.
    let (code, log) = lines(&fleet, &["logs", "e1"]);
    assert_eq!(code, Some(0), "{log:?}");
    assert!(log.iter().all(|l| l["time"].is_string()), "{log:?}");
    let gone = fleet.json(&["destroy", "e1", "--purge"]);
    assert_eq!(gone, serde_json::json!({"destroyed": "e1", "purged": true}));
    let out = fleet.host(&["logs", "e1"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
    // A destroyed sandbox's kept log is found on the node that ran it, and purged there.
    fleet.json(&["destroy", "e2"]);
    let (code, _) = lines(&fleet, &["logs", "e2"]);
    assert_eq!(code, Some(0));
    let gone = fleet.json(&["destroy", "e2", "--purge"]);
    assert_eq!(gone, serde_json::json!({"destroyed": null, "purged": true}));
    // What an app prints comes back from its node, within one answer's bound.
    let talker = e2e::apps::block_on(built("talker_app"));
    let info = fleet.create("talk", &talker, &["--node", "node2"]);
    assert_eq!(info["node"], "node2");
    fleet.json(&["call", "talk", "say", r#""from node2""#]);
    let said = wait_until(UP, || {
        let (_, log) = lines(&fleet, &["logs", "talk"]);
        log.iter()
            .any(|l| l["stream"] == "stdout" && l["text"] == "out: from node2")
    });
    assert!(said, "{:?}", lines(&fleet, &["logs", "talk"]));
    // Followed: the newest line, then each new one once, until the sandbox is destroyed.
    let logs_dir = tempfile::tempdir().unwrap();
    let mut follower = spawn(
        &fleet,
        logs_dir.path(),
        &["logs", "talk", "--follow", "--last", "1", "--json"],
    );
    let texts = || -> Vec<String> {
        std::fs::read_to_string(logs_dir.path().join("out"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .map(|l| l["text"].as_str().unwrap_or("").to_string())
            .collect()
    };
    assert!(wait_until(UP, || texts().len() == 1), "{:?}", texts());
    for word in ["one", "two", "three"] {
        fleet.json(&["call", "talk", "say", &format!("\"{word}\"")]);
    }
    let want: Vec<String> = ["one", "two", "three"]
        .iter()
        .flat_map(|w| [format!("out: {w}"), format!("err: {w}")])
        .collect();
    let got = testkit::wait::wait_for(UP, || {
        let mut got = texts().split_off(1);
        got.sort();
        let mut sorted = want.clone();
        sorted.sort();
        (got == sorted).then_some(got)
    });
    assert!(got.is_some(), "{:?}", texts());
    fleet.json(&["destroy", "talk"]);
    let ended = follower.wait_exit(UP);
    assert!(ended.is_some_and(|s| s.success()), "{ended:?}");
    assert_eq!(texts().len(), 7, "{:?}", texts());
    // Straight on a node's subjects: a followed log and a stream are not routed.
    let follow = br#"{"op":"logs","id":"e0","follow":true}"#;
    let answer = raw(&fleet.nats.urls(), "sandbox.node0.logs", follow);
    assert_eq!(answer["error"]["kind"], "bad_request", "{answer}");
    let events = br#"{"op":"events","follow":true}"#;
    let answer = raw(&fleet.nats.urls(), "sandbox.node0.events", events);
    assert_eq!(answer["error"]["kind"], "unknown_op", "{answer}");
}

/// One request on `subject` straight through NATS, and its answer.
fn raw(urls: &str, subject: &str, payload: &[u8]) -> Value {
    let url = urls.split(',').next().unwrap().to_string();
    let (subject, payload) = (subject.to_string(), payload.to_vec());
    e2e::apps::block_on(async move {
        let client = async_nats::connect(url).await.unwrap();
        let answer = client.request(subject, payload.into()).await.unwrap();
        serde_json::from_slice(&answer.payload).unwrap()
    })
}
