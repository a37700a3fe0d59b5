//! A fake cgroup filesystem for unit tests: plain directories in a tempdir that behave like
//! cgroupfs where the cgroup code relies on it. `mkdir` creates the control files, `rmdir`
//! removes them (and refuses while `cgroup.procs` lists a process), writing a pid to a
//! `cgroup.procs` moves it there from every other cgroup, `cgroup.kill` and `kill` empty
//! `cgroup.procs`. Any other write replaces the file's content, so a test sees exactly what
//! was written.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use super::fs::{CgroupFs, KernelCgroupFs};

/// Control files a fresh fake v2 cgroup gets, with their initial content.
pub(crate) const V2_FILES: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("cgroup.controllers", "cpu memory pids"),
    ("cgroup.subtree_control", ""),
    ("cgroup.kill", ""),
    ("cgroup.freeze", "0"),
    ("memory.max", "max"),
    ("memory.swap.max", "max"),
    ("memory.current", "1234567"),
    ("memory.peak", "2345678"),
    (
        "memory.events",
        "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
    ),
    ("pids.max", "max"),
    ("pids.current", "3"),
    ("pids.events", "max 4\n"),
    ("cpu.max", "max 100000"),
    (
        "cpu.stat",
        "usage_usec 777\nuser_usec 500\nsystem_usec 277\n",
    ),
];

/// Same for v1 (all controllers' files in every hierarchy, which is harmless).
pub(crate) const V1_FILES: &[(&str, &str)] = &[
    ("cgroup.procs", ""),
    ("tasks", ""),
    ("memory.limit_in_bytes", "9223372036854771712"),
    ("memory.memsw.limit_in_bytes", "9223372036854771712"),
    ("memory.usage_in_bytes", "4096000"),
    ("memory.max_usage_in_bytes", "5000000"),
    (
        "memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    ),
    ("pids.max", "max"),
    ("pids.current", "2"),
    ("pids.events", "max 5\n"),
    ("cpu.cfs_period_us", "100000"),
    ("cpu.cfs_quota_us", "-1"),
    ("cpuacct.usage", "5000000"),
    ("freezer.state", "THAWED"),
];

const PROCS: &str = "cgroup.procs";

/// A fake cgroupfs (v1 or v2 flavour) below `root`.
#[derive(Debug, Clone)]
pub(crate) struct FakeCgroupFs {
    root: PathBuf,
    files: &'static [(&'static str, &'static str)],
}

impl FakeCgroupFs {
    /// A fake v2 hierarchy mounted at `root`.
    pub(crate) fn v2(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            files: V2_FILES,
        }
    }

    /// Fake v1 hierarchies, all mounted below `root`.
    pub(crate) fn v1(root: &Path) -> Self {
        Self {
            root: root.to_path_buf(),
            files: V1_FILES,
        }
    }

    /// Every `cgroup.procs` below the root.
    fn procs_files(&self) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let mut todo = vec![self.root.clone()];
        while let Some(dir) = todo.pop() {
            for e in fs::read_dir(&dir)? {
                let e = e?;
                if e.file_type()?.is_dir() {
                    todo.push(e.path());
                } else if e.file_name() == PROCS {
                    out.push(e.path());
                }
            }
        }
        Ok(out)
    }

    /// Takes `pids` out of every `cgroup.procs` but `except`.
    fn take_out(&self, pids: &[i32], except: Option<&Path>) -> io::Result<()> {
        for file in self.procs_files()? {
            if Some(file.as_path()) == except {
                continue;
            }
            let before = fs::read_to_string(&file)?;
            let after: String = before
                .split_whitespace()
                .filter_map(|t| t.parse::<i32>().ok())
                .filter(|p| !pids.contains(p))
                .map(|p| format!("{p}\n"))
                .collect();
            if after != before {
                fs::write(&file, after)?;
            }
        }
        Ok(())
    }
}

impl CgroupFs for FakeCgroupFs {
    fn read(&self, path: &Path) -> io::Result<String> {
        fs::read_to_string(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        let name = path.file_name().and_then(|n| n.to_str());
        match name {
            Some(PROCS) => {
                // The kernel moves the process: it leaves its old cgroup.
                let pids: Vec<i32> = value
                    .split_whitespace()
                    .map(|t| {
                        t.parse()
                            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
                    })
                    .collect::<io::Result<_>>()?;
                let mut now = fs::read_to_string(path)?;
                for p in &pids {
                    now.push_str(&format!("{p}\n"));
                }
                fs::write(path, now)?;
                self.take_out(&pids, Some(path))
            }
            Some("cgroup.kill") => {
                fs::write(path, value)?;
                if value.trim() == "1" {
                    fs::write(path.with_file_name(PROCS), "")?;
                }
                Ok(())
            }
            _ => KernelCgroupFs.write(path, value),
        }
    }

    fn open_write(&self, path: &Path) -> io::Result<OwnedFd> {
        KernelCgroupFs.open_write(path)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        fs::create_dir(path)?;
        for (name, content) in self.files {
            fs::write(path.join(name), content)?;
        }
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let procs = path.join(PROCS);
        if procs.exists() && !fs::read_to_string(&procs)?.trim().is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        for e in fs::read_dir(path)? {
            let e = e?;
            if e.file_type()?.is_file() {
                fs::remove_file(e.path())?;
            }
        }
        fs::remove_dir(path)
    }

    fn kill(&self, pid: i32) {
        // The process exits: it leaves every cgroup.
        self.take_out(&[pid], None)
            .expect("fake cgroupfs: take a killed pid out");
    }
}
