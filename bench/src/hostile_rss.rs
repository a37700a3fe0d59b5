//! `daemon_rss_kb`: a real `host serve`'s memory (`VmRSS`, and its peak `VmHWM`, from
//! `/proc/PID/status`) before, during and after the hostile client loads issue 11 names:
//! 48 connections each sending a 15 MB line that never ends, and 1 000 idle connections.
//! The daemon must hold these within its bounds (1 MiB a line, a shared pool, 256 slots).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::stats::skipped;

/// Kills and reaps `host serve` when dropped.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Measures, or says why it could not.
pub async fn measure(root: &Path) -> Value {
    let root = root.to_path_buf();
    tokio::task::spawn_blocking(move || try_measure(&root).unwrap_or_else(skipped))
        .await
        .unwrap_or_else(|e| skipped(format!("hostile load task failed: {e}")))
}

fn status_kb(pid: u32, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find(|l| l.starts_with(key))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn try_measure(root: &Path) -> Result<Value, String> {
    let host = root.join("target/release/host");
    if !host.is_file() {
        return Err("target/release/host is not built (scripts/bench.sh builds it)".into());
    }
    let tmp = tempfile::Builder::new()
        .prefix("sandbox-bench-rss-")
        .tempdir_in("/var/tmp")
        .map_err(|e| format!("temp dir: {e}"))?;
    let socket = tmp.path().join("host.sock");
    let serve = Serve(
        Command::new(&host)
            .arg("serve")
            .arg("--state-dir")
            .arg(tmp.path().join("sandboxes"))
            .env("SANDBOX_HOST_SOCKET", &socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start `host serve`: {e}"))?,
    );
    let pid = serve.0.id();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !socket.exists() {
        if Instant::now() > deadline {
            return Err("`host serve` did not create its socket within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = status_kb(pid, "VmRSS:").ok_or("no VmRSS")?;
    // 48 unterminated 15 MB lines, written as far as the daemon reads them.
    let chunk = vec![b'x'; 1 << 20];
    let mut long: Vec<UnixStream> = Vec::new();
    for _ in 0..48 {
        let Ok(mut s) = UnixStream::connect(&socket) else {
            continue;
        };
        s.set_write_timeout(Some(Duration::from_millis(200))).ok();
        for _ in 0..15 {
            if s.write_all(&chunk).is_err() {
                break;
            }
        }
        long.push(s);
    }
    let idle: Vec<UnixStream> = (0..1000)
        .filter_map(|_| UnixStream::connect(&socket).ok())
        .collect();
    let loaded = status_kb(pid, "VmRSS:").ok_or("no VmRSS")?;
    drop(long);
    drop(idle);
    std::thread::sleep(Duration::from_millis(500));
    let after = status_kb(pid, "VmRSS:").ok_or("no VmRSS")?;
    let peak = status_kb(pid, "VmHWM:").ok_or("no VmHWM")?;
    Ok(json!({
        "before": before,
        "loaded": loaded,
        "after": after,
        "peak": peak,
        "growth_peak": peak.saturating_sub(before),
    }))
}
