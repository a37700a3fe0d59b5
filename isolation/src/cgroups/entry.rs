//! Entering a sandbox's cgroup: its `cgroup.procs` files, opened by the parent for one spawn
//! and written by the cloned child (or by the parent, for a pid).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;

use super::cgroup::Cgroup;
use super::error::{CgroupError, Result};

/// A cgroup's `cgroup.procs` files, opened (`O_WRONLY|O_CLOEXEC`) for one spawn: the cloned
/// child writes `"0"` to them before `execve`, so it runs no code outside the cgroup.
///
/// Opened per spawn and closed after it, not kept for the cgroup's life: every fd the host
/// holds is copied into, and closed again by, every child it clones, so fds kept per sandbox
/// make each spawn cost grow with the number of sandboxes.
#[derive(Debug)]
pub struct CgroupEntry {
    pub(super) files: Vec<(PathBuf, OwnedFd)>,
}

impl Cgroup {
    /// Opens the `cgroup.procs` of every hierarchy for one spawn (see [`CgroupEntry`]).
    pub fn open_entry(&self) -> Result<CgroupEntry> {
        let files = self
            .dirs
            .iter()
            .map(|d| {
                let path = d.path.join("cgroup.procs");
                match self.fs.open_write(&path) {
                    Ok(fd) => Ok((path, fd)),
                    Err(source) => Err(CgroupError::Open { path, source }),
                }
            })
            .collect::<Result<_>>()?;
        Ok(CgroupEntry { files })
    }
}

impl CgroupEntry {
    /// Moves the calling process into the cgroup (all hierarchies).
    ///
    /// # Safety
    ///
    /// Meant for the child between `clone()` and `execve()`: it only calls `write(2)` on fds
    /// opened by the parent and reads `errno`, so it is async-signal-safe and does not allocate.
    /// The caller must ensure `self` (the parent's copy in the child's memory) is still intact,
    /// which holds after a fork-like `clone()` and while the parent waits on a vfork-like one.
    pub unsafe fn enter_from_child(&self) -> Result<(), Errno> {
        for (_, fd) in &self.files {
            // SAFETY: a valid fd and a 1-byte static buffer; write(2) is async-signal-safe.
            let n = unsafe { libc::write(fd.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            if n != 1 {
                return Err(Errno::last());
            }
        }
        Ok(())
    }

    /// Moves process `pid` into the cgroup from the parent (e.g. before releasing a child that
    /// waits on a pipe).
    pub fn add_pid(&self, pid: i32) -> Result<()> {
        let value = pid.to_string();
        for (path, fd) in &self.files {
            // SAFETY: a valid fd and a live buffer of the given length.
            let n = unsafe { libc::write(fd.as_raw_fd(), value.as_ptr().cast(), value.len()) };
            if n < 0 {
                return Err(CgroupError::Write {
                    value,
                    path: path.clone(),
                    source: io::Error::last_os_error(),
                });
            }
        }
        Ok(())
    }
}
