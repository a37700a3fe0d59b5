//! The runner log, attacked: an app that floods stderr and dies, over and over, must not grow
//! its sandbox's log beyond the documented bound across restarts (docs/spawn.md, step 14), and
//! `info` says what was dropped. A crash reason carries the app's last lines, escaped and
//! labelled as its own words.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e::manager::create_app;
use e2e::prelude::*;
use sandbox::{Level, Limits, SandboxError, Status};
use serde_json::json;

/// The most a sandbox's log holds on disk: `runner.log` and `runner.log.1`, 4 MiB each.
const LOG_BOUND: u64 = 8 << 20;
const FILE_BOUND: u64 = 4 << 20;

/// Every log file of the sandbox directory `dir` (`runner.log*`), with its size.
fn log_files(dir: &Path) -> Vec<(String, u64)> {
    let mut files: Vec<(String, u64)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let len = e.metadata().ok()?.len();
            name.starts_with("runner.log").then_some((name, len))
        })
        .collect();
    files.sort();
    files
}

/// Waits until sandbox `id` serves again on a runner other than `old_pid`: restarted by its
/// watcher, or (past the crash intensity) by an explicit restart.
async fn serving_again(m: &sandbox::Manager, id: &str, old_pid: i32) -> i32 {
    let mut pid = 0;
    let up = wait_until_async(Duration::from_secs(20), async || match m.info(id).await {
        Ok(i) if i.status == Status::Running && i.pid != old_pid => {
            pid = i.pid;
            true
        }
        Ok(i) if i.status == Status::Crashed => match m.restart(id).await {
            Ok(i) => {
                pid = i.pid;
                true
            }
            Err(_) => false,
        },
        _ => false,
    })
    .await;
    assert!(up, "{id} does not serve again: {:?}", m.info(id).await);
    pid
}

/// The attack of issue 23, item 8: each runner's log budget was its own, and every restart
/// appended to the same file, so a crash loop grew the log without bound. 140 lives of
/// 128 KiB of stderr each (of which each runner's rate keeps 64 KiB) put 4 MiB in the file
/// by the 64th and 9 MiB by the end before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_looping_flood_keeps_the_sandbox_log_within_its_bound() {
    const ROUNDS: usize = 140;
    let m = manager();
    // The first runner from the pool where there is one (a root host), the rest spawned: one
    // log, at one path, for them all.
    m.warm_pool().await;
    let id = "shouter";
    let info = create_app(&m, id, "forger_app", Limits::default(), Level::Standard).await;
    let dir = info.dir.clone();
    assert_eq!(info.log.path, dir.join("runner.log"));
    assert_eq!(info.log.bound_bytes, LOG_BOUND);
    // (No pool with SANDBOX_HOST_POOL=0, as .ci/run's second pass runs.)
    let pooled = is_root() && m.config().pool_size > 0;
    assert_eq!(info.startup.pooled, pooled, "{:?}", info.startup);
    let mut pid = info.pid;
    let started = Instant::now();
    for round in 0..ROUNDS {
        let err = m
            .run(
                id,
                "shout",
                json!({"kib": 128}),
                Some(Duration::from_secs(10)),
            )
            .await
            .unwrap_err();
        assert!(
            matches!(err, SandboxError::Crashed { .. }),
            "round {round}: {err}"
        );
        pid = serving_again(&m, id, pid).await;
        let files = log_files(&dir);
        for (name, len) in &files {
            assert!(
                *len <= FILE_BOUND,
                "round {round}: {name} holds {len} bytes (at most {FILE_BOUND}): {files:?}"
            );
        }
        let total: u64 = files.iter().map(|(_, len)| len).sum();
        assert!(
            total <= LOG_BOUND,
            "round {round}: the log holds {total} bytes (at most {LOG_BOUND}): {files:?}"
        );
    }
    let files = log_files(&dir);
    eprintln!("{ROUNDS} lives in {:?}: {files:?}", started.elapsed());
    let info = m.info(id).await.unwrap();
    assert_eq!(info.log.path, dir.join("runner.log"));
    assert_eq!(
        info.log.kept_bytes,
        files.iter().map(|(_, len)| len).sum::<u64>(),
        "{:?}",
        info.log
    );
    // 140 lives of 64 KiB: the log was moved aside more than once, and the host says what it
    // deleted.
    assert!(info.log.dropped_bytes >= 1 << 20, "{:?}", info.log);
    let (names, _): (Vec<String>, Vec<u64>) = files.into_iter().unzip();
    assert_eq!(names, ["runner.log", "runner.log.1"]);
    m.destroy(id).await.unwrap();
}

/// A runner that dies says why in the host's words (the signal), then the app's last lines:
/// an allocation over `--address-space` is "memory allocation of N bytes failed", not only
/// SIGABRT. What the app wrote is escaped (its terminal sequences and forged lines show as
/// text) and bounded, also when a flood before it was over the log's rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_reason_carries_the_apps_last_words_escaped() {
    const LABEL: &str = "the app's last output (its own words, escaped): \"";
    let m = manager();
    let id = "last-words";
    let limits = Limits {
        address_space: Some(1 << 30),
        ..Limits::default()
    };
    let info = create_app(&m, id, "forger_app", limits, Level::Standard).await;
    let alloc = 3u64 << 30;
    // std's words (it may add a note after them).
    let last_line = format!("memory allocation of {alloc} bytes failed");
    let forged =
        "\\u{1b}]0;FORGED title\\u{7}\\u{1b}[2K\\r + seccomp: FORGED verified by the kernel";
    let check = |reason: &str| {
        assert!(reason.contains(LABEL), "{reason}");
        assert!(
            reason.contains(&last_line) && reason.ends_with('"'),
            "{reason}"
        );
        assert!(reason.contains(forged), "{reason}");
        assert!(!reason.chars().any(char::is_control), "{reason:?}");
        let words = &reason[reason.find(LABEL).unwrap() + LABEL.len()..];
        assert!(words.len() <= 300 + 1, "{} bytes: {words}", words.len());
    };
    let mut pid = info.pid;
    // Quiet, then after 256 KiB (over the log's rate of 64 KiB a second): the last words are
    // the same.
    for kib in [0, 256] {
        let err = m
            .run(id, "shout", json!({"kib": kib, "alloc": alloc}), None)
            .await
            .unwrap_err();
        let SandboxError::Crashed { reason, signal, .. } = &err else {
            panic!("not a crash: {err}")
        };
        assert_eq!(signal.as_deref(), Some("SIGABRT"), "{err}");
        assert!(
            reason.starts_with("runner died: app process signal SIGABRT; "),
            "{reason}"
        );
        check(reason);
        pid = serving_again(&m, id, pid).await;
    }
    // Past the crash intensity, the status says it too.
    let crashed = wait_until_async(Duration::from_secs(30), async || {
        let _ = m
            .run(id, "shout", json!({"kib": 0, "alloc": alloc}), None)
            .await;
        match m.info(id).await {
            Ok(i) if i.status == Status::Crashed => true,
            _ => {
                wait_until_async(Duration::from_secs(10), async || {
                    m.info(id).await.is_ok_and(|i| {
                        i.status == Status::Crashed || (i.status == Status::Running && i.pid != pid)
                    })
                })
                .await;
                pid = m.info(id).await.map_or(pid, |i| i.pid);
                false
            }
        }
    })
    .await;
    let info = m.info(id).await.unwrap();
    assert!(crashed, "{info:?}");
    let reason = info.crash_reason.unwrap();
    assert!(
        reason.starts_with(
            "runner died more than 3 times in 5s, the last: app process signal SIGABRT; "
        ),
        "{reason}"
    );
    check(&reason);
    m.destroy(id).await.unwrap();
}
