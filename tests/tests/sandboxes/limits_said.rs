//! What the host says about each limit: a call that failed because the sandbox was at its
//! process limit names the limit (from the kernel's own counter, never the app's words), and
//! the sandbox's description says, limit by limit, what enforces it or that nothing does.

use e2e::manager::create_app;
use e2e::prelude::*;
use sandbox::{Level, Limits, SandboxError};

/// A plugin author's `std::thread::spawn` past `--max-processes 16` panics with the kernel's
/// `EAGAIN` ("Resource temporarily unavailable"), which says nothing of a limit; the error the
/// host returns names it, because the cgroup's `pids.events` counted the refusals.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thread_spawn_past_the_process_limit_names_the_limit() {
    if !is_root() {
        skip("needs root (the pids cgroup enforces and counts the limit)");
        return;
    }
    let m = manager();
    let id = "threads-at-limit";
    let limits = Limits {
        max_processes: Some(16),
        ..Limits::default()
    };
    create_app(&m, id, "faulty_app", limits, Level::Standard).await;
    // Its initial worker is started after create returns: taken before the threads fill the
    // limit, else its spawn is what the kernel refuses (the sandbox then restarts, as it
    // should; seen in CI on a loaded machine).
    assert_eq!(m.workers(id).await.unwrap().workers.len(), 1);
    let err = m
        .run(id, "threads", serde_json::json!(64), None)
        .await
        .expect_err("64 threads under --max-processes 16");
    let text = err.to_string();
    assert!(
        matches!(err, SandboxError::AppPanicked(_)),
        "expected the app's panic, got {err:?}"
    );
    assert!(
        text.contains("the sandbox hit its process limit (--max-processes 16"),
        "the error does not name the limit: {text}"
    );
    // Below the limit the same call works once the panicked call's threads have ended (they
    // are released as it unwinds, not joined: they may hold pids a moment longer), and then
    // an error says nothing of a limit (the counter has not moved since the last look).
    let mut last = None;
    let below = wait_until_async(std::time::Duration::from_secs(10), async || {
        let got = m.run(id, "threads", serde_json::json!(4), None).await;
        let ok = got.as_ref().ok() == Some(&serde_json::json!(4));
        last = Some(got);
        ok
    })
    .await;
    assert!(
        below,
        "4 threads under --max-processes 16 never worked; the last try: {last:?}; the sandbox's \
         threads: {:?}",
        tasks_of(m.info(id).await.unwrap().pid)
    );
    let err = m.run(id, "panic", serde_json::json!(null), None).await;
    let text = err.unwrap_err().to_string();
    assert!(!text.contains("process limit"), "{text}");
    m.destroy(id).await.unwrap();
}

/// Each process of `pid`'s tree with its threads' names: what holds the sandbox's pids.
fn tasks_of(pid: i32) -> Vec<(i32, Vec<String>)> {
    testkit::proc::tree(pid)
        .into_iter()
        .map(|p| {
            let names = std::fs::read_dir(format!("/proc/{p}/task"))
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
                .map(|c| c.trim().to_string())
                .collect();
            (p, names)
        })
        .collect()
}
