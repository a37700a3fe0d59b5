//! What the manager keeps per sandbox: its record (spec, versions, status, counters) and its
//! live runner (the two planes' connections).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use isolation::{Cgroup, ReportEntry};
use proto::info::{StartupTimings, Status, VersionRecord};
use proto::spec::SandboxSpec;
use tokio::sync::watch;

use crate::connection::Connection;
use crate::error::SandboxError;
use crate::events::{EventBus, EventKind};
use crate::{library, procfs};

/// The running runner of a sandbox.
#[derive(Debug)]
pub(super) struct Live {
    /// The runner, opened while it could not have been reaped: its pid number is reused once
    /// it is (pid_max can be as low as 32768).
    pub(super) process: Arc<procfs::Process>,
    /// Init's control socket: status, workers, versions.
    pub(super) control: Connection,
    /// The app process's data socket: calls and reloads.
    pub(super) data: Connection,
    /// The app process's host pid (0 if it could not be found).
    pub(super) app_pid: i32,
    /// The app's name, its own word.
    pub(super) app_name: String,
    /// Filled with a description of how the runner died.
    pub(super) exit: watch::Receiver<Option<super::Exit>>,
}

#[derive(Debug)]
pub(super) struct Sandbox {
    pub(super) id: String,
    pub(super) spec: SandboxSpec,
    pub(super) dir: PathBuf,
    pub(super) created_at: SystemTime,
    pub(super) created: Instant,
    pub(super) live: tokio::sync::RwLock<Option<Arc<Live>>>,
    pub(super) versions: Mutex<Vec<VersionRecord>>,
    pub(super) current: AtomicU32,
    pub(super) status: Mutex<(Status, Option<String>)>,
    pub(super) restart_count: AtomicU32,
    pub(super) worker_restarts: AtomicU32,
    /// Calls answered since the sandbox was made, and of those the ones that failed (the
    /// app's error, a panic, a timeout, the runner gone): the host's own count, which a
    /// canary compares before and after a reload.
    pub(super) calls: AtomicU64,
    pub(super) calls_failed: AtomicU64,
    pub(super) generation: AtomicU64,
    pub(super) crashes: Mutex<VecDeque<Instant>>,
    pub(super) destroying: AtomicBool,
    pub(super) cpu_prev: Mutex<Option<(Instant, u64)>>,
    /// Serialises reloads and rollbacks: each picks the next version number and compares
    /// against the current one, which two concurrent swaps would otherwise both read.
    pub(super) swap_lock: tokio::sync::Mutex<()>,
    pub(super) isolation: Mutex<serde_json::Value>,
    pub(super) startup: Mutex<StartupTimings>,
    /// The sandbox's cgroup, shared by every runner it has had.
    pub(super) cgroup: Mutex<Option<Arc<Cgroup>>>,
    /// The uid and gid its processes run as when the host is root.
    pub(super) ids: (u32, u32),
    /// The lease of its uid (none for `--uid`, or on a non-root host): returned when the
    /// record goes, after its processes are dead.
    pub(super) _uid_lease: Option<crate::uids::Leased>,
    /// Whether the current runner lives in a root of its own (then it names its library by
    /// the fixed in-sandbox path, not the host's).
    pub(super) own_root: AtomicBool,
    /// Whether the current runner is the init of a pid namespace of its own.
    pub(super) pid_ns: AtomicBool,
    /// How the current runner's app process exited, as its init reported.
    pub(super) app_exit: Mutex<Option<String>>,
    /// How the cgroup was (or was not) made, for the isolation report.
    pub(super) cgroup_entry: Mutex<Option<ReportEntry>>,
    /// Requested limits nothing enforces, one line each (see [`SandboxInfo::warnings`]).
    pub(super) warnings: Mutex<Vec<String>>,
    /// The cgroup's OOM kill count when last looked at (see [`oom_cause`]).
    pub(super) oom_seen: AtomicU64,
    /// The cgroup's count of forks refused at `pids.max` when last looked at (see
    /// [`process_limit_note`](super::supervision::process_limit_note)).
    pub(super) pids_refusals_seen: AtomicU64,
    /// The manager's event stream.
    pub(super) events: EventBus,
    /// Its log's rotation and where the current runner's output starts in it.
    pub(super) log: crate::log::SandboxLog,
    /// Whether an automatic restart is in flight: a destroy that overtakes one waits (in the
    /// background, as part of what [`Manager::settled`] waits for) until it has ended and
    /// cleaned up after itself.
    pub(super) restarting: tokio::sync::watch::Sender<bool>,
}

/// Marks a sandbox's automatic restart as in flight until dropped (also on cancellation).
pub(super) struct RestartInFlight<'a>(&'a Sandbox);

impl<'a> RestartInFlight<'a> {
    /// Marks `sb`'s restart as in flight.
    pub(super) fn enter(sb: &'a Sandbox) -> RestartInFlight<'a> {
        sb.restarting.send_replace(true);
        RestartInFlight(sb)
    }
}

impl Drop for RestartInFlight<'_> {
    fn drop(&mut self) {
        self.0.restarting.send_replace(false);
    }
}

impl Sandbox {
    pub(super) fn cgroup(&self) -> Option<Arc<Cgroup>> {
        self.cgroup.lock().unwrap().clone()
    }

    pub(super) fn app_dir(&self) -> PathBuf {
        self.dir.join("app")
    }

    /// The path by which the runner opens `record`'s library.
    pub(super) fn lib_for_runner(&self, record: &VersionRecord) -> PathBuf {
        match record.path.file_name() {
            Some(name) if self.own_root.load(Ordering::Acquire) => {
                Path::new(isolation::root::APP_DIR).join(name)
            }
            _ => record.path.clone(),
        }
    }

    /// Tells init (on `control`) that workers start on `record`'s library from now on; it
    /// moves the running ones itself. Not awaited beyond the send: restarting workers (an
    /// exec each) is on no create's or reload's clock.
    pub(super) async fn move_workers_to(&self, control: &Connection, record: &VersionRecord) {
        let _ = control
            .send(proto::runner::Request::SetVersion {
                lib: self.lib_for_runner(record),
                version: record.version,
            })
            .await;
    }

    /// The host's store of libraries this sandbox links into, beside the sandboxes'
    /// directories: the shared one, or at level `none` the store of `none` sandboxes.
    pub(super) fn lib_store(&self) -> PathBuf {
        let state_dir = self.dir.parent().unwrap_or(Path::new("/"));
        match self.spec.isolation.isolates() {
            true => library::store_of(state_dir),
            false => library::none_store_of(state_dir),
        }
    }

    pub(super) fn current_record(&self) -> Option<VersionRecord> {
        let current = self.current.load(Ordering::Acquire);
        self.versions
            .lock()
            .unwrap()
            .iter()
            .find(|v| v.version == current)
            .cloned()
    }

    /// Reports an event about this sandbox.
    pub(super) fn emit(&self, kind: EventKind) {
        self.events.sandbox(&self.id, kind);
    }

    pub(super) fn set_status(&self, status: Status, reason: Option<String>) {
        *self.status.lock().unwrap() = (status, reason);
    }

    pub(super) async fn live(&self) -> Result<Arc<Live>, SandboxError> {
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
