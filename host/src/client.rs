//! The client side of the control socket: a blocking connection that sends
//! [`Request`](proto::control::Request)s, human renderings of the answers, and the
//! `reload --watch` loop.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use daemon::socket_path::SocketPath;
use proto::control::{self as wire, ReloadWire, Request, Response, WireError};
use sandbox::{ReloadReport, SandboxInfo};

use crate::output::{QUOTES_APP, untrusted};
pub use crate::render::{
    fmt_ms, render_created, render_info, render_list, render_reload, render_usage, render_workers,
};

/// Why a client request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("no daemon at {}: start one with `{hint}`", path.display())]
    NoDaemon {
        /// The socket.
        path: PathBuf,
        /// The command that starts one.
        hint: String,
    },
    /// The socket (or its directory) is not ours to use.
    #[error(
        "permission denied on {}: the daemon accepts only its own user and root",
        path.display()
    )]
    PermissionDenied {
        /// The socket.
        path: PathBuf,
    },
    /// Connecting failed otherwise.
    #[error("cannot connect to {}: {source}", path.display())]
    Connect {
        /// The socket.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// Something other than a daemon of this user (or root) listens on the socket; nothing
    /// was sent to it.
    #[error(
        "refusing to talk to {}: the server runs as uid {uid}, not as this user (uid {me}) or \
         root; nothing was sent",
        path.display()
    )]
    UntrustedServer {
        /// The socket.
        path: PathBuf,
        /// The server's uid (`SO_PEERCRED`).
        uid: u32,
        /// This client's uid.
        me: u32,
    },
    /// A file the command names cannot be opened by this client.
    #[error("cannot open {} as uid {uid}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// This client's uid.
        uid: u32,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The daemon answered with an error.
    #[error(transparent)]
    Remote(#[from] WireError),
    /// Talking to the daemon failed.
    #[error("connection to the daemon: {0}")]
    Io(#[source] io::Error),
    /// The daemon answered something this client does not understand.
    #[error("unexpected answer from the daemon: {0}")]
    Protocol(String),
    /// A local problem with the command's input (a file, an argument).
    #[error("{0}")]
    Input(String),
}

impl ClientError {
    /// A short machine-readable kind: the daemon's kind for remote errors.
    pub fn kind(&self) -> &str {
        match self {
            ClientError::NoDaemon { .. } => "no_daemon",
            ClientError::PermissionDenied { .. } => "permission_denied",
            ClientError::Connect { .. } => "connect",
            ClientError::UntrustedServer { .. } => "untrusted_server",
            ClientError::Open { .. } => "input",
            ClientError::Remote(e) => &e.kind,
            ClientError::Io(_) => "io",
            ClientError::Protocol(_) => "protocol",
            ClientError::Input(_) => "input",
        }
    }

    /// Whether the daemon could not be reached at all.
    pub fn is_unreachable(&self) -> bool {
        matches!(
            self,
            ClientError::NoDaemon { .. }
                | ClientError::PermissionDenied { .. }
                | ClientError::Connect { .. }
                | ClientError::UntrustedServer { .. }
        )
    }
}

/// A connection to the daemon.
#[derive(Debug)]
pub struct Client {
    stream: BufReader<UnixStream>,
}

impl Client {
    /// Connects to the daemon's socket and checks, before sending anything, that the server
    /// runs as this user or root (`SO_PEERCRED`): a socket path another user could have
    /// bound (a shared or predictable directory) gets no request and no provider key.
    pub fn connect(socket: &SocketPath) -> Result<Client, ClientError> {
        let path = &socket.path;
        match UnixStream::connect(path) {
            Ok(stream) => {
                let me = nix::unistd::geteuid().as_raw();
                let (uid, _) =
                    daemon::peer::peer_credentials(&stream).map_err(|e| ClientError::Connect {
                        path: path.clone(),
                        source: e,
                    })?;
                if uid != me && uid != 0 {
                    return Err(ClientError::UntrustedServer {
                        path: path.clone(),
                        uid,
                        me,
                    });
                }
                Ok(Client {
                    stream: BufReader::new(stream),
                })
            }
            Err(e) => Err(match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused => {
                    ClientError::NoDaemon {
                        path: path.clone(),
                        hint: if socket.is_default {
                            "host serve".into()
                        } else {
                            format!("host serve --socket {}", path.display())
                        },
                    }
                }
                io::ErrorKind::PermissionDenied => {
                    ClientError::PermissionDenied { path: path.clone() }
                }
                _ => ClientError::Connect {
                    path: path.clone(),
                    source: e,
                },
            }),
        }
    }

    /// Sends one request and returns the daemon's value.
    pub fn request(&mut self, request: &Request) -> Result<serde_json::Value, ClientError> {
        self.request_with_fds(request, &[])
    }

    /// Sends one request with descriptors (`SCM_RIGHTS`, announced by the line's `fds`) and
    /// returns the daemon's value.
    pub fn request_with_fds(
        &mut self,
        request: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<serde_json::Value, ClientError> {
        let line = wire::encode_request(request, fds.len()).map_err(ClientError::Io)?;
        // A refused peer is told why and disconnected before it writes: read the answer
        // even when the write fails.
        let written = send_with_fds(self.stream.get_ref(), &line, fds);
        let mut answer = Vec::new();
        let read = read_line(&mut self.stream, &mut answer);
        match (read, written) {
            (Ok(true), _) => {}
            (Ok(false), Err(e)) | (Err(e), _) => return Err(ClientError::Io(e)),
            (Ok(false), Ok(())) => {
                return Err(ClientError::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the daemon closed the connection without an answer",
                )));
            }
        }
        match serde_json::from_slice::<Response>(answer.trim_ascii()) {
            Ok(Response::Ok(value)) => Ok(value),
            Ok(Response::Error(e)) => Err(ClientError::Remote(e)),
            Err(e) => Err(ClientError::Protocol(e.to_string())),
        }
    }

    /// Sends one request with descriptors and reads nothing: for a request answered by a
    /// stream of lines (`batch`), read through [`Client::into_stream`].
    pub fn send(&mut self, request: &Request, fds: &[BorrowedFd<'_>]) -> Result<(), ClientError> {
        let line = wire::encode_request(request, fds.len()).map_err(ClientError::Io)?;
        send_with_fds(self.stream.get_ref(), &line, fds).map_err(ClientError::Io)
    }

    /// Sends a request answered by a stream of lines (`events`, `logs`, `batch`) and reads
    /// its header: the header's value and the connection to read the rest from. A peer that
    /// refuses the request says why before the client has written: its answer is read even
    /// when sending failed.
    pub fn open_stream(
        mut self,
        request: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> Result<(serde_json::Value, BufReader<UnixStream>), ClientError> {
        let sent = self.send(request, fds);
        let mut conn = self.into_stream();
        let mut buf = Vec::new();
        let header = read_line(&mut conn, &mut buf).map_err(ClientError::Io);
        match (header, sent) {
            (Ok(true), _) => match serde_json::from_slice::<Response>(buf.trim_ascii()) {
                Ok(Response::Ok(v)) => Ok((v, conn)),
                Ok(Response::Error(e)) => Err(ClientError::Remote(e)),
                Err(e) => Err(ClientError::Protocol(e.to_string())),
            },
            (_, Err(e)) | (Err(e), _) => Err(e),
            (Ok(false), Ok(())) => Err(ClientError::Protocol(
                "the daemon closed without an answer".into(),
            )),
        }
    }

    /// The connection itself, for a request answered by a stream of lines (`events`).
    pub fn into_stream(self) -> BufReader<UnixStream> {
        self.stream
    }

    /// Sends one request and decodes the value as `T`.
    pub fn request_as<T: serde::de::DeserializeOwned>(
        &mut self,
        request: &Request,
    ) -> Result<T, ClientError> {
        let value = self.request(request)?;
        serde_json::from_value(value).map_err(|e| ClientError::Protocol(e.to_string()))
    }
}

/// Writes `line`, the descriptors riding on its first bytes.
fn send_with_fds(stream: &UnixStream, line: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
    let mut rest = line;
    if !fds.is_empty() {
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let cmsg = [ControlMessage::ScmRights(&raw)];
        let sent = loop {
            match sendmsg::<()>(
                stream.as_raw_fd(),
                &[io::IoSlice::new(rest)],
                &cmsg,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other.map_err(io::Error::from)?,
            }
        };
        rest = &rest[sent..];
    }
    let mut stream = stream;
    stream.write_all(rest)
}

/// The descriptor that goes with a create of `app`: its library or crate directory.
pub fn fd_for_app(app: &sandbox::AppSource) -> Result<OwnedFd, ClientError> {
    match app {
        sandbox::AppSource::Library(path) => open_for_daemon(path, false),
        sandbox::AppSource::Crate(dir) => open_for_daemon(dir, true),
    }
}

/// The descriptor that goes with a reload from `source`, if it names a file.
pub fn fd_for_reload(source: &ReloadWire) -> Result<Option<OwnedFd>, ClientError> {
    match source {
        ReloadWire::Library(path) => open_for_daemon(path, false).map(Some),
        ReloadWire::Crate(dir)
        | ReloadWire::Source {
            crate_dir: Some(dir),
            ..
        } => open_for_daemon(dir, true).map(Some),
        ReloadWire::Source {
            crate_dir: None, ..
        } => Ok(None),
    }
}

/// The descriptors of a crate directory handed to the daemon: the crate, then, when its path
/// dependencies reach workspace siblings, the workspace root it is in ([`crate::handover`]).
pub fn fds_for_crate(dir: &Path) -> Result<Vec<OwnedFd>, ClientError> {
    let mut fds = vec![open_for_daemon(dir, true)?];
    if let Some(tree) = crate::handover::tree_for(dir) {
        fds.push(open_for_daemon(&tree, true)?);
    }
    Ok(fds)
}

/// [`fd_for_app`], with the workspace root for a crate that needs it ([`fds_for_crate`]).
pub fn fds_for_app(app: &sandbox::AppSource) -> Result<Vec<OwnedFd>, ClientError> {
    match app {
        sandbox::AppSource::Crate(dir) => fds_for_crate(dir),
        sandbox::AppSource::Library(_) => fd_for_app(app).map(|fd| vec![fd]),
    }
}

/// [`fd_for_reload`], with the workspace root for a crate that needs it ([`fds_for_crate`]).
pub fn fds_for_reload(source: &ReloadWire) -> Result<Vec<OwnedFd>, ClientError> {
    match source {
        ReloadWire::Crate(dir)
        | ReloadWire::Source {
            crate_dir: Some(dir),
            ..
        } => fds_for_crate(dir),
        _ => fd_for_reload(source).map(|fd| fd.into_iter().collect()),
    }
}

/// Opens what a command names with this client's own rights, for the daemon to read by
/// descriptor: a file read-only, or a directory (`O_DIRECTORY`).
pub fn open_for_daemon(path: &Path, directory: bool) -> Result<OwnedFd, ClientError> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = libc::O_NONBLOCK | libc::O_NOCTTY | if directory { libc::O_DIRECTORY } else { 0 };
    std::fs::File::options()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map(OwnedFd::from)
        .map_err(|source| ClientError::Open {
            path: path.to_owned(),
            uid: nix::unistd::geteuid().as_raw(),
            source,
        })
}

/// Reads one line (bounded by [`wire::MAX_LINE`]); false at the end of input.
pub fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> io::Result<bool> {
    loop {
        let chunk = reader.fill_buf()?;
        if chunk.is_empty() {
            return Ok(!line.is_empty());
        }
        let (used, done) = wire::take_line(line, chunk)?;
        reader.consume(used);
        if done {
            return Ok(true);
        }
    }
}

/// Makes a path absolute against the client's working directory (the daemon has its own).
pub fn absolute(path: &Path) -> Result<PathBuf, ClientError> {
    path.canonicalize().map_err(|source| ClientError::Open {
        path: path.to_owned(),
        uid: nix::unistd::geteuid().as_raw(),
        source,
    })
}

/// Modification fingerprint of a crate: `Cargo.toml`, `build.rs` and `src/**/*.rs`.
fn fingerprint(crate_dir: &Path) -> Vec<(PathBuf, Option<SystemTime>, u64)> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    let mut files = vec![crate_dir.join("Cargo.toml"), crate_dir.join("build.rs")];
    walk(&crate_dir.join("src"), &mut files);
    let mut out: Vec<_> = files
        .into_iter()
        .map(|f| {
            let meta = std::fs::metadata(&f).ok();
            let modified = meta.as_ref().and_then(|m| m.modified().ok());
            let len = meta.map_or(0, |m| m.len());
            (f, modified, len)
        })
        .collect();
    out.sort();
    out
}

/// How often `--watch` looks at the crate's files.
pub const WATCH_POLL: Duration = Duration::from_millis(200);

/// Rebuilds and reloads `crate_dir` into sandbox `id` whenever one of its sources is saved,
/// until interrupted. Prints one line per reload (a JSON report per line with `json`);
/// a failed build prints cargo's diagnostics and keeps watching. Returns only when the
/// daemon or the sandbox goes away.
pub fn watch(socket: &SocketPath, id: &str, crate_dir: &Path, json: bool) -> ClientError {
    let crate_dir = match absolute(crate_dir) {
        Ok(dir) => dir,
        Err(e) => return e,
    };
    if !crate_dir.join("Cargo.toml").is_file() {
        return ClientError::Input(format!(
            "{} is not a cargo crate (no Cargo.toml)",
            crate_dir.display()
        ));
    }
    // Fail early when there is no daemon or no such sandbox.
    let check = Client::connect(socket)
        .and_then(|mut c| c.request_as::<SandboxInfo>(&Request::Info { id: id.into() }));
    if let Err(e) = check {
        return e;
    }
    eprintln!(
        "watching {} for changes to reload into {id} (Ctrl-C to stop)",
        crate_dir.display()
    );
    let mut seen = fingerprint(&crate_dir);
    let mut pending = false;
    loop {
        std::thread::sleep(WATCH_POLL);
        let now = fingerprint(&crate_dir);
        if now != seen {
            // Still being written: wait for one quiet poll (debounce).
            seen = now;
            pending = true;
            continue;
        }
        if !pending {
            continue;
        }
        pending = false;
        let started = Instant::now();
        let request = Request::Reload {
            id: id.into(),
            source: ReloadWire::Crate(crate_dir.clone()),
            canary: None,
        };
        let result = fds_for_crate(&crate_dir).and_then(|fds| {
            let fds: Vec<_> = fds.iter().map(|f| f.as_fd()).collect();
            Client::connect(socket).and_then(|mut c| c.request_with_fds(&request, &fds))
        });
        match result {
            Ok(value) => {
                if json {
                    crate::output::line(&crate::output::json(&value));
                } else {
                    match serde_json::from_value::<ReloadReport>(value) {
                        Ok(report) => {
                            crate::output::line(&render_reload(id, &report, started.elapsed()))
                        }
                        Err(e) => crate::output::error_line(&format!(
                            "host: unexpected answer from the daemon: {}",
                            untrusted(&e.to_string())
                        )),
                    }
                }
            }
            Err(e) if e.is_unreachable() || e.kind() == "not_found" => return e,
            Err(e) => {
                crate::output::error_line(&format!("host: {}", error_text(&e)));
                eprintln!("host: {id} keeps its current version; still watching");
            }
        }
    }
}

/// Options every client command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The daemon's control socket [default: $XDG_RUNTIME_DIR/sandbox-host/host.sock, root:
    /// /run/sandbox-host/host.sock].
    #[arg(long, env = daemon::socket_path::ENV, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The fleet to work on instead of the local daemon.
    #[command(flatten)]
    pub cluster: fleet::ConnectArgs,
    /// Placement and routing in the fleet.
    #[command(flatten)]
    pub place: fleet::PlaceArgs,
}

/// Error kinds whose message quotes the app: its error or panic message, its answer to a
/// call (the data plane is the app's process), its refusal of a reload, what its library
/// made the loader say, cargo's diagnostics of its source and build script.
const QUOTING_KINDS: &[&str] = &[
    "app_error",
    "app_panicked",
    "unknown_function",
    "crashed",
    "reload_refused",
    "init_failed",
    "build_failed",
];

/// An error for a terminal: escaped (see [`crate::output::untrusted`]) and, when the daemon's
/// message quotes the app, labelled so. One line, except a failed build: cargo's diagnostics
/// keep their lines, each escaped and indented under `  | `, so none can pass for the host's.
pub fn error_text(e: &ClientError) -> String {
    let message = e.to_string();
    let quotes_app = matches!(e, ClientError::Remote(_)) && QUOTING_KINDS.contains(&e.kind());
    let label = if quotes_app {
        format!(" {QUOTES_APP}")
    } else {
        String::new()
    };
    if e.kind() != "build_failed" {
        return format!("{}{label}", untrusted(&message));
    }
    let mut lines = message.split('\n');
    let mut out = format!("{}{label}", untrusted(lines.next().unwrap_or("")));
    for line in lines {
        out.push_str(&format!("\n  | {}", untrusted(line)));
    }
    out
}

/// Exit status of a failed client command.
pub fn failure(json: bool, e: &ClientError) -> ExitCode {
    if json {
        let error = serde_json::json!({ "error": { "kind": e.kind(), "message": e.to_string() } });
        crate::output::line(&crate::output::json(&error));
    }
    crate::output::error_line(&format!("host: {}", error_text(e)));
    ExitCode::from(if e.is_unreachable() { 3 } else { 1 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_socket_means_no_daemon_and_says_how_to_start_one() {
        let tmp = tempfile::tempdir().unwrap();
        let socket = SocketPath {
            path: tmp.path().join("none.sock"),
            is_default: false,
        };
        let err = Client::connect(&socket).unwrap_err();
        assert_eq!(err.kind(), "no_daemon");
        assert!(err.to_string().contains("host serve --socket"), "{err}");
    }

    #[test]
    fn errors_quoting_the_app_are_escaped_and_labelled() {
        let remote = |kind: &str, message: &str| {
            ClientError::Remote(WireError {
                kind: kind.into(),
                message: message.into(),
            })
        };
        let e = remote(
            "app_error",
            "app error: no\u{1b}]0;t\u{7}\n    + seccomp: verified",
        );
        assert_eq!(
            error_text(&e),
            r"app error: no\u{1b}]0;t\u{7}\n    + seccomp: verified (quotes the app)"
        );
        // A failed build keeps cargo's lines, each escaped and behind the host's margin.
        let e = remote(
            "build_failed",
            "build failed:\nerror: x\u{1b}[2K\n + seccomp: ok",
        );
        assert_eq!(
            error_text(&e),
            "build failed: (quotes the app)\n  | error: x\\u{1b}[2K\n  |  + seccomp: ok"
        );
        // The host's own errors are escaped too, but not labelled.
        let e = remote("not_found", "sandbox x not found");
        assert_eq!(error_text(&e), "sandbox x not found");
    }

    #[test]
    fn the_fingerprint_sees_a_saved_source() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("src/m")).unwrap();
        std::fs::write(tmp.path().join("Cargo.toml"), "[package]").unwrap();
        std::fs::write(tmp.path().join("src/m/x.rs"), "a").unwrap();
        let before = fingerprint(tmp.path());
        std::fs::write(tmp.path().join("src/m/x.rs"), "ab").unwrap();
        assert_ne!(before, fingerprint(tmp.path()));
    }
}
