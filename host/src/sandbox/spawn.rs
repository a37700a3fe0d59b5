//! The spawn sequence: how a runner process comes to life. `docs/spawn.md` is the ordered
//! specification; this file codes it in the same order.
//!
//! Host side (on the long-lived spawner thread, see [`Spawner`]):
//! 1. Prepare everything the child needs as raw values: paths and argv/envp as C strings,
//!    the log file and `/dev/null` opened, rlimits listed. The child must not allocate.
//! 2. `clone()` (fork semantics, plus namespace flags where the isolation level asks).
//!
//! Child side, async-signal-safe system calls only, in this order:
//! 3. `setsid()`: new session and process group, detached from the host's terminal.
//! 4. `PR_SET_PDEATHSIG(SIGKILL)`, then check the parent is still the one that cloned us.
//! 5. rlimits (address space, open files, file size, CPU seconds), core dumps off.
//! 6. `PR_SET_NO_NEW_PRIVS`: no setuid or file-capability gain from here on.
//! 7. `chdir` into the sandbox's private working directory.
//! 8. fds: the control socket to fd 3, `/dev/null` to 0 and 1, the log file to 2; close
//!    every other fd with `close_range`.
//! 9. `execve` the runner with a cleared environment (allowlist only).
//!
//! Runner side (see `runner`): read `init`, apply self-restrictions, load the app.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

use crate::sandbox::error::SandboxError;
use crate::sandbox::runner::{CONTROL_FD, RUNNER_ARG};

/// Environment variables passed through to the runner; everything else is cleared.
pub const ENV_ALLOWLIST: &[&str] = &["LANG", "TZ"];

/// One resource limit to apply in the child.
#[derive(Debug, Clone, Copy)]
pub struct Rlimit {
    /// `RLIMIT_*` resource.
    pub resource: libc::__rlimit_resource_t,
    /// Soft and hard value.
    pub value: u64,
}

/// Everything the spawn sequence needs, prepared by the caller.
#[derive(Debug)]
pub struct SpawnRequest {
    /// The runner binary (the host binary itself, or one named by a library user).
    pub runner_exe: PathBuf,
    /// The sandbox's private working directory.
    pub work_dir: PathBuf,
    /// Where the runner's stderr goes.
    pub log_path: PathBuf,
    /// Resource limits.
    pub rlimits: Vec<Rlimit>,
}

/// A freshly spawned runner.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid in the host's namespace.
    pub pid: i32,
    /// The host's end of the control socket.
    pub control: UnixStream,
}

type Job = (SpawnRequest, mpsc::Sender<Result<Spawned, SandboxError>>);

/// The thread that clones every runner.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that created the child exits, not the process.
/// Runners are therefore cloned from this one thread, which lives as long as the process, so
/// a runner dies exactly when the host dies, never when some pool thread retires.
#[derive(Debug)]
pub struct Spawner {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Spawner {
    /// The process-wide spawner, started on first use.
    pub fn global() -> &'static Spawner {
        static SPAWNER: OnceLock<Spawner> = OnceLock::new();
        SPAWNER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            std::thread::Builder::new()
                .name("sandbox-spawner".into())
                .spawn(move || {
                    for (request, reply) in rx {
                        let _ = reply.send(spawn_now(&request));
                    }
                })
                .expect("start the sandbox spawner thread");
            Spawner {
                jobs: Mutex::new(tx),
            }
        })
    }

    /// Spawns a runner on the spawner thread and waits for its pid (blocking; cheap).
    pub fn spawn(&self, request: SpawnRequest) -> Result<Spawned, SandboxError> {
        let (tx, rx) = mpsc::channel();
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((request, tx))
            .map_err(|_| SandboxError::Spawn("spawner thread is gone".into()))?;
        rx.recv()
            .map_err(|_| SandboxError::Spawn("spawner thread is gone".into()))?
    }
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString, SandboxError> {
    CString::new(bytes).map_err(|_| SandboxError::Spawn(format!("{what} contains a NUL byte")))
}

fn path_c(path: &Path) -> Result<CString, SandboxError> {
    cstring(path.as_os_str().as_bytes(), &path.display().to_string())
}

/// Steps 1-9 above. Runs on the spawner thread.
fn spawn_now(req: &SpawnRequest) -> Result<Spawned, SandboxError> {
    // Step 1: prepare.
    let exe = path_c(&req.runner_exe)?;
    let work_dir = path_c(&req.work_dir)?;
    let argv_owned = [
        cstring(b"sandbox-runner", "argv0")?,
        cstring(RUNNER_ARG.as_bytes(), "arg")?,
    ];
    let mut argv: Vec<*const libc::c_char> = argv_owned.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut env_owned = vec![cstring(b"PATH=/usr/local/bin:/usr/bin:/bin", "PATH")?];
    for key in ENV_ALLOWLIST {
        if let Some(value) = std::env::var_os(key) {
            let mut kv = OsStr::new(key).as_bytes().to_vec();
            kv.push(b'=');
            kv.extend_from_slice(value.as_bytes());
            env_owned.push(cstring(&kv, key)?);
        }
    }
    let mut envp: Vec<*const libc::c_char> = env_owned.iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());
    let log = File::options()
        .create(true)
        .append(true)
        .open(&req.log_path)
        .map_err(|e| SandboxError::io(&req.log_path, e))?;
    let null = File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map_err(|e| SandboxError::io(Path::new("/dev/null"), e))?;
    let (host_end, child_end) =
        UnixStream::pair().map_err(|e| SandboxError::Spawn(format!("socketpair: {e}")))?;
    // Lift every fd the child rearranges above 3, so that no dup2 in step 8 overwrites a
    // source that a later dup2 still needs.
    let child_fd = high_fd(&child_end)?;
    let null = high_fd(&null)?;
    let log = high_fd(&log)?;
    drop(child_end);
    let raw = ChildFds {
        sock: child_fd.as_raw_fd(),
        null: null.as_raw_fd(),
        log: log.as_raw_fd(),
    };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };

    // Step 2: clone with fork semantics (no new stack: the child gets a copy of ours).
    // SAFETY: raw clone without CLONE_VM behaves like fork. The child only runs
    // async-signal-safe system calls on memory prepared above, then execve or _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0) };
    if pid < 0 {
        return Err(SandboxError::Spawn(format!(
            "clone: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        // SAFETY: we are the freshly cloned child; see child_after_clone.
        unsafe { child_after_clone(parent, &raw, &req.rlimits, &work_dir, &exe, &argv, &envp) }
    }
    drop(child_fd);
    drop(log);
    drop(null);
    Ok(Spawned {
        pid: pid as i32,
        control: host_end,
    })
}

/// Raw fds the child rearranges.
#[derive(Debug, Clone, Copy)]
struct ChildFds {
    sock: i32,
    null: i32,
    log: i32,
}

/// Steps 3-9, in the child. Never returns: execve or `_exit(127)`.
///
/// # Safety
/// Must only be called in the child right after clone; uses async-signal-safe calls only.
unsafe fn child_after_clone(
    parent: libc::pid_t,
    fds: &ChildFds,
    rlimits: &[Rlimit],
    work_dir: &CString,
    exe: &CString,
    argv: &[*const libc::c_char],
    envp: &[*const libc::c_char],
) -> ! {
    // SAFETY: every call below is a plain system call on prepared memory; no allocation,
    // no locks. On any failure we _exit without running destructors or atexit handlers.
    unsafe {
        // 3. New session and process group.
        if libc::setsid() < 0 {
            libc::_exit(120);
        }
        // 4. Die with the spawner thread; close the race where the host died before prctl.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        if libc::getppid() != parent {
            libc::_exit(121);
        }
        // 5. rlimits; core dumps off.
        let core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &core);
        for limit in rlimits {
            let value = libc::rlimit {
                rlim_cur: limit.value,
                rlim_max: limit.value,
            };
            if libc::setrlimit(limit.resource, &value) < 0 {
                libc::_exit(122);
            }
        }
        // 6. No privilege gain through exec from here on.
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            libc::_exit(123);
        }
        // 7. Private working directory.
        if libc::chdir(work_dir.as_ptr()) < 0 {
            libc::_exit(124);
        }
        // 8. fds: socket → 3, /dev/null → 0 and 1, log → 2, close the rest.
        if libc::dup2(fds.sock, CONTROL_FD) < 0
            || libc::dup2(fds.null, 0) < 0
            || libc::dup2(fds.null, 1) < 0
            || libc::dup2(fds.log, 2) < 0
        {
            libc::_exit(125);
        }
        // dup2 onto the same number keeps FD_CLOEXEC; clear it on fd 3 explicitly.
        libc::fcntl(CONTROL_FD, libc::F_SETFD, 0);
        if libc::syscall(libc::SYS_close_range, CONTROL_FD as u32 + 1, u32::MAX, 0) < 0 {
            libc::_exit(126);
        }
        // 9. exec the runner with the allowlisted environment.
        libc::execve(exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
        libc::_exit(127)
    }
}

/// Exit codes of the child before exec, for error messages.
pub fn describe_early_exit(code: i32) -> Option<&'static str> {
    Some(match code {
        120 => "setsid failed",
        121 => "the host died during spawn",
        122 => "setrlimit failed",
        123 => "no_new_privs failed",
        124 => "chdir into the private directory failed",
        125 => "fd setup failed",
        126 => "close_range failed",
        127 => "exec of the runner failed",
        _ => return None,
    })
}

/// Duplicates `fd` to a number of at least 10, close-on-exec.
fn high_fd(fd: &impl AsRawFd) -> Result<OwnedFd, SandboxError> {
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
