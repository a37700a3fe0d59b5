//! Child side of a sandbox child's setup, between `clone()` and `execve()`: only raw system
//! calls on what the parent prepared (`setup.rs`), no allocation, no locks.

use std::sync::atomic::Ordering;

use super::caps::{clear_capability_sets, drop_bounding_and_ambient};
use super::child_error::{ChildError, ChildStep};
use super::setup::ChildSetup;

/// `CLOCK_MONOTONIC` in nanoseconds (`clock_gettime` is async-signal-safe).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

impl ChildSetup {
    /// Child side, between `clone()` and `execve()`: waits for the uid/gid maps (user
    /// namespace), joins the shared netns, sets up mounts (mount namespace: `/` rprivate, fresh
    /// `/proc` for the new pid namespace, tmpfs on `/tmp`, app dir read-only), `chdir`s,
    /// sets no_new_privs and drops capabilities, in that order.
    ///
    /// # Safety
    ///
    /// Call only in the child of a fork-like `clone()` made with [`ChildSetup::flags`], before
    /// `execve`, and before closing inherited fds (it uses the pipe and netns fds). It only
    /// makes raw system calls on data prepared by the parent: no allocation, no locks.
    pub unsafe fn run_in_child(&self) -> Result<(), ChildError> {
        if let Some(sync) = &self.userns {
            // SAFETY: this is the child of a fork-like clone(), on its copy of `self`.
            unsafe { sync.wait_in_child()? };
        }
        if let Some(fd) = self.netns {
            // SAFETY: setns(2) on an fd the parent opened and keeps open.
            if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 {
                return Err(ChildError::last(ChildStep::SetNetns));
            }
        }
        if self.flags & libc::CLONE_NEWNS != 0 {
            let started = monotonic_ns();
            // SAFETY: mount(2) calls with static or parent-prepared NUL-terminated strings.
            unsafe { self.mounts()? };
            if self.root.is_some() {
                self.timings
                    .root_ns
                    .store(monotonic_ns() - started, Ordering::Relaxed);
            }
        }
        if let Some(dir) = &self.workdir {
            // SAFETY: chdir(2) with a parent-prepared C string.
            if unsafe { libc::chdir(dir.as_ptr()) } != 0 {
                return Err(ChildError::last(ChildStep::Chdir));
            }
        }
        if self.no_new_privs {
            // SAFETY: plain prctl(2).
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(ChildError::last(ChildStep::NoNewPrivs));
            }
        }
        if self.drop_caps {
            // SAFETY: prctl raw syscalls with stack data.
            unsafe { drop_bounding_and_ambient(self.cap_last)? };
        }
        let ids_started = monotonic_ns();
        if let Some((uid, gid)) = self.ids {
            // SAFETY: setgroups/setresgid/setresuid raw syscalls. Groups and gid first: once
            // the uid is not 0 the process has no capability left to change them.
            unsafe {
                if libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
                    || libc::syscall(libc::SYS_setresgid, gid, gid, gid) != 0
                    || libc::syscall(libc::SYS_setresuid, uid, uid, uid) != 0
                {
                    return Err(ChildError::last(ChildStep::SwitchIds));
                }
            }
        }
        if self.drop_caps {
            // SAFETY: capset raw syscall with stack data.
            unsafe { clear_capability_sets()? };
        }
        if self.ids.is_some() {
            self.timings
                .ids_ns
                .store(monotonic_ns() - ids_started, Ordering::Relaxed);
        }
        Ok(())
    }

    /// # Safety
    /// Child only; see [`ChildSetup::run_in_child`].
    unsafe fn mounts(&self) -> Result<(), ChildError> {
        let null = std::ptr::null::<libc::c_char>();
        // SAFETY: mount(2) with static strings: `/` recursively private first, so nothing
        // below propagates to the host.
        if unsafe {
            libc::mount(
                null,
                c"/".as_ptr(),
                null,
                libc::MS_REC | libc::MS_PRIVATE,
                null.cast(),
            )
        } != 0
        {
            return Err(ChildError::last(ChildStep::MountPrivate));
        }
        if let Some(root) = &self.root {
            // SAFETY: the prepared root steps only make raw system calls on memory owned by
            // `root`.
            return unsafe { root.build_in_child() }.map_err(|(index, errno)| ChildError {
                step: ChildStep::Root,
                errno,
                index,
            });
        }
        // SAFETY: (whole block) mount(2) with static C strings or C strings owned by `self`,
        // all NUL-terminated; null pointers where the kernel accepts them.
        unsafe {
            if self.proc_mount
                && libc::mount(
                    c"proc".as_ptr(),
                    c"/proc".as_ptr(),
                    c"proc".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    null.cast(),
                ) != 0
            {
                return Err(ChildError::last(ChildStep::MountProc));
            }
            if let Some(data) = &self.tmp
                && libc::mount(
                    c"tmpfs".as_ptr(),
                    c"/tmp".as_ptr(),
                    c"tmpfs".as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    data.as_ptr().cast(),
                ) != 0
            {
                return Err(ChildError::last(ChildStep::MountTmp));
            }
            if let Some(app) = &self.app {
                let p = app.path.as_ptr();
                if libc::mount(p, p, null, libc::MS_BIND | libc::MS_REC, null.cast()) != 0 {
                    return Err(ChildError::last(ChildStep::BindAppDir));
                }
                if libc::mount(null, p, null, app.remount_flags, null.cast()) != 0 {
                    return Err(ChildError::last(ChildStep::RemountAppDir));
                }
            }
        }
        Ok(())
    }
}
