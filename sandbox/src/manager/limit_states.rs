//! What enforces each of a sandbox's limits, from what the host set up and what the kernel
//! shows: the facts [`proto::limits::limit_states`] decides from.

use super::*;
use isolation::CgroupVersion;
use proto::limits::{LimitState, Setting, limit_states};

/// The limit states of `sb`; `disk` is the capped tmpfs as the kernel shows it (`Ok(None)`
/// before the runner has started).
pub(super) fn states_of(sb: &Sandbox, disk: Result<Option<u64>, &str>) -> Vec<LimitState> {
    let cgroup = sb.cgroup();
    let entry = sb.cgroup_entry.lock().unwrap().clone();
    let no_cgroup = match (&entry, sb.spec.isolation.isolates()) {
        (_, false) => "--isolation none".to_string(),
        (Some(entry), true) => entry.detail.clone(),
        (None, true) => "not set up".to_string(),
    };
    let setting = Setting {
        cgroup: match &cgroup {
            Some(cg) => Ok((
                match cg.version() {
                    CgroupVersion::V1 => "v1",
                    CgroupVersion::V2 => "v2",
                },
                cg.missing(),
            )),
            None => Err(&no_cgroup),
        },
        // A non-root host gives every isolating sandbox a user namespace of its own, where
        // the kernel counts `RLIMIT_NPROC` for the sandbox alone.
        nproc_in_own_userns: !is_root() && sb.spec.isolation.isolates(),
        disk,
    };
    limit_states(&sb.spec.limits, &setting)
}

/// The capped disk as the isolation report (read from the kernel) shows it: its size when the
/// `disk` mechanism is applied, why not when it is not, `Ok(None)` when the report does not
/// say (no runner yet).
pub(super) fn disk_shown(sb: &Sandbox, report: &serde_json::Value) -> Result<Option<u64>, String> {
    let entry = report
        .get("mechanisms")
        .and_then(|m| m.as_array())
        .and_then(|all| all.iter().find(|e| e["mechanism"] == "disk"));
    match entry {
        None => match sb.spec.isolation.isolates() {
            true => Ok(None),
            false => Err("no root of its own at --isolation none".to_string()),
        },
        Some(e) if e["applied"] == true => Ok(Some(
            sb.spec
                .limits
                .max_disk
                .unwrap_or(isolation::root::DEFAULT_DISK_BYTES),
        )),
        Some(e) => Err(e["detail"].as_str().unwrap_or("not applied").to_string()),
    }
}
