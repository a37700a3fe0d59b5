//! `watching`: what the detector costs and how fast events reach a follower, against a real
//! `host serve`. Two daemons each hold 100 idle sandboxes (isolation `none`, to keep the
//! setup fast: the detector's sample reads the same `/proc` and cgroup files either way, and
//! without a cgroup it walks `/proc`, the dearer path); one of them watches at a 1 s
//! interval. Reported: each daemon's CPU (percent of one core) and RSS over the same window,
//! their differences, and the latency from an event's `time` (stamped at emit, ms precision,
//! truncated: latencies are over-, never under-stated) to a `follow` reader receiving it.

use anyhow::Context;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::serve::{Serve, release_host};
use crate::stats::{Pct, blocking, round1};

/// Sandboxes each daemon holds.
const SANDBOXES: usize = 100;

/// Measures, or says why it could not.
pub async fn measure(root: &Path, lib: &Path, quick: bool) -> Value {
    let (root, lib) = (root.to_path_buf(), lib.to_path_buf());
    blocking("watching", move || try_measure(&root, &lib, quick)).await
}

/// One request on a connection; the answer's `ok` value.
fn ask(conn: &mut BufReader<UnixStream>, request: &Value) -> anyhow::Result<Value> {
    let mut line = request.to_string();
    line.push('\n');
    conn.get_mut().write_all(line.as_bytes())?;
    let mut answer = String::new();
    conn.read_line(&mut answer)?;
    let v: Value = serde_json::from_str(&answer).with_context(|| format!("answer: {answer}"))?;
    match v.get("ok") {
        Some(ok) => Ok(ok.clone()),
        None => Err(anyhow::anyhow!("{request} failed: {answer}")),
    }
}

fn populate(serve: &Serve, lib: &Path, isolation: &str) -> anyhow::Result<BufReader<UnixStream>> {
    let mut conn = BufReader::new(UnixStream::connect(&serve.socket)?);
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
fn cpu_and_rss(pid: i32) -> anyhow::Result<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
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
    let rss = testkit::proc::status_kb(pid, "VmRSS").unwrap_or(0);
    Ok((tick(11) + tick(12), rss))
}

/// CPU percent of one core over `window`, and (RSS before, RSS after) in kB.
fn observe(pid: i32, window: Duration) -> anyhow::Result<(f64, u64, u64)> {
    // SAFETY: sysconf has no memory effects.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (t0, rss0) = cpu_and_rss(pid)?;
    let started = Instant::now();
    std::thread::sleep(window);
    let (t1, rss1) = cpu_and_rss(pid)?;
    let wall = started.elapsed().as_secs_f64();
    Ok(((t1 - t0) as f64 / hz / wall * 100.0, rss0, rss1))
}

fn try_measure(root: &Path, lib: &Path, quick: bool) -> anyhow::Result<Value> {
    let host = release_host(root)?;
    let window = Duration::from_secs(if quick { 10 } else { 30 });
    // `none` by default (fast to set up); BENCH_WATCH_ISOLATION=standard measures the cgroup
    // path.
    let isolation = std::env::var("BENCH_WATCH_ISOLATION").unwrap_or_else(|_| "none".into());
    let settle = Duration::from_secs(3);

    let idle = Serve::start(&host, "sandbox-bench-watch-", "warn", &[])?;
    let _idle_conn = populate(&idle, lib, &isolation)?;
    std::thread::sleep(settle);
    let (idle_cpu, _, idle_rss) = observe(idle.pid(), window)?;
    drop(idle);

    let watched = Serve::start(
        &host,
        "sandbox-bench-watch-",
        "warn",
        &[
            "--watch",
            "--watch-interval",
            "1s",
            "--watch-provider",
            "mock",
        ],
    )?;
    let (_, before_rss) = cpu_and_rss(watched.pid())?;
    let mut conn = populate(&watched, lib, &isolation)?;
    std::thread::sleep(settle);
    let (cpu, rss0, rss1) = observe(watched.pid(), window)?;

    // Latency: a follower on its own connection; mock operator runs make the events (a
    // snapshot event carries the whole telemetry, so they are the stream's largest).
    let mut follower = BufReader::new(UnixStream::connect(&watched.socket)?);
    follower
        .get_mut()
        .write_all(b"{\"op\":\"events\",\"follow\":true,\"last\":0}\n")?;
    let mut header = String::new();
    follower.read_line(&mut header)?;
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
    let latencies = reader
        .join()
        .map_err(|_| anyhow::anyhow!("follower thread panicked"))?;
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
