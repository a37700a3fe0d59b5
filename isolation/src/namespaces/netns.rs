//! The process-wide empty network namespace that root sandboxes without network join.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use libc::c_int;

use super::error::NamespaceError;
use crate::error::IsolationError;

/// The shared namespace's fd, or why it could not be created.
///
/// Process-wide by design, and written once: every sandbox of the process joins this one
/// namespace (creating and tearing down one per sandbox is what it avoids), and cloned children
/// `setns()` into its raw fd after `clone()`, so the fd must outlive every child; a static is
/// what gives [`NamespacePlan::netns`](super::NamespacePlan::netns) its `'static` lifetime.
static SHARED_NETNS: OnceLock<Result<OwnedFd, Arc<io::Error>>> = OnceLock::new();

/// The process-wide empty network namespace (only `lo`, down), created on first use.
///
/// It is created by `unshare(CLONE_NEWNET)` in a short-lived helper thread, whose
/// `/proc/thread-self/ns/net` is kept open; the host's own threads never change namespace.
/// Needs `CAP_SYS_ADMIN` (root). A failure is remembered.
pub fn shared_netns() -> Result<BorrowedFd<'static>, IsolationError> {
    match SHARED_NETNS.get_or_init(|| create_empty_netns().map_err(Arc::new)) {
        Ok(fd) => Ok(fd.as_fd()),
        Err(e) => {
            let source = Arc::clone(e);
            Err(NamespaceError::SharedNetns { source }.into())
        }
    }
}

fn create_empty_netns() -> io::Result<OwnedFd> {
    let helper = std::thread::Builder::new()
        .name("isolation-netns".into())
        .spawn(|| {
            // SAFETY: unshare(2) only changes this helper thread's network namespace (netns is
            // per-task, and CLONE_NEWNET does not require a single-threaded process).
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            open_cloexec(Path::new("/proc/thread-self/ns/net"), libc::O_RDONLY)
        })?;
    helper
        .join()
        .map_err(|_| io::Error::other("netns helper thread panicked"))?
}

fn open_cloexec(path: &Path, flags: c_int) -> io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by open(2) and nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
