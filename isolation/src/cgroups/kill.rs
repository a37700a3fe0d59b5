//! Killing everything in a sandbox's cgroup: v2 `cgroup.kill`, else freeze, SIGKILL, thaw,
//! until `cgroup.procs` is empty.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use super::cgroup::{Cgroup, CgroupVersion};
use super::error::{CgroupError, Result};
use super::fs::{CgroupFs, read_opt_keyed, read_string, write_file};

impl Cgroup {
    /// SIGKILLs every process in the cgroup and waits (up to about 2 s) until it is empty.
    ///
    /// v2: `cgroup.kill` (Linux 5.14+), else freeze + kill loop. v1: freeze (if the freezer
    /// hierarchy is there), SIGKILL every pid, thaw, repeat until `cgroup.procs` is empty, which
    /// also catches children forked while we were reading the list. Never signals the calling
    /// process itself.
    pub fn kill_all(&self) -> Result<()> {
        self.kill_all_within(Duration::from_secs(2))
    }

    /// [`Cgroup::kill_all`], waiting at most `within` for the cgroup to empty.
    pub(super) fn kill_all_within(&self, within: Duration) -> Result<()> {
        let fs = &*self.fs;
        let me = std::process::id() as i32;
        let kill_file = self.dirs[0].path.join("cgroup.kill");
        let v2_kill = self.version() == CgroupVersion::V2 && fs.exists(&kill_file);
        let freezer = match self.version() {
            CgroupVersion::V2 => Some(Freezer::V2(self.dirs[0].path.join("cgroup.freeze"))),
            CgroupVersion::V1 => self
                .dir_with("freezer")
                .map(|d| Freezer::V1(d.path.join("freezer.state"))),
        }
        .filter(|f| fs.exists(f.path()));
        let deadline = Instant::now() + within;
        let mut rounds = 0u32;
        loop {
            let pids: Vec<i32> = self.pids()?.into_iter().filter(|&p| p != me).collect();
            if pids.is_empty() {
                return Ok(());
            }
            if rounds > 0 && Instant::now() > deadline {
                return Err(CgroupError::NotEmpty {
                    path: self.dirs[0].path.clone(),
                    pids,
                    rounds,
                });
            }
            if v2_kill && rounds == 0 {
                write_file(fs, &kill_file, "1")?;
            } else {
                // Frozen tasks cannot fork; SIGKILL is queued and acted on at thaw.
                let frozen = rounds < 3 && freezer.as_ref().is_some_and(|f| f.freeze(fs).is_ok());
                for &pid in &pids {
                    fs.kill(pid);
                }
                if frozen && let Some(f) = &freezer {
                    f.thaw(fs)?;
                }
            }
            rounds += 1;
            thread::sleep(Duration::from_millis(u64::from(rounds.min(10))));
        }
    }
}

/// The freezer of a cgroup: v1 `freezer.state`, v2 `cgroup.freeze`.
#[derive(Debug)]
enum Freezer {
    V1(PathBuf),
    V2(PathBuf),
}

impl Freezer {
    fn path(&self) -> &Path {
        match self {
            Freezer::V1(p) | Freezer::V2(p) => p,
        }
    }

    fn freeze(&self, fs: &dyn CgroupFs) -> Result<()> {
        match self {
            Freezer::V1(p) => {
                write_file(fs, p, "FROZEN")?;
                wait_until(|| {
                    read_string(fs, p)
                        .map(|s| s.trim() == "FROZEN")
                        .unwrap_or(true)
                });
            }
            Freezer::V2(p) => {
                write_file(fs, p, "1")?;
                let events = p.with_file_name("cgroup.events");
                wait_until(|| read_opt_keyed(fs, &events, "frozen").ok().flatten() != Some(0));
            }
        }
        Ok(())
    }

    fn thaw(&self, fs: &dyn CgroupFs) -> Result<()> {
        match self {
            Freezer::V1(p) => write_file(fs, p, "THAWED"),
            Freezer::V2(p) => write_file(fs, p, "0"),
        }
    }
}

/// Polls `done` for up to 100 ms.
fn wait_until(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_millis(100);
    while !done() && Instant::now() < deadline {
        thread::sleep(Duration::from_micros(200));
    }
}
