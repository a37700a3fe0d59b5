//! Where cgroups are: parsing `/proc/self/cgroup`, joining cgroup paths below a mount point, and
//! the names sandbox cgroups may have.

use std::path::{Path, PathBuf};

use super::error::{CgroupError, Result};

/// Checks that `id` can be part of a cgroup directory name.
pub(crate) fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(CgroupError::InvalidId(id.to_string()))
    }
}

/// The cgroup path of the first line of `/proc/self/cgroup` whose controller list satisfies
/// `matches` (the empty list is the v2 `0::` line).
pub(crate) fn self_cgroup_path(
    proc_self_cgroup: &str,
    matches: impl Fn(&str) -> bool,
) -> Option<&str> {
    proc_self_cgroup.lines().find_map(|line| {
        let mut it = line.splitn(3, ':');
        let _id = it.next()?;
        let ctrls = it.next()?;
        let path = it.next()?;
        matches(ctrls).then_some(path)
    })
}

/// Joins a cgroup path (`/a/b`) below a mount point.
pub(crate) fn under(mount: &Path, cgroup_path: &str) -> PathBuf {
    let rel = cgroup_path.trim_start_matches('/');
    if rel.is_empty() {
        mount.to_path_buf()
    } else {
        mount.join(rel)
    }
}
