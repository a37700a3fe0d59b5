//! A real `host serve` for the daemon tests: started on a private socket, state directory and
//! log, ready once it logs `listening` (after its sweep and its HTTP servers), stopped when
//! dropped (SIGTERM, then SIGKILL). With its thin clients through the real binary, a raw
//! connection to its socket, a `host events --follow` reader, and a one-route HTTP server
//! that records the POSTs the daemon sends.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;
use testkit::ChildGuard;

use crate::bins::host;

/// How long a daemon may take to come up, and to go down.
const UP: Duration = Duration::from_secs(20);

/// A running daemon.
#[derive(Debug)]
pub struct Serve {
    child: ChildGuard,
    /// The control socket: `DIR/ctl/host.sock`.
    pub socket: PathBuf,
    /// The state directory: `DIR/state`.
    pub state: PathBuf,
    log: PathBuf,
    dir: PathBuf,
    _scratch: Option<TempDir>,
}

/// `host serve` on `DIR/ctl/host.sock` with state in `DIR/state` and `args`, its output to
/// `stdout` and `stderr`.
fn serve_command(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(host());
    cmd.arg("serve")
        .arg("--socket")
        .arg(dir.join("ctl").join("host.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(args)
        .env_remove("SANDBOX_HOST_SOCKET")
        .env_remove("SANDBOX_HOST_UI_TOKEN")
        .env("RUST_LOG", "host=debug,info")
        .stdin(Stdio::null());
    cmd
}

impl Serve {
    /// Starts `host serve ARGS` in a fresh scratch directory and waits until it serves.
    pub fn start(args: &[&str]) -> Serve {
        let scratch = testkit::scratch::scratch_named("e2e-serve-");
        let mut d = Serve::start_in(scratch.path(), args);
        d._scratch = Some(scratch);
        d
    }

    /// Starts `host serve ARGS` in `dir` (kept by the caller; several daemons may take turns
    /// there, each with a log of its own) and waits until it serves.
    pub fn start_in(dir: &Path, args: &[&str]) -> Serve {
        Serve::start_in_with(dir, args, None)
    }

    /// Starts `host serve ARGS` in a fresh scratch directory with its descriptor limit
    /// (`RLIMIT_NOFILE`, soft and hard) set to `open_files`, and waits until it serves.
    pub fn start_with_open_files(args: &[&str], open_files: u64) -> Serve {
        let scratch = testkit::scratch::scratch_named("e2e-serve-");
        let mut d = Serve::start_in_with(scratch.path(), args, Some(open_files));
        d._scratch = Some(scratch);
        d
    }

    fn start_in_with(dir: &Path, args: &[&str], open_files: Option<u64>) -> Serve {
        use std::os::unix::process::CommandExt;
        static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let log = dir.join(format!("daemon-{n}.log"));
        let mut cmd = serve_command(dir, args);
        if let Some(limit) = open_files {
            let limit = libc::rlimit {
                rlim_cur: limit,
                rlim_max: limit,
            };
            // SAFETY: setrlimit is async-signal-safe, and `limit` is a plain value copied in.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Serve {
            child: ChildGuard::terminate(child, Duration::from_secs(15)),
            socket: dir.join("ctl").join("host.sock"),
            state: dir.join("state"),
            log,
            dir: dir.to_path_buf(),
            _scratch: None,
        };
        let up = testkit::wait_until(UP, || {
            d.child.exited().is_some()
                || (d.log().contains("listening") && UnixStream::connect(&d.socket).is_ok())
        });
        let exited = d.child.exited();
        assert!(
            up && exited.is_none(),
            "daemon did not come up ({exited:?}):\n{}",
            d.log()
        );
        d
    }

    /// Runs `host serve ARGS` that must refuse to start (in `dir`, or a fresh scratch
    /// directory); returns its output once it exited (killed after 20 s).
    pub fn refused(dir: Option<&Path>, args: &[&str]) -> Output {
        let scratch = testkit::scratch::scratch_named("e2e-serve-");
        let dir = dir.unwrap_or(scratch.path());
        let mut child = ChildGuard::new(
            serve_command(dir, args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        child.wait_exit(UP);
        let _ = child.child().kill();
        child.into_inner().wait_with_output().unwrap()
    }

    /// Asserts that `host serve ARGS` refuses to start with exit status 2 and a message
    /// naming `needed` (the flag or setting that would make it start).
    pub fn assert_refused(args: &[&str], needed: &str) {
        let out = Serve::refused(None, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needed), "{args:?}: {stderr}");
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// How many descriptors the daemon has open (`/proc/PID/fd`).
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Its directory (socket, state, logs, and anything the test writes).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits up to `timeout` for `text` in the log.
    pub fn wait_log(&self, text: &str, timeout: Duration) -> bool {
        testkit::wait_until(timeout, || self.log().contains(text))
    }

    /// The URL the daemon logged for `what` (`metrics`: `http://A/metrics`, `dashboard`:
    /// `http://A/`).
    pub fn url(&self, what: &str) -> Option<String> {
        let log = self.log();
        let marker = format!("{what} on ");
        let at = log.find(&marker)? + marker.len();
        Some(
            log[at..]
                .chars()
                .take_while(|c| !c.is_whitespace())
                .collect(),
        )
    }

    /// A client command on this daemon's socket, without the tests' provider variables (the
    /// client forwards them to `operate`).
    pub fn cmd(&self) -> Command {
        client(&self.socket)
    }

    /// Runs `host ARGS`.
    pub fn host(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs a client command that must succeed; returns its stdout, trimmed.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.host(args);
        assert!(
            out.status.success(),
            "host {args:?} failed ({}):\n{}\n--- daemon log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs a client command with `--json` that must succeed; returns the parsed value.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.ok(&args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
    }

    /// `host create ID --lib LIB EXTRA --json` (in the tests' cgroup parent, when one is set).
    pub fn create(&self, id: &str, lib: &Path, extra: &[&str]) -> Value {
        let lib = lib.to_str().unwrap();
        let mut args = vec!["create", id, "--lib", lib];
        let parent = testkit::cgroup::cgroup_parent();
        if let Some(parent) = &parent {
            args.extend(["--cgroup-parent", parent.to_str().unwrap()]);
        }
        args.extend(extra);
        self.json(&args)
    }

    /// `host call ID answer --json`.
    pub fn call_answer(&self, id: &str) -> Value {
        self.json(&["call", id, "answer"])
    }

    /// Resident and peak resident memory in KiB (`VmRSS`, `VmHWM`).
    pub fn memory_kib(&self) -> (u64, u64) {
        let field = |key| testkit::proc::status_kb(self.pid(), key).unwrap();
        (field("VmRSS"), field("VmHWM"))
    }

    /// Sends `signal` and waits for the daemon to exit.
    pub fn stop_with(&mut self, signal: libc::c_int) -> ExitStatus {
        self.child
            .stop_with(signal, UP)
            .unwrap_or_else(|| panic!("daemon ignored signal {signal}:\n{}", self.log()))
    }

    /// SIGKILLs the daemon, as a crash would.
    pub fn crash(&mut self) {
        let status = self.child.stop_with(libc::SIGKILL, UP);
        assert!(status.is_some(), "SIGKILL did not end the daemon");
    }

    /// A `host events --follow --json [ID]` reader.
    pub fn follow(&self, id: Option<&str>) -> Follower {
        let mut cmd = self.cmd();
        cmd.args(["events", "--follow", "--json"]);
        if let Some(id) = id {
            cmd.arg(id);
        }
        let mut child = cmd.stdout(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let received = Instant::now();
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && tx.send((v, received)).is_err()
                {
                    break;
                }
            }
        });
        Follower {
            _child: ChildGuard::new(child),
            rx,
            seen: Vec::new(),
        }
    }
}

/// A `host` client command on `socket`, without the tests' provider variables.
pub fn client(socket: &Path) -> Command {
    let mut cmd = Command::new(host());
    cmd.env("SANDBOX_HOST_SOCKET", socket).stdin(Stdio::null());
    for (key, _) in std::env::vars() {
        if proto::operate::FORWARDED_ENV
            .iter()
            .any(|p| key.starts_with(p))
        {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A raw connection to a control socket: one JSON request a line, one answer a line.
#[derive(Debug)]
pub struct Conn {
    reader: BufReader<UnixStream>,
}

impl Conn {
    /// Connects to `socket`.
    pub fn open(socket: &Path) -> Conn {
        Conn {
            reader: BufReader::new(UnixStream::connect(socket).unwrap()),
        }
    }

    /// Sends one line (a newline is added); returns the whole answer.
    pub fn ask(&mut self, line: &str) -> Value {
        let stream = self.reader.get_mut();
        stream.write_all(line.as_bytes()).unwrap();
        stream.write_all(b"\n").unwrap();
        let mut answer = String::new();
        self.reader.read_line(&mut answer).unwrap();
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{line}: {e}: {answer:?}"))
    }

    /// Sends one request; returns the answer's value, which must be a success.
    pub fn ok(&mut self, request: &Value) -> Value {
        let mut answer = self.ask(&request.to_string());
        match answer.get_mut("ok") {
            Some(value) => value.take(),
            None => panic!("{request} failed: {answer}"),
        }
    }
}

/// A running `host events --follow`; killed when dropped.
#[derive(Debug)]
pub struct Follower {
    _child: ChildGuard,
    rx: Receiver<(Value, Instant)>,
    /// Every line received so far, in order.
    pub seen: Vec<Value>,
}

impl Follower {
    /// Waits for the next line matching `want`, up to `timeout`; the lines before it are
    /// kept in `seen`. Returns the line and when it arrived.
    pub fn until(&mut self, timeout: Duration, want: impl Fn(&Value) -> bool) -> (Value, Instant) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((v, at)) => {
                    self.seen.push(v.clone());
                    if want(&v) {
                        return (v, at);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no matching event within {timeout:?}; seen: {:#?}",
                        self.seen
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("the follower ended; seen: {:#?}", self.seen)
                }
            }
        }
    }

    /// Waits for event `name` about `sandbox`.
    pub fn event(&mut self, name: &str, sandbox: &str, timeout: Duration) -> Value {
        self.until(timeout, |v| v["event"] == name && v["sandbox"] == sandbox)
            .0
    }

    /// How many of the events seen so far are `name` about `sandbox`.
    pub fn count(&self, name: &str, sandbox: &str) -> usize {
        self.seen
            .iter()
            .filter(|e| e["event"] == name && e["sandbox"] == sandbox)
            .count()
    }
}

/// A local HTTP server that answers 200 to every request and hands the test each one.
#[derive(Debug)]
pub struct Hook {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    /// The request line and JSON body of each request received, in order.
    pub bodies: Receiver<(String, Value)>,
}

/// Starts a [`Hook`] on an ephemeral port (its thread ends with the test process).
pub fn hook() -> Hook {
    let (listener, base) = testkit::http::loopback();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let Ok(request) = testkit::http::read_request(&stream) else {
                continue;
            };
            testkit::http::respond(&stream, "200 OK", "");
            let value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
            if tx.send((request.line, value)).is_err() {
                break;
            }
        }
    });
    Hook {
        url: format!("{base}/hook"),
        bodies: rx,
    }
}
