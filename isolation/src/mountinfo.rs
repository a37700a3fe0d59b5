//! `/proc/PID/mountinfo`, parsed once for every reader (the cgroup hierarchies, the kernel's
//! view of a sandbox's root, the sweep of dead daemons' cgroups) by the `procfs-core` crate.

use std::ffi::OsString;
use std::io::BufRead;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use procfs_core::FromBufRead;
use procfs_core::process::MountInfos;

/// One mount, as much of it as the host reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted (octal escapes undone).
    pub mount_point: PathBuf,
    /// The filesystem type (`tmpfs`, `cgroup`, `cgroup2`, …).
    pub fs_type: String,
    /// Whether the mount is read-only (`ro` among its mount options).
    pub read_only: bool,
    /// The superblock options' names (`memory`, `pids` on a v1 cgroup hierarchy).
    pub super_options: Vec<String>,
}

/// Parses mountinfo text; a line that does not parse ends the list (what was read before it
/// is kept: the kernel writes whole lines, so only a truncated read ends early).
pub fn parse(text: impl BufRead) -> Vec<Mount> {
    let Ok(infos) = MountInfos::from_buf_read(text) else {
        return Vec::new();
    };
    infos
        .into_iter()
        .map(|m| Mount {
            read_only: m.mount_options.contains_key("ro"),
            super_options: m.super_options.into_keys().collect(),
            mount_point: unescape(&m.mount_point),
            fs_type: m.fs_type,
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space, `\012` for a newline, …).
fn unescape(path: &Path) -> PathBuf {
    let b = path.as_os_str().as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    PathBuf::from(OsString::from_vec(out))
}

/// The mounts of process `pid` (`self` for this one); none when it cannot be read.
pub fn of(pid: &str) -> Vec<Mount> {
    match std::fs::File::open(format!("/proc/{pid}/mountinfo")) {
        Ok(f) => parse(std::io::BufReader::new(f)),
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_are_read_with_their_escapes_undone() {
        let text = "66 45 0:40 / / ro,nosuid,nodev,relatime - tmpfs tmpfs rw,size=1024k\n\
                    69 66 0:42 /work /my\\040work rw,nosuid - tmpfs tmpfs rw\n\
                    30 25 0:26 / /sys/fs/cgroup/memory rw,nosuid shared:11 - cgroup cgroup rw,memory\n";
        let mounts = parse(text.as_bytes());
        assert_eq!(mounts.len(), 3);
        assert_eq!(mounts[0].mount_point, PathBuf::from("/"));
        assert!(mounts[0].read_only);
        assert_eq!(mounts[1].mount_point, PathBuf::from("/my work"));
        assert!(!mounts[1].read_only);
        assert_eq!(mounts[2].fs_type, "cgroup");
        assert!(mounts[2].super_options.iter().any(|o| o == "memory"));
    }
}
