//! A real `host serve` (the release binary) for the measurements that need a daemon: on a
//! private socket and state directory, ready once its socket answers, stopped when dropped
//! (SIGTERM, so that it destroys its sandboxes, then SIGKILL).

use anyhow::Context;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::ChildGuard;

/// A running daemon and its scratch directory (removed after it stopped).
#[derive(Debug)]
pub struct Serve {
    child: ChildGuard,
    /// Its control socket.
    pub socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Serve {
    /// Starts `HOST serve ARGS` with log filter `rust_log` (its log goes nowhere) in a fresh
    /// `/var/tmp/<prefix>XXXX` and waits up to 20 s for its socket to answer.
    pub fn start(
        host: &Path,
        prefix: &str,
        rust_log: &str,
        args: &[&str],
    ) -> anyhow::Result<Serve> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/var/tmp")
            .context("temp dir")?;
        let socket = dir.path().join("host.sock");
        let child = Command::new(host)
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .args(args)
            .env_remove("SANDBOX_HOST_SOCKET")
            .env("RUST_LOG", rust_log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start `host serve`")?;
        let mut serve = Serve {
            child: ChildGuard::terminate(child, Duration::from_secs(15)),
            socket,
            _dir: dir,
        };
        let up = testkit::wait_until(Duration::from_secs(20), || {
            serve.child.exited().is_some() || UnixStream::connect(&serve.socket).is_ok()
        });
        if !up || serve.child.exited().is_some() {
            return Err(anyhow::anyhow!("`host serve` did not come up within 20 s"));
        }
        Ok(serve)
    }

    /// The daemon's pid.
    pub fn pid(&self) -> i32 {
        self.child.pid()
    }

    /// A `HOST` client command on this daemon's socket.
    pub fn client(&self, host: &Path) -> Command {
        let mut cmd = Command::new(host);
        cmd.env("SANDBOX_HOST_SOCKET", &self.socket);
        cmd
    }
}

/// The release host binary under `root`, or why it cannot be used.
pub fn release_host(root: &Path) -> anyhow::Result<PathBuf> {
    let host = root.join("target/release/host");
    if host.is_file() {
        Ok(host)
    } else {
        Err(anyhow::anyhow!(
            "target/release/host is not built (scripts/bench.sh builds it)"
        ))
    }
}
