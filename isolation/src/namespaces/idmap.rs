//! The user namespace handshake: the child waits on a pipe while the parent writes its
//! `setgroups`, `uid_map` and `gid_map` (the host's ids mapped to themselves), then releases
//! it with one byte (`1`: go on, `0`: abort).

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use nix::errno::Errno;

use super::child_error::{ChildError, ChildStep};
use super::error::NamespaceError;

/// Both ends of the handshake pipe and the maps the parent writes.
pub(super) struct UserNsSync {
    child_read: OwnedFd,
    parent_write: OwnedFd,
    uid_map: String,
    gid_map: String,
}

impl fmt::Debug for UserNsSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserNsSync")
            .field("uid_map", &self.uid_map)
            .field("gid_map", &self.gid_map)
            .finish_non_exhaustive()
    }
}

impl UserNsSync {
    /// The pipe (close-on-exec) and this process's effective ids mapped to themselves.
    pub(super) fn new() -> Result<Self, NamespaceError> {
        let mut fds = [0; 2];
        // SAFETY: valid out-array of two fds.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            let source = io::Error::last_os_error();
            return Err(NamespaceError::HandshakePipe { source });
        }
        // SAFETY: both fds were just created by pipe2 and are owned by nobody else.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: geteuid/getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        Ok(Self {
            child_read: r,
            parent_write: w,
            uid_map: format!("{uid} {uid} 1\n"),
            gid_map: format!("{gid} {gid} 1\n"),
        })
    }

    /// Parent side: writes `/proc/<pid>/setgroups` (`deny`; absent on old kernels),
    /// `uid_map` and `gid_map`.
    pub(super) fn write_maps(&self, pid: libc::pid_t) -> Result<(), NamespaceError> {
        let write = |name: &str, value: &str| -> Result<(), NamespaceError> {
            let path = PathBuf::from(format!("/proc/{pid}/{name}"));
            match fs::write(&path, value) {
                Ok(()) => Ok(()),
                Err(e) if name == "setgroups" && e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(source) => Err(NamespaceError::WriteIdMap {
                    path,
                    value: value.trim_end().to_string(),
                    source,
                }),
            }
        };
        write("setgroups", "deny")?;
        write("uid_map", &self.uid_map)?;
        write("gid_map", &self.gid_map)
    }

    /// Parent side: tells the waiting child to go on (`go`) or to give up.
    ///
    /// An explicit byte, not EOF: another child cloned meanwhile holds copies of the pipe
    /// until it `execve`s, so EOF could come late.
    pub(super) fn release(&self, go: bool) -> io::Result<()> {
        let byte: &[u8; 1] = if go { b"1" } else { b"0" };
        // SAFETY: valid fd and a 1-byte static buffer; the pipe has room (or no reader).
        let n = unsafe { libc::write(self.parent_write.as_raw_fd(), byte.as_ptr().cast(), 1) };
        if n != 1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Child side: waits for the parent's byte; anything but `1` (or the parent's death) is
    /// [`ChildStep::UserNsWait`].
    ///
    /// # Safety
    ///
    /// Only in the child of a fork-like `clone()`, on its copy of `self`: it closes the copied
    /// fds. Raw `read`/`close` only: async-signal-safe, no allocation.
    pub(super) unsafe fn wait_in_child(&self) -> Result<(), ChildError> {
        // SAFETY: raw syscalls on fds owned by this (copied) struct; closing the child's copy
        // of the write end lets a dying parent show up as EOF.
        unsafe {
            libc::close(self.parent_write.as_raw_fd());
            let mut b = 0u8;
            let n = loop {
                let n = libc::read(self.child_read.as_raw_fd(), (&raw mut b).cast(), 1);
                if n >= 0 || Errno::last() != Errno::EINTR {
                    break n;
                }
            };
            libc::close(self.child_read.as_raw_fd());
            if n != 1 || b != b'1' {
                let errno = if n < 0 {
                    Errno::last()
                } else {
                    Errno::ECANCELED
                };
                return Err(ChildError {
                    step: ChildStep::UserNsWait,
                    errno,
                    index: 0,
                });
            }
        }
        Ok(())
    }
}
