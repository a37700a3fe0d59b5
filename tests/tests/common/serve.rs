//! A real `host serve` for the event and watching tests, a `host events --follow` reader
//! that hands its lines to the test, and a one-route HTTP server that records POSTs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use super::HOST;

/// A daemon on a private socket and state directory; dropping it stops it (SIGTERM, then
/// SIGKILL) and removes both.
pub struct Serve {
    child: Option<Child>,
    /// The control socket.
    pub socket: PathBuf,
    log: PathBuf,
    /// The scratch directory (socket, state, log, anything the test writes).
    pub dir: TempDir,
}

impl Serve {
    /// Starts `host serve` with `args` and waits until it accepts connections.
    pub fn start(args: &[&str]) -> Serve {
        let dir = super::scratch();
        let socket = dir.path().join("ctl").join("host.sock");
        let log = dir.path().join("daemon.log");
        let mut child = Command::new(HOST)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .env_remove("SANDBOX_HOST_SOCKET")
            .env("RUST_LOG", "host=debug,info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&socket).is_err() {
            assert!(
                child.try_wait().unwrap().is_none() && Instant::now() < deadline,
                "daemon did not come up:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Serve {
            child: Some(child),
            socket,
            log,
            dir,
        }
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// A client command on this daemon's socket (without the tests' provider variables).
    pub fn cmd(&self) -> Command {
        let mut cmd = Command::new(HOST);
        cmd.env("SANDBOX_HOST_SOCKET", &self.socket)
            .stdin(Stdio::null());
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

    /// Runs `host ARGS`.
    pub fn host(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs a client command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.host(args);
        assert!(
            out.status.success(),
            "host {args:?} failed ({}):\n{}\n--- daemon log ---\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
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
            child,
            rx,
            seen: Vec::new(),
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A running `host events --follow`; killed when dropped.
pub struct Follower {
    child: Child,
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
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A local HTTP server that answers 200 to every request and hands the test each body.
pub struct Hook {
    /// `http://127.0.0.1:PORT/hook`.
    pub url: String,
    /// The bodies of the requests received, in order.
    pub bodies: Receiver<(String, Value)>,
}

/// Starts a [`Hook`] on an ephemeral port (its thread ends with the test process).
pub fn hook() -> Hook {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            let mut length = 0usize;
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).is_err() || header.trim().is_empty() {
                    break;
                }
                if let Some((k, v)) = header.split_once(':')
                    && k.eq_ignore_ascii_case("content-length")
                {
                    length = v.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length.min(1 << 20)];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            if tx.send((request_line.trim().to_string(), value)).is_err() {
                break;
            }
        }
    });
    Hook { url, bodies: rx }
}

/// Resident set of `pid` in bytes (`VmRSS`).
pub fn rss(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// Writes the demo app's source answering `n` to `dir/lib.rs` and returns its path.
pub fn source_answering(dir: &Path, n: i64) -> PathBuf {
    let path = dir.join(format!("lib-{n}.rs"));
    std::fs::write(&path, super::demo_source_answering(n)).unwrap();
    path
}
