//! The build sandbox: cargo runs in a sandbox made of the same parts as the app sandboxes.
//!
//! Host side (a thread of its own per build, which lives as long as the build, because
//! `PR_SET_PDEATHSIG` fires when the creating *thread* exits):
//! 1. a cgroup (memory, pids, freezer) where the host can make one;
//! 2. namespaces (pid, mount, ipc, uts, an empty network; user when not root) and a root of its
//!    own ([`isolation::root`]): the toolchain, `/usr`, the cargo registry and the crate's path
//!    dependencies read-only, the crate's private copy and its target dir read-write;
//! 3. a fork-like `clone`; the child enters the cgroup, builds its root, switches to
//!    [`BUILD_UID`] (root host), sets rlimits (CPU seconds, file size = the disk budget, no
//!    core; processes where no pids cgroup counts them), a new session,
//!    `PR_SET_PDEATHSIG`, `no_new_privs`, its fds (stdout and stderr pipes, the restriction
//!    plan on fd 3), and execs the host binary in the hidden [`SHIM_ARG`] mode;
//! 4. the shim ([`shim_main`]) reads the plan, applies Landlock and the seccomp allow-list
//!    (no network) to itself and execs cargo, which is pid 1 of the sandbox: when it exits, or
//!    the host kills it, every process of the build dies with it;
//! 5. the host waits, looking at the build every so often (`sandbox/watch.rs`): past its wall time, its
//!    process limit or its disk budget it is killed, and the error names that limit. Once it
//!    is over, what it left is measured whole ([`Outcome::over_disk`]).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use isolation::root::{Bind, RootOptions};
use isolation::{
    Cgroup, ChildOptions, ChildSetup, LandlockPlan, Level, Limits, Rlimits, RunnerRestrictions,
};

use crate::error::BuildError;

/// argv\[1\] of the hidden build-shim mode.
pub const SHIM_ARG: &str = "__sandbox_build_shim";

/// The uid and gid builds run as on a root host (app sandboxes start at 1600000000).
pub const BUILD_UID: u32 = 1_599_999_000;

use crate::inside;

/// Limits of one build (`--build-memory`, `--build-processes`, `--build-cpu-time`,
/// `--build-timeout`, `--build-disk`).
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
    /// Bytes the build may have on the host's disk: its target dir and its copy of the crate
    /// together (allocated blocks). Default 2 GiB.
    pub disk: u64,
}

impl Default for BuildLimits {
    fn default() -> Self {
        BuildLimits {
            memory: 2 << 30,
            processes: 256,
            cpu_seconds: 600,
            wall: Duration::from_secs(300),
            tmp_bytes: 1 << 30,
            disk: 2 << 30,
        }
    }
}

use crate::toolchain::Toolchain;
mod spawn;
mod watch;
pub use spawn::shim_main;
use spawn::{KillOnDrop, Prepared, Readers, waiter};
use watch::{Hit, Watch};

use crate::disk::Over;

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
    /// Host directories the build may write besides the target dir (the crate's copy),
    /// counted with it against `--build-disk`.
    pub measure: Vec<PathBuf>,
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
    /// The build's writable directories were over `--build-disk` (while it ran or after):
    /// what they hold is not to be kept.
    pub over_disk: bool,
    /// Wall time from the start of the preparation to the exit.
    pub elapsed: Duration,
}

/// Bytes of stdout or stderr kept from one build.
const OUTPUT_CAP: usize = 8 << 20;

/// Exit code of a child whose isolation setup failed (its reason is on the error pipe).
const SETUP_FAILED: i32 = 119;

/// Runs cargo in the build sandbox and waits for it, stopping it at the first limit it passes
/// (wall time; processes, disk: see `sandbox/watch.rs`).
pub async fn run(job: Job, toolchain: &Toolchain) -> Result<Outcome, BuildError> {
    let started = Instant::now();
    let limits = job.limits;
    let mut prepared = prepare(&job, toolchain)?;
    // Held here only, so that the cgroup is removed once this build is over.
    let cgroup = prepared.cgroup_handle.take();
    let (started_tx, started_rx) = tokio::sync::oneshot::channel();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("build-sandbox".into())
        .spawn(move || waiter(prepared, started_tx, done_tx))
        .map_err(|e| BuildError::Spawn {
            step: "start the build thread",
            source: e,
        })?;
    let running = started_rx.await.map_err(|_| BuildError::ThreadGone)??;
    let kill = KillOnDrop(Some(running.pidfd));
    let mut dirs = vec![job.target_dir.clone()];
    dirs.extend(job.measure.iter().cloned());
    let watch = Watch {
        cgroup,
        pid: Some(running.pid),
        dirs,
        disk: limits.disk,
    };
    let deadline = tokio::time::Instant::now() + limits.wall;
    let mut interval = watch::MIN_INTERVAL;
    let stopped = loop {
        tokio::select! {
            status = &mut done_rx => break Stop::Exited(status),
            () = tokio::time::sleep_until(deadline) => break Stop::Wall,
            () = tokio::time::sleep(interval) => {
                let w = watch.clone();
                let (hit, took) = tokio::task::spawn_blocking(move || w.sample())
                    .await
                    .unwrap_or((None, Duration::ZERO));
                if let Some(hit) = hit {
                    break Stop::Hit(hit);
                }
                interval = (took * 10).clamp(watch::MIN_INTERVAL, watch::MAX_INTERVAL);
            }
        }
    };
    let (code, limit) = match stopped {
        Stop::Exited(status) => {
            drop(kill);
            let code = status.map_err(|_| BuildError::ThreadGone)?;
            (code, code.is_none().then_some(Limit::Signal))
        }
        // The waiter reaps it right after the kill.
        Stop::Wall => {
            kill.kill();
            (None, Some(Limit::Wall))
        }
        Stop::Hit(hit) => {
            kill.kill();
            (None, Some(Limit::from(hit)))
        }
    };
    finish(running.out, code, limit, started, watch, limits).await
}

/// How the wait for the build ended.
enum Stop {
    Exited(Result<Option<i32>, tokio::sync::oneshot::error::RecvError>),
    Wall,
    Hit(Hit),
}

/// A limit that stopped a build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Wall,
    Signal,
    Memory,
    CpuTime,
    /// The cgroup's `pids.max` refused a fork.
    Processes,
    /// A fork failed with `EAGAIN` where no cgroup counts them (`RLIMIT_NPROC` only).
    MaybeProcesses,
    Disk(Over),
}

impl From<Hit> for Limit {
    fn from(hit: Hit) -> Limit {
        match hit {
            Hit::Processes => Limit::Processes,
            Hit::Disk(over) => Limit::Disk(over),
        }
    }
}

impl Limit {
    fn describe(self, limits: &BuildLimits) -> String {
        use isolation::root::human_bytes;
        match self {
            Limit::Wall => format!(
                "the build was stopped at its wall-time limit of {} s (--build-timeout)",
                limits.wall.as_secs_f64()
            ),
            Limit::Signal => "the build was killed by a signal".into(),
            Limit::Memory => format!(
                "the build hit its memory limit of {} (--build-memory)",
                human_bytes(limits.memory)
            ),
            Limit::CpuTime => format!(
                "a build process hit its CPU-time limit of {} s (--build-cpu-time)",
                limits.cpu_seconds
            ),
            Limit::Processes => format!(
                "the build hit its process limit ({}, --build-processes)",
                limits.processes
            ),
            Limit::MaybeProcesses => format!(
                "the build may have hit its process limit ({}, --build-processes)",
                limits.processes
            ),
            Limit::Disk(Over::Bytes) => format!(
                "the build wrote more than {} (--build-disk)",
                human_bytes(limits.disk)
            ),
            Limit::Disk(Over::Entries) => format!(
                "the build made more than {} files, directories, descriptors and mappings to \
                 measure (--build-disk)",
                crate::disk::MAX_ENTRIES
            ),
            Limit::Disk(Over::Depth) => format!(
                "the build nested directories more than {} deep (--build-disk)",
                crate::disk::MAX_DEPTH
            ),
        }
    }
}

async fn finish(
    out: Readers,
    code: Option<i32>,
    mut limit: Option<Limit>,
    started: Instant,
    watch: Watch,
    limits: BuildLimits,
) -> Result<Outcome, BuildError> {
    let (stdout, stderr) = tokio::task::spawn_blocking(move || out.join())
        .await
        .map_err(|e| BuildError::Spawn {
            step: "read the build's output",
            source: e.into(),
        })?;
    let text = String::from_utf8_lossy(&stderr);
    // A limit the build passed but that did not stop it by itself (its exit came first).
    let unnamed = matches!(limit, None | Some(Limit::Signal | Limit::Wall));
    if let Some(cg) = &watch.cgroup {
        if let Ok(u) = cg.usage()
            && u.oom_kills.unwrap_or(0) > 0
        {
            limit = Some(Limit::Memory);
        }
        let _ = cg.kill_all();
        if unnamed && limit != Some(Limit::Memory) && watch.processes_hit() {
            limit = Some(Limit::Processes);
        }
    }
    if code != Some(0) && matches!(limit, None | Some(Limit::Signal)) {
        if text.contains("SIGXCPU") || text.contains("signal: 24") {
            limit = Some(Limit::CpuTime);
        } else if text.contains("SIGXFSZ") || text.contains("signal: 25") {
            limit = Some(Limit::Disk(Over::Bytes));
        } else if text.contains("Resource temporarily unavailable") {
            limit = Some(Limit::MaybeProcesses);
        }
    }
    // Every process of the build is gone: what it left is measured whole, whatever it did to
    // hide from the looks taken while it ran.
    let w = Watch {
        pid: None,
        ..watch.clone()
    };
    let over = tokio::task::spawn_blocking(move || w.disk_over())
        .await
        .unwrap_or(Some(Over::Bytes));
    let mut message = limit.map(|l| l.describe(&limits));
    let over_disk = matches!(limit, Some(Limit::Disk(_))) || over.is_some();
    if let Some(over) = over
        && !matches!(limit, Some(Limit::Disk(_)))
    {
        let disk = Limit::Disk(over).describe(&limits);
        message = Some(match message {
            Some(m) => format!("{disk}; {m}"),
            None => disk,
        });
    }
    if let Some(cg) = watch.cgroup
        && let Ok(cg) = std::sync::Arc::try_unwrap(cg)
    {
        let _ = cg.remove();
    }
    Ok(Outcome {
        code,
        stdout,
        stderr,
        limit: message,
        over_disk,
        elapsed: started.elapsed(),
    })
}

fn cstr(b: &[u8]) -> Result<CString, BuildError> {
    CString::new(b).map_err(|_| BuildError::NulInArgument)
}

fn prepare(job: &Job, tc: &Toolchain) -> Result<Prepared, BuildError> {
    fn iso<E: Into<isolation::IsolationError>>(step: &'static str) -> impl Fn(E) -> BuildError {
        move |e| BuildError::Isolation {
            step,
            source: e.into(),
        }
    }
    let root = isolation::namespaces::is_root();
    let level = Level::Standard;
    let plan = isolation::namespaces::plan(level, false, root).map_err(iso("plan"))?;
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
    .map_err(iso("namespaces and root"))?;
    let Some(own_root) = setup.own_root() else {
        return Err(BuildError::NoMountNamespace);
    };
    // Root of the sandbox's cgroup: a failure (non-root without a delegated subtree) leaves
    // the memory and process limits to the rlimits and the wall-time limit.
    let id = format!("build-{}-{}", std::process::id(), rand::random::<u32>());
    let cgroup = match Cgroup::create(&id, &limits, None) {
        Ok(cg) => Some(std::sync::Arc::new(cg)),
        Err(e) => {
            tracing::warn!(
                "build sandbox: no cgroup: the memory limit is not enforced, processes are \
                 counted by RLIMIT_NPROC only, and the disk budget is measured with the build \
                 running (no freezer): {e}"
            );
            None
        }
    };
    let entry = cgroup
        .as_ref()
        .map(|cg| cg.open_entry())
        .transpose()
        .map_err(iso("open the build's cgroup"))?;
    // No file larger than the whole disk budget, whatever the watcher sees between looks.
    // Processes are counted by the cgroup's pids.max; without it, by RLIMIT_NPROC on the
    // build's uid (a user namespace's own uid when not root; on a root host without a pids
    // cgroup, shared by the builds running at that moment).
    let counted = cgroup
        .as_ref()
        .is_some_and(|cg| !cg.missing().iter().any(|m| m.starts_with("max_processes")));
    let rlimits = Rlimits::from_limits(
        &Limits {
            cpu_seconds: Some(job.limits.cpu_seconds),
            max_file_size: Some(job.limits.disk),
            max_processes: Some(job.limits.processes),
            ..Limits::default()
        },
        counted,
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
    let restrictions =
        RunnerRestrictions::for_level(level, landlock, false).map_err(iso("restrictions"))?;
    let plan = serde_json::to_vec(&restrictions).map_err(|e| BuildError::Spawn {
        step: "encode the restrictions",
        source: e.into(),
    })?;
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
