//! A fork loop in a build script (issue 23, item 6): the build's process limit, not its
//! wall-time limit, stops it, and the error names the process limit.

use std::time::{Duration, Instant};

use e2e::prelude::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_loop_in_a_build_script_is_stopped_by_the_process_limit() {
    let _one = crate::BUILD_SCRIPTS.lock().await;
    let mut c = compiler();
    c.limits.processes = 32;
    c.limits.wall = Duration::from_secs(60);
    let started = Instant::now();
    let err = c
        .build(&test_app("fork_build"))
        .await
        .expect_err("the build script is a fork loop");
    let took = started.elapsed();
    let text = err.to_string();
    eprintln!("{text}");
    assert!(!text.contains("wall-time limit"), "{text}");
    assert!(
        text.contains("the build hit its process limit (32, --build-processes)"),
        "{text}"
    );
    // Spawn failed in the build script itself, for lack of processes.
    assert!(text.contains("fork_build: spawn failed after"), "{text}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // No process of the build is left behind.
    assert!(
        !tree(std::process::id() as i32)
            .iter()
            .any(|&p| std::fs::read_to_string(format!("/proc/{p}/comm"))
                .is_ok_and(|c| c.starts_with("build-script"))),
        "a build script outlived its build"
    );
}
