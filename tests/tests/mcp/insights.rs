//! The coordinator's insights as MCP resources: once the detector's coordinator has raised
//! one, an agent lists `sandbox-host://insights` and the insight's own resource, reads both
//! as JSON, and reading an insight that does not exist is a protocol error.

use super::*;

#[test]
fn insights_are_resources_an_agent_lists_and_reads() {
    let Some(python) = python_or_skip() else {
        return;
    };
    let d = Serve::start(&[
        "--watch",
        "--watch-interval",
        "200ms",
        "--watch-provider",
        "mock",
        "--watch-coordinator",
    ]);
    let mut events = d.follow(None);
    let lib = block_on(built("sandbox_app"));
    d.create("res-1", &lib, &[]);
    d.ok(&["workers", "res-1", "--add", "12"]);
    let (insight, _) = events.until(AGENT_TIMEOUT, |e| e["event"] == "operator.insight");
    let id = insight["id"].as_str().unwrap();

    let seen = agent(
        &python,
        Via::Stdio {
            socket: &d.socket,
            write: false,
        },
        &["insights"],
    );
    let uris: Vec<&str> = seen["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    let own = format!("sandbox-host://insights/{id}");
    assert!(uris.contains(&"sandbox-host://insights"), "{seen}");
    assert!(uris.contains(&own.as_str()), "{seen}");
    let collection: Value =
        serde_json::from_str(seen["collection"]["texts"][0].as_str().unwrap()).unwrap();
    let listed = collection["insights"].as_array().unwrap();
    assert!(listed.iter().any(|i| i["id"] == id), "{collection}");
    let first: Value = serde_json::from_str(seen["first"]["texts"][0].as_str().unwrap()).unwrap();
    assert_eq!(first["event"], "operator.insight", "{first}");
    assert_eq!(first["grounded"], true, "{first}");
    assert!(
        seen["missing"]["protocol_error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("no insight")),
        "{seen}"
    );
}
