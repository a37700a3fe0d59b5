//! Helpers for tests that touch the real kernel.
//!
//! * [`in_subprocess`]: irreversible things (seccomp, Landlock) run in a fresh copy of the test
//!   binary that runs only that one test, and reports back through its exit status.
//! * [`spawn_waiting`]: a fork-like `raw_clone` child that runs only async-signal-safe setup,
//!   reports "ready" (or a `ChildError`) on a pipe, and then waits until the test is done
//!   looking at it through `/proc/<pid>`.
#![allow(dead_code)]

use std::ffi::{CStr, CString};
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use isolation::namespaces::{ChildError, raw_clone};

const SUBPROCESS_ENV: &str = "ISOLATION_TEST_SUBPROCESS";

/// True when the caller is the subprocess and should run the test body. In the normal test
/// process it re-runs this test binary with only `name` selected (`uid` switches user first),
/// asserts that it ran and passed, and returns false.
pub fn in_subprocess(name: &str, uid: Option<u32>) -> bool {
    if std::env::var(SUBPROCESS_ENV).as_deref() == Ok(name) {
        return true;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(SUBPROCESS_ENV, name);
    if let Some(uid) = uid {
        use std::os::unix::process::CommandExt;
        cmd.uid(uid).gid(uid).current_dir("/");
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "subprocess for {name} failed: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    false
}

pub fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: valid out-array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: fresh fds owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A child created by [`spawn_waiting`].
#[derive(Debug)]
pub struct WaitingChild {
    pub pid: libc::pid_t,
    ready: OwnedFd,
    done: Option<OwnedFd>,
}

/// Clones a child with `flags`; the child runs `setup` (async-signal-safe only!), then reports
/// and waits for [`WaitingChild::finish`].
///
/// # Safety
/// `setup` must be async-signal-safe and must not allocate.
pub unsafe fn spawn_waiting(
    flags: libc::c_int,
    setup: impl Fn() -> Result<(), ChildError>,
) -> WaitingChild {
    let (ready_r, ready_w) = pipe();
    let (done_r, done_w) = pipe();
    // SAFETY: the child below only makes raw system calls and _exits.
    let pid = unsafe { raw_clone(flags) }.expect("clone");
    if pid == 0 {
        // SAFETY: raw syscalls on inherited fds; no allocation, no unwinding out of here.
        unsafe {
            libc::close(ready_r.as_raw_fd());
            libc::close(done_w.as_raw_fd());
            match setup() {
                Ok(()) => {
                    libc::write(ready_w.as_raw_fd(), b"R".as_ptr().cast(), 1);
                }
                Err(e) => {
                    let b = e.to_bytes();
                    libc::write(ready_w.as_raw_fd(), b.as_ptr().cast(), b.len());
                    libc::_exit(1);
                }
            }
            let mut b = 0u8;
            libc::read(done_r.as_raw_fd(), (&raw mut b).cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(done_r);
    WaitingChild {
        pid,
        ready: ready_r,
        done: Some(done_w),
    }
}

impl WaitingChild {
    /// Waits until the child finished its setup; `Err` carries its `ChildError`.
    pub fn wait_ready(&self) -> Result<(), String> {
        let mut b = [0u8; 8];
        // SAFETY: reading into a stack buffer.
        let n = unsafe { libc::read(self.ready.as_raw_fd(), b.as_mut_ptr().cast(), 8) };
        match n {
            1 if b[0] == b'R' => Ok(()),
            8 => Err(ChildError::from_bytes(b).map_or("garbage".into(), |e| e.to_string())),
            n => Err(format!("child died before reporting ({n} bytes)")),
        }
    }

    /// Lets the child exit and reaps it; returns the raw wait status. (An explicit byte, not
    /// EOF: children of concurrently running tests hold copies of the pipe.)
    pub fn finish(mut self) -> i32 {
        if let Some(done) = self.done.take() {
            // SAFETY: valid fd, 1-byte buffer.
            unsafe { libc::write(done.as_raw_fd(), b"D".as_ptr().cast(), 1) };
        }
        reap(self.pid)
    }
}

impl Drop for WaitingChild {
    fn drop(&mut self) {
        if self.done.take().is_some() {
            // SAFETY: killing and reaping our own child.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
            reap(self.pid);
        }
    }
}

/// `waitpid` retrying on EINTR; returns the raw status.
pub fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return status;
        }
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::EINTR)
        );
    }
}

/// Clones a child that runs `pre` (async-signal-safe) and then `execve(argv[0], argv, [])`.
/// Returns its pid; a failure in `pre` or `execve` exits with status 126/127.
///
/// # Safety
/// `pre` must be async-signal-safe and must not allocate.
pub unsafe fn spawn_exec(
    flags: libc::c_int,
    argv: &[&CStr],
    pre: impl Fn() -> Result<(), ChildError>,
) -> libc::pid_t {
    // SAFETY: forwarded contract.
    unsafe { spawn_exec_env(flags, argv, &[], pre) }
}

/// [`spawn_exec`] with an environment.
///
/// # Safety
/// `pre` must be async-signal-safe and must not allocate.
pub unsafe fn spawn_exec_env(
    flags: libc::c_int,
    argv: &[&CStr],
    env: &[&CStr],
    pre: impl Fn() -> Result<(), ChildError>,
) -> libc::pid_t {
    let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = env.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    // SAFETY: the child only runs `pre` (async-signal-safe by contract) and execve/_exit.
    let pid = unsafe { raw_clone(flags) }.expect("clone");
    if pid == 0 {
        // SAFETY: see above; all pointers were prepared before clone.
        unsafe {
            if pre().is_err() {
                libc::_exit(126);
            }
            libc::execve(ptrs[0], ptrs.as_ptr(), envp.as_ptr());
            libc::_exit(127);
        }
    }
    pid
}

/// `CString` shorthand.
pub fn cs(s: &str) -> CString {
    CString::new(s).unwrap()
}

#[allow(unused_imports)] // each test binary uses a part of this module
pub use testkit::{cgroup::cgroup_parent, skip};

/// Whether the test process is root.
pub fn root() -> bool {
    testkit::is_root()
}

/// A process-unique id for cgroup names (`it-<tag>-…`).
pub fn unique_id(tag: &str) -> String {
    testkit::unique_id(&format!("it-{tag}"))
}

/// A sandbox's app and private directories, `<base>/app` and `<base>/private`, in a fresh
/// `<base>` (mode 0755) under `/var/tmp`: outside `/tmp`, which the child gets a private one of.
pub fn work_dirs(prefix: &str) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let base = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")
        .unwrap();
    fs::set_permissions(base.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let app = base.path().join("app");
    let private = base.path().join("private");
    fs::create_dir(&app).unwrap();
    fs::create_dir(&private).unwrap();
    (base, app, private)
}
