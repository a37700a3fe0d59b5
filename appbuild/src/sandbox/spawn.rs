//! The build sandbox's process: the clone, the child's steps up to exec, the shim that
//! restricts itself and execs cargo, and the host's reading and killing of it.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use isolation::{Cgroup, ChildSetup, Rlimits, RunnerRestrictions};

use super::{OUTPUT_CAP, SETUP_FAILED, SHIM_ARG};
use crate::error::BuildError;
use isolation::fds::high_fd;

/// Lifts `fd` above the child's targets and closes the original: the parent must not keep
/// a pipe's write end, or its reader never sees the end of the output.
fn high(fd: OwnedFd) -> Result<OwnedFd, BuildError> {
    high_fd(&fd).map_err(|source| BuildError::Spawn {
        step: "dup fd",
        source,
    })
}

/// A close-on-exec pipe, read end first.
fn pipe() -> Result<(OwnedFd, OwnedFd), BuildError> {
    isolation::fds::pipe().map_err(|source| BuildError::Spawn {
        step: "pipe",
        source,
    })
}

/// Kills the build (its pid 1, so the whole pid namespace) when the build future is dropped.
pub(super) struct KillOnDrop(pub(super) Option<OwnedFd>);

impl KillOnDrop {
    pub(super) fn kill(&self) {
        if let Some(fd) = &self.0 {
            // SAFETY: pidfd_send_signal on a pidfd we own; a process already reaped gives ESRCH.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    fd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Threads reading the build's stdout and stderr.
pub(super) struct Readers(
    std::thread::JoinHandle<Vec<u8>>,
    std::thread::JoinHandle<Vec<u8>>,
);

impl Readers {
    pub(super) fn join(self) -> (Vec<u8>, Vec<u8>) {
        (
            self.0.join().unwrap_or_default(),
            self.1.join().unwrap_or_default(),
        )
    }
}

fn reader(fd: OwnedFd) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut f = File::from(fd);
        let mut kept = Vec::new();
        let mut buf = [0u8; 16 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    let room = OUTPUT_CAP.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        kept
    })
}

pub(super) struct Running {
    /// The build's pid 1, as the host sees it.
    pub(super) pid: i32,
    pub(super) pidfd: OwnedFd,
    pub(super) out: Readers,
}

/// Everything the child needs, prepared before the clone.
pub(super) struct Prepared {
    pub(super) cgroup: Option<isolation::CgroupEntry>,
    pub(super) cgroup_handle: Option<std::sync::Arc<Cgroup>>,
    pub(super) setup: ChildSetup,
    pub(super) rlimits: Rlimits,
    pub(super) exe: CString,
    pub(super) argv: Vec<CString>,
    pub(super) envp: Vec<CString>,
    pub(super) plan: Vec<u8>,
}

type Started = tokio::sync::oneshot::Sender<Result<Running, BuildError>>;
type Done = tokio::sync::oneshot::Sender<Option<i32>>;

/// The build's thread: clones the child, releases it, reports it started, reaps it.
pub(super) fn waiter(mut p: Prepared, started: Started, done: Done) {
    let spawned = (|| -> Result<(i32, OwnedFd, Readers), BuildError> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (plan_r, plan_w) = pipe()?;
        let (fail_r, fail_w) = pipe()?;
        // The plan (a few KiB) fits in the pipe: written before the clone, read by the shim.
        // SAFETY: F_SETPIPE_SZ on our pipe; failure only keeps the default 64 KiB.
        unsafe { libc::fcntl(plan_w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        File::from(plan_w)
            .write_all(&p.plan)
            .map_err(|e| BuildError::Spawn {
                step: "write the build's plan",
                source: e,
            })?;
        let null = File::options()
            .read(true)
            .open("/dev/null")
            .map_err(|e| BuildError::io(Path::new("/dev/null"), e))?;
        let fds = [
            high(OwnedFd::from(null))?,
            high(out_w)?,
            high(err_w)?,
            high(plan_r)?,
            high(fail_w)?,
        ];
        let raw = fds.each_ref().map(|f| f.as_raw_fd());
        let argv: Vec<*const libc::c_char> = p
            .argv
            .iter()
            .map(|s| s.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        let envp: Vec<*const libc::c_char> = p
            .envp
            .iter()
            .map(|s| s.as_ptr())
            .chain([std::ptr::null()])
            .collect();
        // SAFETY: fork-like clone; the child only runs `child` (async-signal-safe system calls
        // on memory prepared above), then execve or _exit.
        let pid = unsafe { isolation::namespaces::raw_clone(p.setup.flags()) }.map_err(|e| {
            BuildError::Spawn {
                step: "clone the build sandbox",
                source: e.into(),
            }
        })?;
        if pid == 0 {
            // SAFETY: we are the freshly cloned child.
            unsafe { child(&p, raw, &argv, &envp) }
        }
        drop(fds);
        // SAFETY: pidfd_open on our own unreaped child.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if let Err(e) = p.setup.parent_after_clone(pid) {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
            return Err(BuildError::Isolation {
                step: "after clone",
                source: e,
            });
        }
        let mut buf = [0u8; 8];
        if File::from(fail_r).read_exact(&mut buf).is_ok() {
            // SAFETY: reaping our own child, which failed before exec.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            let why = isolation::ChildError::from_bytes(buf)
                .map_or_else(|| "unknown step".into(), |e| p.setup.describe(&e));
            return Err(BuildError::Child(why));
        }
        if pidfd < 0 {
            return Err(BuildError::Spawn {
                step: "pidfd_open",
                source: std::io::Error::last_os_error(),
            });
        }
        // SAFETY: a fresh pidfd owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        Ok((pid, pidfd, Readers(reader(out_r), reader(err_r))))
    })();
    let pid = match spawned {
        Ok((pid, pidfd, out)) => {
            if started.send(Ok(Running { pid, pidfd, out })).is_err() {
                // SAFETY: the caller is gone: kill our own child, then reap it below.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            pid
        }
        Err(e) => {
            let _ = started.send(Err(e));
            return;
        }
    };
    let mut status = 0;
    // SAFETY: reaping our own child.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0
        && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted
    {}
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    let _ = done.send(code);
}

/// The child, between clone and exec. Never returns.
///
/// # Safety
/// Only in the child of a fork-like clone; async-signal-safe system calls only.
unsafe fn child(
    p: &Prepared,
    [null, out, err, plan, fail]: [i32; 5],
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    let report = |e: isolation::ChildError| -> ! {
        let bytes = e.to_bytes();
        // SAFETY: write and _exit are async-signal-safe; `bytes` lives on our stack.
        unsafe {
            libc::write(fail, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(SETUP_FAILED)
        }
    };
    // SAFETY: plain system calls on memory prepared before the clone; no allocation.
    unsafe {
        if let Some(cg) = &p.cgroup
            && let Err(errno) = cg.enter_from_child()
        {
            report(isolation::ChildError {
                step: isolation::ChildStep::CgroupEnter,
                errno,
                index: 0,
            });
        }
        if let Err(e) = p.setup.run_in_child() {
            report(e);
        }
        if let Err(e) = p.rlimits.apply_in_child() {
            report(e);
        }
        libc::setsid();
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            libc::_exit(123);
        }
        if libc::dup2(null, 0) < 0
            || libc::dup2(out, 1) < 0
            || libc::dup2(err, 2) < 0
            || libc::dup2(plan, 3) < 0
        {
            libc::_exit(125);
        }
        // The failure pipe stays open (close-on-exec) until exec; everything else goes.
        let lo = 4u32;
        if libc::syscall(libc::SYS_close_range, lo, fail as u32 - 1, 0) < 0
            || libc::syscall(libc::SYS_close_range, fail as u32 + 1, u32::MAX, 0) < 0
        {
            libc::_exit(126);
        }
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::execve(p.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
        libc::_exit(127)
    }
}

/// The hidden build-shim mode, inside the sandbox: `SHIM_ARG CARGO ARGS...`. Reads the
/// restriction plan from fd 3, applies no_new_privs, Landlock and seccomp to itself, then
/// execs cargo with the environment it was given. Never returns.
pub fn shim_main(args: &[String]) -> ! {
    use std::os::unix::process::CommandExt;
    let fail = |what: String| -> ! {
        eprintln!("build sandbox: {what}");
        std::process::exit(118)
    };
    let Some((cargo, rest)) = args.split_first() else {
        fail(format!("usage: {SHIM_ARG} CARGO ARGS..."))
    };
    // SAFETY: fd 3 is the plan pipe the spawn put there; we own it from here on.
    let mut plan = File::from(unsafe { OwnedFd::from_raw_fd(3) });
    let mut bytes = Vec::new();
    if let Err(e) = plan.read_to_end(&mut bytes) {
        fail(format!("read the restriction plan: {e}"));
    }
    drop(plan);
    let restrictions: RunnerRestrictions = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => fail(format!("bad restriction plan: {e}")),
    };
    match restrictions.apply_in_runner() {
        Ok(entries) => {
            for e in entries.iter().filter(|e| !e.applied && e.required) {
                eprintln!(
                    "build sandbox: warning: {:?} not applied: {}",
                    e.mechanism, e.detail
                );
            }
        }
        Err(e) => fail(format!("restrict: {e}")),
    }
    let e = std::process::Command::new(cargo).args(rest).exec();
    fail(format!("cannot run {cargo}: {e}"))
}
