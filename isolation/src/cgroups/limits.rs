//! What v1 and v2 share when they write a sandbox's limits.

/// What was applied and what was not, while creating a cgroup.
#[derive(Debug, Default, Clone)]
pub(crate) struct Notes {
    /// Limits written, e.g. `pids.max=64`.
    pub applied: Vec<String>,
    /// Limits requested but not written, with the reason.
    pub missing: Vec<String>,
}

/// CFS quota for `fraction` of a core per `period_us`, at least 1 ms (the kernel's minimum).
pub(crate) fn cpu_quota_us(fraction: f64, period_us: u64) -> u64 {
    let q = (fraction * period_us as f64).round();
    if q.is_finite() && q >= 1000.0 {
        q as u64
    } else {
        1000
    }
}
