//! The wire protocol between the host and a sandbox: two planes, one framing.
//!
//! * The **control plane** (fd 3 of the sandbox's init, which never loads app code): `init`,
//!   `ping`, workers, `set_version`, `shutdown`; events (worker restarts, crash loops, the app
//!   process's exit). What it says is what init observed, so the host believes it.
//! * The **data plane** (fd 4, held only by the app process): `load`, `call`, `reload`. Its
//!   answers are the app's word: they can only make its own calls fail. The host ignores
//!   events and answers to unknown ids there.
//!
//! Frames are a 4-byte little-endian length followed by that many bytes of JSON. Every request
//! carries an id; the runner answers each with a [`Response`] of the same id, in any order
//! (calls run concurrently). Unsolicited [`Event`]s use id 0. Frames larger than
//! [`MAX_FRAME`] are refused on both sides, so a hostile app cannot make the host allocate
//! without bound.
//!
//! Both ends share this module: the runner uses the blocking [`read_frame`]/[`write_frame`],
//! the host its own async reader over the same framing.

use std::io::{self, Read, Write};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// argv[1] that selects runner (init) mode.
pub const RUNNER_ARG: &str = "__sandbox_runner";
/// argv[1] that selects worker mode.
pub const WORKER_ARG: &str = "__sandbox_worker";
/// The control socket's fd in init.
pub const CONTROL_FD: i32 = 3;
/// The data socket's fd: init hands it to the app process and closes its own copy.
pub const DATA_FD: i32 = 4;
/// Exit status of a runner that raised `SIGABRT` while pid 1 of its pid namespace (kept for
/// the host's messages; init runs no app code, so only a bug of ours can raise it).
pub const ABORT_EXIT: i32 = 200 + libc::SIGABRT;

/// Largest frame either side accepts (16 MiB).
pub const MAX_FRAME: usize = 16 << 20;

/// A request from the host, with its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestFrame {
    /// Correlates the response; never 0.
    pub id: u64,
    /// What to do.
    #[serde(flatten)]
    pub request: Request,
}

/// What the host asks a runner to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Control, first frame: restrict init, fork the app process, answer [`InitReady`].
    /// `lib` and `version` are what workers start on.
    Init {
        /// Path of the versioned library copy workers load.
        lib: PathBuf,
        /// Version number the host gave this copy.
        version: u32,
        /// Self-restrictions to apply before any app code runs (isolation crate data).
        #[serde(default)]
        restrictions: serde_json::Value,
    },
    /// Data, first frame: load the app, answer [`Loaded`].
    Load {
        /// Path of the versioned library copy to load.
        lib: PathBuf,
        /// Version number the host gave this copy.
        version: u32,
        /// The tenant's environment variables, set in the app process before the library
        /// is opened (`--env`).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        env: Vec<(String, String)>,
        /// The tenant's config bytes (`--config`), handed to the app through the ABI at load
        /// and at every reload.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<Vec<u8>>,
        /// A prepared runner's tenant rlimits (with whether the host is root), set by the
        /// app process on itself before the library is opened; init gets the same in
        /// [`Request::SetLimits`], sent at the same time.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rlimits: Option<(isolation::Limits, bool)>,
    },
    /// Control: the environment every worker starts with from now on (`--env`); sent
    /// before the first worker.
    SetEnv {
        /// The tenant's variables.
        env: Vec<(String, String)>,
    },
    /// Control: workers start on this version from now on, and running ones move to it.
    SetVersion {
        /// Path of the versioned library copy.
        lib: PathBuf,
        /// Its version number.
        version: u32,
    },
    /// Liveness check; answered by the reader thread, never queued behind calls.
    Ping,
    /// Call a named app function with JSON arguments.
    Call {
        /// Function name.
        function: String,
        /// JSON text of the arguments.
        args: String,
    },
    /// Load another version, move state, swap, restart workers; answers [`Reloaded`].
    Reload {
        /// Path of the new versioned library copy.
        lib: PathBuf,
        /// Version number of the new copy.
        version: u32,
        /// How long `dlopen` plus the state hand-over may take.
        timeout_ms: u64,
    },
    /// Start more supervised worker processes; answers [`WorkerList`].
    SpawnWorkers {
        /// How many to add.
        count: u32,
    },
    /// List workers; answers [`WorkerList`].
    Workers,
    /// Stop workers and exit.
    Shutdown,
    /// Control, to a prepared runner before its app is loaded: set the tenant's rlimits on
    /// init and the app process (a host without `CAP_SYS_RESOURCE` cannot set them on
    /// another uid's processes; init shares their uid). No app code has run in either
    /// when they are set, so the answer is the evidence (a failed `prlimit` fails it).
    SetLimits {
        /// The sandbox's limits.
        limits: isolation::Limits,
        /// Whether the host is root (then `max_processes` is not an rlimit).
        host_root: bool,
    },
}

/// A frame from the runner: a response to request `id`, or an event when `id` is 0.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Response {
    /// The request this answers, or 0 for an event.
    pub id: u64,
    /// The outcome.
    #[serde(flatten)]
    pub body: Body,
}

/// Outcome of a request, or an event.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// Success; the shape depends on the request.
    Ok(serde_json::Value),
    /// Failure with a typed kind.
    Err(RunnerError),
    /// Something happened that nobody asked about.
    Event(Event),
}

/// Kinds of failure a runner reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The app returned an error.
    AppError,
    /// The app panicked (message attached).
    Panicked,
    /// No app function of that name.
    UnknownFunction,
    /// A reload was refused; the old version still serves.
    ReloadRefused,
    /// The runner could not start (bad library, restriction failure).
    InitFailed,
    /// The sandbox exceeded its restart intensity.
    Crashed,
    /// The request made no sense.
    BadRequest,
}

/// A typed error from the runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerError {
    /// What went wrong.
    pub kind: ErrorKind,
    /// Human-readable detail.
    pub message: String,
}

/// Unsolicited news from the runner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A worker died abnormally and was restarted.
    WorkerRestarted {
        /// Worker index.
        index: u32,
        /// The dead process.
        old_pid: i32,
        /// Its replacement.
        new_pid: i32,
        /// How it died (`signal SIGKILL`, `exit 3`).
        reason: String,
    },
    /// Workers crash-looped past the restart intensity; the sandbox is `crashed`.
    Crashed {
        /// Why.
        reason: String,
    },
    /// The app process exited, as init saw it (`waitpid`); init exits next.
    AppExited {
        /// How (`signal SIGSEGV`, `exit 3`).
        how: String,
    },
}

/// Answer to `Init` (control plane: init's own word).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitReady {
    /// Microseconds spent applying the self-restrictions (Landlock, seccomp).
    pub restrict_us: u64,
    /// Microseconds spent forking the app process.
    #[serde(default)]
    pub fork_us: u64,
    /// What init applied to itself, and so to the app process it forked (report entries).
    #[serde(default)]
    pub restrictions: serde_json::Value,
}

/// Answer to `Load` (data plane: the app's word, except the timing).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Loaded {
    /// The app's name from its table (its own word).
    pub app_name: String,
    /// The app's own version string (its own word).
    pub app_version: String,
    /// Microseconds spent in `dlopen` + checks.
    pub load_us: u64,
    /// Workers the app asks for at start (its own word; the host caps it).
    #[serde(default)]
    pub initial_workers: u32,
}

/// Answer to `Reload`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reloaded {
    /// Version serving before.
    pub from_version: u32,
    /// Version serving now.
    pub to_version: u32,
    /// Microseconds from `dlopen` to swap.
    pub load_us: u64,
    /// The new app's own version string.
    pub app_version: String,
    /// Bytes of state moved across.
    pub state_bytes: usize,
}

/// One supervised worker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkerInfo {
    /// Worker index (stable across restarts).
    pub index: u32,
    /// Current process id.
    pub pid: i32,
    /// How often this worker was restarted.
    pub restarts: u32,
    /// App version the worker runs.
    pub version: u32,
}

/// Answer to `Workers` and `SpawnWorkers`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerList {
    /// Live workers.
    pub workers: Vec<WorkerInfo>,
    /// Total worker restarts so far.
    pub restarts: u32,
    /// Whether the restart intensity was exceeded.
    pub crashed: bool,
}

/// Encodes one frame: length prefix and JSON.
pub fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4];
    serde_json::to_writer(&mut buf, value).map_err(io::Error::other)?;
    let len = buf.len() - 4;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame exceeds MAX_FRAME",
        ));
    }
    buf[..4].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(buf)
}

/// Checks a frame length read from the wire.
pub fn check_len(len: u32) -> io::Result<usize> {
    let len = len as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the {MAX_FRAME}-byte limit"),
        ));
    }
    Ok(len)
}

/// Reads one frame (blocking). `Ok(None)` on a clean end of stream.
pub fn read_frame<R: Read, T: for<'de> Deserialize<'de>>(reader: &mut R) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match reader.read_exact(&mut len) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = check_len(u32::from_le_bytes(len))?;
    let mut buf = vec![0u8; len];
    reader.read_exact(&mut buf)?;
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Writes one frame (blocking) in a single `write_all`.
pub fn write_frame<W: Write, T: Serialize>(writer: &mut W, value: &T) -> io::Result<()> {
    writer.write_all(&encode(value)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_with_ids_and_tags() {
        let frame = RequestFrame {
            id: 7,
            request: Request::Call {
                function: "answer".into(),
                args: "null".into(),
            },
        };
        let bytes = encode(&frame).unwrap();
        let json: serde_json::Value = serde_json::from_slice(&bytes[4..]).unwrap();
        assert_eq!(json["id"], 7);
        assert_eq!(json["op"], "call");
        let back: RequestFrame = read_frame(&mut &bytes[..]).unwrap().unwrap();
        assert!(matches!(back.request, Request::Call { ref function, .. } if function == "answer"));
    }

    #[test]
    fn an_oversized_length_prefix_is_refused_before_allocating() {
        let mut bytes = ((MAX_FRAME + 1) as u32).to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let err = read_frame::<_, Response>(&mut &bytes[..]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn a_clean_eof_is_none_and_a_truncated_frame_is_an_error() {
        assert!(read_frame::<_, Response>(&mut &b""[..]).unwrap().is_none());
        let bytes = encode(&Response {
            id: 1,
            body: Body::Ok(serde_json::json!(1)),
        })
        .unwrap();
        assert!(read_frame::<_, Response>(&mut &bytes[..bytes.len() - 1]).is_err());
    }
}
