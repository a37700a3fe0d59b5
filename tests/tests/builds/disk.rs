//! A build script that fills the host's disk through the build's target dir (issue 23, item
//! 5): the build's disk budget stops it, the error names the budget, and what the build wrote
//! does not stay on the host.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use e2e::prelude::*;

/// Bytes allocated under `dir` (st_blocks), each inode once.
fn allocated(dir: &Path) -> u64 {
    let mut seen = std::collections::HashSet::new();
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let Ok(meta) = std::fs::symlink_metadata(&p) else {
            continue;
        };
        if seen.insert((meta.dev(), meta.ino())) {
            total += meta.blocks() * 512;
        }
        if meta.is_dir()
            && let Ok(entries) = std::fs::read_dir(&p)
        {
            stack.extend(entries.flatten().map(|e| e.path()));
        }
    }
    total
}

/// A compiler with a disk budget and a wall-time limit, building into a target dir of the
/// test's own (what the build leaves is measured there, then removed with the scratch dir).
fn budgeted(disk: u64, wall: Duration) -> (tempfile::TempDir, appbuild::Compiler) {
    let scratch = scratch();
    let mut c = compiler();
    c.target_dir = scratch.path().join("apps");
    c.limits.disk = disk;
    c.limits.wall = wall;
    (scratch, c)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_that_fills_its_target_dir_is_stopped_at_its_disk_budget() {
    let _one = crate::BUILD_SCRIPTS.lock().await;
    let budget: u64 = 64 << 20;
    let (_scratch, c) = budgeted(budget, Duration::from_secs(120));
    let err = c
        .build(&test_app("disk_build"))
        .await
        .expect_err("the build script writes 300 MiB with a budget of 64 MiB");
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.contains("the build wrote more than 64 MiB (--build-disk)"),
        "{text}"
    );
    // What the build wrote did not stay: the apps target dir holds less than the budget.
    let left = allocated(&c.target_dir);
    assert!(
        left < budget,
        "{left} bytes left under {} after the build",
        c.target_dir.display()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_build_that_hides_what_it_wrote_is_stopped_at_its_disk_budget_too() {
    let _one = crate::BUILD_SCRIPTS.lock().await;
    let budget: u64 = 64 << 20;
    let (_scratch, c) = budgeted(budget, Duration::from_secs(60));
    // The build script deletes each file it wrote and holds it open, then waits: only the
    // files its processes hold show what it took.
    let crate_dir = test_app("disk_build");
    let source = std::fs::read_to_string(crate_dir.join("src/lib.rs")).unwrap();
    let started = Instant::now();
    let err = c
        .build_source(&crate_dir, &format!("{source}// disk-plan: hide\n"))
        .await
        .expect_err("the build script holds 300 MiB of deleted files with a budget of 64 MiB");
    let took = started.elapsed();
    let text = err.to_string();
    eprintln!("{text}");
    assert!(
        text.contains("the build wrote more than 64 MiB (--build-disk)"),
        "{text}"
    );
    assert!(!text.contains("wall-time limit"), "{text}");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    let left = allocated(&c.target_dir);
    assert!(left < budget, "{left} bytes left");
}
