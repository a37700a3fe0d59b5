//! The lifecycle API: create, list, info, run, reload, rollback, usage, workers, restart,
//! destroy. Async (tokio); every sandbox is a runner process reached over its socketpair.
//!
//! A runner that dies unexpectedly (a call segfaulted, the OOM killer) fails the calls in
//! flight with `Crashed` and the signal, and is restarted on its current version. More than
//! [`MAX_CRASHES`] deaths within [`CRASH_WINDOW`] leave the sandbox `crashed` until an
//! explicit `restart`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::sync::{oneshot, watch};

use crate::compile::Compiler;
use crate::sandbox::connection::{ConnError, Connection};
use crate::sandbox::error::SandboxError;
use crate::sandbox::kernel_view::KernelView;
use crate::sandbox::library::{self, LibBytes};
use crate::sandbox::procfs;
use crate::sandbox::protocol::{
    ErrorKind, Event, InitReady, Loaded, Reloaded, Request, WorkerList,
};
use isolation::landlock::SandboxPaths;
use isolation::namespaces::{self, ChildOptions, ChildSetup};
use isolation::root::RootOptions;
use isolation::{
    Cgroup, LandlockPlan, Mechanism, Report, ReportEntry, Rlimits, RunnerRestrictions, is_root,
};

use crate::sandbox::runner::ABORT_EXIT;
use crate::sandbox::spawn::{self, SpawnRequest, Spawner};
use crate::sandbox::spec::{
    AppSource, Limits, ReloadSource, SandboxSpec, limit_warnings, valid_id,
};

/// Runner deaths tolerated within [`CRASH_WINDOW`] before a sandbox stays crashed.
pub const MAX_CRASHES: usize = 3;
/// Window of the crash intensity.
pub const CRASH_WINDOW: Duration = Duration::from_secs(5);
/// Most initial workers an app may ask for (its table's word).
const MAX_INITIAL_WORKERS: u32 = 256;
/// First uid (and gid) of the range a root host runs its sandboxes as: each sandbox gets one
/// of its own, so no two sandboxes share per-user kernel limits, and none is the host's root.
pub const SANDBOX_ID_BASE: u32 = 1_600_000_000;
/// How many ids the range holds.
pub const SANDBOX_ID_SPAN: u32 = 1 << 16;

/// How the manager finds its runner binary and where it keeps sandbox files.
#[derive(Debug, Clone)]
pub struct ManagerConfig {
    /// The runner binary: the host binary itself (`/proc/self/exe`) or one named explicitly.
    pub runner_exe: PathBuf,
    /// Parent directory of every sandbox's private directory.
    pub state_dir: PathBuf,
    /// How apps are built.
    pub compiler: Compiler,
    /// Default timeout of a call.
    pub call_timeout: Duration,
    /// How long a reload's load and state hand-over may take.
    pub reload_timeout: Duration,
    /// How long a runner may take to report ready.
    pub start_timeout: Duration,
}

impl ManagerConfig {
    /// Defaults for a runner binary: state under `$XDG_RUNTIME_DIR/sandbox-host/sandboxes`
    /// (or the temp directory), apps built into the shared target directory.
    pub fn new(runner_exe: impl Into<PathBuf>) -> ManagerConfig {
        let runner_exe = runner_exe.into();
        ManagerConfig {
            compiler: Compiler {
                shim_exe: Some(runner_exe.clone()),
                ..Compiler::default()
            },
            runner_exe,
            state_dir: default_state_dir(),
            call_timeout: Duration::from_secs(5),
            reload_timeout: Duration::from_secs(5),
            start_timeout: Duration::from_secs(10),
        }
    }
}

/// Where sandboxes live by default: `$XDG_RUNTIME_DIR/sandbox-host/sandboxes`, else
/// `/run/sandbox-host/sandboxes` for root, else `/var/tmp/sandbox-host-UID/sandboxes`. Never
/// under `/tmp`: a sandbox's private `/tmp` would hide its own directory.
pub fn default_state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("sandbox-host").join("sandboxes");
    }
    if is_root() {
        return PathBuf::from("/run/sandbox-host/sandboxes");
    }
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    PathBuf::from(format!("/var/tmp/sandbox-host-{uid}/sandboxes"))
}

/// Lifecycle status of a sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Serving calls.
    Running,
    /// Being restarted after a runner death.
    Restarting,
    /// Past its restart intensity; needs an explicit restart.
    Crashed,
}

/// One loaded version in a sandbox's history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionRecord {
    /// Host-assigned number, 1 at create.
    pub version: u32,
    /// The private copy that was loaded.
    pub path: PathBuf,
    /// sha256 of the library.
    pub sha256: String,
    /// The app's own version string.
    pub app_version: String,
    /// When it was loaded (seconds since the epoch).
    pub loaded_at: u64,
}

/// What `info` reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxInfo {
    /// Sandbox id.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Why it crashed, when it did.
    pub crash_reason: Option<String>,
    /// Runner (init) pid.
    pub pid: i32,
    /// The app process's pid (the one that runs app code; 0 when none is known).
    #[serde(default)]
    pub app_pid: i32,
    /// Creation time, RFC 3339.
    pub created_at: String,
    /// Runner restarts (crashes and explicit restarts).
    pub restart_count: u32,
    /// The version serving now.
    pub app: AppInfo,
    /// Every version loaded, oldest first.
    pub versions: Vec<VersionRecord>,
    /// Limits asked for.
    pub limits: Limits,
    /// What isolation was applied, mechanism by mechanism.
    pub isolation: serde_json::Value,
    /// The sandbox's private directory.
    pub dir: PathBuf,
    /// Where the last start of the runner spent its time.
    #[serde(default)]
    pub startup: StartupTimings,
    /// Requested limits nothing enforces, one line each naming the limit, why and the fix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// Where a sandbox's start spent its time, in microseconds, phase by phase. The host-side
/// phases are measured by the host, the runner-side ones by the runner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartupTimings {
    /// Read, hash (when not cached) and copy the library into the private directory.
    pub install_us: u64,
    /// Create the cgroup and write its limits.
    pub cgroup_us: u64,
    /// Plan the namespaces, mounts, rlimits and self-restrictions.
    pub prepare_us: u64,
    /// Clone the runner (until the host holds its pid).
    pub spawn_us: u64,
    /// From the pid to the runner's `ready` answer: child setup, exec, init.
    pub ready_us: u64,
    /// Runner: applying Landlock and seccomp to itself (part of `ready_us`).
    pub restrict_us: u64,
    /// Runner: `dlopen` and ABI checks (part of `ready_us`).
    pub load_us: u64,
    /// Child, before exec: building the sandbox's own root (part of `spawn_us`; measured only
    /// when the child shares the host's memory until exec, i.e. as root).
    #[serde(default)]
    pub root_us: Option<u64>,
    /// Child, before exec: switching to the sandbox's uid/gid (as `root_us`).
    #[serde(default)]
    pub ids_us: Option<u64>,
    /// Init: forking the app process, the second process of the two planes (part of
    /// `ready_us`).
    #[serde(default)]
    pub app_fork_us: Option<u64>,
}

/// The app version serving now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AppInfo {
    /// App name from its table: the app's own word.
    pub name: String,
    /// Path of the loaded copy.
    pub path: PathBuf,
    /// Host-assigned version number.
    pub version: u32,
    /// The app's own version string: the app's own word.
    pub app_version: String,
    /// sha256 of the library.
    pub sha256: String,
    /// The fields above that only the app vouches for (its self-declared name and version);
    /// everything else the host measured or assigned.
    #[serde(default = "app_claims")]
    pub claimed_by_app: Vec<String>,
}

fn app_claims() -> Vec<String> {
    vec!["name".into(), "app_version".into()]
}

/// A sandbox's resource usage, measured by the host from `/proc` (and its cgroup).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Usage {
    /// Sandbox id.
    pub sandbox_id: String,
    /// Runner pid.
    pub pid: i32,
    /// Live processes in the sandbox (runner, workers, anything they started).
    pub processes: u64,
    /// Threads over all those processes.
    pub threads: u64,
    /// Memory in bytes: the cgroup's figure when there is one, else summed resident sets.
    pub memory_bytes: u64,
    /// Peak memory of the cgroup, when the kernel reports it.
    pub memory_peak_bytes: Option<u64>,
    /// Processes the kernel's OOM killer killed in this sandbox (cgroup only).
    pub oom_kills: Option<u64>,
    /// CPU time in milliseconds, including reaped children.
    pub cpu_time_ms: u64,
    /// CPU use since the previous sample, in percent of one core.
    pub cpu_percent: f64,
    /// Open file descriptors over all processes.
    pub open_fds: u64,
    /// Milliseconds since the sandbox was created.
    pub uptime_ms: u64,
    /// Runner restarts.
    pub restart_count: u32,
    /// Worker restarts by the runner's supervisor (current runner).
    pub worker_restarts: u32,
    /// Version number serving now.
    pub app_version: u32,
    /// Distinct app library copies mapped in the runner.
    pub mapped_app_copies: usize,
    /// Bytes written to the sandbox's disk (`/work` and `/tmp`), when it has a capped one.
    #[serde(default)]
    pub disk_bytes: Option<u64>,
    /// Files (inodes) on the sandbox's disk, when it has a capped one.
    #[serde(default)]
    pub disk_files: Option<u64>,
    /// Where the figures came from (`proc`, or `cgroup` + `proc`).
    pub source: String,
}

/// What a reload did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReport {
    /// `reloaded` or `no_change`.
    pub status: String,
    /// Version before.
    pub from_version: u32,
    /// Version after.
    pub to_version: u32,
    /// Microseconds the runner spent loading and swapping.
    pub load_us: u64,
    /// Milliseconds cargo spent, when something was built.
    pub compile_ms: Option<u64>,
}

/// A summary line of `list`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SandboxSummary {
    /// Sandbox id.
    pub id: String,
    /// Status.
    pub status: Status,
    /// Runner pid.
    pub pid: i32,
    /// Version serving now.
    pub app_version: u32,
    /// Why it crashed or restarts, when it did (e.g. `out of memory: limit 1 MiB, …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The running runner of a sandbox.
#[derive(Debug)]
struct Live {
    /// The runner, opened while it could not have been reaped: its pid number is reused once
    /// it is (pid_max can be as low as 32768).
    process: Arc<procfs::Process>,
    /// Init's control socket: status, workers, versions.
    control: Connection,
    /// The app process's data socket: calls and reloads.
    data: Connection,
    /// The app process's host pid (0 if it could not be found).
    app_pid: i32,
    /// The app's name, its own word.
    app_name: String,
    /// Filled with a description of how the runner died.
    exit: watch::Receiver<Option<String>>,
}

#[derive(Debug)]
struct Sandbox {
    id: String,
    spec: SandboxSpec,
    dir: PathBuf,
    created_at: SystemTime,
    created: Instant,
    live: tokio::sync::RwLock<Option<Arc<Live>>>,
    versions: Mutex<Vec<VersionRecord>>,
    current: AtomicU32,
    status: Mutex<(Status, Option<String>)>,
    restart_count: AtomicU32,
    worker_restarts: AtomicU32,
    generation: AtomicU64,
    crashes: Mutex<VecDeque<Instant>>,
    destroying: AtomicBool,
    cpu_prev: Mutex<Option<(Instant, u64)>>,
    /// Serialises reloads and rollbacks: each picks the next version number and compares
    /// against the current one, which two concurrent swaps would otherwise both read.
    swap_lock: tokio::sync::Mutex<()>,
    isolation: Mutex<serde_json::Value>,
    startup: Mutex<StartupTimings>,
    /// The sandbox's cgroup, shared by every runner it has had.
    cgroup: Mutex<Option<Arc<Cgroup>>>,
    /// The uid and gid its processes run as when the host is root.
    ids: (u32, u32),
    /// Whether the current runner lives in a root of its own (then it names its library by
    /// the fixed in-sandbox path, not the host's).
    own_root: AtomicBool,
    /// How the current runner's app process exited, as its init reported.
    app_exit: Mutex<Option<String>>,
    /// How the cgroup was (or was not) made, for the isolation report.
    cgroup_entry: Mutex<Option<ReportEntry>>,
    /// Requested limits nothing enforces, one line each (see [`SandboxInfo::warnings`]).
    warnings: Mutex<Vec<String>>,
    /// The cgroup's OOM kill count when last looked at (see [`oom_cause`]).
    oom_seen: AtomicU64,
}

impl Sandbox {
    fn cgroup(&self) -> Option<Arc<Cgroup>> {
        self.cgroup.lock().unwrap().clone()
    }

    fn app_dir(&self) -> PathBuf {
        self.dir.join("app")
    }

    /// The path by which the runner opens `record`'s library.
    fn lib_for_runner(&self, record: &VersionRecord) -> PathBuf {
        match record.path.file_name() {
            Some(name) if self.own_root.load(Ordering::Acquire) => {
                Path::new(isolation::root::APP_DIR).join(name)
            }
            _ => record.path.clone(),
        }
    }

    /// The host's store of libraries, beside the sandboxes' directories.
    fn lib_store(&self) -> PathBuf {
        library::store_of(self.dir.parent().unwrap_or(Path::new("/")))
    }

    fn current_record(&self) -> Option<VersionRecord> {
        let current = self.current.load(Ordering::Acquire);
        self.versions
            .lock()
            .unwrap()
            .iter()
            .find(|v| v.version == current)
            .cloned()
    }

    fn set_status(&self, status: Status, reason: Option<String>) {
        *self.status.lock().unwrap() = (status, reason);
    }

    async fn live(&self) -> Result<Arc<Live>, SandboxError> {
        let (status, reason) = self.status.lock().unwrap().clone();
        if status == Status::Crashed {
            return Err(SandboxError::Crashed {
                id: self.id.clone(),
                reason: reason.unwrap_or_else(|| "crashed".into()),
                signal: None,
            });
        }
        self.live
            .read()
            .await
            .clone()
            .ok_or_else(|| SandboxError::Crashed {
                id: self.id.clone(),
                reason: "runner is restarting".into(),
                signal: None,
            })
    }
}

/// Owns every sandbox of this host.
#[derive(Debug, Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ManagerConfig,
    sandboxes: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// The next default id offset in the sandbox id range.
    next_ids: AtomicU32,
}

impl Manager {
    /// Creates a manager; makes the state directory (0700).
    pub fn new(config: ManagerConfig) -> Result<Manager, SandboxError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.state_dir)
            .map_err(|e| SandboxError::io(&config.state_dir, e))?;
        Ok(Manager {
            inner: Arc::new(Inner {
                config,
                sandboxes: Mutex::new(HashMap::new()),
                next_ids: AtomicU32::new(std::process::id() % SANDBOX_ID_SPAN),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    fn get(&self, id: &str) -> Result<Arc<Sandbox>, SandboxError> {
        self.inner
            .sandboxes
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .ok_or_else(|| SandboxError::NotFound(id.to_string()))
    }

    /// Creates and starts a sandbox; returns when its app is loaded and its workers started.
    pub async fn create(&self, id: &str, spec: SandboxSpec) -> Result<SandboxInfo, SandboxError> {
        if !valid_id(id) {
            return Err(SandboxError::InvalidId(id.to_string()));
        }
        crate::sandbox::spec::check_limits(&spec.limits).map_err(SandboxError::InvalidLimits)?;
        if let Some(parent) = &spec.cgroup_parent
            && spec.isolation.isolates()
        {
            check_cgroup_parent(parent)?;
        }
        let dir = self
            .inner
            .config
            .state_dir
            .join(format!("{id}.{}", nonce()));
        let default_id =
            SANDBOX_ID_BASE + self.inner.next_ids.fetch_add(1, Ordering::Relaxed) % SANDBOX_ID_SPAN;
        let uid = spec.uid.unwrap_or(default_id);
        let ids = (uid, spec.gid.unwrap_or(uid));
        let sandbox = Arc::new(Sandbox {
            id: id.to_string(),
            spec,
            dir,
            created_at: SystemTime::now(),
            created: Instant::now(),
            live: tokio::sync::RwLock::new(None),
            versions: Mutex::new(Vec::new()),
            current: AtomicU32::new(0),
            status: Mutex::new((Status::Restarting, None)),
            restart_count: AtomicU32::new(0),
            worker_restarts: AtomicU32::new(0),
            generation: AtomicU64::new(0),
            crashes: Mutex::new(VecDeque::new()),
            destroying: AtomicBool::new(false),
            cpu_prev: Mutex::new(None),
            swap_lock: tokio::sync::Mutex::new(()),
            isolation: Mutex::new(serde_json::Value::Null),
            startup: Mutex::new(StartupTimings::default()),
            cgroup: Mutex::new(None),
            cgroup_entry: Mutex::new(None),
            ids,
            own_root: AtomicBool::new(false),
            app_exit: Mutex::new(None),
            oom_seen: AtomicU64::new(0),
            warnings: Mutex::new(Vec::new()),
        });
        {
            // Reserve the id before the slow part, so two creates of one id cannot both win.
            let mut map = self.inner.sandboxes.lock().unwrap();
            if map.contains_key(id) {
                return Err(SandboxError::AlreadyExists(id.to_string()));
            }
            map.insert(id.to_string(), Arc::clone(&sandbox));
        }
        match self.start_new(&sandbox).await {
            Ok(()) => self.info(id).await,
            Err(e) => {
                self.inner.sandboxes.lock().unwrap().remove(id);
                sandbox.destroying.store(true, Ordering::Release);
                teardown(&sandbox).await;
                Err(e)
            }
        }
    }

    async fn start_new(&self, sb: &Arc<Sandbox>) -> Result<(), SandboxError> {
        std::fs::create_dir_all(&sb.dir).map_err(|e| SandboxError::io(&sb.dir, e))?;
        for sub in ["app", "work", "root"] {
            let d = sb.dir.join(sub);
            std::fs::create_dir(&d).map_err(|e| SandboxError::io(&d, e))?;
        }
        let built = match &sb.spec.app {
            AppSource::Library(path) => path.clone(),
            AppSource::Crate(dir) => self.inner.config.compiler.build(dir).await?.lib,
        };
        let started = Instant::now();
        let record = install_version(sb, &library::read(&built)?, 1)?;
        let install_us = micros(started);
        sb.versions.lock().unwrap().push(record.clone());
        if sb.spec.isolation.isolates() {
            let name = sb
                .dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or(&sb.id)
                .replace('.', "-");
            let entry =
                match Cgroup::create(&name, &sb.spec.limits, sb.spec.cgroup_parent.as_deref()) {
                    Ok(cg) => {
                        let entry = cg.report_entry();
                        *sb.cgroup.lock().unwrap() = Some(Arc::new(cg));
                        entry
                    }
                    Err(e) => ReportEntry::missing(Mechanism::Cgroup, e.to_string()),
                };
            entry
                .check(sb.spec.isolation)
                .map_err(|e| SandboxError::Isolation(e.to_string()))?;
            let warnings = match sb.cgroup() {
                Some(cg) => limit_warnings(&sb.spec.limits, None, cg.missing()),
                None => limit_warnings(
                    &sb.spec.limits,
                    Some(&format!("no cgroup ({})", entry.detail)),
                    &[],
                ),
            };
            *sb.warnings.lock().unwrap() = warnings;
            *sb.cgroup_entry.lock().unwrap() = Some(entry);
        } else {
            *sb.warnings.lock().unwrap() = crate::sandbox::spec::limit_warnings_with_fix(
                &sb.spec.limits,
                Some("no cgroup at --isolation none"),
                &[],
                "use --isolation standard",
            );
        }
        for warning in sb.warnings.lock().unwrap().iter() {
            tracing::warn!(sandbox = %sb.id, "{warning}");
        }
        let cgroup_us = micros(started) - install_us;
        sb.current.store(1, Ordering::Release);
        self.start_runner(sb, &record).await?;
        {
            let mut startup = sb.startup.lock().unwrap();
            startup.install_us = install_us;
            startup.cgroup_us = cgroup_us;
        }
        sb.set_status(Status::Running, None);
        Ok(())
    }

    /// Spawns a runner for `record` and waits for it to be ready. Boxed because the runner's
    /// watcher, which this spawns, restarts a dead runner through this very function.
    fn start_runner<'a>(
        &'a self,
        sb: &'a Arc<Sandbox>,
        record: &'a VersionRecord,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SandboxError>> + Send + 'a>>
    {
        Box::pin(self.start_runner_inner(sb, record))
    }

    async fn start_runner_inner(
        &self,
        sb: &Arc<Sandbox>,
        record: &VersionRecord,
    ) -> Result<(), SandboxError> {
        let started = Instant::now();
        let (request, restrictions, mut report) = self.prepare_spawn(sb)?;
        let prepare_us = micros(started);
        let spawned = tokio::task::spawn_blocking(move || Spawner::global().spawn(request))
            .await
            .map_err(|e| SandboxError::Spawn(format!("spawn task: {e}")))??;
        let spawn_us = micros(started) - prepare_us;
        let pid = spawned.pid;
        // Before the watcher exists, so before anyone can reap the runner.
        let process = Arc::new(procfs::Process::open(pid));
        let spawned_errors = spawned.errors;
        let spawned_setup = spawned.setup;
        let generation = sb.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let (closed_tx, closed_rx) = oneshot::channel();
        let (data_closed_tx, data_closed_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        let for_events = Arc::downgrade(sb);
        let on_event = move |event| {
            if let Some(sb) = for_events.upgrade() {
                handle_event(&sb, event);
            }
        };
        // Two planes: init's control socket, whose events are init's observations, and the app
        // process's data socket, where only answers to our own requests count.
        // Until the watcher runs, a failure here must kill the runner itself.
        let control = Connection::new(spawned.control, on_event, closed_tx).map_err(|e| {
            kill_tree(&process);
            SandboxError::Spawn(format!("control socket: {e}"))
        })?;
        let data_events = Arc::downgrade(sb);
        let data = Connection::new(
            spawned.data,
            move |event| {
                if let Some(sb) = data_events.upgrade() {
                    tracing::debug!(sandbox = %sb.id, ?event, "ignored an event on the data plane");
                }
            },
            data_closed_tx,
        )
        .map_err(|e| {
            kill_tree(&process);
            SandboxError::Spawn(format!("data socket: {e}"))
        })?;
        let restrictions = serde_json::to_value(&restrictions).map_err(|e| {
            kill_tree(&process);
            SandboxError::Protocol(e.to_string())
        })?;
        let init = Request::Init {
            lib: sb.lib_for_runner(record),
            version: record.version,
            restrictions,
        };
        let timeout = self.inner.config.start_timeout;
        let result = control.request(init, timeout).await;
        let mut errors = spawned_errors;
        tokio::spawn(watch_runner(
            Arc::downgrade(sb),
            self.clone(),
            Arc::clone(&process),
            generation,
            (closed_rx, data_closed_rx),
            exit_tx,
        ));
        let start_failed = async |e: ConnError, errors: &mut std::fs::File| {
            kill_tree(&process);
            if let Some(err) = spawn::child_error(errors) {
                return SandboxError::Isolation(spawned_setup.describe(&err));
            }
            let mut exit = exit_rx.clone();
            let how = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some()))
                .await
                .ok()
                .and_then(|r| r.ok().and_then(|v| v.clone()));
            SandboxError::InitFailed(match (e, how) {
                (_, Some(how)) => format!("runner exited during start: {how}"),
                (ConnError::Timeout, None) => "runner did not report ready in time".into(),
                (ConnError::Closed, None) => "runner closed its socket during start".into(),
            })
        };
        let ready: InitReady = match result {
            Ok(Ok(value)) => serde_json::from_value(value).map_err(|e| {
                kill_tree(&process);
                SandboxError::Protocol(format!("init's ready: {e}"))
            })?,
            Ok(Err(err)) => {
                kill_tree(&process);
                return Err(SandboxError::InitFailed(err.message));
            }
            Err(e) => return Err(start_failed(e, &mut errors).await),
        };
        let ready_us = micros(started) - prepare_us - spawn_us;
        // The app process is init's only child at this point.
        let app_pid = procfs::children_of(pid).first().copied().unwrap_or(0);
        let load = Request::Load {
            lib: sb.lib_for_runner(record),
            version: record.version,
        };
        let loaded: Loaded = match data.request(load, timeout).await {
            Ok(Ok(value)) => match serde_json::from_value(value) {
                Ok(loaded) => loaded,
                Err(e) => {
                    kill_tree(&process);
                    return Err(SandboxError::Protocol(format!("app process: {e}")));
                }
            },
            Ok(Err(err)) => {
                kill_tree(&process);
                return Err(SandboxError::InitFailed(err.message));
            }
            Err(e) => return Err(start_failed(e, &mut errors).await),
        };
        let load_round_us = micros(started) - prepare_us - spawn_us - ready_us;
        if let Some(r) = sb
            .versions
            .lock()
            .unwrap()
            .iter_mut()
            .find(|v| v.version == record.version)
        {
            r.app_version.clone_from(&loaded.app_version);
        }
        let applied: Vec<ReportEntry> =
            serde_json::from_value(ready.restrictions.clone()).unwrap_or_default();
        let level = sb.spec.isolation;
        // What the report says is what the kernel shows of init and of the app process, not
        // what init or the spawn sequence claims: an entry holds only if both show it.
        let checked = report.record_all(level, applied).and_then(|()| {
            KernelView::read(pid).check(&mut report);
            if app_pid > 0 {
                KernelView::read(app_pid).check(&mut report);
            }
            report.check(level)
        });
        if let Err(e) = checked {
            kill_tree(&process);
            return Err(SandboxError::Isolation(e.to_string()));
        }
        *sb.isolation.lock().unwrap() = serde_json::json!({"level": level, "mechanisms": report});
        *sb.startup.lock().unwrap() = StartupTimings {
            prepare_us,
            spawn_us,
            ready_us: ready_us + load_round_us,
            restrict_us: ready.restrict_us,
            load_us: loaded.load_us,
            root_us: child_us(&spawned_setup.timings().root_ns),
            ids_us: child_us(&spawned_setup.timings().ids_ns),
            app_fork_us: Some(ready.fork_us),
            ..StartupTimings::default()
        };
        // The app's initial workers: the count is its own word, bounded by init. Sent before
        // the sandbox is live, so a `workers` request queues behind it; not awaited, so the
        // first call does not wait for their execs.
        if loaded.initial_workers > 0 {
            let count = loaded.initial_workers.min(MAX_INITIAL_WORKERS);
            let reply = control.send(Request::SpawnWorkers { count }).await;
            let for_reply = Arc::downgrade(sb);
            tokio::spawn(async move {
                let failed = match reply {
                    Ok(reply) => match reply.await {
                        Ok(Err(e)) => Some(e.message),
                        _ => None,
                    },
                    Err(_) => None,
                };
                if let (Some(reason), Some(sb)) = (failed, for_reply.upgrade()) {
                    handle_event(
                        &sb,
                        Event::Crashed {
                            reason: format!("initial workers: {reason}"),
                        },
                    );
                }
            });
        }
        // A destroy that raced this (re)start has taken the cgroup and the old runner: this
        // one must not outlive it.
        if sb.destroying.load(Ordering::Acquire) {
            kill_tree(&process);
            return Err(SandboxError::NotFound(sb.id.clone()));
        }
        let live = Live {
            process,
            control,
            data,
            app_pid,
            app_name: loaded.app_name,
            exit: exit_rx,
        };
        *sb.live.write().await = Some(Arc::new(live));
        Ok(())
    }

    /// Plans the isolation of one runner (namespaces, mounts, rlimits, self-restrictions) and
    /// starts the isolation report with what the host side will apply.
    fn prepare_spawn(
        &self,
        sb: &Sandbox,
    ) -> Result<(SpawnRequest, RunnerRestrictions, Report), SandboxError> {
        let iso = |e: isolation::IsolationError| SandboxError::Isolation(e.to_string());
        let level = sb.spec.isolation;
        let runner_exe = self
            .inner
            .config
            .runner_exe
            .canonicalize()
            .unwrap_or_else(|_| self.inner.config.runner_exe.clone());
        let app_dir = sb.app_dir();
        let work_dir = sb.dir.join("work");
        let mut report = Report::new();
        if let Some(entry) = sb.cgroup_entry.lock().unwrap().clone() {
            report.record(level, entry).map_err(iso)?;
        } else if !level.isolates() {
            report
                .record(
                    level,
                    ReportEntry::missing(Mechanism::Cgroup, "isolation level none"),
                )
                .map_err(iso)?;
        }
        let root = is_root();
        let plan = namespaces::plan(level, sb.spec.network, root).map_err(iso)?;
        let disk_bytes = sb
            .spec
            .limits
            .max_disk
            .unwrap_or(isolation::root::DEFAULT_DISK_BYTES);
        let switch_ids = (root && level.isolates()).then_some(sb.ids);
        let setup = ChildSetup::new(
            &plan,
            &ChildOptions {
                app_dir: level.isolates().then(|| app_dir.clone()),
                private_tmp: true,
                tmp_size: Some(disk_bytes),
                workdir: Some(work_dir.clone()),
                keep_visible: vec![work_dir.clone(), runner_exe.clone()],
                no_new_privs: true,
                drop_capabilities: level.isolates(),
                root: level.isolates().then(|| RootOptions {
                    mountpoint: sb.dir.join("root"),
                    runner_exe: runner_exe.clone(),
                    app_dir: Some(app_dir.clone()),
                    disk_bytes,
                    owner: switch_ids,
                    proc: true,
                    extra_binds: Vec::new(),
                }),
                switch_ids,
            },
        )
        .map_err(iso)?;
        report
            .record_all(level, setup.report_entries().iter().cloned())
            .map_err(iso)?;
        let rlimits = Rlimits::from_limits(&sb.spec.limits, root);
        report.record(level, rlimits.report_entry()).map_err(iso)?;
        // In a root of its own the runner sees only the fixed in-sandbox paths; otherwise it
        // sees the host's.
        let own_root = setup.own_root();
        sb.own_root.store(own_root.is_some(), Ordering::Release);
        let paths = match own_root {
            Some(r) => SandboxPaths {
                runner_exe: isolation::root::RUNNER.into(),
                app_dir: Some(isolation::root::APP_DIR.into()),
                private_dir: isolation::root::WORK_DIR.into(),
                own_proc: setup.has_own_proc(),
                private_tmp: true,
                network: sb.spec.network,
                own_root: Some(r.read_only_paths().iter().map(PathBuf::from).collect()),
            },
            None => SandboxPaths {
                runner_exe: runner_exe.clone(),
                app_dir: Some(app_dir),
                private_dir: work_dir.clone(),
                own_proc: setup.has_own_proc(),
                private_tmp: setup.has_private_tmp(),
                network: sb.spec.network,
                own_root: None,
            },
        };
        let restrictions = RunnerRestrictions::for_level(
            level,
            LandlockPlan::for_sandbox(&paths),
            sb.spec.network,
        )
        .map_err(iso)?;
        let (runner_exe, work_dir) = if own_root.is_some() {
            (
                PathBuf::from(isolation::root::RUNNER),
                PathBuf::from(isolation::root::WORK_DIR),
            )
        } else {
            (runner_exe, work_dir)
        };
        let request = SpawnRequest {
            runner_exe,
            work_dir,
            log_path: sb.dir.join("runner.log"),
            cgroup: sb
                .cgroup()
                .map(|cg| cg.open_entry())
                .transpose()
                .map_err(|e| SandboxError::Isolation(format!("open the sandbox's cgroup: {e}")))?,
            setup,
            rlimits,
        };
        Ok((request, restrictions, report))
    }

    /// Lists sandboxes, sorted by id.
    pub async fn list(&self) -> Vec<SandboxSummary> {
        let all: Vec<Arc<Sandbox>> = self
            .inner
            .sandboxes
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        let mut out = Vec::with_capacity(all.len());
        for sb in all {
            let pid = sb.live.read().await.as_ref().map_or(0, |l| l.process.pid());
            let (status, reason) = sb.status.lock().unwrap().clone();
            out.push(SandboxSummary {
                id: sb.id.clone(),
                status,
                pid,
                app_version: sb.current.load(Ordering::Acquire),
                reason,
            });
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out
    }

    /// Describes one sandbox.
    pub async fn info(&self, id: &str) -> Result<SandboxInfo, SandboxError> {
        let sb = self.get(id)?;
        let live = sb.live.read().await.clone();
        let record = sb.current_record();
        let (status, crash_reason) = sb.status.lock().unwrap().clone();
        Ok(SandboxInfo {
            id: sb.id.clone(),
            status,
            crash_reason,
            pid: live.as_ref().map_or(0, |l| l.process.pid()),
            app_pid: live.as_ref().map_or(0, |l| l.app_pid),
            created_at: rfc3339(sb.created_at),
            restart_count: sb.restart_count.load(Ordering::Acquire),
            app: AppInfo {
                name: live
                    .as_ref()
                    .map(|l| l.app_name.clone())
                    .unwrap_or_default(),
                path: record.as_ref().map(|r| r.path.clone()).unwrap_or_default(),
                version: record.as_ref().map_or(0, |r| r.version),
                app_version: record
                    .as_ref()
                    .map(|r| r.app_version.clone())
                    .unwrap_or_default(),
                sha256: record
                    .as_ref()
                    .map(|r| r.sha256.clone())
                    .unwrap_or_default(),
                claimed_by_app: app_claims(),
            },
            versions: sb.versions.lock().unwrap().clone(),
            limits: sb.spec.limits.clone(),
            isolation: sb.isolation.lock().unwrap().clone(),
            dir: sb.dir.clone(),
            startup: *sb.startup.lock().unwrap(),
            warnings: sb.warnings.lock().unwrap().clone(),
        })
    }

    /// Calls an app function with JSON arguments.
    pub async fn run(
        &self,
        id: &str,
        function: &str,
        args: serde_json::Value,
        timeout: Option<Duration>,
    ) -> Result<serde_json::Value, SandboxError> {
        let sb = self.get(id)?;
        let live = sb.live().await?;
        let timeout = timeout.unwrap_or(self.inner.config.call_timeout);
        let request = Request::Call {
            function: function.to_string(),
            args: args.to_string(),
        };
        match live.data.request(request, timeout).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => Err(match err.kind {
                ErrorKind::Panicked => SandboxError::AppPanicked(err.message),
                ErrorKind::UnknownFunction => SandboxError::UnknownFunction(err.message),
                ErrorKind::Crashed => crashed(&sb.id, err.message, None),
                _ => SandboxError::AppError(err.message),
            }),
            Err(ConnError::Timeout) => Err(SandboxError::Timeout {
                op: format!("call {function}"),
                ms: timeout.as_millis() as u64,
            }),
            Err(ConnError::Closed) => Err(death_of(&sb.id, &live).await),
        }
    }

    /// Reloads a new version into a running sandbox.
    pub async fn reload(
        &self,
        id: &str,
        source: ReloadSource,
    ) -> Result<ReloadReport, SandboxError> {
        let sb = self.get(id)?;
        let compiler = &self.inner.config.compiler;
        let (lib, compile_ms) = match source {
            ReloadSource::Library(path) => (path, None),
            ReloadSource::Crate(dir) => {
                let built = compiler.build(&dir).await?;
                (built.lib, Some(built.compile_ms))
            }
            ReloadSource::Source { lib_rs, crate_dir } => {
                let dir = match (crate_dir, &sb.spec.app) {
                    (Some(dir), _) => dir,
                    (None, AppSource::Crate(dir)) => dir.clone(),
                    (None, AppSource::Library(_)) => {
                        return Err(SandboxError::ReloadRefused(
                            "a source reload needs a crate: this sandbox was created from a library".into(),
                        ));
                    }
                };
                let built = compiler.build_source(&dir, &lib_rs).await?;
                (built.lib, Some(built.compile_ms))
            }
        };
        let _swap = sb.swap_lock.lock().await;
        let live = sb.live().await?;
        let current = sb.current_record();
        let from = current.as_ref().map_or(0, |r| r.version);
        let lib = library::read(&lib)?;
        if current.as_ref().is_some_and(|r| r.sha256 == lib.sha256) {
            return Ok(ReloadReport {
                status: "no_change".into(),
                from_version: from,
                to_version: from,
                load_us: 0,
                compile_ms,
            });
        }
        let next = sb
            .versions
            .lock()
            .unwrap()
            .iter()
            .map(|v| v.version)
            .max()
            .unwrap_or(0)
            + 1;
        let mut record = install_version(&sb, &lib, next)?;
        let from = sb.current.load(Ordering::Acquire);
        match self.swap(&sb, &live, &record).await {
            Ok(done) => {
                record.app_version = done.app_version.clone();
                sb.versions.lock().unwrap().push(record);
                sb.current.store(next, Ordering::Release);
                // The versions are the host's own numbers, not what the app process answered.
                Ok(ReloadReport {
                    status: "reloaded".into(),
                    from_version: from,
                    to_version: next,
                    load_us: done.load_us,
                    compile_ms,
                })
            }
            Err(e) => {
                let _ = std::fs::remove_file(&record.path);
                library::release(&sb.lib_store(), &record.sha256);
                Err(e)
            }
        }
    }

    async fn swap(
        &self,
        sb: &Sandbox,
        live: &Live,
        record: &VersionRecord,
    ) -> Result<Reloaded, SandboxError> {
        let timeout = self.inner.config.reload_timeout;
        let request = Request::Reload {
            lib: sb.lib_for_runner(record),
            version: record.version,
            timeout_ms: timeout.as_millis() as u64,
        };
        match live
            .data
            .request(request, timeout + Duration::from_secs(1))
            .await
        {
            Ok(Ok(value)) => {
                let done: Reloaded = serde_json::from_value(value)
                    .map_err(|e| SandboxError::Protocol(e.to_string()))?;
                // Workers move to the new version: init's job, told on the control plane.
                // Not awaited: restarting them (an exec each) is on no reload's clock.
                let _ = live
                    .control
                    .send(Request::SetVersion {
                        lib: sb.lib_for_runner(record),
                        version: record.version,
                    })
                    .await;
                Ok(done)
            }
            Ok(Err(err)) => Err(SandboxError::ReloadRefused(err.message)),
            Err(ConnError::Timeout) => {
                // The app process may still swap after we gave up (it refuses past its own
                // deadline, but its answer can be late): then no one knows which version
                // serves. Restart it on the version the host records, which is the old one.
                tracing::warn!(sandbox = %sb.id, "reload timed out; restarting on the old version");
                kill_tree(&live.process);
                Err(SandboxError::Timeout {
                    op: "reload".into(),
                    ms: timeout.as_millis() as u64,
                })
            }
            Err(ConnError::Closed) => Err(death_of(&sb.id, live).await),
        }
    }

    /// Returns to an earlier version from the sandbox's history.
    pub async fn rollback(&self, id: &str, version: u32) -> Result<ReloadReport, SandboxError> {
        let sb = self.get(id)?;
        let _swap = sb.swap_lock.lock().await;
        let record = sb
            .versions
            .lock()
            .unwrap()
            .iter()
            .find(|v| v.version == version)
            .cloned()
            .ok_or_else(|| SandboxError::NoSuchVersion {
                id: id.to_string(),
                version,
            })?;
        let from = sb.current.load(Ordering::Acquire);
        if from == version {
            return Ok(ReloadReport {
                status: "no_change".into(),
                from_version: from,
                to_version: from,
                load_us: 0,
                compile_ms: None,
            });
        }
        let live = sb.live().await?;
        let done = self.swap(&sb, &live, &record).await?;
        sb.current.store(version, Ordering::Release);
        Ok(ReloadReport {
            status: "reloaded".into(),
            from_version: from,
            to_version: version,
            load_us: done.load_us,
            compile_ms: None,
        })
    }

    /// Measures a sandbox's usage from `/proc`.
    pub async fn usage(&self, id: &str) -> Result<Usage, SandboxError> {
        let sb = self.get(id)?;
        let live = sb.live().await?;
        let pid = live.process.pid();
        let app_dir = if sb.own_root.load(Ordering::Acquire) {
            PathBuf::from(isolation::root::APP_DIR)
        } else {
            sb.app_dir()
        };
        let cgroup = sb.cgroup();
        let own_root = sb.own_root.load(Ordering::Acquire);
        // Through the app process's root: init is not dumpable, so a non-root host may not
        // look into its /proc files.
        let app_pid = live.app_pid;
        let sample = tokio::task::spawn_blocking(move || {
            let disk = own_root
                .then(|| procfs::disk_usage(app_pid, isolation::root::WORK_DIR))
                .flatten();
            sample(pid, app_pid, cgroup.as_deref(), &app_dir).map(|s| (s, disk))
        })
        .await
        .map_err(|e| SandboxError::Protocol(format!("usage task: {e}")))?;
        let Some((sample, disk)) = sample else {
            return Err(death_of(&sb.id, &live).await);
        };
        let cpu_time_ms = sample.cpu_time_ms;
        let now = Instant::now();
        let cpu_percent = {
            let mut prev = sb.cpu_prev.lock().unwrap();
            let (since, before) = prev.unwrap_or((sb.created, 0));
            *prev = Some((now, cpu_time_ms));
            let wall_ms = now.duration_since(since).as_secs_f64() * 1000.0;
            if wall_ms > 0.0 {
                (cpu_time_ms.saturating_sub(before) as f64 / wall_ms * 100.0 * 10.0).round() / 10.0
            } else {
                0.0
            }
        };
        Ok(Usage {
            sandbox_id: sb.id.clone(),
            pid,
            processes: sample.processes,
            threads: sample.threads,
            memory_bytes: sample.memory_bytes,
            memory_peak_bytes: sample.memory_peak_bytes,
            oom_kills: sample.oom_kills,
            cpu_time_ms,
            cpu_percent,
            open_fds: sample.open_fds,
            uptime_ms: sb.created.elapsed().as_millis() as u64,
            restart_count: sb.restart_count.load(Ordering::Acquire),
            worker_restarts: sb.worker_restarts.load(Ordering::Acquire),
            app_version: sb.current.load(Ordering::Acquire),
            mapped_app_copies: sample.mapped_copies,
            disk_bytes: disk.map(|d| d.0),
            disk_files: disk.map(|d| d.1),
            source: sample.source.into(),
        })
    }

    /// Lists the sandbox's supervised workers.
    pub async fn workers(&self, id: &str) -> Result<WorkerList, SandboxError> {
        self.worker_request(id, Request::Workers).await
    }

    /// Starts `count` more supervised workers.
    pub async fn spawn_workers(&self, id: &str, count: u32) -> Result<WorkerList, SandboxError> {
        self.worker_request(id, Request::SpawnWorkers { count })
            .await
    }

    async fn worker_request(&self, id: &str, request: Request) -> Result<WorkerList, SandboxError> {
        let sb = self.get(id)?;
        let live = sb.live().await?;
        match live
            .control
            .request(request, self.inner.config.call_timeout)
            .await
        {
            Ok(Ok(value)) => {
                let mut list: WorkerList = serde_json::from_value(value)
                    .map_err(|e| SandboxError::Protocol(e.to_string()))?;
                // The runner sees its own pid namespace; callers get host pids.
                let pid = live.process.pid();
                let map = tokio::task::spawn_blocking(move || procfs::ns_pid_map(pid))
                    .await
                    .unwrap_or_default();
                if !map.is_empty() {
                    for w in &mut list.workers {
                        w.pid = map.get(&w.pid).copied().unwrap_or(0);
                    }
                }
                Ok(list)
            }
            Ok(Err(err)) if err.kind == ErrorKind::Crashed => Err(crashed(id, err.message, None)),
            Ok(Err(err)) => Err(SandboxError::AppError(err.message)),
            Err(ConnError::Timeout) => Err(SandboxError::Timeout {
                op: "workers".into(),
                ms: self.inner.config.call_timeout.as_millis() as u64,
            }),
            Err(ConnError::Closed) => Err(death_of(id, &live).await),
        }
    }

    /// Restarts the sandbox's runner on its current version (state is not carried over).
    pub async fn restart(&self, id: &str) -> Result<SandboxInfo, SandboxError> {
        let sb = self.get(id)?;
        let old = sb.live.write().await.take();
        sb.generation.fetch_add(1, Ordering::AcqRel); // the old runner's watcher stands down
        sb.set_status(Status::Restarting, None);
        if let Some(old) = old {
            stop_runner(Arc::clone(&old.process)).await;
        }
        sb.crashes.lock().unwrap().clear();
        sb.restart_count.fetch_add(1, Ordering::AcqRel);
        let record = sb
            .current_record()
            .ok_or_else(|| SandboxError::Protocol("no current version".into()))?;
        if let Err(e) = self.start_runner(&sb, &record).await {
            // Not `restarting` forever: the sandbox is down until the next explicit restart.
            sb.set_status(Status::Crashed, Some(format!("restart failed: {e}")));
            return Err(e);
        }
        sb.set_status(Status::Running, None);
        self.info(id).await
    }

    /// Destroys a sandbox: kills its whole process tree and removes its directory.
    pub async fn destroy(&self, id: &str) -> Result<(), SandboxError> {
        let sb = self
            .inner
            .sandboxes
            .lock()
            .unwrap()
            .remove(id)
            .ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
        sb.destroying.store(true, Ordering::Release);
        teardown(&sb).await;
        Ok(())
    }

    /// Destroys every sandbox (host shutdown).
    pub async fn destroy_all(&self) {
        let ids: Vec<String> = self
            .inner
            .sandboxes
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        for id in ids {
            let _ = self.destroy(&id).await;
        }
    }
}

/// A child-measured duration in µs, `None` when the child could not report it (0).
fn child_us(ns: &std::sync::atomic::AtomicU64) -> Option<u64> {
    match ns.load(Ordering::Relaxed) {
        0 => None,
        n => Some(n.div_ceil(1000)),
    }
}

/// Kills the sandbox's processes (cgroup first, then the runner's tree), waits until the
/// runner is reaped, removes the cgroup and the directory.
async fn teardown(sb: &Sandbox) {
    let cgroup = sb.cgroup.lock().unwrap().take();
    let mut emptied = false;
    if let Some(cg) = &cgroup {
        let cg = Arc::clone(cg);
        emptied = matches!(
            tokio::task::spawn_blocking(move || cg.kill_all()).await,
            Ok(Ok(()))
        );
    }
    if let Some(live) = sb.live.write().await.take() {
        // An empty cgroup means the runner and everything it started are dead (no process
        // leaves a cgroup on its own): nothing to kill, and no number to kill by, since the
        // runner may be reaped already.
        if !emptied {
            stop_runner(Arc::clone(&live.process)).await;
        }
        let mut exit = live.exit.clone();
        let _ = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some())).await;
    }
    if let Some(cg) = cgroup.and_then(|cg| Arc::try_unwrap(cg).ok()) {
        let _ = tokio::task::spawn_blocking(move || cg.remove()).await;
    }
    let _ = std::fs::remove_dir_all(&sb.dir);
    let store = sb.lib_store();
    let shas: std::collections::HashSet<String> = sb
        .versions
        .lock()
        .unwrap()
        .iter()
        .map(|v| v.sha256.clone())
        .collect();
    for sha in shas {
        library::release(&store, &sha);
    }
}

/// One usage sample, read on a blocking thread.
struct Sample {
    processes: u64,
    threads: u64,
    memory_bytes: u64,
    memory_peak_bytes: Option<u64>,
    oom_kills: Option<u64>,
    cpu_time_ms: u64,
    open_fds: u64,
    mapped_copies: usize,
    source: &'static str,
}

/// Largest sandbox whose open fds are counted process by process; above it only the runner's
/// fds are counted, so one usage read stays cheap for a sandbox of thousands of processes.
const FD_COUNT_LIMIT: usize = 100;

/// Reads usage of the sandbox whose init is `pid` and app process `app_pid` from the
/// cgroup's counters when there is a cgroup (cheap and independent of
/// the number of processes; the cgroup's memory figure, not summed RSS, which counts shared
/// pages once per process), else from one pass over `/proc`.
fn sample(pid: i32, app_pid: i32, cgroup: Option<&Cgroup>, app_dir: &Path) -> Option<Sample> {
    // The app's copies are mapped by the app process (init never loads it).
    let mapped_copies = procfs::mapped_copies(app_pid, app_dir);
    if let Some(u) = cgroup.and_then(|cg| cg.usage().ok())
        && !u.procs.is_empty()
    {
        let open_fds = if u.procs.len() <= FD_COUNT_LIMIT {
            u.procs.iter().map(|&p| procfs::open_fds(p)).sum()
        } else {
            procfs::open_fds(pid)
        };
        let threads = match u.pids {
            Some(tasks) => tasks,
            None => procfs::stats_of(&u.procs).iter().map(|p| p.threads).sum(),
        };
        let memory_bytes = match u.memory_bytes {
            Some(m) => m,
            None => {
                procfs::stats_of(&u.procs)
                    .iter()
                    .map(|p| p.rss_pages)
                    .sum::<u64>()
                    * procfs::page_size()
            }
        };
        return Some(Sample {
            processes: u.procs.len() as u64,
            threads,
            memory_bytes,
            memory_peak_bytes: u.memory_peak_bytes,
            oom_kills: u.oom_kills,
            cpu_time_ms: u.cpu_time_us.map(|us| us / 1000).unwrap_or(0),
            open_fds,
            mapped_copies,
            source: "cgroup",
        });
    }
    let procs = procfs::tree(pid);
    let root = procs.first()?;
    let tick_ms = 1000 / procfs::ticks_per_second().max(1);
    Some(Sample {
        processes: procs.len() as u64,
        threads: procs.iter().map(|p| p.threads).sum(),
        memory_bytes: procs.iter().map(|p| p.rss_pages).sum::<u64>() * procfs::page_size(),
        memory_peak_bytes: None,
        oom_kills: None,
        cpu_time_ms: (procs.iter().map(|p| p.cpu_ticks).sum::<u64>() + root.child_cpu_ticks)
            * tick_ms,
        open_fds: procs
            .iter()
            .take(FD_COUNT_LIMIT)
            .map(|p| procfs::open_fds(p.pid))
            .sum(),
        mapped_copies,
        source: "proc",
    })
}

/// SIGKILLs a runner's whole tree.
async fn stop_runner(runner: Arc<procfs::Process>) {
    let _ = tokio::task::spawn_blocking(move || kill_tree(&runner)).await;
}

/// Kills every process in the tree under the runner, then the runner itself. Repeats while the tree
/// changes, since a process may fork between the scan and the kill; the runner, a subreaper,
/// adopts orphans, so they stay visible.
///
/// Does nothing once the runner has exited: it may have been reaped, and its number may name
/// another process by now. (Without pidfds, on kernels before 5.3, it cannot tell.)
fn kill_tree(runner: &procfs::Process) {
    if runner.exited() {
        return;
    }
    let pid = runner.pid();
    for _ in 0..50 {
        let tree = procfs::tree(pid);
        let others: Vec<i32> = tree
            .iter()
            .skip(1)
            .filter(|p| !p.zombie)
            .map(|p| p.pid)
            .collect();
        if others.is_empty() {
            break;
        }
        let _ = kill(Pid::from_raw(-pid), Signal::SIGKILL);
        for p in others {
            let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
        }
    }
    runner.kill();
}

/// Waits for a runner to exit, records how it died, and restarts it when the death was not
/// asked for.
async fn watch_runner(
    sb: std::sync::Weak<Sandbox>,
    manager: Manager,
    runner: Arc<procfs::Process>,
    generation: u64,
    (closed, data_closed): (oneshot::Receiver<()>, oneshot::Receiver<()>),
    exit: watch::Sender<Option<String>>,
) {
    // Either plane closing ends the runner: init closes the control socket when it exits
    // (after telling how the app process died), and an app process that closes its data
    // socket but lives on can serve no call again, so init gets a moment to report, then the
    // runner is killed and restarted like any that died.
    let mut closed = closed;
    tokio::select! {
        _ = &mut closed => {}
        _ = data_closed => {
            if tokio::time::timeout(Duration::from_millis(300), &mut closed).await.is_err() {
                kill_tree(&runner);
            }
        }
    }
    let pid = runner.pid();
    let how = tokio::task::spawn_blocking(move || {
        // The socket closed: the runner is dead or broken. Give it 200 ms to exit (woken the
        // moment it does, through a pidfd), then make sure, and reap it.
        let deadline = Instant::now() + Duration::from_millis(200);
        loop {
            match waitpid(
                Pid::from_raw(pid),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG),
            ) {
                Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                    runner.wait_exit(deadline.saturating_duration_since(Instant::now()))
                }
                Ok(WaitStatus::StillAlive) => {
                    // Killed; wait for the exit (on the pidfd) before looking again, rather
                    // than walking /proc in a loop.
                    kill_tree(&runner);
                    runner.wait_exit(Duration::from_millis(500));
                }
                Ok(status) => return describe(status),
                Err(e) => return format!("unknown ({e})"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| "unknown".into());
    let sb = sb.upgrade();
    // How the app process died, as init saw it, says more than how init then exited.
    let how = match sb
        .as_deref()
        .and_then(|sb| sb.app_exit.lock().unwrap().take())
    {
        Some(app) => format!("app process {app}"),
        None => how,
    };
    // Killed by its memory limit: say so, from the cgroup's OOM counter.
    let how = match sb.as_deref().and_then(oom_cause) {
        Some(oom) => format!("{oom}, {how}"),
        None => how,
    };
    let _ = exit.send(Some(how.clone()));
    let Some(sb) = sb else { return };
    if sb.destroying.load(Ordering::Acquire) || sb.generation.load(Ordering::Acquire) != generation
    {
        return;
    }
    tracing::warn!(sandbox = %sb.id, pid, %how, "runner died");
    // The runner is reaped: its pid may name another process already, so nothing is killed
    // by number. What it left behind goes with its cgroup; without one, its pid namespace or
    // its workers' PDEATHSIG took them.
    if let Some(cg) = sb.cgroup() {
        let _ = tokio::task::spawn_blocking(move || cg.kill_all()).await;
    }
    sb.live.write().await.take();
    let too_many = {
        let mut crashes = sb.crashes.lock().unwrap();
        let now = Instant::now();
        crashes.push_back(now);
        while crashes.front().is_some_and(|t| now - *t > CRASH_WINDOW) {
            crashes.pop_front();
        }
        crashes.len() > MAX_CRASHES
    };
    if too_many {
        sb.set_status(
            Status::Crashed,
            Some(format!(
                "runner died ({how}); more than {MAX_CRASHES} times in {}s",
                CRASH_WINDOW.as_secs()
            )),
        );
        return;
    }
    sb.set_status(Status::Restarting, Some(how.clone()));
    sb.restart_count.fetch_add(1, Ordering::AcqRel);
    let Some(record) = sb.current_record() else {
        return;
    };
    match manager.start_runner(&sb, &record).await {
        Ok(()) => sb.set_status(Status::Running, None),
        Err(e) => sb.set_status(
            Status::Crashed,
            Some(format!("restart after {how} failed: {e}")),
        ),
    }
}

/// What the host does with a runner's event (in the connection's reader task).
fn handle_event(sb: &Sandbox, event: Event) {
    match event {
        Event::WorkerRestarted {
            index,
            old_pid,
            new_pid,
            reason,
        } => {
            sb.worker_restarts.fetch_add(1, Ordering::AcqRel);
            tracing::info!(sandbox = %sb.id, index, old_pid, new_pid, %reason, "worker restarted");
        }
        Event::Crashed { reason } => {
            tracing::warn!(sandbox = %sb.id, %reason, "sandbox crashed");
            sb.set_status(Status::Crashed, Some(reason));
        }
        Event::AppExited { how } => {
            *sb.app_exit.lock().unwrap() = Some(how);
        }
    }
}

/// `--cgroup-parent` names a delegated cgroup v2 subtree: refuse it, clearly, where the
/// directory (an absolute path, or relative to `/sys/fs/cgroup`) is not on cgroup2.
fn check_cgroup_parent(parent: &Path) -> Result<(), SandboxError> {
    let root = Path::new("/sys/fs/cgroup");
    let dir = if parent.is_absolute() {
        parent.to_path_buf()
    } else {
        root.join(parent)
    };
    let is_v2 = |p: &Path| {
        nix::sys::statfs::statfs(p)
            .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
    };
    // The parent may not exist yet (the cgroup code creates it): judge by the nearest
    // directory that does.
    let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(root);
    if is_v2(existing) {
        return Ok(());
    }
    let why = if is_v2(root) {
        format!(
            "{} is not a directory of the cgroup v2 hierarchy",
            dir.display()
        )
    } else {
        format!(
            "this machine has no cgroup v2 hierarchy at {} (cgroup v1)",
            root.display()
        )
    };
    Err(SandboxError::Isolation(format!(
        "--cgroup-parent {} needs a delegated cgroup v2 subtree: {why}",
        parent.display()
    )))
}

/// `out of memory: limit 1 MiB` when the sandbox's cgroup counted OOM kills since the last
/// look; `None` without a cgroup, without the counter, or without a new kill.
fn oom_cause(sb: &Sandbox) -> Option<String> {
    let kills = sb.cgroup()?.usage().ok()?.oom_kills?;
    let seen = sb.oom_seen.swap(kills, Ordering::AcqRel);
    (kills > seen).then(|| match sb.spec.limits.max_memory {
        Some(limit) => format!(
            "out of memory: limit {}",
            crate::sandbox::spec::format_bytes(limit)
        ),
        None => "out of memory".to_string(),
    })
}

fn describe(status: WaitStatus) -> String {
    match status {
        WaitStatus::Exited(_, ABORT_EXIT) => {
            format!("signal SIGABRT (as pid 1 of its namespace, reported as exit {ABORT_EXIT})")
        }
        WaitStatus::Exited(_, code) => match spawn::describe_early_exit(code) {
            Some(what) => format!("exit {code} ({what})"),
            None => format!("exit {code}"),
        },
        WaitStatus::Signaled(_, sig, core) => format!(
            "signal {}{}",
            sig.as_str(),
            if core { " (core dumped)" } else { "" }
        ),
        other => format!("{other:?}"),
    }
}

fn crashed(id: &str, reason: String, signal: Option<String>) -> SandboxError {
    SandboxError::Crashed {
        id: id.to_string(),
        reason,
        signal,
    }
}

/// The error for a request whose runner died: waits briefly for the exit status.
async fn death_of(id: &str, live: &Live) -> SandboxError {
    let mut exit = live.exit.clone();
    let how = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some()))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|v| v.clone()))
        .unwrap_or_else(|| "runner closed its socket".into());
    let signal = how
        .split_once("signal ")
        .map(|(_, s)| s.split([' ', ',']).next().unwrap_or(s).to_string());
    crashed(id, format!("runner died: {how}"), signal)
}

/// Copies `lib` to the sandbox's private `app/` directory as version `version`.
fn install_version(
    sb: &Sandbox,
    lib: &LibBytes,
    version: u32,
) -> Result<VersionRecord, SandboxError> {
    Ok(VersionRecord {
        version,
        path: library::install(
            &sb.lib_store(),
            &sb.app_dir(),
            lib,
            version,
            sb.spec.isolation.isolates(),
        )?,
        sha256: lib.sha256.clone(),
        app_version: String::new(),
        loaded_at: unix_now(),
    })
}

fn nonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{}-{n}", std::process::id())
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Formats a time as RFC 3339 UTC (seconds precision) without a date library.
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_651_200 + 3661);
        assert_eq!(rfc3339(t), "2026-11-26T01:01:01Z");
    }
}
