//! `daemon_rss_kb`: a real `host serve`'s memory (`VmRSS`, and its peak `VmHWM`, from
//! `/proc/PID/status`) before, during and after the hostile client loads issue 11 names:
//! 48 connections each sending a 15 MB line that never ends, and 1 000 idle connections.
//! The daemon must hold these within its bounds (1 MiB a line, a shared pool, 256 slots).

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use testkit::proc::status_kb;

use crate::serve::{Serve, release_host};
use crate::stats::blocking;

/// Measures, or says why it could not.
pub async fn measure(root: &Path) -> Value {
    let root = root.to_path_buf();
    blocking("hostile load", move || try_measure(&root)).await
}

fn try_measure(root: &Path) -> anyhow::Result<Value> {
    let host = release_host(root)?;
    let serve = Serve::start(&host, "sandbox-bench-rss-", "info", &[])?;
    let (pid, socket) = (serve.pid(), serve.socket.clone());
    let before = status_kb(pid, "VmRSS").ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
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
    let loaded = status_kb(pid, "VmRSS").ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    drop(long);
    drop(idle);
    std::thread::sleep(Duration::from_millis(500));
    let after = status_kb(pid, "VmRSS").ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    let peak = status_kb(pid, "VmHWM").ok_or_else(|| anyhow::anyhow!("no VmHWM"))?;
    Ok(json!({
        "before": before,
        "loaded": loaded,
        "after": after,
        "peak": peak,
        "growth_peak": peak.saturating_sub(before),
    }))
}
