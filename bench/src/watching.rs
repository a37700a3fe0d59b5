//! `watching`: what the detector costs and how fast events reach a follower, against a real
//! `host serve`. Two daemons each hold 100 idle sandboxes (isolation `none`, to keep the
//! setup fast: the detector's sample reads the same `/proc` and cgroup files either way, and
//! without a cgroup it walks `/proc`, the dearer path); one of them watches at a 1 s
//! interval. Reported: each daemon's CPU (percent of one core) and RSS over the same window,
//! their differences, and the latency from an event's `time` (stamped at emit, ms precision,
//! truncated: latencies are over-, never under-stated) to a `follow` reader receiving it.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::stats::{Pct, round1, skipped};

/// Sandboxes each daemon holds.
const SANDBOXES: usize = 100;

/// Measures, or says why it could not.
pub async fn measure(root: &Path, lib: &Path, quick: bool) -> Value {
    let (root, lib) = (root.to_path_buf(), lib.to_path_buf());
    tokio::task::spawn_blocking(move || match try_measure(&root, &lib, quick) {
        Ok(v) => v,
        Err(reason) => skipped(reason),
    })
    .await
    .unwrap_or_else(|e| skipped(format!("watching task failed: {e}")))
}

/// A `host serve` killed and reaped when dropped, with its scratch directory.
struct Serve {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        // SIGTERM first: the daemon destroys its sandboxes on the way out.
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(host: &Path, args: &[&str]) -> Result<Serve, String> {
    let dir = tempfile::Builder::new()
        .prefix("sandbox-bench-watch-")
        .tempdir_in("/var/tmp")
        .map_err(|e| format!("temp dir: {e}"))?;
    let socket = dir.path().join("host.sock");
    let child = Command::new(host)
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start `host serve`: {e}"))?;
    let serve = Serve {
        child,
        socket,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while UnixStream::connect(&serve.socket).is_err() {
        if Instant::now() > deadline {
            return Err("`host serve` did not come up within 20 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(serve)
}

/// One request on a connection; the answer's `ok` value.
fn ask(conn: &mut BufReader<UnixStream>, request: &Value) -> Result<Value, String> {
    let mut line = request.to_string();
    line.push('\n');
    conn.get_mut()
        .write_all(line.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    conn.read_line(&mut answer).map_err(|e| e.to_string())?;
    let v: Value = serde_json::from_str(&answer).map_err(|e| format!("{e}: {answer}"))?;
    match v.get("ok") {
        Some(ok) => Ok(ok.clone()),
        None => Err(format!("{request} failed: {answer}")),
    }
}

fn populate(serve: &Serve, lib: &Path, isolation: &str) -> Result<BufReader<UnixStream>, String> {
    let mut conn = BufReader::new(UnixStream::connect(&serve.socket).map_err(|e| e.to_string())?);
    for i in 0..SANDBOXES {
        let spec = json!({"app": {"library": lib}, "isolation": isolation});
        ask(
            &mut conn,
            &json!({"op": "create", "id": format!("w{i:03}"), "spec": spec}),
        )?;
    }
    Ok(conn)
}

/// (CPU ticks, RSS in kB) of `pid`.
fn cpu_and_rss(pid: u32) -> Result<(u64, u64), String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| e.to_string())?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // utime and stime are fields 14 and 15 of stat(5): 12 and 13 after the `)`.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    Ok((tick(11) + tick(12), rss))
}

/// CPU percent of one core over `window`, and (RSS before, RSS after) in kB.
fn observe(pid: u32, window: Duration) -> Result<(f64, u64, u64), String> {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (t0, rss0) = cpu_and_rss(pid)?;
    let started = Instant::now();
    std::thread::sleep(window);
    let (t1, rss1) = cpu_and_rss(pid)?;
    let wall = started.elapsed().as_secs_f64();
    Ok(((t1 - t0) as f64 / hz / wall * 100.0, rss0, rss1))
}

fn try_measure(root: &Path, lib: &Path, quick: bool) -> Result<Value, String> {
    let host = root.join("target/release/host");
    if !host.is_file() {
        return Err("target/release/host is not built (scripts/bench.sh builds it)".into());
    }
    let window = Duration::from_secs(if quick { 10 } else { 30 });
    // `none` by default (fast to set up); BENCH_WATCH_ISOLATION=standard measures the cgroup
    // path.
    let isolation = std::env::var("BENCH_WATCH_ISOLATION").unwrap_or_else(|_| "none".into());
    let settle = Duration::from_secs(3);

    let idle = start(&host, &[])?;
    let _idle_conn = populate(&idle, lib, &isolation)?;
    std::thread::sleep(settle);
    let (idle_cpu, _, idle_rss) = observe(idle.child.id(), window)?;
    drop(idle);

    let watched = start(
        &host,
        &[
            "--watch",
            "--watch-interval",
            "1s",
            "--watch-provider",
            "mock",
        ],
    )?;
    let (_, before_rss) = cpu_and_rss(watched.child.id())?;
    let mut conn = populate(&watched, lib, &isolation)?;
    std::thread::sleep(settle);
    let (cpu, rss0, rss1) = observe(watched.child.id(), window)?;

    // Latency: a follower on its own connection; mock operator runs make the events (a
    // snapshot event carries the whole telemetry, so they are the stream's largest).
    let mut follower =
        BufReader::new(UnixStream::connect(&watched.socket).map_err(|e| e.to_string())?);
    follower
        .get_mut()
        .write_all(b"{\"op\":\"events\",\"follow\":true,\"last\":0}\n")
        .map_err(|e| e.to_string())?;
    let mut header = String::new();
    follower.read_line(&mut header).map_err(|e| e.to_string())?;
    let runs = if quick { 50 } else { 200 };
    let reader = std::thread::spawn(move || {
        let mut latencies = Vec::new();
        let mut line = String::new();
        let mut done = 0;
        while done < runs {
            line.clear();
            if follower.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            let now_ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64() * 1000.0);
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(at) = v["time"].as_str().and_then(epoch_ms) {
                latencies.push((now_ms - at).max(0.0));
            }
            if v["event"] == "operator.done" {
                done += 1;
            }
        }
        latencies
    });
    for _ in 0..runs {
        ask(
            &mut conn,
            &json!({"op": "operate", "id": "w000", "provider": "mock"}),
        )?;
    }
    let latencies = reader.join().map_err(|_| "follower thread panicked")?;
    let latency = Pct::of(latencies);
    drop(watched);

    Ok(json!({
        "sandboxes": SANDBOXES,
        "isolation": isolation,
        "interval_s": 1,
        "window_s": window.as_secs(),
        "daemon_cpu_percent": round1(cpu),
        "daemon_cpu_percent_unwatched": round1(idle_cpu),
        "rss_kb": {"before_sandboxes": before_rss, "window_start": rss0, "window_end": rss1,
            "unwatched": idle_rss},
        "rss_delta_kb": rss1 as i64 - idle_rss as i64,
        "rss_growth_in_window_kb": rss1 as i64 - rss0 as i64,
        "event_latency_ms": {"p50": round1(latency.p50), "p99": round1(latency.p99), "n": latency.n},
    }))
}

/// Milliseconds since the epoch of an RFC 3339 UTC time such as `2025-01-02T03:04:05.678Z`.
fn epoch_ms(t: &str) -> Option<f64> {
    let b = t.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[10] != b'T' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let frac: f64 = match t.get(19..20) {
        Some(".") => format!("0{}", t[19..].trim_end_matches('Z')).parse().ok()?,
        _ => 0.0,
    };
    // Days from the civil date (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(((days * 86_400 + hh * 3600 + mm * 60 + ss) as f64 + frac) * 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_times_convert_to_epoch_milliseconds() {
        assert_eq!(epoch_ms("1970-01-01T00:00:00.000Z"), Some(0.0));
        assert_eq!(
            epoch_ms("2000-03-01T00:00:01.500Z"),
            Some(951_868_801_500.0)
        );
        assert_eq!(epoch_ms("nonsense"), None);
    }
}
