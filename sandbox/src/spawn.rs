//! The spawn sequence: how a runner process comes to life. `docs/spawn.md` is the ordered
//! specification; this file codes it in the same order.
//!
//! The steps are numbered as in `docs/spawn.md` (steps 1 and 2 on the host's spawner thread,
//! 3 to 11 in the child with async-signal-safe system calls only, then the host writes the
//! user namespace's maps and releases the child); each is marked `// Step N:` where it is
//! coded, and a test holds the two numberings together. The child reports a failed step
//! through the error pipe ([`isolation::ChildError`]) or, for the steps after the
//! namespaces, through its exit status ([`describe_early_exit`]).

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use isolation::{CgroupEntry, ChildError, ChildSetup, Rlimits};

use crate::error::SandboxError;
use crate::spawn_slots::{KEPT, Slots};
use isolation::fds::high_fd;
use proto::runner::{CONTROL_FD, DATA_FD, RUNNER_ARG};

/// Environment variables passed through to the runner; everything else is cleared.
pub const ENV_ALLOWLIST: &[&str] = &["LANG", "TZ"];

/// Exit code of a child whose isolation setup failed; the reason is on the error pipe.
const ISOLATION_FAILED: i32 = 119;

/// Everything the spawn sequence needs, prepared by the caller.
#[derive(Debug)]
pub struct SpawnRequest {
    /// The runner binary (the host binary itself, or one named by a library user).
    pub runner_exe: PathBuf,
    /// The sandbox's private working directory.
    pub work_dir: PathBuf,
    /// Where the runner's stderr goes.
    pub log_path: PathBuf,
    /// The sandbox's cgroup, opened for this spawn and entered by the child before exec.
    pub cgroup: Option<CgroupEntry>,
    /// Namespaces, mounts and capabilities, prepared for the child.
    pub setup: ChildSetup,
    /// Resource limits, prepared for the child.
    pub rlimits: Rlimits,
}

/// A freshly spawned runner.
#[derive(Debug)]
pub struct Spawned {
    /// Its pid in the host's namespace.
    pub pid: i32,
    /// The host's end of the control socket (init's, fd 3).
    pub control: UnixStream,
    /// The host's end of the data socket (the app process's, fd 4).
    pub data: UnixStream,
    /// Read end of the error pipe: 8 bytes of [`ChildError`] when isolation setup failed.
    pub errors: File,
    /// The child's setup, to describe a [`ChildError`] ([`ChildSetup::describe`]).
    pub setup: ChildSetup,
}

type Job = (SpawnRequest, mpsc::Sender<Result<Spawned, SandboxError>>);

/// The threads that clone every runner.
///
/// `PR_SET_PDEATHSIG` fires when the *thread* that created the child exits, not the process.
/// Runners are therefore cloned from a few threads that live as long as the process, so a
/// runner dies exactly when the host dies, never when some pool thread retires. A clone with
/// vfork semantics holds its thread until the child has exec'd (up to ~2 ms with every
/// namespace), so there is one spawner per core (at most 4), and concurrent creates do not
/// queue behind one another's exec.
#[derive(Debug)]
pub struct Spawner {
    jobs: Mutex<mpsc::Sender<Job>>,
}

impl Spawner {
    /// The process-wide spawner, started on first use.
    pub fn global() -> &'static Spawner {
        // Process-wide because the kernel forces it: a runner must be cloned by a thread that
        // lives as long as the process (PR_SET_PDEATHSIG follows the parent *thread*), and
        // one set of such threads serves every manager of the process.
        static SPAWNER: OnceLock<Spawner> = OnceLock::new();
        SPAWNER.get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get().min(4));
            for i in 0..threads {
                let rx = Arc::clone(&rx);
                let started = std::thread::Builder::new()
                    .name("sandbox-spawner".into())
                    .spawn(move || serve_spawns(&rx));
                // The first one is required; more only make concurrent creates faster.
                if i == 0 {
                    started.expect("start the sandbox spawner thread");
                }
            }
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
            .map_err(|_| SandboxError::SpawnerGone)?;
        rx.recv().map_err(|_| SandboxError::SpawnerGone)?
    }
}

/// One spawner thread: takes spawn jobs until the process ends.
fn serve_spawns(jobs: &Mutex<mpsc::Receiver<Job>>) {
    // Without a stack of its own a child cannot share our memory: it is then cloned with fork
    // semantics, which is slower but just as correct.
    let stack = ChildStack::map()
        .inspect_err(|e| tracing::warn!("sandbox spawn stack: {e}"))
        .ok();
    // Without slots a child copies the host's whole descriptor table: slower, as correct.
    let slots = Slots::reserve()
        .inspect_err(|e| tracing::warn!("sandbox spawn descriptor slots: {e}"))
        .ok();
    let vfork = stack.as_ref().map(|stack| (stack, slots.as_ref()));
    loop {
        let job = jobs.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((request, reply)) = job else { return };
        let _ = reply.send(spawn_now(request, vfork));
    }
}

/// A spawn step that failed with `source`.
fn spawn_error(step: &'static str, source: std::io::Error) -> SandboxError {
    SandboxError::Spawn { step, source }
}

fn cstring(bytes: &[u8], what: &str) -> Result<CString, SandboxError> {
    CString::new(bytes).map_err(|_| SandboxError::NulByte(what.into()))
}

fn path_c(path: &Path) -> Result<CString, SandboxError> {
    cstring(path.as_os_str().as_bytes(), &path.display().to_string())
}

/// The stack a child cloned with vfork semantics runs on until it execs. Mapped once by the
/// spawner thread and reused: the spawner is suspended while a child runs on it.
struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// Enough for the child's few frames of plain system calls, plus a guard page.
    const LEN: usize = 256 * 1024;

    fn map() -> Result<ChildStack, SandboxError> {
        // SAFETY: an anonymous private mapping; the result is checked before use.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                Self::LEN,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(spawn_error(
                "map the child stack",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: the lowest page of the mapping made above becomes a guard page (best effort:
        // a failure only loses the guard).
        unsafe { libc::mprotect(base, 4096, libc::PROT_NONE) };
        Ok(ChildStack {
            base,
            len: Self::LEN,
        })
    }

    /// The initial stack pointer (stacks grow down), 16-byte aligned.
    fn top(&self) -> *mut libc::c_void {
        // SAFETY: one past the end of our own mapping, which is page aligned.
        unsafe { self.base.cast::<u8>().add(self.len).cast() }
    }
}

/// The entry point of a child cloned with vfork semantics.
extern "C" fn vfork_child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the `Child` that `spawn_now` passed to clone; it lives in the spawner
    // thread's frame, which stays untouched while that thread is suspended (CLONE_VFORK).
    let child = unsafe { &*arg.cast::<Child<'static>>() };
    // SAFETY: we are the freshly cloned child; see Child::run.
    unsafe { child.run() }
}

/// The steps above. Runs on the spawner thread.
fn spawn_now(
    mut req: SpawnRequest,
    vfork: Option<(&ChildStack, Option<&Slots>)>,
) -> Result<Spawned, SandboxError> {
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
    let (host_end, child_end) = UnixStream::pair().map_err(|e| spawn_error("socketpair", e))?;
    let (host_data, child_data) = UnixStream::pair().map_err(|e| spawn_error("socketpair", e))?;
    let (err_read, err_write) = isolation::fds::pipe().map_err(|e| spawn_error("pipe", e))?;
    // Lift every fd the child rearranges above 3, so that no dup2 in step 10 overwrites a
    // source that a later dup2 still needs.
    let high = |fd: &dyn AsFd| high_fd(&fd).map_err(|e| spawn_error("dup fd", e));
    let child_fd = high(&child_end)?;
    let child_data = {
        let high = high(&child_data)?;
        drop(child_data);
        high
    };
    let null = high(&null)?;
    let log = high(&log)?;
    let err_write = high(&err_write)?;
    drop(child_end);
    let raw = ChildFds {
        sock: child_fd.as_raw_fd(),
        data: child_data.as_raw_fd(),
        null: null.as_raw_fd(),
        log: log.as_raw_fd(),
        errors: err_write.as_raw_fd(),
    };
    let flags = req.setup.flags();
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };

    let mut child = Child {
        parent,
        own_pid_ns: flags & libc::CLONE_NEWPID != 0,
        fds: raw,
        cgroup: req.cgroup.as_ref(),
        setup: &req.setup,
        rlimits: &req.rlimits,
        work_dir: &work_dir,
        exe: &exe,
        argv: &argv,
        envp: &envp,
        shared_memory: None,
        unshare_below: None,
    };

    // Step 2: clone.
    let pid = match vfork.filter(|_| !req.setup.child_waits_for_parent()) {
        // vfork semantics, as posix_spawn: no copy of the host's page tables for the child to
        // throw away at exec, and no copy-on-write faults in the host meanwhile; and, with
        // this thread's descriptor slots, no copy of the host's descriptor table either
        // (`spawn_slots.rs`): the child shares it until step 10, where it unshares only the
        // low numbers, which hold what it keeps.
        Some((stack, slots)) => {
            let mut files = 0;
            if let Some(slots) = slots {
                let kept: [&dyn AsFd; KEPT] = [&child_fd, &child_data, &null, &log, &err_write];
                let [sock, data, null, log, errors] = slots
                    .fill(kept)
                    .map_err(|e| spawn_error("fill fd slots", e))?;
                child.fds = ChildFds {
                    sock,
                    data,
                    null,
                    log,
                    errors,
                };
                child.unshare_below = Some(slots.bound());
                files = libc::CLONE_FILES;
            }
            // SAFETY: sigset_t is plain data, valid when zeroed.
            let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
            // SAFETY: sigfillset and pthread_sigmask only write the sets we pass. Every signal
            // stays blocked until the child has reset its handlers (a host handler must not
            // run on memory the child shares with us).
            unsafe {
                let mut all: libc::sigset_t = std::mem::zeroed();
                libc::sigfillset(&mut all);
                libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
            }
            child.shared_memory = Some(old);
            // SAFETY: CLONE_VM | CLONE_VFORK suspends this thread until the child execs or
            // exits; the child runs `vfork_child` on `stack`, which nothing else uses, and
            // only reads the memory prepared above (see Child::run).
            let pid = unsafe {
                libc::clone(
                    vfork_child,
                    stack.top(),
                    flags | files | libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
                    (&raw const child).cast_mut().cast(),
                )
            };
            let clone_error = std::io::Error::last_os_error();
            // The child has exec'd (on a table of its own) or exited.
            if let Some(slots) = slots {
                slots.clear();
            }
            // SAFETY: restores the mask saved above.
            unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
            if pid < 0 {
                return Err(spawn_error("clone", clone_error));
            }
            pid
        }
        // Fork semantics (no new stack: the child gets a copy of ours): the child waits for
        // the user namespace maps, which this thread writes after the clone.
        None => {
            // SAFETY: raw clone without CLONE_VM behaves like fork. The child only runs
            // async-signal-safe system calls on memory prepared above, then execve or _exit.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (flags | libc::SIGCHLD) as libc::c_ulong,
                    0,
                    0,
                    0,
                    0,
                )
            };
            if pid < 0 {
                return Err(spawn_error("clone", std::io::Error::last_os_error()));
            }
            if pid == 0 {
                // SAFETY: we are the freshly cloned child; see Child::run.
                unsafe { child.run() }
            }
            pid as libc::pid_t
        }
    };
    let pid = pid as i32;
    drop((child_fd, child_data, log, null, err_write));
    // Host side again: user-namespace maps, then the child may go on.
    if let Err(e) = req.setup.parent_after_clone(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        return Err(SandboxError::Kernel(e));
    }
    Ok(Spawned {
        pid,
        control: host_end,
        data: host_data,
        errors: File::from(err_read),
        setup: req.setup,
    })
}

/// Reads the child's isolation error from the error pipe, if it wrote one.
pub fn child_error(errors: &mut File) -> Option<ChildError> {
    use std::io::Read;
    let mut buf = [0u8; 8];
    errors.read_exact(&mut buf).ok()?;
    ChildError::from_bytes(buf)
}

/// Raw fds the child rearranges.
#[derive(Debug, Clone, Copy)]
struct ChildFds {
    sock: i32,
    data: i32,
    null: i32,
    log: i32,
    errors: i32,
}

/// Everything the child touches, by reference to memory prepared before the clone.
struct Child<'a> {
    parent: libc::pid_t,
    own_pid_ns: bool,
    fds: ChildFds,
    cgroup: Option<&'a CgroupEntry>,
    setup: &'a ChildSetup,
    rlimits: &'a Rlimits,
    work_dir: &'a CString,
    exe: &'a CString,
    argv: &'a [*const libc::c_char],
    envp: &'a [*const libc::c_char],
    /// Set when the child shares the host's memory (vfork semantics): the spawner thread's
    /// signal mask, restored right before exec once every handler is reset.
    shared_memory: Option<libc::sigset_t>,
    /// Set when the child shares the host's descriptor table (`CLONE_FILES`): it unshares,
    /// keeping the descriptors below this number (which hold `fds`), before it changes any.
    unshare_below: Option<u32>,
}

impl Child<'_> {
    /// Steps 3-11, in the child. Never returns: execve or `_exit`.
    ///
    /// # Safety
    /// Must only be called in the child right after clone; uses async-signal-safe calls only.
    unsafe fn run(&self) -> ! {
        // SAFETY: every call below is a plain system call on prepared memory; no allocation,
        // no locks. On any failure we _exit without running destructors or atexit handlers.
        unsafe {
            // Step 3: signal handlers reset, PR_SET_PDEATHSIG, the cgroup.
            // Sharing the host's memory, with every signal blocked: reset every handler to
            // the default, so that a signal arriving before exec never runs host code.
            if self.shared_memory.is_some() {
                for sig in 1..=64 {
                    if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                        continue;
                    }
                    let mut current: libc::sigaction = std::mem::zeroed();
                    if libc::sigaction(sig, std::ptr::null(), &mut current) == 0
                        && current.sa_sigaction != libc::SIG_DFL
                        && current.sa_sigaction != libc::SIG_IGN
                    {
                        let mut default: libc::sigaction = std::mem::zeroed();
                        default.sa_sigaction = libc::SIG_DFL;
                        libc::sigaction(sig, &default, std::ptr::null_mut());
                    }
                }
            }
            // Die with the spawner thread from the start: until step 10, this child holds a
            // copy of, or shares, every descriptor of the host (its listening socket among
            // them), so a host killed now must not leave it running. Set again at 7: the id
            // switch in 4 clears it.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            // The cgroup before anything else runs, so that everything after is accounted
            // and limited.
            if let Some(cg) = self.cgroup
                && let Err(errno) = cg.enter_from_child()
            {
                self.fail(ChildError {
                    step: isolation::ChildStep::CgroupEnter,
                    errno,
                    index: 0,
                });
            }
            // Step 4: Namespaces, mounts, capabilities.
            if let Err(e) = self.setup.run_in_child() {
                self.fail(e);
            }
            // Step 5: rlimits, core dumps off.
            if let Err(e) = self.rlimits.apply_in_child() {
                self.fail(e);
            }
            // Step 6: New session and process group.
            if libc::setsid() < 0 {
                libc::_exit(120);
            }
            // Step 7: Die with the spawner thread; close the race where the host died first.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if !self.own_pid_ns && libc::getppid() != self.parent {
                libc::_exit(121);
            }
            // Step 8: No privilege gain through exec from here on.
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
                libc::_exit(123);
            }
            // Step 9: Private working directory.
            if libc::chdir(self.work_dir.as_ptr()) < 0 {
                libc::_exit(124);
            }
            // Step 10: fds: a table of our own (when shared: only its numbers below the
            // slots' bound are copied), control → 3, data → 4, /dev/null → 0 and 1, log → 2,
            // close the rest.
            if let Some(bound) = self.unshare_below
                && libc::syscall(
                    libc::SYS_close_range,
                    bound,
                    u32::MAX,
                    libc::CLOSE_RANGE_UNSHARE,
                ) < 0
            {
                libc::_exit(126);
            }
            let fds = self.fds;
            if libc::dup2(fds.sock, CONTROL_FD) < 0
                || libc::dup2(fds.data, DATA_FD) < 0
                || libc::dup2(fds.null, 0) < 0
                || libc::dup2(fds.null, 1) < 0
                || libc::dup2(fds.log, 2) < 0
            {
                libc::_exit(125);
            }
            // dup2 onto the same number keeps FD_CLOEXEC; clear it on fds 3 and 4 explicitly.
            libc::fcntl(CONTROL_FD, libc::F_SETFD, 0);
            libc::fcntl(DATA_FD, libc::F_SETFD, 0);
            // The error pipe is CLOEXEC: it closes by itself at exec, unless exec fails.
            if libc::syscall(
                libc::SYS_close_range,
                DATA_FD as u32 + 1,
                fds.errors as u32 - 1,
                0,
            ) < 0
                || libc::syscall(libc::SYS_close_range, fds.errors as u32 + 1, u32::MAX, 0) < 0
            {
                libc::_exit(126);
            }
            // Step 11: exec the runner with the allowlisted environment and the spawner's signal
            // mask (exec keeps the mask; the runner must not start with everything blocked).
            if let Some(mask) = &self.shared_memory {
                libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
            }
            libc::execve(self.exe.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
            libc::_exit(127)
        }
    }

    /// Reports an isolation failure on the error pipe and exits.
    unsafe fn fail(&self, err: ChildError) -> ! {
        let bytes = err.to_bytes();
        // SAFETY: write and _exit are async-signal-safe; `bytes` lives on our stack.
        unsafe {
            libc::write(self.fds.errors, bytes.as_ptr().cast(), bytes.len());
            libc::_exit(ISOLATION_FAILED)
        }
    }
}

/// Exit codes of the child before exec, for error messages.
pub fn describe_early_exit(code: i32) -> Option<&'static str> {
    Some(match code {
        ISOLATION_FAILED => "isolation setup failed",
        120 => "setsid failed",
        121 => "the host died during spawn",
        123 => "no_new_privs failed",
        124 => "chdir into the private directory failed",
        125 => "fd setup failed",
        126 => "close_range failed",
        127 => "exec of the runner failed",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    /// The `N.` steps of docs/spawn.md's host and child sections, in order.
    fn documented_steps() -> Vec<u32> {
        let doc = include_str!("../../docs/spawn.md");
        let start = doc
            .find("## Host side (a spawner thread)")
            .expect("host section");
        let end = doc.find("## Sandbox side").expect("sandbox section");
        doc[start..end]
            .lines()
            .filter_map(|l| l.split_once(". ").and_then(|(n, _)| n.parse().ok()))
            .collect()
    }

    #[test]
    fn the_code_marks_every_documented_step_in_order() {
        let steps = documented_steps();
        assert_eq!(
            steps,
            (1..=11).collect::<Vec<_>>(),
            "docs/spawn.md numbering"
        );
        let code = include_str!("spawn.rs");
        let mut from = 0;
        for n in steps {
            let mark = format!("// Step {n}:");
            let at = code[from..]
                .find(&mark)
                .unwrap_or_else(|| panic!("`{mark}` missing or out of order in spawn.rs"));
            from += at + mark.len();
        }
    }
}
