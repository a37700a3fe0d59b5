//! The `mcp` test binary: the daemon's MCP server driven by a real MCP client that nobody
//! here wrote, the official Python SDK (`mcp` on PyPI, `tests/mcp/agent.py`), over both
//! transports: `host mcp` on stdio and `host serve --mcp` over Streamable HTTP. Read tools on
//! a live sandbox, write tools absent without the flag and an agent's create, call, reload,
//! destroy with it (`tools`); a verdict checked against the kernel (`verdict`); the HTTP
//! endpoint's guards and a sandbox that tries to reach it (`guards`); the coordinator's
//! insights as resources (`insights`).
//!
//! Without python3 and its `mcp` package (`.ci/run` installs it when missing) the client
//! tests print `SKIPPED`; `SANDBOX_TEST_PYTHON` names another interpreter.

mod guards;
mod insights;
mod tools;
mod verdict;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use e2e::apps::block_on;
use e2e::prelude::*;
use e2e::serve::Serve;
use serde_json::Value;
use testkit::ChildGuard;

/// The token of the tests' daemons that need one.
const TOKEN: &str = "T0ken-for-mcp-tests";

/// How long one agent run may take (a create and a reload of prebuilt libraries included).
const AGENT_TIMEOUT: Duration = Duration::from_secs(120);

/// The Python interpreter with the `mcp` package, or why there is none.
fn python() -> Result<PathBuf, String> {
    let python = std::env::var_os("SANDBOX_TEST_PYTHON")
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
    let probe = Command::new(&python)
        .args(["-c", "import mcp, mcp.client.streamable_http"])
        .stdin(Stdio::null())
        .output();
    match probe {
        Ok(out) if out.status.success() => Ok(python),
        Ok(_) => Err(format!(
            "{} has no `mcp` package (pip install mcp)",
            python.display()
        )),
        Err(e) => Err(format!("no {}: {e}", python.display())),
    }
}

/// The interpreter, or `None` after printing `SKIPPED` for the calling test.
fn python_or_skip() -> Option<PathBuf> {
    match python() {
        Ok(p) => Some(p),
        Err(why) => {
            skip(&why);
            None
        }
    }
}

/// How the agent reaches the server.
enum Via<'a> {
    /// `host mcp --socket SOCKET [--write]`, spawned by the client.
    Stdio { socket: &'a Path, write: bool },
    /// `URL` with an optional bearer token.
    Http {
        url: &'a str,
        token: Option<&'a str>,
    },
}

/// Runs `tests/mcp/agent.py` with `scenario` and returns the report it printed.
fn agent(python: &Path, via: Via<'_>, scenario: &[&str]) -> Value {
    let script = root().join("tests/mcp/agent.py");
    let mut cmd = Command::new(python);
    cmd.arg(&script);
    match via {
        Via::Stdio { socket, write } => {
            cmd.arg("--stdio").arg(host()).arg("--socket").arg(socket);
            if write {
                cmd.arg("--write");
            }
        }
        Via::Http { url, token } => {
            cmd.args(["--url", url]);
            if let Some(token) = token {
                cmd.args(["--token", token]);
            }
        }
    }
    let child = cmd
        .args(scenario)
        .env_remove("SANDBOX_HOST_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut guard = ChildGuard::new(child);
    // Read both pipes on threads so that a chatty child cannot block on a full pipe.
    let mut stdout = guard.child().stdout.take().unwrap();
    let mut stderr = guard.child().stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut s).ok();
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut stderr, &mut s).ok();
        s
    });
    let status = guard.wait_exit(AGENT_TIMEOUT);
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.is_some_and(|s| s.success()),
        "agent {scenario:?} failed ({status:?}):\n{err}\n{out}"
    );
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last)
        .unwrap_or_else(|e| panic!("agent printed no report ({e}):\n{out}\n{err}"))
}

/// The daemon's `/mcp` URL (from its log).
fn mcp_url(d: &Serve) -> String {
    d.url("MCP").expect("the daemon logged no MCP address")
}

/// The read tools every server lists, sorted.
const READ_TOOLS: &[&str] = &[
    "detector_anomalies",
    "isolation_report",
    "list_sandboxes",
    "recent_events",
    "report_verdict",
    "sandbox_info",
    "sandbox_usage",
    "sandbox_workers",
    "snapshot",
];

/// The write tools, listed only with `--mcp-write` / `host mcp --write`.
const WRITE_TOOLS: &[&str] = &[
    "call_function",
    "create_sandbox",
    "destroy_sandbox",
    "reload_sandbox",
    "restart_sandbox",
    "rollback_sandbox",
];

/// The tool names of a report, sorted.
fn tool_names(report: &Value) -> Vec<String> {
    let mut names: Vec<String> = report["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

/// A tool result that succeeded: its structured content.
fn ok<'a>(result: &'a Value, what: &str) -> &'a Value {
    assert_eq!(result["is_error"], false, "{what}: {result}");
    let s = &result["structured"];
    assert!(s.is_object(), "{what}: no structured content: {result}");
    s
}

/// Whether a result is an MCP error: a protocol error, or a tool result flagged as one.
fn is_mcp_error(result: &Value) -> bool {
    result.get("protocol_error").is_some() || result["is_error"] == true
}

/// Whether a result is the HTTP endpoint's refusal of a body past its cap: a 413 (an MCP
/// error to the client), or the connection closed under the sender before it could read
/// the 413 (the server answers before reading such a body whole).
fn is_refused_body(result: &Value) -> bool {
    is_mcp_error(result)
        || result["transport_error"]
            .as_str()
            .is_some_and(|e| e.contains("disconnected") || e.contains("reset") || e.contains("413"))
}
