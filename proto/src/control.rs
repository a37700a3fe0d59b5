//! Requests and responses of the daemon's control socket.
//!
//! # Format
//!
//! Newline-delimited JSON over a Unix stream socket. The client writes one request per line;
//! the daemon answers every request with exactly one line, in order. A connection may carry
//! any number of requests; either side ends it by closing. A request line longer than the
//! daemon's `--max-request` (default [`DEFAULT_MAX_REQUEST`], 1 MiB), or not finished within
//! its `--request-timeout`, ends the connection with one `bad_request` line; an answer is at
//! most [`MAX_LINE`] bytes.
//!
//! # Descriptors
//!
//! The client opens the files it names with its own rights and sends the descriptors with
//! the request line (`SCM_RIGHTS`, on the `sendmsg` that carries the line's first byte); the
//! line says how many with a top-level `"fds": N` (at most [`MAX_FDS`]). `create` and
//! `reload` take one: the library (`O_RDONLY`) or the crate directory (`O_RDONLY|
//! O_DIRECTORY`) their source names, or for a source reload the `crate_dir`; `deps_fetch`
//! its crate. A crate directory may come with a second: the workspace root it is a member
//! of, when its path dependencies reach siblings. A request whose
//! count does not match what arrived is refused, and descriptors no request claimed are
//! closed. Without descriptors a path is used only when the peer runs as the daemon's own
//! user (so it names nothing that user could not open).
//!
//! A request is an object whose `op` names the operation:
//!
//! ```text
//! {"op":"ping"}
//! {"op":"create","id":"demo","spec":{"app":{"crate":"/abs/sandbox_app"},"limits":{...}}}
//! {"op":"list"}
//! {"op":"info","id":"demo"}
//! {"op":"call","id":"demo","function":"answer","args":null,"timeout_ms":5000}
//! {"op":"reload","id":"demo","source":{"crate":"/abs/dir"}}          (or "library", or
//!                                   {"source":{"lib_rs":"...","crate_dir":null}})
//! {"op":"rollback","id":"demo","version":1}
//! {"op":"usage","id":"demo"}
//! {"op":"workers","id":"demo","add":2}                              (add: optional)
//! {"op":"restart","id":"demo"}
//! {"op":"destroy","id":"demo"}
//! {"op":"events","id":"demo","follow":true,"last":50}          (id, follow, last: optional)
//! {"op":"batch","action":"create","items":[...]}                  (see `crate::batch`)
//! {"op":"deps_fetch","crate_dir":"/abs/dir"}                     (with the crate's descriptor)
//! {"op":"ask","id":"demo","question":"why did it restart?"}          (id: optional)
//! ```
//!
//! `events` is the one request answered by more than one line: `{"ok":{"stream":"events",
//! "backlog":N}}`, then N event lines, then, with `follow`, one line per new event (or
//! `{"lagged":N}` when the connection fell N events behind) until either side closes.
//!
//! Paths are absolute: the daemon does not share the client's working directory.
//!
//! A response is either `{"ok": VALUE}` or `{"error": {"kind": KIND, "message": TEXT}}`.
//! VALUE is the manager's own serialization: `SandboxInfo` (create, info, restart),
//! `[SandboxSummary]` (list), the app's JSON result (call), `ReloadReport` (reload,
//! rollback), `Usage` (usage), `WorkerList` (workers), `{"destroyed": ID}` (destroy),
//! [`Hello`] (ping). KIND is `sandbox::SandboxError::kind()` (`not_found`, `build_failed`, …) or one
//! of the daemon's own: [`BAD_REQUEST`], [`PERMISSION_DENIED`], [`SHUTTING_DOWN`],
//! [`INTERNAL`].
//!
//! Before reading anything the daemon checks the peer's uid (`SO_PEERCRED`); a refused peer
//! gets one `permission_denied` error line and the connection is closed.

use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use crate::canary::CanaryWire;
use crate::spec::{ReloadSource, SandboxSpec};

/// Longest answer line a client accepts, in bytes (a call's result, a build's diagnostics).
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// The daemon's default longest request line, in bytes (a `reload` may carry a whole
/// `lib.rs`, a `call` its arguments): `--max-request`.
pub const DEFAULT_MAX_REQUEST: usize = 1024 * 1024;

/// Most descriptors one request may carry.
pub const MAX_FDS: usize = 4;

/// Error kind: the daemon has no room for another connection.
pub const BUSY: &str = "busy";

/// Error kind: the line was not a valid request.
pub const BAD_REQUEST: &str = "bad_request";
/// Error kind: the peer's uid may not control this daemon.
pub const PERMISSION_DENIED: &str = "permission_denied";
/// Error kind: the daemon is stopping and takes no more requests.
pub const SHUTTING_DOWN: &str = "shutting_down";
/// Error kind: the daemon failed in a way that is not the request's fault.
pub const INTERNAL: &str = "internal";

/// One request from a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Is anyone there? Answers [`Hello`].
    Ping,
    /// Create and start a sandbox.
    Create {
        /// Sandbox id.
        id: String,
        /// App and limits.
        spec: SandboxSpec,
        /// Whether the detector watches it; the daemon's `--watch` when absent.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        watch: Option<bool>,
    },
    /// List sandboxes.
    List,
    /// Describe one sandbox.
    Info {
        /// Sandbox id.
        id: String,
    },
    /// Call an app function.
    Call {
        /// Sandbox id.
        id: String,
        /// Function name.
        function: String,
        /// JSON arguments.
        #[serde(default)]
        args: serde_json::Value,
        /// Call timeout; the daemon's default when absent.
        #[serde(default)]
        timeout_ms: Option<u64>,
    },
    /// Hot-reload a new version.
    Reload {
        /// Sandbox id.
        id: String,
        /// Where the new version comes from.
        source: ReloadWire,
        /// Reload as a canary: watched for a window, rolled back by the daemon when flagged;
        /// answers a `CanaryReport` instead of a `ReloadReport`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        canary: Option<CanaryWire>,
    },
    /// Return to an earlier version.
    Rollback {
        /// Sandbox id.
        id: String,
        /// Version number from the sandbox's history.
        version: u32,
    },
    /// Measure resource usage.
    Usage {
        /// Sandbox id.
        id: String,
    },
    /// List workers, after starting `add` more when given.
    Workers {
        /// Sandbox id.
        id: String,
        /// Workers to start first.
        #[serde(default)]
        add: Option<u32>,
    },
    /// Restart the runner on its current version.
    Restart {
        /// Sandbox id.
        id: String,
    },
    /// Destroy a sandbox.
    Destroy {
        /// Sandbox id.
        id: String,
    },
    /// Run the AI operator once on a sandbox; answers an `operator::Outcome`.
    Operate(crate::operate::OperateRequest),
    /// Ask the coordinator one question about a sandbox or all of them; answers a
    /// `watch::coordinator::CoordinatorReport` (see `crate::ask`).
    Ask(crate::ask::AskRequest),
    /// Stream events: a header line, the backlog, then (with `follow`) every new event,
    /// until the client hangs up (see `daemon::events_stream`).
    Events {
        /// Only events about this sandbox.
        #[serde(default)]
        id: Option<String>,
        /// Keep streaming new events after the backlog.
        #[serde(default)]
        follow: bool,
        /// At most this many backlog events (default: the whole ring).
        #[serde(default)]
        last: Option<usize>,
    },
    /// Stream a sandbox's log (a live one's, or a destroyed one's while it is kept): a
    /// header line, the backlog's records, then (with `follow`) every new record, until the
    /// client hangs up or the sandbox is destroyed (see `daemon::logs_stream`). Each record
    /// is a [`crate::logline::WireLogLine`].
    Logs {
        /// Sandbox id.
        id: String,
        /// Keep streaming new lines after the backlog.
        #[serde(default)]
        follow: bool,
        /// Only lines from this time on (milliseconds since the Unix epoch).
        #[serde(default)]
        since_ms: Option<u64>,
        /// At most this many backlog lines (the newest).
        #[serde(default)]
        last: Option<usize>,
    },
    /// Remove the log kept of a destroyed sandbox (`host destroy ID --purge`).
    PurgeLog {
        /// Sandbox id.
        id: String,
    },
    /// Create, destroy, call or reload many sandboxes: answered by a stream of one line per
    /// item and a summary (see `crate::batch`).
    Batch(crate::batch::BatchRequest),
    /// Fill the daemon's cargo cache with a crate's dependencies (`cargo fetch`, with the
    /// daemon's network); takes the crate directory's descriptor. Answers
    /// `{"fetched": DIR, "ms": N, "output": TEXT}`.
    DepsFetch {
        /// The crate, as the client named it.
        crate_dir: PathBuf,
    },
}

/// The wire form of [`ReloadSource`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReloadWire {
    /// A prebuilt `.so`.
    Library(PathBuf),
    /// A crate directory for the daemon to build.
    Crate(PathBuf),
    /// Replacement text of `src/lib.rs`.
    Source {
        /// New contents of `src/lib.rs`.
        lib_rs: String,
        /// The crate to copy; the sandbox's own crate when absent.
        #[serde(default)]
        crate_dir: Option<PathBuf>,
    },
}

impl From<ReloadWire> for ReloadSource {
    fn from(wire: ReloadWire) -> ReloadSource {
        match wire {
            ReloadWire::Library(path) => ReloadSource::Library(path),
            ReloadWire::Crate(dir) => ReloadSource::Crate(dir),
            ReloadWire::Source { lib_rs, crate_dir } => ReloadSource::Source { lib_rs, crate_dir },
        }
    }
}

/// One answer from the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Response {
    /// Success and its value.
    Ok(serde_json::Value),
    /// Failure.
    Error(WireError),
}

/// A failure as it crosses the socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    /// Machine-readable kind: `SandboxError::kind()` or one of this module's constants.
    pub kind: String,
    /// Human-readable reason (may span lines, e.g. cargo's diagnostics).
    pub message: String,
}

impl WireError {
    /// An error of `kind` with `message`.
    pub fn new(kind: &str, message: impl Into<String>) -> WireError {
        WireError {
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}

/// What `ping` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The daemon's pid.
    pub pid: u32,
    /// The daemon's package version.
    pub version: String,
    /// Sandboxes it owns.
    pub sandboxes: usize,
}

/// The envelope fields every request line may carry besides its `op`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub struct Envelope {
    /// How many descriptors came with the line.
    #[serde(default)]
    pub fds: usize,
}

/// Encodes a request that `fds` descriptors accompany (see the module docs).
pub fn encode_request(request: &Request, fds: usize) -> io::Result<Vec<u8>> {
    let mut value = serde_json::to_value(request).map_err(io::Error::other)?;
    if fds > 0
        && let Some(map) = value.as_object_mut()
    {
        map.insert("fds".into(), fds.into());
    }
    encode(&value)
}

/// Encodes one message as a JSON line (with its trailing newline).
pub fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
    line.push(b'\n');
    Ok(line)
}

/// Appends bytes from `chunk` up to and including the first newline to `line`; returns
/// how many bytes it took and whether the line is complete. Fails when `line` would grow
/// past [`MAX_LINE`].
pub fn take_line(line: &mut Vec<u8>, chunk: &[u8]) -> io::Result<(usize, bool)> {
    let (used, done) = match chunk.iter().position(|&b| b == b'\n') {
        Some(at) => (at + 1, true),
        None => (chunk.len(), false),
    };
    if line.len() + used > MAX_LINE + 1 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("line longer than {MAX_LINE} bytes"),
        ));
    }
    line.extend_from_slice(&chunk[..used]);
    Ok((used, done))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::AppSource;
    use serde_json::json;

    #[test]
    fn requests_use_the_documented_shapes() {
        let call = Request::Call {
            id: "demo".into(),
            function: "answer".into(),
            args: serde_json::Value::Null,
            timeout_ms: None,
        };
        assert_eq!(
            serde_json::to_value(&call).unwrap(),
            json!({"op": "call", "id": "demo", "function": "answer", "args": null, "timeout_ms": null})
        );
        let parsed: Request =
            serde_json::from_str(r#"{"op":"call","id":"demo","function":"answer"}"#).unwrap();
        assert_eq!(parsed, call);
        let reload: Request =
            serde_json::from_str(r#"{"op":"reload","id":"d","source":{"crate":"/x"}}"#).unwrap();
        assert_eq!(
            reload,
            Request::Reload {
                id: "d".into(),
                source: ReloadWire::Crate("/x".into()),
                canary: None,
            }
        );
        let create = Request::Create {
            id: "d".into(),
            spec: SandboxSpec::new(AppSource::Library("/l.so".into())),
            watch: None,
        };
        let text = serde_json::to_string(&create).unwrap();
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), create);
        assert_eq!(
            serde_json::to_value(Request::Ping).unwrap(),
            json!({"op": "ping"})
        );
    }

    #[test]
    fn responses_are_ok_or_error() {
        let ok = Response::Ok(json!(41));
        assert_eq!(serde_json::to_value(&ok).unwrap(), json!({"ok": 41}));
        let err = Response::Error(WireError::new("not_found", "sandbox x not found"));
        assert_eq!(
            serde_json::to_value(&err).unwrap(),
            json!({"error": {"kind": "not_found", "message": "sandbox x not found"}})
        );
    }

    #[test]
    fn a_request_announces_its_descriptors() {
        let line = encode_request(&Request::Info { id: "d".into() }, 1).unwrap();
        let env: Envelope = serde_json::from_slice(&line).unwrap();
        assert_eq!(env.fds, 1);
        assert_eq!(
            serde_json::from_slice::<Request>(&line).unwrap(),
            Request::Info { id: "d".into() }
        );
        let plain: Envelope = serde_json::from_str(r#"{"op":"ping"}"#).unwrap();
        assert_eq!(plain.fds, 0);
    }

    #[test]
    fn lines_are_split_at_newlines_and_bounded() {
        let mut line = Vec::new();
        assert_eq!(take_line(&mut line, b"ab").unwrap(), (2, false));
        assert_eq!(take_line(&mut line, b"c\nde").unwrap(), (2, true));
        assert_eq!(line, b"abc\n");
        let mut long = vec![b'x'; MAX_LINE];
        assert!(take_line(&mut long, b"yy").is_err());
    }
}
