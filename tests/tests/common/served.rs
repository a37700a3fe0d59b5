//! A `host serve` with extra flags (`--metrics`, `--ui`) for the HTTP tests: started on a
//! private socket, its listening addresses read from its log, stopped when dropped.
//! Included by the tests that need it with `#[path = "common/served.rs"] mod serve;`.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tempfile::TempDir;

/// A running daemon.
pub struct Served {
    child: Option<Child>,
    /// Its control socket.
    pub socket: PathBuf,
    log: PathBuf,
    _dir: TempDir,
}

/// Polls `cond` every 20 ms until it holds or `timeout` passes.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// Runs `host serve EXTRA` and waits up to 10 s for it to exit; returns its output (for
/// flags that must make it refuse to start).
pub fn serve_refused(host: &str, extra: &[&str]) -> Output {
    let dir = tempfile::Builder::new()
        .prefix("e2e-http-")
        .tempdir()
        .unwrap();
    let mut child = Command::new(host)
        .arg("serve")
        .arg("--socket")
        .arg(dir.path().join("host.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(extra)
        .env_remove("SANDBOX_HOST_SOCKET")
        .env_remove("SANDBOX_HOST_UI_TOKEN")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if !wait_until(Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    }) {
        let _ = child.kill();
    }
    child.wait_with_output().unwrap()
}

impl Served {
    /// Starts `host serve EXTRA` and waits until the socket answers and every server named
    /// in `wait_for` (`metrics`, `dashboard`) has logged its address.
    pub fn start(host: &str, extra: &[&str], wait_for: &[&str]) -> Served {
        // Not under /tmp: a sandbox's private /tmp would hide its own directory.
        let dir = tempfile::Builder::new()
            .prefix("e2e-http-")
            .tempdir_in("/var/tmp")
            .unwrap();
        let socket = dir.path().join("ctl").join("host.sock");
        let log = dir.path().join("daemon.log");
        let child = Command::new(host)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(extra)
            .env_remove("SANDBOX_HOST_SOCKET")
            .env_remove("SANDBOX_HOST_UI_TOKEN")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut d = Served {
            child: Some(child),
            socket,
            log,
            _dir: dir,
        };
        let pid = d.child.as_ref().unwrap().id();
        let up = wait_until(Duration::from_secs(20), || {
            let exited = d.child.as_mut().unwrap().try_wait().unwrap().is_some();
            exited
                || (super::answers_as(&d.socket, pid)
                    && wait_for.iter().all(|w| d.url(w).is_some()))
        });
        let exited = d.child.as_mut().unwrap().try_wait().unwrap();
        assert!(
            up && exited.is_none(),
            "daemon did not come up ({exited:?}):\n{}",
            d.log()
        );
        d
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The URL the daemon logged for `what` (`metrics`: `http://A/metrics`, `dashboard`:
    /// `http://A/`).
    pub fn url(&self, what: &str) -> Option<String> {
        let log = self.log();
        let marker = format!("{what} on ");
        let at = log.find(&marker)? + marker.len();
        let url: String = log[at..]
            .chars()
            .take_while(|c| !c.is_whitespace())
            .collect();
        Some(url)
    }

    /// `host ARGS` against this daemon.
    pub fn host(&self, host: &str, args: &[&str]) -> Output {
        let mut cmd = Command::new(host);
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
        cmd.args(args).output().unwrap()
    }

    /// `host ARGS --json` that must succeed, parsed.
    pub fn json(&self, host: &str, args: &[&str]) -> serde_json::Value {
        let mut args = args.to_vec();
        args.push("--json");
        let out = self.host(host, &args);
        assert!(
            out.status.success(),
            "host {args:?} failed: {}\n--- daemon log ---\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// `host create ID --lib LIB EXTRA` (in the tests' cgroup parent, when one is set).
    pub fn create(&self, host: &str, id: &str, lib: &Path, extra: &[&str]) -> serde_json::Value {
        let lib = lib.to_str().unwrap();
        let mut args = vec!["create", id, "--lib", lib];
        let parent = std::env::var("SANDBOX_TEST_CGROUP_PARENT").unwrap_or_default();
        if !parent.is_empty() {
            args.extend(["--cgroup-parent", parent.as_str()]);
        }
        args.extend(extra);
        self.json(host, &args)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            if !wait_until(Duration::from_secs(15), || {
                child.try_wait().unwrap().is_some()
            }) {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
    }
}

/// The path of a file under the workspace root.
pub fn at_root(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}
