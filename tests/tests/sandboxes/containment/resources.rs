//! Resources: the cgroup limits hold a fork bomb, a memory bomb and a CPU spin inside their
//! sandbox, the kernel's own files say so, and the neighbour keeps answering.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::manager::cgroup_name;
use e2e::prelude::*;
use e2e::report::errnos::EAGAIN;
use e2e::report::{errno, stopped_by};
use sandbox::{Level, Limits, SandboxInfo};
use serde_json::json;

use super::{answers, call, while_neighbour_answers};

const MAX_PROCS: u64 = 32;

fn max_processes(n: u64) -> Limits {
    Limits {
        max_processes: Some(n),
        ..Limits::default()
    }
}

/// The sandbox's cgroup directories, one per v1 hierarchy (v2: the one directory): where its
/// runner is, by `/proc/<pid>/cgroup` (the cgroups are named after the sandbox's directory).
fn cgroup_dirs(info: &SandboxInfo) -> Vec<PathBuf> {
    let name = cgroup_name(info);
    testkit::cgroup::cgroups_of(info.pid)
        .into_iter()
        .filter_map(|(controllers, path)| {
            let mount = if cgroup_v2() {
                Path::new(testkit::cgroup::ROOT).to_path_buf()
            } else if controllers.is_empty() {
                return None;
            } else {
                Path::new(testkit::cgroup::ROOT).join(controllers)
            };
            path.ends_with(&name)
                .then(|| mount.join(path.trim_start_matches('/')))
        })
        .collect()
}

/// A control file of the sandbox's cgroup (the first of its directories that has it), trimmed.
fn cgroup_file(info: &SandboxInfo, file: &str) -> String {
    let dirs = cgroup_dirs(info);
    let path = dirs
        .iter()
        .map(|d| d.join(file))
        .find(|p| p.exists())
        .unwrap_or_else(|| panic!("no {file} in the sandbox's cgroups {dirs:?}"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_stops_at_pids_max_and_the_sandbox_is_still_destroyable() {
    let m = manager();
    let info = hostile(&m, "fork-bomb", max_processes(MAX_PROCS), Level::Standard).await;
    let cgroup = stopped_by(&info.isolation, "cgroup", "a fork bomb");
    assert!(
        cgroup.contains(&format!("pids.max={MAX_PROCS}")),
        "{cgroup}"
    );
    // The kernel's word, not the report's: pids.max is the same file on v1 and v2.
    assert_eq!(cgroup_file(&info, "pids.max"), MAX_PROCS.to_string());
    hostile(&m, "fork-neighbour", Limits::default(), Level::Standard).await;

    // Fork sleeping children until the kernel refuses 50 times in a row.
    let bomb = json!({"max": 5000, "failures": 50});
    let r = while_neighbour_answers(&m, "fork-bomb", "fork_bomb", bomb, "fork-neighbour").await;
    assert_eq!(
        errno(&r),
        EAGAIN,
        "the pids controller (pids.max) refuses fork with EAGAIN: {r}"
    );
    let forked = r["forked"].as_u64().unwrap();
    assert!(forked > 0 && forked < MAX_PROCS, "{r}");

    // The children stay, so the sandbox sits at its limit: usage, the neighbour and the
    // bombed sandbox itself still work.
    let u = m.usage("fork-bomb").await.unwrap();
    eprintln!("fork bomb: {r}; usage: {u:?}");
    assert_eq!(u.source, "cgroup");
    assert!(
        u.processes <= MAX_PROCS && u.threads <= MAX_PROCS,
        "pids.max={MAX_PROCS} exceeded: {} processes, {} threads",
        u.processes,
        u.threads
    );
    assert!(u.processes > forked, "{} processes", u.processes);
    answers(&m, "fork-neighbour").await;
    answers(&m, "fork-bomb").await;

    let pids = tree(info.pid);
    assert!(pids.len() as u64 > forked, "{pids:?}");
    let cgroups = cgroup_dirs(&info);
    let hierarchies = if cgroup_v2() { 1 } else { 3 };
    assert!(
        cgroups.len() >= hierarchies && cgroups.iter().all(|d| d.is_dir()),
        "the runner should be in the sandbox's memory, pids and cpu cgroups: {cgroups:?}"
    );
    m.destroy("fork-bomb").await.unwrap();
    let gone = wait_until_async(Duration::from_secs(5), async || {
        pids.iter().all(|&p| !alive(p))
    })
    .await;
    assert!(
        gone,
        "survivors: {:?}",
        pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>()
    );
    m.settled().await;
    assert!(!info.dir.exists(), "{} left behind", info.dir.display());
    assert!(
        cgroups.iter().all(|d| !d.exists()),
        "cgroup left behind: {cgroups:?}"
    );
    answers(&m, "fork-neighbour").await;
    m.destroy("fork-neighbour").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_after_a_fork_bomb_do_not_crash_the_runner() {
    let m = manager();
    let info = hostile(&m, "fork-calls", max_processes(MAX_PROCS), Level::Standard).await;
    let r = call(
        &m,
        "fork-calls",
        "fork_bomb",
        json!({"max": 5000, "failures": 50}),
    )
    .await;
    assert_eq!(errno(&r), EAGAIN, "{r}");
    // Three calls at once: two fit the runner's idle call threads, the third needs a new
    // thread, which pids.max refuses. That may fail the call; it must not kill the runner.
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let m = m.clone();
            tokio::spawn(async move {
                m.run(
                    "fork-calls",
                    "hold",
                    json!({"ms": 300}),
                    Some(Duration::from_secs(5)),
                )
                .await
            })
        })
        .collect();
    for c in calls {
        let result = c.await.unwrap();
        assert!(
            !matches!(result, Err(sandbox::SandboxError::Crashed { .. })),
            "{result:?}"
        );
    }
    let after = m.info("fork-calls").await.unwrap();
    assert_eq!(
        (after.pid, after.restart_count),
        (info.pid, 0),
        "the runner died: {:?}",
        after.crash_reason
    );
    m.destroy("fork-calls").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_is_oom_killed_inside_its_sandbox_only() {
    const LIMIT: u64 = 64 << 20;
    let m = manager();
    let limits = Limits {
        max_memory: Some(LIMIT),
        ..Limits::default()
    };
    let info = hostile(&m, "mem-bomb", limits, Level::Standard).await;
    let cgroup = stopped_by(&info.isolation, "cgroup", "a memory bomb");
    assert!(cgroup.contains("memory"), "{cgroup}");
    let limit_file = if cgroup_v2() {
        "memory.max"
    } else {
        "memory.limit_in_bytes"
    };
    assert_eq!(cgroup_file(&info, limit_file), LIMIT.to_string());
    hostile(&m, "mem-neighbour", Limits::default(), Level::Standard).await;

    // A forked child maps and touches 4 MiB at a time, up to 2 GiB, until it is killed.
    let bomb = json!({"chunk_mb": 4, "max_mb": 2048});
    let r = while_neighbour_answers(&m, "mem-bomb", "memory_bomb", bomb, "mem-neighbour").await;
    assert!(
        r["hit_max"] == json!(false) && r["mmap_failed"] == json!(false),
        "the child should have been killed while touching memory: {r}"
    );
    assert!(r["touched_mb"].as_u64().unwrap() < LIMIT >> 20, "{r}");

    let u = m.usage("mem-bomb").await.unwrap();
    eprintln!("memory bomb: {r}; usage: {u:?}");
    assert!(
        u.oom_kills.is_some_and(|k| k >= 1),
        "the memory cgroup's OOM killer should have killed the bomb: {u:?}"
    );
    assert!(
        u.memory_peak_bytes.is_some_and(|p| p <= LIMIT),
        "memory peak above the limit: {u:?}"
    );
    // Only the bomb died: the runner is the same process and still serves.
    let after = m.info("mem-bomb").await.unwrap();
    assert_eq!(
        (after.pid, after.restart_count),
        (info.pid, 0),
        "the runner died"
    );
    answers(&m, "mem-bomb").await;
    // The neighbour saw nothing.
    answers(&m, "mem-neighbour").await;
    let n = m.usage("mem-neighbour").await.unwrap();
    assert_eq!(n.oom_kills, Some(0), "{n:?}");
    m.destroy("mem-bomb").await.unwrap();
    m.destroy("mem-neighbour").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cpu_spin_is_held_near_its_quota() {
    let m = manager();
    let limits = Limits {
        cpu: Some(0.2),
        ..Limits::default()
    };
    let info = hostile(&m, "cpu-spin", limits, Level::Standard).await;
    let cgroup = stopped_by(&info.isolation, "cgroup", "a CPU spin");
    // v1: cpu.cfs_quota_us (over cpu.cfs_period_us=100000); v2: cpu.max "<quota> <period>".
    let quota = if cgroup_v2() {
        "cpu.max=20000 100000"
    } else {
        "cfs_quota_us=20000"
    };
    assert!(cgroup.contains(quota), "{cgroup}");
    if cgroup_v2() {
        assert_eq!(cgroup_file(&info, "cpu.max"), "20000 100000");
    } else {
        assert_eq!(cgroup_file(&info, "cpu.cfs_quota_us"), "20000");
        assert_eq!(cgroup_file(&info, "cpu.cfs_period_us"), "100000");
    }
    hostile(&m, "cpu-neighbour", Limits::default(), Level::Standard).await;

    // Two threads spin for 4 s (two cores' worth of demand against a fifth of one).
    let r = call(
        &m,
        "cpu-spin",
        "cpu_spin",
        json!({"threads": 2, "ms": 4000}),
    )
    .await;
    assert_eq!(r["threads"], 2, "{r}");
    // A measurement, not a wait: the spin's CPU time over a window of wall time, from 0.3 s
    // into the spin (the threads are running) to 1.8 s.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let first = m.usage("cpu-spin").await.unwrap();
    let from = Instant::now();
    answers(&m, "cpu-neighbour").await;
    tokio::time::sleep(Duration::from_millis(1500).saturating_sub(from.elapsed())).await;
    let second = m.usage("cpu-spin").await.unwrap();
    let wall_ms = from.elapsed().as_millis() as f64;
    let used_ms = second.cpu_time_ms.saturating_sub(first.cpu_time_ms) as f64;
    eprintln!("cpu spin: {first:?} -> {second:?} over {wall_ms} ms");
    // `cpu_percent` is measured between the two samples.
    assert!(
        second.cpu_percent <= 40.0,
        "cpu.cfs_quota_us should hold the spin near 20% of a core: {}% ({used_ms} ms CPU in \
         {wall_ms} ms)",
        second.cpu_percent
    );
    assert!(
        second.cpu_percent >= 5.0 && used_ms >= 0.05 * wall_ms,
        "the spin did not run: {}% ({used_ms} ms CPU in {wall_ms} ms)",
        second.cpu_percent
    );
    answers(&m, "cpu-neighbour").await;
    m.destroy("cpu-spin").await.unwrap();
    m.destroy("cpu-neighbour").await.unwrap();
}
