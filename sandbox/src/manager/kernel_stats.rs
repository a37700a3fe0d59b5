//! What the kernel says of a sandbox beyond its usage, for the operator's skills: CPU
//! throttling and pressure from its cgroup (`isolation::cgroups::stats`). Read from cgroupfs
//! on a blocking thread, never from the app.
use super::*;
pub use isolation::cgroups::{CgroupStats, CpuThrottling, Pressure, PressureReading};

impl Manager {
    /// Throttling and pressure of sandbox `id`'s cgroup; `Ok(None)` when it has no cgroup
    /// (`--isolation none`, or a host where none could be made).
    pub async fn cgroup_stats(&self, id: &str) -> Result<Option<CgroupStats>, SandboxError> {
        let sb = self.get(id)?;
        let Some(cgroup) = sb.cgroup() else {
            return Ok(None);
        };
        tokio::task::spawn_blocking(move || cgroup.stats())
            .await
            .map_err(|e| SandboxError::Protocol(format!("cgroup stats task: {e}")))?
            .map(Some)
            .map_err(|e| SandboxError::Kernel(e.into()))
    }
}
