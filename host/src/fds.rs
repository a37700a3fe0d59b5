//! File descriptors for the two spawn paths (sandboxes and builds): close-on-exec pipes and
//! fds lifted out of the way of the child's `dup2`s.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::error::SandboxError;

/// A close-on-exec pipe, read end first.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two fds on success, which we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(SandboxError::Spawn(format!(
            "pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: fresh fds from pipe2, owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Duplicates `fd` to a number of at least 10, close-on-exec.
pub(crate) fn high_fd(fd: &impl AsRawFd) -> Result<OwnedFd, SandboxError> {
    // SAFETY: F_DUPFD_CLOEXEC on a live fd returns a new fd that we then own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(SandboxError::Spawn(format!(
            "dup fd: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `new` is a fresh fd returned above and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}
