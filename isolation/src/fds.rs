//! File descriptors for the two spawn paths (sandboxes and builds): close-on-exec pipes and
//! fds lifted out of the way of the child's `dup2`s.

use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

/// A close-on-exec pipe, read end first.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// Duplicates `fd` to a number of at least 10, close-on-exec.
pub fn high_fd(fd: &impl AsFd) -> io::Result<OwnedFd> {
    let new = nix::fcntl::fcntl(fd.as_fd(), nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a fresh descriptor that nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(new.as_raw_fd()) })
}
