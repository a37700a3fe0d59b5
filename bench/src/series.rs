//! The series measured through the library: create -> ready -> destroy, the pool's own
//! figures, spawn floors and peers, `usage`, and many idle sandboxes at once.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use proto::spec::Level;
use sandbox::{AppSource, Manager, SandboxSpec, StartupTimings};
use serde_json::{Value, json};
use testkit::proc::proc_kb;

use crate::Sizes;
use crate::procspawn::{Cmd, which};
use crate::stats::{Pct, round1, skipped};

/// Timings of one series of create → ready → destroy.
#[derive(Debug, Default)]
pub(crate) struct CreateSeries {
    pub(crate) ready: Vec<Duration>,
    pub(crate) create_only: Vec<Duration>,
    pub(crate) destroy: Vec<Duration>,
    /// What the last sandbox's `info` said was applied.
    pub(crate) isolation: Value,
    /// Where each start spent its time (`info.startup`).
    pub(crate) phases: Vec<StartupTimings>,
    /// The pool's time to prepare its last runner, before each create.
    pub(crate) prepare: Vec<Duration>,
}

impl CreateSeries {
    /// The median of every startup phase, in µs.
    pub(crate) fn phases_p50(&self) -> Value {
        let p50 = |f: fn(&StartupTimings) -> u64| {
            let mut v: Vec<u64> = self.phases.iter().map(f).collect();
            v.sort_unstable();
            v.get(v.len() / 2).copied().unwrap_or(0)
        };
        json!({
            "install_us": p50(|t| t.install_us),
            "cgroup_us": p50(|t| t.cgroup_us),
            "prepare_us": p50(|t| t.prepare_us),
            "spawn_us": p50(|t| t.spawn_us),
            "ready_us": p50(|t| t.ready_us),
            "restrict_us": p50(|t| t.restrict_us),
            "load_us": p50(|t| t.load_us),
            "check_us": p50(|t| t.check_us),
            "assign_us": p50(|t| t.assign_us.unwrap_or(0)),
        })
    }
}

/// `n` sandboxes at `level`, one after the other: time `create` + the first `answer` call,
/// then `destroy`.
pub(crate) async fn create_series(
    manager: &Manager,
    lib: &Path,
    level: Level,
    tag: &str,
    n: usize,
) -> Result<CreateSeries> {
    let spec = || SandboxSpec::new(AppSource::Library(lib.to_path_buf())).with_isolation(level);
    let mut out = CreateSeries::default();
    for i in 0..n {
        // A pool refills in the background after each create; here it is given the time
        // (off the clock) that a daemon between creates has.
        manager.warm_pool().await;
        out.prepare
            .push(Duration::from_micros(manager.pool_stats().last_prepare_us));
        let id = format!("bench-{tag}-{i}");
        let t = Instant::now();
        let info = manager.create(&id, spec()).await?;
        let created = t.elapsed();
        let answer = manager.run(&id, "answer", Value::Null, None).await;
        out.ready.push(t.elapsed());
        out.create_only.push(created);
        out.isolation = info.isolation;
        out.phases.push(info.startup);
        let t = Instant::now();
        manager.destroy(&id).await?;
        out.destroy.push(t.elapsed());
        let answer = answer?;
        if !matches!(answer.as_i64(), Some(41 | 42)) {
            bail!("answer() gave {answer}");
        }
    }
    Ok(out)
}

/// The pool's own figures: its size, the time to prepare one runner, and what one costs in
/// memory (PSS of its init and app process) while it waits.
pub(crate) fn pool_figures(manager: &Manager, series: &CreateSeries) -> Value {
    let stats = manager.pool_stats();
    let pids = manager.pool_pids();
    let pss: Vec<u64> = pids.iter().filter_map(|&p| pss_kb(p)).collect();
    let runners = (pids.len() / 2).max(1) as u64;
    json!({
        "target": stats.target,
        "served": stats.served,
        "missed": stats.missed,
        "prepare_us": Pct::of_us(&series.prepare).to_json(),
        "pss_kb_per_prepared_runner": pss.iter().sum::<u64>() / runners,
        "disabled": stats.disabled,
    })
}

/// What `answer()` of a fresh sandbox on `lib` returns (the sandbox is destroyed again).
pub(crate) async fn answer_of(manager: &Manager, lib: &Path) -> Result<Value> {
    let id = "bench-probe";
    manager
        .create(id, SandboxSpec::new(AppSource::Library(lib.to_path_buf())))
        .await?;
    let answer = manager.run(id, "answer", Value::Null, None).await;
    manager.destroy(id).await?;
    Ok(answer?)
}

/// `n` spawn+wait runs of `argv` (10 warm-up runs first), on a blocking thread.
pub(crate) async fn spawn_series(argv: Vec<String>, n: usize) -> Result<Pct> {
    let samples = tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = argv.iter().map(String::as_str).collect();
        Cmd::new(&args)?.sample(10, n)
    })
    .await??;
    Ok(Pct::of_us(&samples))
}

/// A peer sandbox tool, or [`skipped`] when it is not installed or does not work.
pub(crate) async fn peer(tool: &str, args: &[&str], n: usize) -> Value {
    let Some(path) = which(tool) else {
        return skipped(format!(
            "{tool} is not installed (`which {tool}` found nothing)"
        ));
    };
    let mut argv = vec![path.to_string_lossy().into_owned()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let line = argv.join(" ");
    match spawn_series(argv, n).await {
        Ok(p) => {
            let mut v = p.to_json();
            v["command"] = json!(line);
            v
        }
        Err(e) => skipped(format!("`{line}` failed: {e}")),
    }
}

/// `n` timed `usage()` calls; notes the process count.
pub(crate) async fn usage_series(manager: &Manager, id: &str, n: usize) -> Result<Value> {
    // Settled first: `workers` answers once the workers of the last reload have moved.
    manager.workers(id).await?;
    let first = manager.usage(id).await?;
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        manager.usage(id).await?;
        samples.push(t.elapsed());
    }
    let mut v = Pct::of_us(&samples).to_json();
    v["processes"] = json!(first.processes);
    Ok(v)
}

/// Creates `sizes.sandboxes` idle sandboxes concurrently; reports the wall time, the
/// host's RSS and the mean PSS of each sandbox's process tree; destroys them.
pub(crate) async fn many_sandboxes(manager: &Manager, lib: &Path, sizes: Sizes) -> Result<Value> {
    let n = sizes.sandboxes;
    let rss_before = vm_rss_kb().unwrap_or(0);
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let manager = manager.clone();
        let spec = SandboxSpec::new(AppSource::Library(lib.to_path_buf()));
        set.spawn(async move { manager.create(&format!("bench-n-{i}"), spec).await });
    }
    let mut pids = Vec::with_capacity(n);
    let mut first_err = None;
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(info)) => pids.push(info.pid),
            Ok(Err(e)) => first_err = first_err.or(Some(anyhow!(e))),
            Err(e) => first_err = first_err.or(Some(anyhow!(e))),
        }
    }
    let total_s = started.elapsed().as_secs_f64();
    let result = match first_err {
        Some(e) => Err(e.context(format!("creating {n} sandboxes"))),
        None => {
            let rss = vm_rss_kb().unwrap_or(0);
            let (pss_kb, processes) = tokio::task::spawn_blocking(move || {
                let mut pss = 0u64;
                let mut procs = 0usize;
                for pid in pids {
                    for p in sandbox::procfs::tree(pid) {
                        pss += pss_kb(p.pid).unwrap_or(0);
                        procs += 1;
                    }
                }
                (pss, procs)
            })
            .await?;
            let mut v = json!({
                "n": n,
                "total_s": (total_s * 1000.0).round() / 1000.0,
                "host_rss_kb": rss,
                "host_rss_before_kb": rss_before,
                "mean_pss_kb": round1(pss_kb as f64 / n as f64),
                "processes": processes,
            });
            if sizes.quick {
                v["note"] = json!(format!("--quick: {n} sandboxes, not 1000"));
            }
            Ok(v)
        }
    };
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let manager = manager.clone();
        set.spawn(async move { manager.destroy(&format!("bench-n-{i}")).await });
    }
    while set.join_next().await.is_some() {}
    let mut v = result?;
    v["destroy_all_s"] = json!((t.elapsed().as_secs_f64() * 1000.0).round() / 1000.0);
    Ok(v)
}

pub(crate) fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn vm_rss_kb() -> Option<u64> {
    proc_kb("/proc/self/status", "VmRSS")
}

pub(crate) fn pss_kb(pid: i32) -> Option<u64> {
    proc_kb(&format!("/proc/{pid}/smaps_rollup"), "Pss")
}
