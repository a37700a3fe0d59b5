//! Cgroups as the tests see them: which version this machine mounts, where a process is,
//! and the cgroup parent the tests put their sandboxes under.

use std::path::{Path, PathBuf};

/// The cgroup filesystem.
pub const ROOT: &str = "/sys/fs/cgroup";

/// Env var with the cgroup parent (`--cgroup-parent`) for the tests' sandboxes and cgroups: a
/// delegated cgroup v2 subtree when not root. Unset: the detected default.
pub const CGROUP_PARENT_ENV: &str = "SANDBOX_TEST_CGROUP_PARENT";

/// The cgroup parent from [`CGROUP_PARENT_ENV`].
pub fn cgroup_parent() -> Option<PathBuf> {
    std::env::var_os(CGROUP_PARENT_ENV)
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
}

/// Whether `/sys/fs/cgroup` is the unified (v2) hierarchy.
pub fn cgroup_v2() -> bool {
    let mut st = std::mem::MaybeUninit::<libc::statfs>::zeroed();
    // SAFETY: a NUL-terminated path and a valid out-pointer.
    let rc = unsafe { libc::statfs(c"/sys/fs/cgroup".as_ptr(), st.as_mut_ptr()) };
    // SAFETY: statfs filled it (rc == 0).
    rc == 0 && unsafe { st.assume_init() }.f_type == libc::CGROUP2_SUPER_MAGIC
}

/// The `/proc/PID/cgroup` lines of a process: (controllers, path).
pub fn cgroups_of(pid: i32) -> Vec<(String, String)> {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// The directory of a `/proc/PID/cgroup` entry (v1: under its controllers' hierarchy; the
/// v2 entry: the unified hierarchy, `/sys/fs/cgroup` itself or `unified` beside v1).
pub fn dir_of(controllers: &str, path: &str) -> PathBuf {
    let root = Path::new(ROOT);
    let mount = if controllers.is_empty() {
        if root.join("cgroup.controllers").exists() {
            root.to_path_buf()
        } else {
            root.join("unified")
        }
    } else {
        root.join(controllers.trim_start_matches("name="))
    };
    mount.join(path.trim_start_matches('/'))
}

/// The cgroup directories `pid` is in that `other` is not in: the ones of its own (a
/// sandbox's, next to its daemon's).
pub fn own_cgroups(pid: i32, other: i32) -> Vec<PathBuf> {
    let theirs = cgroups_of(other);
    cgroups_of(pid)
        .into_iter()
        .filter(|entry| !theirs.contains(entry))
        .map(|(controllers, path)| dir_of(&controllers, &path))
        .filter(|dir| dir.is_dir())
        .collect()
}

/// Cgroup directories anywhere in `/sys/fs/cgroup` (at most `depth` levels down) whose name
/// starts with `prefix`.
pub fn named(prefix: &str, depth: u32) -> Vec<PathBuf> {
    fn walk(dir: &Path, prefix: &str, depth: u32, found: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push(entry.path());
            } else if depth > 0 {
                walk(&entry.path(), prefix, depth - 1, found);
            }
        }
    }
    let mut found = Vec::new();
    walk(Path::new(ROOT), prefix, depth, &mut found);
    found
}
