//! What a sandbox's cgroup has used: size-independent counters and its processes.

use serde::{Deserialize, Serialize};

use super::cgroup::{Cgroup, CgroupVersion};
use super::error::Result;
use super::fs::{read_opt_keyed, read_opt_u64, read_pids};

/// Counters read from a sandbox's cgroup; `None` when the controller is not available.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CgroupUsage {
    /// `memory.current` (v2) / `memory.usage_in_bytes` (v1).
    pub memory_bytes: Option<u64>,
    /// `memory.peak` (v2, Linux 5.19+) / `memory.max_usage_in_bytes` (v1).
    pub memory_peak_bytes: Option<u64>,
    /// `pids.current`: processes plus threads.
    pub pids: Option<u64>,
    /// `cpu.stat usage_usec` (v2) / `cpuacct.usage / 1000` (v1).
    pub cpu_time_us: Option<u64>,
    /// `memory.events oom_kill` (v2) / `memory.oom_control oom_kill` (v1, Linux 4.13+).
    pub oom_kills: Option<u64>,
    /// `pids.events max`: forks and thread spawns the pids controller refused at `pids.max`
    /// (v1 and v2).
    pub pids_limit_hits: Option<u64>,
    /// Process ids in `cgroup.procs` (as seen from the host's pid namespace).
    pub procs: Vec<i32>,
}

impl Cgroup {
    /// Reads the cheap, size-independent counters plus `cgroup.procs`.
    pub fn usage(&self) -> Result<CgroupUsage> {
        let fs = &*self.fs;
        let mut u = CgroupUsage::default();
        match self.version() {
            CgroupVersion::V2 => {
                let d = &self.dirs[0].path;
                u.memory_bytes = read_opt_u64(fs, &d.join("memory.current"))?;
                u.memory_peak_bytes = read_opt_u64(fs, &d.join("memory.peak"))?;
                u.pids = read_opt_u64(fs, &d.join("pids.current"))?;
                u.pids_limit_hits = read_opt_keyed(fs, &d.join("pids.events"), "max")?;
                u.cpu_time_us = read_opt_keyed(fs, &d.join("cpu.stat"), "usage_usec")?;
                u.oom_kills = read_opt_keyed(fs, &d.join("memory.events"), "oom_kill")?;
                u.procs = read_pids(fs, &d.join("cgroup.procs"))?;
            }
            CgroupVersion::V1 => {
                if let Some(d) = self.dir_with("memory") {
                    let p = &d.path;
                    u.memory_bytes = read_opt_u64(fs, &p.join("memory.usage_in_bytes"))?;
                    u.memory_peak_bytes = read_opt_u64(fs, &p.join("memory.max_usage_in_bytes"))?;
                    u.oom_kills = read_opt_keyed(fs, &p.join("memory.oom_control"), "oom_kill")?;
                }
                if let Some(d) = self.dir_with("pids") {
                    u.pids = read_opt_u64(fs, &d.path.join("pids.current"))?;
                    u.pids_limit_hits = read_opt_keyed(fs, &d.path.join("pids.events"), "max")?;
                }
                if let Some(d) = self.dir_with("cpuacct") {
                    u.cpu_time_us =
                        read_opt_u64(fs, &d.path.join("cpuacct.usage"))?.map(|ns| ns / 1000);
                }
                let d = self.dir_with("pids").unwrap_or(&self.dirs[0]);
                u.procs = read_pids(fs, &d.path.join("cgroup.procs"))?;
            }
        }
        Ok(u)
    }

    /// Every pid in any of this cgroup's hierarchies.
    pub fn pids(&self) -> Result<Vec<i32>> {
        let mut all = Vec::new();
        for d in &self.dirs {
            for p in read_pids(&*self.fs, &d.path.join("cgroup.procs"))? {
                if !all.contains(&p) {
                    all.push(p);
                }
            }
        }
        Ok(all)
    }
}
