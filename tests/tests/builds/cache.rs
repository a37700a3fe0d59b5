//! The build cache is bounded (issue 23, item 5): after each build, build directories past
//! the cache's bounds are removed, least recently used first, never one a build holds.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use e2e::prelude::*;

/// A crate with no dependency (quick to build) named `name` under `dir`.
fn tiny_crate(dir: &Path, name: &str) -> PathBuf {
    let c = dir.join(name);
    std::fs::create_dir_all(c.join("src")).unwrap();
    std::fs::write(
        c.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{name}\"\nedition = \"2024\"\nversion = \"0.1.0\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[workspace]\n"
        ),
    )
    .unwrap();
    std::fs::write(c.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
    c
}

fn build_dirs(target: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(target.join("builds"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn the_build_cache_keeps_to_its_bounds_least_recently_used_first() {
    let scratch = scratch();
    let crates = scratch.path().join("crates");
    let mut c = compiler();
    c.target_dir = scratch.path().join("apps");
    c.cache.max_dirs = 2;
    let [a, b, d] = ["cache_a", "cache_b", "cache_c"].map(|n| tiny_crate(&crates, n));
    c.build(&a).await.unwrap();
    c.build(&b).await.unwrap();
    assert_eq!(build_dirs(&c.target_dir).len(), 2);
    // `a` is in use (a build holds its lock): the third build evicts `b`, not `a`.
    let a_dir = c.build_dir(&a.canonicalize().unwrap());
    let held = std::fs::File::options()
        .write(true)
        .open(a_dir.join("lock"))
        .unwrap();
    // SAFETY: flock on an fd we own.
    assert_eq!(unsafe { libc::flock(held.as_raw_fd(), libc::LOCK_EX) }, 0);
    let built = c.build(&d).await.unwrap();
    assert!(built.lib.is_file());
    let left = build_dirs(&c.target_dir);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.iter().any(|n| n.starts_with("cache_a-")), "{left:?}");
    assert!(left.iter().any(|n| n.starts_with("cache_c-")), "{left:?}");
    drop(held);
    // Unheld, `a` is now the least recently used: building `b` again evicts it.
    c.build(&b).await.unwrap();
    let left = build_dirs(&c.target_dir);
    assert!(!left.iter().any(|n| n.starts_with("cache_a-")), "{left:?}");
    assert_eq!(left.len(), 2, "{left:?}");
}
