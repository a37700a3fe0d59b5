//! The steps that build a sandbox's root, as raw values the parent prepares and the child runs
//! with plain system calls (no allocation).

use std::ffi::CString;

use nix::errno::Errno;

/// One step; strings are NUL-terminated paths prepared by the parent.
#[derive(Debug)]
pub(super) enum Op {
    Mount {
        src: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    Mkdir(CString),
    Touch(CString),
    Symlink {
        target: CString,
        path: CString,
    },
    Chown {
        path: CString,
        uid: u32,
        gid: u32,
    },
    Chmod(CString, libc::mode_t),
    Detach(CString),
    Rmdir(CString),
    /// `chdir(dir)`, `pivot_root(".", ".")`, `umount2(".", MNT_DETACH)`, `chdir("/")`: the
    /// old root is stacked under the new one and then detached (runc's trick; no `put_old`
    /// directory is left inside the sandbox).
    Pivot(CString),
}

impl Op {
    /// Runs the step; false when it failed (`errno` says why).
    ///
    /// # Safety
    ///
    /// Call only in a freshly cloned child with its own mount namespace, whose `/` was made
    /// recursively private, before `execve` (see [`super::NewRoot::build_in_child`]). Only raw
    /// system calls on strings owned by `self`: no allocation, no locks.
    pub(super) unsafe fn run(&self) -> bool {
        let null = std::ptr::null::<libc::c_char>();
        let opt = |s: &Option<CString>| s.as_ref().map_or(null, |s| s.as_ptr());
        // SAFETY: (whole block) plain system calls with NUL-terminated strings owned by
        // `self`, or null where the kernel accepts it.
        unsafe {
            match self {
                Op::Mount {
                    src,
                    target,
                    fstype,
                    flags,
                    data,
                } => {
                    libc::mount(
                        opt(src),
                        target.as_ptr(),
                        opt(fstype),
                        *flags,
                        opt(data).cast(),
                    ) == 0
                }
                Op::Mkdir(p) => {
                    libc::mkdir(p.as_ptr(), 0o755) == 0 || Errno::last() == Errno::EEXIST
                }
                Op::Touch(p) => {
                    let fd = libc::open(
                        p.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
                        0o444,
                    );
                    fd >= 0 && libc::close(fd) == 0
                }
                Op::Symlink { target, path } => libc::symlink(target.as_ptr(), path.as_ptr()) == 0,
                Op::Chown { path, uid, gid } => libc::chown(path.as_ptr(), *uid, *gid) == 0,
                Op::Chmod(p, mode) => libc::chmod(p.as_ptr(), *mode) == 0,
                Op::Detach(p) => libc::umount2(p.as_ptr(), libc::MNT_DETACH) == 0,
                Op::Rmdir(p) => libc::rmdir(p.as_ptr()) == 0,
                Op::Pivot(dir) => {
                    let dot = c".".as_ptr();
                    libc::chdir(dir.as_ptr()) == 0
                        && libc::syscall(libc::SYS_pivot_root, dot, dot) == 0
                        && libc::umount2(dot, libc::MNT_DETACH) == 0
                        && libc::chdir(c"/".as_ptr()) == 0
                }
            }
        }
    }
}
