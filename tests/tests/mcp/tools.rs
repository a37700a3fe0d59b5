//! The tools over both transports: every read tool on a live sandbox, write tools absent and
//! refused without the flag, and with it an agent's create, call, reload, call, destroy.

use super::*;

/// Checks a `read` report: the read tools only, each answering about sandbox `id`, the
/// prompt, bad input refused as MCP errors, write tools unknown.
fn check_read(report: &Value, id: &str, via: &str) {
    assert_eq!(report["server"], "sandbox-host", "{via}");
    assert_eq!(tool_names(report), READ_TOOLS, "{via}: write tools listed");
    for name in READ_TOOLS.iter().filter(|n| **n != "report_verdict") {
        let schema = &report["schemas"][name];
        assert_eq!(schema["type"], "object", "{via}: {name} schema {schema}");
    }
    let listed = ok(&report["list_sandboxes"], "list_sandboxes");
    assert_eq!(listed["sandboxes"][0]["id"], id, "{via}");
    let info = ok(&report["sandbox_info"], "sandbox_info");
    assert_eq!(info["id"], id);
    assert_eq!(info["status"], "running");
    let usage = ok(&report["sandbox_usage"], "sandbox_usage");
    assert!(usage["processes"].as_u64().unwrap() >= 2, "{usage}");
    assert!(usage["memory_bytes"].as_u64().unwrap() > 0, "{usage}");
    let workers = ok(&report["sandbox_workers"], "sandbox_workers");
    assert_eq!(workers["workers"].as_array().unwrap().len(), 1, "{workers}");
    let events = ok(&report["recent_events"], "recent_events")["events"]
        .as_array()
        .unwrap();
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "sandbox.created" && e["sandbox"] == id),
        "{via}: {events:?}"
    );
    assert!(events.len() <= 5, "limit ignored: {}", events.len());
    let anomalies = ok(&report["detector_anomalies"], "detector_anomalies");
    assert!(anomalies["anomalies"].is_array(), "{anomalies}");
    let snapshot = ok(&report["snapshot"], "snapshot");
    assert_eq!(snapshot["sandbox_id"], id);
    assert_eq!(snapshot["status"], "running");
    assert!(snapshot["processes"].as_u64().unwrap() >= 2, "{snapshot}");
    let isolation = ok(&report["isolation_report"], "isolation_report");
    assert_eq!(isolation["isolation"]["level"], "standard", "{isolation}");
    let mechanisms = isolation["isolation"]["mechanisms"].as_array().unwrap();
    assert!(
        mechanisms
            .iter()
            .any(|m| m["mechanism"] == "seccomp" && m["applied"] == true),
        "{isolation}"
    );
    assert_eq!(report["prompts"], serde_json::json!(["judge_sandbox"]));
    let prompt = report["prompt_text"][0].as_str().unwrap();
    assert!(
        prompt.contains(&format!("id {id}")) && prompt.contains("report_verdict"),
        "{prompt}"
    );
    for (what, result) in report["bad"].as_object().unwrap() {
        let refused = if what == "huge_arg" && via == "http" {
            is_refused_body(result)
        } else {
            is_mcp_error(result)
        };
        assert!(refused, "{via}: {what} was not refused: {result}");
    }
    assert!(report["bad"].get("huge_arg").is_some(), "{via}");
    assert_eq!(
        report["bad"]["unknown_sandbox"]["structured"]["error"]["kind"],
        "not_found"
    );
    assert_eq!(
        report["bad"]["path_id"]["structured"]["error"]["kind"],
        "bad_request"
    );
    for (what, result) in report["write_tries"].as_object().unwrap() {
        assert!(
            result["protocol_error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("not found")),
            "{via}: {what} without the flag: {result}"
        );
    }
    ok(&report["after"], "list_sandboxes after bad input");
}

#[test]
fn read_tools_answer_on_a_live_sandbox_and_write_tools_are_absent() {
    let Some(python) = python_or_skip() else {
        return;
    };
    let d = Serve::start(&["--mcp", "127.0.0.1:0"]);
    assert!(d.log().contains("read tools only"), "{}", d.log());
    let lib = block_on(built("sandbox_app"));
    d.create("m1", &lib, &[]);
    let url = mcp_url(&d);
    let stdio = agent(
        &python,
        Via::Stdio {
            socket: &d.socket,
            write: false,
        },
        &["read", "m1"],
    );
    check_read(&stdio, "m1", "stdio");
    let http = agent(
        &python,
        Via::Http {
            url: &url,
            token: None,
        },
        &["read", "m1"],
    );
    check_read(&http, "m1", "http");
    // The refused destroy changed nothing, and the daemon serves on.
    assert_eq!(d.call_answer("m1"), 41);
}

/// Checks an `agent` report: create 41, reload to 42, errors for an unknown function and a
/// relative path, destroyed.
fn check_agent(report: &Value, id: &str, via: &str) {
    let mut names = tool_names(report);
    names.retain(|n| !READ_TOOLS.contains(&n.as_str()));
    assert_eq!(names, WRITE_TOOLS, "{via}");
    let steps = report["steps"].as_array().unwrap();
    let created = ok(&steps[0], "create_sandbox");
    assert_eq!(created["id"], id, "{via}");
    assert_eq!(ok(&steps[1], "call")["result"], 41, "{via}");
    let reload = ok(&steps[2], "reload_sandbox");
    assert_eq!(reload["status"], "reloaded", "{via}: {reload}");
    assert_eq!(reload["to_version"], 2);
    assert_eq!(ok(&steps[3], "call")["result"], 42, "{via}");
    assert_eq!(ok(&steps[4], "snapshot")["app_version"], 2, "{via}");
    assert_eq!(steps[5]["is_error"], true);
    assert_eq!(steps[5]["structured"]["error"]["kind"], "unknown_function");
    assert_eq!(steps[6]["structured"]["error"]["kind"], "bad_request");
    assert_eq!(ok(&steps[7], "destroy")["destroyed"], id);
    assert_eq!(
        ok(&steps[8], "list")["sandboxes"],
        serde_json::json!([]),
        "{via}"
    );
}

#[test]
fn with_the_write_flag_an_agent_creates_calls_reloads_and_destroys() {
    let Some(python) = python_or_skip() else {
        return;
    };
    let d = Serve::start(&["--mcp", "127.0.0.1:0", "--mcp-write", "--ui-token", TOKEN]);
    assert!(d.log().contains("write tools ON"), "{}", d.log());
    let (v1, v2) = block_on(async { (built("sandbox_app").await, demo_lib_answering(42).await) });
    let (v1, v2) = (v1.to_str().unwrap(), v2.to_str().unwrap());
    let stdio = agent(
        &python,
        Via::Stdio {
            socket: &d.socket,
            write: true,
        },
        &["agent", "w1", v1, v2],
    );
    check_agent(&stdio, "w1", "stdio");
    let url = mcp_url(&d);
    let http = agent(
        &python,
        Via::Http {
            url: &url,
            token: Some(TOKEN),
        },
        &["agent", "w2", v1, v2],
    );
    check_agent(&http, "w2", "http");
    // The stdio server of `host mcp` without --write offers none of them, whatever the
    // daemon's own flag says.
    let read_only = agent(
        &python,
        Via::Stdio {
            socket: &d.socket,
            write: false,
        },
        &["init"],
    );
    assert_eq!(tool_names(&read_only), READ_TOOLS);
}

#[test]
fn an_agent_reloads_from_an_app_directory_the_daemon_reads() {
    let Some(python) = python_or_skip() else {
        return;
    };
    let d = Serve::start(&["--mcp", "127.0.0.1:0", "--mcp-write", "--ui-token", TOKEN]);
    let lib = block_on(demo_lib_answering(42));
    d.create("dir1", &lib, &[]);
    let crate_dir = demo_app();
    let report = agent(
        &python,
        Via::Http {
            url: &mcp_url(&d),
            token: Some(TOKEN),
        },
        &["reload_dir", "dir1", crate_dir.to_str().unwrap()],
    );
    // Built in the build sandbox from the crate (answer 41), loaded over the 42 of v1.
    let reload = ok(&report["reload"], "reload from app_dir");
    assert_eq!(reload["status"], "reloaded", "{reload}");
    assert!(reload["compile_ms"].is_u64(), "{reload}");
    assert_eq!(ok(&report["call"], "call")["result"], 41);
}
