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
    // (What the build script said is not in it: cargo, which was still waiting for the
    // script's children to close its output, is killed with the build.)
    assert!(took < Duration::from_secs(30), "took {took:?}");
    crate::assert_no_build_script_left();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_past_the_process_limit_fails_with_eagain_in_the_build() {
    let _one = crate::BUILD_SCRIPTS.lock().await;
    let mut c = compiler();
    c.limits.processes = 32;
    c.limits.wall = Duration::from_secs(60);
    // The children do not hold the build script's output: cargo sees the script fail and
    // prints what it said.
    let crate_dir = test_app("fork_build");
    let source = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    let started = Instant::now();
    let err = c
        .build_source(&crate_dir, &format!("{source}// fork-plan: quiet\n"))
        .await
        .expect_err("the build script is a fork loop");
    let took = started.elapsed();
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.contains("the build hit its process limit (32, --build-processes)"),
        "{text}"
    );
    // The script's own spawn failed with EAGAIN, below the limit (cargo and the script count).
    let line = text
        .lines()
        .find(|l| l.contains("fork_build: spawn failed after"))
        .unwrap_or_else(|| panic!("the build script did not report:\n{text}"));
    assert!(
        line.contains("Resource temporarily unavailable (os error 11)"),
        "{line}"
    );
    let spawned: u64 = line
        .split("after ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(spawned < 32, "{line}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
}
