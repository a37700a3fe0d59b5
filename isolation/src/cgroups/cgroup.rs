//! One sandbox's cgroup: its directories, what was applied, its report line, and removal
//! (explicit or on drop). Reading usage is in `usage.rs`, killing in `kill.rs`, entering in
//! `entry.rs`.

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::Result;
use super::fs::{CgroupFs, rmdir_retry_within};
use super::limits::Notes;
use crate::report::{Mechanism, ReportEntry};

/// cgroup version in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupVersion {
    /// Legacy or hybrid hierarchy, one mount per controller.
    V1,
    /// Unified hierarchy.
    V2,
}

/// One directory of a sandbox's cgroup (v2: the only one; v1: one per hierarchy).
#[derive(Debug, Clone)]
pub(crate) struct Dir {
    /// The cgroup directory.
    pub path: PathBuf,
    /// The controllers it has (v1: its hierarchy's; v2: those enabled for sandboxes).
    pub controllers: Vec<String>,
}

impl Dir {
    /// Whether this directory has `controller`.
    pub(crate) fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|x| x == controller)
    }
}

/// One sandbox's cgroup (v2: one directory; v1: one directory per hierarchy).
///
/// Dropping it SIGKILLs everything inside and removes the directories (best effort); call
/// [`Cgroup::kill_all`] and [`Cgroup::remove`] to see errors.
#[derive(Debug)]
pub struct Cgroup {
    id: String,
    version: CgroupVersion,
    pub(super) dirs: Vec<Dir>,
    pub(super) notes: Notes,
    pub(super) fs: Arc<dyn CgroupFs>,
    removed: bool,
}

impl Cgroup {
    /// A cgroup whose directories `dirs` were just created on `fs`.
    pub(super) fn new(
        id: &str,
        version: CgroupVersion,
        dirs: Vec<Dir>,
        notes: Notes,
        fs: Arc<dyn CgroupFs>,
    ) -> Self {
        Self {
            id: id.to_string(),
            version,
            dirs,
            notes,
            fs,
            removed: false,
        }
    }

    /// The sandbox id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// v1 or v2.
    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// The cgroup directories (one on v2).
    pub fn paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.path.clone()).collect()
    }

    /// Limits that were requested but could not be applied (empty when all were).
    pub fn missing(&self) -> &[String] {
        &self.notes.missing
    }

    /// Human-readable summary, e.g. `v1 memory+pids+cpu at /sys/fs/cgroup/...`.
    pub fn describe(&self) -> String {
        let v = match self.version {
            CgroupVersion::V1 => "v1",
            CgroupVersion::V2 => "v2",
        };
        let mut s = String::from(v);
        let mut ctrls: Vec<&str> = Vec::new();
        for d in &self.dirs {
            for c in &d.controllers {
                if !ctrls.contains(&c.as_str()) {
                    ctrls.push(c);
                }
            }
        }
        s.push(' ');
        s.push_str(&if ctrls.is_empty() {
            "(no controllers)".into()
        } else {
            ctrls.join("+")
        });
        s.push_str(" at ");
        let paths: Vec<String> = self
            .dirs
            .iter()
            .map(|d| d.path.display().to_string())
            .collect();
        s.push_str(&paths.join(", "));
        if !self.notes.applied.is_empty() {
            s.push_str(&format!(" ({})", self.notes.applied.join(", ")));
        }
        if !self.notes.missing.is_empty() {
            s.push_str(&format!("; NOT applied: {}", self.notes.missing.join(", ")));
        }
        s
    }

    /// The report line: applied when every requested limit was written.
    pub fn report_entry(&self) -> ReportEntry {
        if self.notes.missing.is_empty() {
            ReportEntry::applied(Mechanism::Cgroup, self.describe())
        } else {
            ReportEntry::missing(Mechanism::Cgroup, self.describe())
        }
    }

    /// The directory that has `controller` (v2: the only one).
    pub(super) fn dir_with(&self, controller: &str) -> Option<&Dir> {
        match self.version {
            CgroupVersion::V2 => self.dirs.first(),
            CgroupVersion::V1 => self.dirs.iter().find(|d| d.has(controller)),
        }
    }

    /// Removes the cgroup directories, retrying `rmdir` on `EBUSY` (exiting processes) for up
    /// to about 2 s. Does not kill: call [`Cgroup::kill_all`] first.
    pub fn remove(mut self) -> Result<()> {
        self.remove_dirs()
    }

    fn remove_dirs(&mut self) -> Result<()> {
        self.remove_dirs_within(Duration::from_secs(2))
    }

    fn remove_dirs_within(&mut self, within: Duration) -> Result<()> {
        self.removed = true;
        let mut first_err = None;
        let mut left = Vec::new();
        for d in std::mem::take(&mut self.dirs) {
            if let Err(e) = rmdir_retry_within(&*self.fs, &d.path, within) {
                first_err.get_or_insert(e);
                left.push(d);
            }
        }
        self.dirs = left;
        first_err.map_or(Ok(()), Err)
    }
}

/// How long a drop may block its caller (which may be an async runtime's worker) before
/// it hands the rest of the kill and `rmdir` retries to a thread of its own.
const DROP_BUDGET: Duration = Duration::from_millis(25);

impl Drop for Cgroup {
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        // Quick attempt: processes die and directories go within microseconds to
        // milliseconds, so almost every drop ends here.
        let killed = self.kill_all_within(DROP_BUDGET).is_ok();
        if killed && self.remove_dirs_within(DROP_BUDGET).is_ok() {
            return;
        }
        // The slow rest (up to about 4 s) never blocks the caller.
        let mut rest = Cgroup {
            id: std::mem::take(&mut self.id),
            version: self.version,
            dirs: std::mem::take(&mut self.dirs),
            notes: Notes::default(),
            fs: Arc::clone(&self.fs),
            removed: true,
        };
        self.removed = true;
        if rest.dirs.is_empty() {
            return;
        }
        let spawned = thread::Builder::new()
            .name("cgroup-drop".into())
            .spawn(move || {
                if let Err(e) = rest.kill_all() {
                    tracing::warn!(id = %rest.id, error = %e, "cgroup kill on drop");
                }
                if let Err(e) = rest.remove_dirs() {
                    tracing::warn!(id = %rest.id, error = %e, "cgroup remove on drop");
                }
            });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cgroup drop: no thread for the cleanup");
        }
    }
}
