//! The build's watcher: while cargo runs, the host looks at the build every so often and stops
//! it at the first limit it passed that the kernel does not stop by itself:
//!
//! * **processes**: the pids controller refuses a fork past `pids.max` with `EAGAIN`, but that
//!   alone does not end the build (a child that got its fork keeps cargo waiting on the build
//!   script's output, and the build would run to its wall-time limit): the `max` counter of
//!   the cgroup's `pids.events` going above 0 stops the build and names the limit;
//! * **disk**: the allocated size of the directories the build may write on the host (its
//!   target dir, its copy of the crate), plus files its processes deleted but still hold open
//!   or mapped, against `--build-disk`. The build is frozen (cgroup freezer) while it is
//!   measured, so no process of it can move a file from a directory not yet walked into one
//!   already walked; a process's files are only ever written below the limit
//!   `RLIMIT_FSIZE` = `--build-disk` puts on each file.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use isolation::Cgroup;

use crate::disk::{Over, Tally};

/// A limit the watcher saw passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Hit {
    /// A fork failed at the cgroup's `pids.max`.
    Processes,
    /// The writable directories are over the disk budget.
    Disk(Over),
}

/// What the watcher looks at.
#[derive(Debug, Clone)]
pub(super) struct Watch {
    pub(super) cgroup: Option<Arc<Cgroup>>,
    /// The build's pid 1, as the host sees it (its tree, where there is no cgroup); `None`
    /// once it is reaped (its pid may be another process's by then).
    pub(super) pid: Option<i32>,
    /// The host directories the build may write.
    pub(super) dirs: Vec<PathBuf>,
    /// `--build-disk`.
    pub(super) disk: u64,
}

/// Time between two looks: ten times what the last look took (the build is frozen during a
/// look, so it is paused at most a tenth of its time), within these bounds.
pub(super) const MIN_INTERVAL: Duration = Duration::from_millis(100);
pub(super) const MAX_INTERVAL: Duration = Duration::from_secs(2);

impl Watch {
    /// One look: the process counter, then the disk (the build frozen where it can be).
    /// Blocking (a walk of the target dir): run it off the async runtime.
    pub(super) fn sample(&self) -> (Option<Hit>, Duration) {
        let started = Instant::now();
        if self.processes_hit() {
            return (Some(Hit::Processes), started.elapsed());
        }
        let frozen = self.freeze();
        let over = self.disk_over();
        drop(frozen);
        (over.map(Hit::Disk), started.elapsed())
    }

    /// Whether a fork of the build failed at its `pids.max` (`pids.events`: `max N`, N > 0).
    pub(super) fn processes_hit(&self) -> bool {
        let Some(cg) = &self.cgroup else {
            return false;
        };
        cg.paths()
            .iter()
            .find_map(|d| std::fs::read_to_string(d.join("pids.events")).ok())
            .and_then(|text| max_events(&text))
            .is_some_and(|n| n > 0)
    }

    /// The disk check: the writable directories walked, then the deleted files the build's
    /// processes hold (none once the build is over).
    pub(super) fn disk_over(&self) -> Option<Over> {
        let mut tally = Tally::new(self.disk);
        for d in &self.dirs {
            if let Err(over) = tally.walk(d) {
                return Some(over);
            }
        }
        tally.held(&self.pids()).err()
    }

    /// The build's processes: the cgroup's, else the tree under its pid 1.
    fn pids(&self) -> Vec<i32> {
        if let Some(cg) = &self.cgroup
            && let Ok(pids) = cg.pids()
        {
            return pids;
        }
        let Some(pid) = self.pid else {
            return Vec::new();
        };
        let mut all = vec![pid];
        let mut i = 0;
        while i < all.len() && all.len() < 100_000 {
            let pid = all[i];
            if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for t in tasks.flatten() {
                    let children =
                        std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                    all.extend(
                        children
                            .split_whitespace()
                            .filter_map(|c| c.parse::<i32>().ok()),
                    );
                }
            }
            i += 1;
        }
        all
    }

    /// Freezes the build's cgroup until the guard is dropped (`None`: no freezer, the look is
    /// taken with the build running).
    fn freeze(&self) -> Option<Frozen> {
        let cg = self.cgroup.as_ref()?;
        for d in cg.paths() {
            let v1 = d.join("freezer.state");
            if v1.exists() {
                std::fs::write(&v1, "FROZEN").ok()?;
                let guard = Frozen {
                    file: v1.clone(),
                    thaw: "THAWED",
                };
                wait_for(|| std::fs::read_to_string(&v1).is_ok_and(|s| s.trim() == "FROZEN"));
                return Some(guard);
            }
            let v2 = d.join("cgroup.freeze");
            if v2.exists() {
                std::fs::write(&v2, "1").ok()?;
                let guard = Frozen {
                    file: v2,
                    thaw: "0",
                };
                let events = d.join("cgroup.events");
                wait_for(|| {
                    std::fs::read_to_string(&events)
                        .is_ok_and(|s| s.lines().any(|l| l.trim() == "frozen 1"))
                });
                return Some(guard);
            }
        }
        None
    }
}

/// A frozen build, thawed on drop.
struct Frozen {
    file: PathBuf,
    thaw: &'static str,
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(&self.file, self.thaw) {
            tracing::warn!("build sandbox: thaw {}: {e}", self.file.display());
        }
    }
}

/// Polls `done` for up to a second (a freeze waits for processes in the middle of a system
/// call; past a second the look is taken anyway).
fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !done() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The `max` counter of a `pids.events` file.
fn max_events(text: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix("max "))
        .and_then(|n| n.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_max_counter_is_read_from_pids_events() {
        assert_eq!(max_events("max 0\n"), Some(0));
        assert_eq!(max_events("max 17\n"), Some(17));
        assert_eq!(max_events("max.imposed 3\nmax 2\n"), Some(2));
        assert_eq!(max_events(""), None);
    }
}
