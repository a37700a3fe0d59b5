//! The public shapes of the lifecycle API: status, versions, info, timings, usage, reports.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::spec::Limits;

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
    /// Each limit that applies (asked for, or the capped disk's default) and what enforces
    /// it, or why nothing does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limit_states: Vec<crate::limits::LimitState>,
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
    /// The sandbox's log (its app's and workers' stdout and stderr) and what was dropped to keep it
    /// within [`LOG_BOUND_BYTES`].
    #[serde(default)]
    pub log: LogInfo,
}

/// The most one log file of a sandbox holds: a runner's init copies the app's output into
/// `runner.log` only while the file is below this, and the host moves a file past half of it
/// to `runner.log.1` before the next runner starts.
pub const LOG_FILE_BYTES: u64 = 4 << 20;

/// The most a sandbox's log holds on disk, over every runner it has had: `runner.log` and
/// `runner.log.1`, [`LOG_FILE_BYTES`] each.
pub const LOG_BOUND_BYTES: u64 = 2 * LOG_FILE_BYTES;

/// A sandbox's log: one path for the sandbox's life, whichever runners (spawned or prepared)
/// wrote it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogInfo {
    /// The current runner's log (`<dir>/runner.log`); the one before it, when kept, is
    /// beside it as `runner.log.1`.
    pub path: PathBuf,
    /// Bytes on disk now, in both files.
    pub kept_bytes: u64,
    /// Bytes of earlier runners' log the host deleted to stay within `bound_bytes`, over the
    /// sandbox's life. Output a runner did not copy (over its rate, or past the file's size)
    /// is not counted here: the log says it in a `[sandbox]` line.
    pub dropped_bytes: u64,
    /// The most the log holds on disk ([`LOG_BOUND_BYTES`]).
    pub bound_bytes: u64,
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
    /// Whether the runner came prepared from the pool: then the phases above were spent
    /// before the create, and only `assign_us`, `install_us`, `cgroup_us` and the load were
    /// on its clock.
    #[serde(default)]
    pub pooled: bool,
    /// A prepared runner: moving it into the cgroup, its rlimits, its version.
    #[serde(default)]
    pub assign_us: Option<u64>,
    /// Reading what the kernel shows of both processes and checking the report against it.
    #[serde(default)]
    pub check_us: u64,
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

/// The fields of [`AppInfo`] that are only the app's own word.
pub fn app_claims() -> Vec<String> {
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
