//! The build sandbox: cargo runs in a sandbox made of the same parts as the app sandboxes.
//!
//! Host side (a thread of its own per build, which lives as long as the build, because
//! `PR_SET_PDEATHSIG` fires when the creating *thread* exits):
//! 1. a cgroup (memory, pids) where the host can make one;
//! 2. namespaces (pid, mount, ipc, uts, an empty network; user when not root) and a root of its
//!    own ([`isolation::root`]): the toolchain, `/usr`, the cargo registry and the crate's path
//!    dependencies read-only, the crate's private copy and its target dir read-write;
//! 3. a fork-like `clone`; the child enters the cgroup, builds its root, switches to
//!    [`BUILD_UID`] (root host), sets rlimits (CPU seconds, no core), a new session,
//!    `PR_SET_PDEATHSIG`, `no_new_privs`, its fds (stdout and stderr pipes, the restriction
//!    plan on fd 3), and execs the host binary in the hidden [`SHIM_ARG`] mode;
//! 4. the shim ([`shim_main`]) reads the plan, applies Landlock and the seccomp allow-list
//!    (no network) to itself and execs cargo, which is pid 1 of the sandbox: when it exits, or
//!    the wall-time limit kills it, every process of the build dies with it.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isolation::root::{Bind, RootOptions};
use isolation::{
    Cgroup, ChildOptions, ChildSetup, LandlockPlan, Level, Limits, Rlimits, RunnerRestrictions,
};

use crate::sandbox::SandboxError;

/// argv\[1\] of the hidden build-shim mode.
pub const SHIM_ARG: &str = "__sandbox_build_shim";

/// The uid and gid builds run as on a root host (app sandboxes start at 1600000000).
pub const BUILD_UID: u32 = 1_599_999_000;

/// Where things are inside the build sandbox.
pub mod inside {
    /// The toolchain's sysroot (`rustc --print sysroot`), read-only.
    pub const TOOLCHAIN: &str = "/toolchain";
    /// `CARGO_HOME`: the host's `registry` and `git` caches, read-only.
    pub const CARGO_HOME: &str = "/cargo";
    /// The target dir, read-write and kept between builds of one crate.
    pub const TARGET: &str = "/target";
    /// Crates appear under `/src` at their host paths: the crate's own copy read-write, its
    /// path dependencies read-only.
    pub const SRC: &str = "/src";
}

/// Limits of one build (`--build-memory`, `--build-processes`, `--build-cpu-time`,
/// `--build-timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildLimits {
    /// Memory of the whole build (cgroup), bytes. Default 2 GiB.
    pub memory: u64,
    /// Processes and threads of the whole build (cgroup `pids.max`). Default 256.
    pub processes: u64,
    /// CPU seconds per process (`RLIMIT_CPU`). Default 600.
    pub cpu_seconds: u64,
    /// Wall time of the whole build. Default 5 minutes.
    pub wall: Duration,
    /// The build's `/tmp` and home (a tmpfs charged to its memory), bytes. Default 1 GiB.
    pub tmp_bytes: u64,
}

impl Default for BuildLimits {
    fn default() -> Self {
        BuildLimits {
            memory: 2 << 30,
            processes: 256,
            cpu_seconds: 600,
            wall: Duration::from_secs(300),
            tmp_bytes: 1 << 30,
        }
    }
}

/// The message when no cargo can be found.
pub const NO_CARGO: &str =
    "building an app needs a Rust toolchain (cargo); or pass a prebuilt library with --lib";

/// The host's Rust toolchain, found once.
#[derive(Debug, Clone)]
pub struct Toolchain {
    /// `rustc --print sysroot` on the host.
    pub sysroot: PathBuf,
    /// The host's `CARGO_HOME` (`$CARGO_HOME`, else `~/.cargo`).
    pub cargo_home: Option<PathBuf>,
}

impl Toolchain {
    /// Finds cargo (`$CARGO`, else `PATH`) and its sysroot (the real toolchain behind a
    /// rustup proxy).
    pub fn find() -> Result<Toolchain, SandboxError> {
        static FOUND: std::sync::Mutex<Option<Toolchain>> = std::sync::Mutex::new(None);
        let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = &*found {
            return Ok(t.clone());
        }
        let fail = |d: String| SandboxError::BuildFailed { diagnostics: d };
        let cargo = std::env::var_os("CARGO")
            .map(PathBuf::from)
            .filter(|p| p.is_file())
            .or_else(|| search_path("cargo"))
            .ok_or_else(|| fail(NO_CARGO.into()))?;
        let real = cargo.canonicalize().unwrap_or_else(|_| cargo.clone());
        let dir = real.parent().unwrap_or(Path::new("/"));
        let sysroot = if real.file_name() == Some("cargo".as_ref())
            && dir.join("rustc").is_file()
            && dir.join("../lib/rustlib").is_dir()
        {
            dir.join("..")
                .canonicalize()
                .unwrap_or_else(|_| dir.join(".."))
        } else {
            let rustc = cargo.with_file_name("rustc");
            let rustc = if rustc.is_file() {
                rustc
            } else {
                search_path("rustc").ok_or_else(|| fail(NO_CARGO.into()))?
            };
            let out = std::process::Command::new(&rustc)
                .args(["--print", "sysroot"])
                .current_dir("/")
                .stdin(std::process::Stdio::null())
                .output()
                .map_err(|e| fail(format!("{NO_CARGO} ({}: {e})", rustc.display())))?;
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        };
        if !sysroot.join("bin/cargo").is_file() {
            return Err(fail(format!(
                "{NO_CARGO} (the toolchain at {} has no bin/cargo)",
                sysroot.display()
            )));
        }
        let cargo_home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
            .filter(|p| p.is_dir());
        let t = Toolchain {
            sysroot,
            cargo_home,
        };
        *found = Some(t.clone());
        Ok(t)
    }

    /// The sysroot as the build sees it (a sysroot under `/usr` is seen where it is).
    fn sysroot_inside(&self) -> PathBuf {
        if self.sysroot.starts_with("/usr") {
            self.sysroot.clone()
        } else {
            PathBuf::from(inside::TOOLCHAIN)
        }
    }
}

fn search_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// One build to run in the sandbox.
#[derive(Debug)]
pub struct Job {
    /// The host binary, re-executed in [`SHIM_ARG`] mode inside the sandbox.
    pub shim_exe: PathBuf,
    /// An empty host directory the root is mounted on.
    pub mountpoint: PathBuf,
    /// The host target dir, bound read-write at [`inside::TARGET`].
    pub target_dir: PathBuf,
    /// More binds: the crate's copy (read-write), its path dependencies (read-only).
    pub binds: Vec<Bind>,
    /// Paths the build may write and execute besides the target dir (the crate's copy).
    pub writable: Vec<PathBuf>,
    /// cargo's arguments (after `cargo`).
    pub args: Vec<String>,
    /// Limits.
    pub limits: BuildLimits,
}

/// What a sandboxed run gave.
#[derive(Debug)]
pub struct Outcome {
    /// cargo's exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// cargo's stdout (capped).
    pub stdout: Vec<u8>,
    /// cargo's stderr (capped).
    pub stderr: Vec<u8>,
    /// The limit that stopped the build, named for the error message.
    pub limit: Option<String>,
    /// Wall time from the start of the preparation to the exit.
    pub elapsed: Duration,
}

/// Bytes of stdout or stderr kept from one build.
const OUTPUT_CAP: usize = 8 << 20;

/// Exit code of a child whose isolation setup failed (its reason is on the error pipe).
const SETUP_FAILED: i32 = 119;

/// Runs cargo in the build sandbox and waits for it (or its wall-time limit).
pub async fn run(job: Job, toolchain: &Toolchain) -> Result<Outcome, SandboxError> {
    let started = Instant::now();
    let limits = job.limits;
    let prepared = prepare(&job, toolchain)?;
    let cgroup = prepared.cgroup_handle.clone();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("build-sandbox".into())
        .spawn(move || waiter(prepared, started_tx, done_tx))
        .map_err(|e| SandboxError::Spawn(format!("start the build thread: {e}")))?;
    let running = started_rx
        .await
        .map_err(|_| SandboxError::Spawn("the build thread is gone".into()))??;
    let kill = KillOnDrop(Some(running.pidfd));
    let mut limit = None;
    let status = match tokio::time::timeout(limits.wall, &mut { done_rx }).await {
        Ok(r) => r,
        Err(_) => {
            limit = Some(format!(
                "the build was stopped at its wall-time limit of {} s (--build-timeout)",
                limits.wall.as_secs_f64()
            ));
            kill.kill();
            // The waiter reaps it right after the kill.
            return finish(running.out, None, limit, started, cgroup, limits).await;
        }
    };
    drop(kill);
    let code = status.map_err(|_| SandboxError::Spawn("the build thread is gone".into()))?;
    if limit.is_none() && code.is_none() {
        limit = Some("the build was killed by a signal".into());
    }
    finish(running.out, code, limit, started, cgroup, limits).await
}

async fn finish(
    out: Readers,
    code: Option<i32>,
    mut limit: Option<String>,
    started: Instant,
    cgroup: Option<std::sync::Arc<Cgroup>>,
    limits: BuildLimits,
) -> Result<Outcome, SandboxError> {
    let (stdout, stderr) = tokio::task::spawn_blocking(move || out.join())
        .await
        .map_err(|e| SandboxError::Spawn(format!("read the build's output: {e}")))?;
    if let Some(cg) = &cgroup {
        if let Ok(u) = cg.usage()
            && u.oom_kills.unwrap_or(0) > 0
        {
            limit = Some(format!(
                "the build hit its memory limit of {} (--build-memory)",
                isolation::root::human_bytes(limits.memory)
            ));
        }
        let _ = cg.kill_all();
    }
    let text = String::from_utf8_lossy(&stderr);
    if limit.is_none() && code != Some(0) {
        if text.contains("SIGXCPU") || text.contains("signal: 24") {
            limit = Some(format!(
                "a build process hit its CPU-time limit of {} s (--build-cpu-time)",
                limits.cpu_seconds
            ));
        } else if text.contains("Resource temporarily unavailable") {
            limit = Some(format!(
                "the build may have hit its process limit of {} (--build-processes)",
                limits.processes
            ));
        }
    }
    if let Some(cg) = cgroup
        && let Ok(cg) = std::sync::Arc::try_unwrap(cg)
    {
        let _ = cg.remove();
    }
    Ok(Outcome {
        code,
        stdout,
        stderr,
        limit,
        elapsed: started.elapsed(),
    })
}

/// Kills the build (its pid 1, so the whole pid namespace) when the build future is dropped.
struct KillOnDrop(Option<OwnedFd>);

impl KillOnDrop {
    fn kill(&self) {
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
struct Readers(
    std::thread::JoinHandle<Vec<u8>>,
    std::thread::JoinHandle<Vec<u8>>,
);

impl Readers {
    fn join(self) -> (Vec<u8>, Vec<u8>) {
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

struct Running {
    pidfd: OwnedFd,
    out: Readers,
}

/// Everything the child needs, prepared before the clone.
struct Prepared {
    cgroup: Option<isolation::CgroupEntry>,
    cgroup_handle: Option<std::sync::Arc<Cgroup>>,
    setup: ChildSetup,
    rlimits: Rlimits,
    exe: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    plan: Vec<u8>,
}

fn cstr(b: &[u8]) -> Result<CString, SandboxError> {
    CString::new(b).map_err(|_| SandboxError::Spawn("a build argument contains a NUL byte".into()))
}

fn prepare(job: &Job, tc: &Toolchain) -> Result<Prepared, SandboxError> {
    let iso = |e: isolation::IsolationError| SandboxError::Isolation(format!("build sandbox: {e}"));
    let root = isolation::namespaces::is_root();
    let level = Level::Standard;
    let plan = isolation::namespaces::plan(level, false, root).map_err(iso)?;
    let ids = root.then_some((BUILD_UID, BUILD_UID));
    let sysroot = tc.sysroot_inside();
    let mut binds = Vec::new();
    let ro = |src: &Path, dst: &Path| Bind {
        src: src.to_path_buf(),
        dst: dst.to_path_buf(),
        writable: false,
    };
    for sys in ["/usr", "/bin", "/sbin", "/etc/alternatives"] {
        if std::fs::symlink_metadata(sys).is_ok() {
            binds.push(ro(Path::new(sys), Path::new(sys)));
        }
    }
    if !tc.sysroot.starts_with("/usr") {
        binds.push(ro(&tc.sysroot, Path::new(inside::TOOLCHAIN)));
    }
    if let Some(home) = &tc.cargo_home {
        for cache in ["registry", "git"] {
            if home.join(cache).is_dir() {
                binds.push(ro(
                    &home.join(cache),
                    &Path::new(inside::CARGO_HOME).join(cache),
                ));
            }
        }
    }
    binds.push(Bind {
        src: job.target_dir.clone(),
        dst: inside::TARGET.into(),
        writable: true,
    });
    binds.extend(job.binds.iter().cloned());
    let limits = Limits {
        max_memory: Some(job.limits.memory),
        max_processes: Some(job.limits.processes),
        cpu_seconds: Some(job.limits.cpu_seconds),
        ..Limits::default()
    };
    let setup = ChildSetup::new(
        &plan,
        &ChildOptions {
            no_new_privs: true,
            drop_capabilities: true,
            root: Some(RootOptions {
                mountpoint: job.mountpoint.clone(),
                runner_exe: job.shim_exe.clone(),
                app_dir: None,
                disk_bytes: job.limits.tmp_bytes,
                owner: ids,
                proc: true,
                extra_binds: binds,
            }),
            switch_ids: ids,
            ..ChildOptions::default()
        },
    )
    .map_err(iso)?;
    let Some(own_root) = setup.own_root() else {
        return Err(SandboxError::Isolation(
            "build sandbox: no mount namespace, so no root of its own; refusing to run cargo \
             unsandboxed"
                .into(),
        ));
    };
    // Root of the sandbox's cgroup: a failure (non-root without a delegated subtree) leaves
    // the memory and process limits to the rlimits and the wall-time limit.
    let id = format!(
        "build-{}-{}",
        std::process::id(),
        BUILD_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let cgroup = match Cgroup::create(&id, &limits, None) {
        Ok(cg) => Some(std::sync::Arc::new(cg)),
        Err(e) => {
            tracing::warn!("build sandbox: no cgroup, memory and process limits not enforced: {e}");
            None
        }
    };
    let entry = cgroup
        .as_ref()
        .map(|cg| cg.open_entry())
        .transpose()
        .map_err(|e| SandboxError::Isolation(format!("open the build's cgroup: {e}")))?;
    let rlimits = Rlimits::from_limits(
        &Limits {
            cpu_seconds: Some(job.limits.cpu_seconds),
            ..Limits::default()
        },
        true,
    );
    let mut read_exec: Vec<PathBuf> = own_root
        .read_only_paths()
        .iter()
        .map(PathBuf::from)
        .collect();
    read_exec.extend(
        [
            "/proc",
            "/dev/zero",
            "/dev/full",
            "/dev/random",
            "/dev/urandom",
        ]
        .iter()
        .map(PathBuf::from),
    );
    let mut read_write_exec = vec![
        PathBuf::from(inside::TARGET),
        isolation::root::TMP_DIR.into(),
        isolation::root::WORK_DIR.into(),
    ];
    read_write_exec.extend(job.writable.iter().cloned());
    let landlock = LandlockPlan {
        read_exec,
        read_write: vec!["/dev/null".into()],
        read_write_exec,
        target_abi: isolation::landlock::best_target_abi(),
        deny_tcp: true,
        scoped: true,
    };
    let restrictions = RunnerRestrictions::for_level(level, landlock, false).map_err(iso)?;
    let plan = serde_json::to_vec(&restrictions).map_err(|e| SandboxError::Spawn(e.to_string()))?;
    let cargo = sysroot.join("bin/cargo");
    let mut argv = vec![
        cstr(b"build-shim")?,
        cstr(SHIM_ARG.as_bytes())?,
        cstr(cargo.as_os_str().as_bytes())?,
    ];
    for a in &job.args {
        argv.push(cstr(a.as_bytes())?);
    }
    let path = format!("PATH={}:/usr/bin:/bin", sysroot.join("bin").display());
    let rustc = format!("RUSTC={}", sysroot.join("bin/rustc").display());
    let mut envp = vec![
        cstr(path.as_bytes())?,
        cstr(rustc.as_bytes())?,
        cstr(format!("CARGO_HOME={}", inside::CARGO_HOME).as_bytes())?,
        cstr(format!("CARGO_TARGET_DIR={}", inside::TARGET).as_bytes())?,
        cstr(b"CARGO_NET_OFFLINE=true")?,
        cstr(b"HOME=/work")?,
        cstr(b"TMPDIR=/tmp")?,
    ];
    for key in ["LANG", "TZ"] {
        if let Some(v) = std::env::var_os(key) {
            envp.push(cstr(&[key.as_bytes(), b"=", v.as_bytes()].concat())?);
        }
    }
    Ok(Prepared {
        cgroup: entry,
        cgroup_handle: cgroup,
        setup,
        rlimits,
        exe: cstr(isolation::root::RUNNER.as_bytes())?,
        argv,
        envp,
        plan,
    })
}

static BUILD_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

type Started = tokio::sync::oneshot::Sender<Result<Running, SandboxError>>;
type Done = tokio::sync::oneshot::Sender<Option<i32>>;

fn pipe() -> Result<(OwnedFd, OwnedFd), SandboxError> {
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
fn high(fd: OwnedFd) -> Result<OwnedFd, SandboxError> {
    // SAFETY: F_DUPFD_CLOEXEC on a live fd returns a new fd that we then own.
    let new = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 10) };
    if new < 0 {
        return Err(SandboxError::Spawn(format!(
            "dup: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: a fresh fd owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

/// The build's thread: clones the child, releases it, reports it started, reaps it.
fn waiter(mut p: Prepared, started: Started, done: Done) {
    let spawned = (|| -> Result<(i32, OwnedFd, Readers), SandboxError> {
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        let (plan_r, plan_w) = pipe()?;
        let (fail_r, fail_w) = pipe()?;
        // The plan (a few KiB) fits in the pipe: written before the clone, read by the shim.
        // SAFETY: F_SETPIPE_SZ on our pipe; failure only keeps the default 64 KiB.
        unsafe { libc::fcntl(plan_w.as_raw_fd(), libc::F_SETPIPE_SZ, 1 << 20) };
        File::from(plan_w)
            .write_all(&p.plan)
            .map_err(|e| SandboxError::Spawn(format!("write the build's plan: {e}")))?;
        let null = File::options()
            .read(true)
            .open("/dev/null")
            .map_err(|e| SandboxError::io(Path::new("/dev/null"), e))?;
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
        let pid = unsafe { isolation::namespaces::raw_clone(p.setup.flags()) }
            .map_err(|e| SandboxError::Spawn(format!("clone the build sandbox: {e}")))?;
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
            return Err(SandboxError::Isolation(format!("build sandbox: {e}")));
        }
        let mut buf = [0u8; 8];
        if File::from(fail_r).read_exact(&mut buf).is_ok() {
            // SAFETY: reaping our own child, which failed before exec.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
            let why = isolation::ChildError::from_bytes(buf)
                .map_or_else(|| "unknown step".into(), |e| p.setup.describe(&e));
            return Err(SandboxError::Isolation(format!("build sandbox: {why}")));
        }
        if pidfd < 0 {
            return Err(SandboxError::Spawn(format!(
                "pidfd_open: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: a fresh pidfd owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd as i32) };
        Ok((pid, pidfd, Readers(reader(out_r), reader(err_r))))
    })();
    let pid = match spawned {
        Ok((pid, pidfd, out)) => {
            if started.send(Ok(Running { pidfd, out })).is_err() {
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
