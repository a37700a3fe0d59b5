//! The lifecycle API: create, list, info, run, reload, rollback, usage, workers, restart,
//! destroy. Async (tokio); every sandbox is an init (control plane) and an app process (data
//! plane), each reached over a socketpair of its own.
//!
//! By responsibility: `proto::info` (the public shapes), `config` (where and how), `record`
//! (what is kept per sandbox), this file (the manager and the calls that need no more),
//! `start` (directories, library, cgroup, spawn, the kernel-checked report), `boot` (a
//! runner up to ready), `pool` (prepared runners), `reload` (hot reload and rollback),
//! `usage` (measurement), `supervision` (deaths, restarts, events) and `teardown`.
//!
//! A runner that dies unexpectedly (a call segfaulted, the OOM killer) fails the calls in
//! flight with `Crashed` and the signal, and is restarted on its current version. More than
//! [`MAX_CRASHES`] deaths within [`CRASH_WINDOW`] leave the sandbox `crashed` until an
//! explicit `restart`.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::{oneshot, watch};

use crate::connection::{ConnError, Connection};
use crate::error::SandboxError;
use crate::events::{EventBus, EventKind};
use crate::kernel_view::KernelView;
use crate::library::{self, LibBytes, Libraries};
use crate::procfs;
use isolation::landlock::SandboxPaths;
use isolation::namespaces::{self, ChildOptions, ChildSetup};
use isolation::root::RootOptions;
use isolation::{
    Cgroup, LandlockPlan, Mechanism, Report, ReportEntry, Rlimits, RunnerRestrictions, is_root,
};
use proto::runner::{ErrorKind, Event, InitReady, Loaded, Reloaded, Request, WorkerList};

use crate::spawn::{self, SpawnRequest, Spawner};
use crate::uids::{Leased, Uids};
use proto::runner::ABORT_EXIT;
mod batch;
mod boot;
mod canary;
mod canary_batch;
mod config;
mod describe;
mod kernel_stats;
mod limit_states;
mod logs;
mod pool;
mod record;
mod reload;
mod start;
mod supervision;
mod teardown;
mod usage;
mod workers;

pub use self::batch::{BatchItem, BatchOptions, Progress, default_concurrency};
use self::boot::*;
pub use self::canary::{CanaryFigures, CanaryOptions, CanaryReport, MAX_CANARY_WINDOW};
pub use self::config::{ManagerConfig, default_state_dir};
pub use self::kernel_stats::{CgroupStats, CpuThrottling, Pressure, PressureReading};
pub use self::logs::LogPlace;
use self::pool::*;
pub use self::pool::{PoolStats, default_pool_size, pool_size_from_env};
use self::record::{Live, RestartInFlight, Sandbox};
use self::start::*;
use self::supervision::*;
use self::teardown::*;
pub use self::usage::Gauges;
pub use proto::info::*;
use proto::spec::{AppSource, Limits, ReloadSource, SandboxSpec, valid_id};

/// Runner deaths tolerated within [`CRASH_WINDOW`] before a sandbox stays crashed.
pub const MAX_CRASHES: usize = 3;
/// Window of the crash intensity.
pub const CRASH_WINDOW: Duration = Duration::from_secs(5);
/// Most initial workers an app may ask for (its table's word).
const MAX_INITIAL_WORKERS: u32 = 256;
/// What `info` says of every sandbox of a non-root host: its processes run as the host's
/// user, so the kernel's per-user limits are the user's, shared with its other sandboxes.
pub const SHARED_UID_WARNING: &str = "runs as the daemon's own user (a non-root host cannot \
     give it a uid of its own): per-user kernel limits (inotify, user namespaces, message \
     queues, RLIMIT_NPROC, keyrings) are shared with the user's other processes and sandboxes; \
     run the daemon as root to give each sandbox its own";

/// First uid (and gid) of the range a root host runs its sandboxes as: each sandbox gets one
/// of its own, unique on the machine (see [`crate::uids`]), so no two sandboxes share
/// per-user kernel limits, and none is the host's root.
pub const SANDBOX_ID_BASE: u32 = crate::uids::FIRST;

/// Owns every sandbox of this host.
#[derive(Debug, Clone)]
pub struct Manager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ManagerConfig,
    sandboxes: Mutex<HashMap<String, Arc<Sandbox>>>,
    /// Where sandbox uids come from: leases unique on the machine (root), else a counter
    /// (a non-root host runs every sandbox as itself; the number is never switched to).
    uids: Option<Uids>,
    /// The counter of a non-root host.
    next_ids: AtomicU32,
    /// What destroyed sandboxes left to remove (cgroups, directories), still being removed.
    cleanups: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Prepared runners.
    pool: Pool,
    /// The size cap and hash cache of the libraries this manager loads.
    libraries: Libraries,
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
                sandboxes: Mutex::new(HashMap::new()),
                uids: config.uid_leases.clone().map(Uids::new),
                next_ids: AtomicU32::new(0),
                cleanups: Mutex::new(Vec::new()),
                pool: Pool::default(),
                libraries: Libraries::new(config.max_lib_size),
                config,
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ManagerConfig {
        &self.inner.config
    }

    /// The libraries' size cap and hash cache (a daemon copies clients' libraries under the
    /// same cap).
    pub fn libraries(&self) -> &Libraries {
        &self.inner.libraries
    }

    /// The next uid (and gid) of the sandbox id range.
    /// A uid for a new sandbox or prepared runner, and the lease that holds it (dropped with
    /// the sandbox's record, once its processes are dead).
    fn take_uid(&self) -> Result<(u32, Option<Leased>), SandboxError> {
        match &self.inner.uids {
            Some(uids) => {
                let lease = uids.take()?;
                Ok((lease.uid(), Some(lease)))
            }
            None => {
                let n = self.inner.next_ids.fetch_add(1, Ordering::Relaxed);
                Ok((SANDBOX_ID_BASE + n % crate::uids::SPAN, None))
            }
        }
    }

    /// The stream of what happens to this manager's sandboxes.
    pub fn events(&self) -> &EventBus {
        &self.inner.config.events
    }

    /// The ids of every sandbox, sorted.
    pub fn ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .inner
            .sandboxes
            .lock()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        ids.sort();
        ids
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
        self.create_built(id, spec, None).await
    }

    /// [`Manager::create`], with the library of a crate source built already (a batch builds
    /// once for many sandboxes).
    pub(super) async fn create_built(
        &self,
        id: &str,
        spec: SandboxSpec,
        built: Option<PathBuf>,
    ) -> Result<SandboxInfo, SandboxError> {
        if !valid_id(id) {
            return Err(SandboxError::InvalidId(id.to_string()));
        }
        proto::spec::check_limits(&spec.limits)?;
        check_hard_limits(&spec)?;
        proto::tenant::check(&spec.env, spec.config.as_deref(), &spec.files)?;
        if !spec.files.is_empty() && !spec.isolation.isolates() {
            return Err(proto::tenant::TenantError::FilesWithoutRoot.into());
        }
        if let Some(parent) = &spec.cgroup_parent
            && spec.isolation.isolates()
        {
            check_cgroup_parent(parent)?;
        }
        if self.inner.sandboxes.lock().unwrap().contains_key(id) {
            return Err(SandboxError::AlreadyExists(id.to_string()));
        }
        // A destroyed sandbox's kept log is not this one's.
        self.purge_log(id);
        let _creating = Creating::enter(&self.inner.pool.creating);
        let mut prepared = self.take_prepared(&spec);
        let (dir, ids, uid_lease) = match &mut prepared {
            Some(p) => (p.dir.clone(), p.ids, p.uid_lease.take()),
            None => {
                let dir = self
                    .inner
                    .config
                    .state_dir
                    .join(format!("{id}.{}", nonce()));
                let (uid, lease) = match spec.uid {
                    Some(uid) => (uid, None),
                    None => self.take_uid()?,
                };
                (dir, (uid, spec.gid.unwrap_or(uid)), lease)
            }
        };
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
            calls: AtomicU64::new(0),
            calls_failed: AtomicU64::new(0),
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
            _uid_lease: uid_lease,
            own_root: AtomicBool::new(false),
            pid_ns: AtomicBool::new(false),
            app_exit: Mutex::new(None),
            oom_seen: AtomicU64::new(0),
            pids_refusals_seen: AtomicU64::new(0),
            warnings: Mutex::new(Vec::new()),
            events: self.inner.config.events.clone(),
            log: Default::default(),
            restarting: tokio::sync::watch::Sender::new(false),
        });
        {
            // Reserve the id before the slow part, so two creates of one id cannot both win.
            let mut map = self.inner.sandboxes.lock().unwrap();
            if map.contains_key(id) {
                return Err(SandboxError::AlreadyExists(id.to_string()));
            }
            map.insert(id.to_string(), Arc::clone(&sandbox));
        }
        let started = Instant::now();
        let result = self.start_new(&sandbox, prepared, built).await;
        self.refill_pool();
        match result {
            Ok(()) => {
                let info = self.info(id).await?;
                sandbox.emit(EventKind::SandboxCreated {
                    pid: info.pid,
                    version: info.app.version,
                    isolation: sandbox.spec.isolation.to_string(),
                    ready_us: micros(started),
                });
                Ok(info)
            }
            Err(e) => {
                self.inner.sandboxes.lock().unwrap().remove(id);
                sandbox.destroying.store(true, Ordering::Release);
                kill_processes(&sandbox).await;
                let _ = cleanup(&sandbox).await;
                Err(e)
            }
        }
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
        let result = self.call_on(&sb, &live, function, request, timeout).await;
        sb.calls.fetch_add(1, Ordering::Relaxed);
        if result.is_err() {
            sb.calls_failed.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// One call's round trip on `live`'s data plane, its answer typed.
    async fn call_on(
        &self,
        sb: &Sandbox,
        live: &Live,
        function: &str,
        request: Request,
        timeout: Duration,
    ) -> Result<serde_json::Value, SandboxError> {
        match live.data.request(request, timeout).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(err)) => {
                // The app's words say `Resource temporarily unavailable` at best; the kernel's
                // counter says whether the process limit was why.
                let message = match supervision::process_limit_note(sb) {
                    Some(note) => format!("{} [{note}]", err.message),
                    None => err.message,
                };
                Err(match err.kind {
                    ErrorKind::Panicked => SandboxError::AppPanicked(message),
                    ErrorKind::UnknownFunction => SandboxError::UnknownFunction(message),
                    // Only init reports crashes, on the control plane; on the data plane a
                    // `crashed` answer is the app's own word about its call, so it is an
                    // error of that call, never a crash (a crash is an exit the host
                    // observes).
                    _ => SandboxError::AppError(message),
                })
            }
            Err(ConnError::Timeout) => Err(SandboxError::Timeout {
                op: format!("call {function}"),
                ms: timeout.as_millis() as u64,
            }),
            Err(ConnError::Closed) => Err(death_of(&sb.id, live).await),
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
            // Reaped before the next runner measures its share of the log they both write.
            let mut exit = old.exit.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some())).await;
        }
        sb.crashes.lock().unwrap().clear();
        sb.restart_count.fetch_add(1, Ordering::AcqRel);
        let record = sb
            .current_record()
            .ok_or_else(|| SandboxError::Protocol("no current version".into()))?;
        if let Err(e) = self.start_runner(&sb, &record).await {
            // Not `restarting` forever: the sandbox is down until the next explicit restart.
            // The failed runner's watcher stands down (the generation moves on): its death is
            // this failure, not another crash to restart from.
            sb.generation.fetch_add(1, Ordering::AcqRel);
            sb.set_status(Status::Crashed, Some(format!("restart failed: {e}")));
            return Err(e);
        }
        sb.set_status(Status::Running, None);
        let info = self.info(id).await?;
        sb.emit(EventKind::SandboxRestarted {
            pid: info.pid,
            after: "request".into(),
        });
        Ok(info)
    }

    /// Destroys a sandbox: returns once every process of it is dead; its cgroup and its
    /// directory are removed in the background (see [`Manager::settled`]; a daemon that dies
    /// before that finishes leaves them to the next one's sweep).
    pub async fn destroy(&self, id: &str) -> Result<(), SandboxError> {
        let sb = self
            .inner
            .sandboxes
            .lock()
            .unwrap()
            .remove(id)
            .ok_or_else(|| SandboxError::NotFound(id.to_string()))?;
        sb.destroying.store(true, Ordering::Release);
        kill_processes(&sb).await;
        self.keep_log(&sb);
        sb.emit(EventKind::SandboxDestroyed {});
        let handle = cleanup(&sb);
        let mut cleanups = self.inner.cleanups.lock().unwrap();
        cleanups.retain(|h| !h.is_finished());
        cleanups.push(handle);
        // An automatic restart in flight ends on its own (it sees the destroy) and cleans up
        // after itself, possibly after the cleanup above (its runner may create the log after
        // that walk): `settled` waits for it too. Either it marked itself before this look,
        // or it checks `destroying` after marking and gives up.
        if *sb.restarting.borrow() {
            let mut restart = sb.restarting.subscribe();
            cleanups.push(tokio::spawn(async move {
                let _ = restart.wait_for(|in_flight| !in_flight).await;
            }));
        }
        Ok(())
    }

    /// Waits until what destroyed sandboxes left (cgroups, directories, library links) is
    /// removed.
    pub async fn settled(&self) {
        loop {
            let handles = std::mem::take(&mut *self.inner.cleanups.lock().unwrap());
            if handles.is_empty() {
                return;
            }
            for handle in handles {
                let _ = handle.await;
            }
        }
    }

    /// Destroys every sandbox and every prepared runner (host shutdown).
    pub async fn destroy_all(&self) {
        self.close_pool().await;
        for id in self.ids() {
            let _ = self.destroy(&id).await;
        }
        self.settled().await;
    }
}

/// Refuses rlimits above this process's hard limits: a sandbox is never given less than it
/// asked for in silence (a prepared runner, and a spawned child past its id switch, can be
/// given at most what the host holds).
fn check_hard_limits(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let rlimits = Rlimits::from_limits(&spec.limits, is_root());
    let Some(c) = rlimits.clamped().first() else {
        return Ok(());
    };
    let flag = match c.resource {
        "nofile" => "--max-open-files",
        "as" => "--address-space",
        "fsize" => "--max-file-size",
        "cpu" => "--cpu-seconds",
        "nproc" => "--max-processes",
        _ => "a limit",
    };
    Err(proto::spec::LimitError::AboveHardLimit {
        flag,
        resource: c.resource.to_uppercase(),
        asked: c.asked,
        hard: c.hard,
    }
    .into())
}

/// Copies `lib` to the sandbox's private `app/` directory as version `version`.
fn install_version(
    libs: &Libraries,
    sb: &Sandbox,
    lib: &LibBytes,
    version: u32,
) -> Result<VersionRecord, SandboxError> {
    Ok(VersionRecord {
        version,
        path: libs.install(&sb.lib_store(), &sb.app_dir(), lib, version)?,
        sha256: lib.sha256.clone(),
        app_version: String::new(),
        loaded_at: unix_now(),
    })
}

/// A name part no other daemon or earlier run uses: `<pid>-<random decimal>` (the sweep reads
/// the pid back to tell a dead daemon's leftovers; random, so no counter is shared).
fn nonce() -> String {
    format!("{}-{}", std::process::id(), rand::random::<u64>())
}

fn micros(since: Instant) -> u64 {
    since.elapsed().as_micros() as u64
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Formats a time as RFC 3339 UTC, seconds precision (`2026-11-26T01:01:01Z`).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_reads_the_pid_back_from_every_name_a_manager_makes() {
        let pid = Some(std::process::id() as i32);
        assert_eq!(
            crate::sweep::pid_of_state_dir(&format!("id.{}", nonce())),
            pid
        );
        assert_eq!(
            crate::sweep::pid_of_state_dir(&format!("pool.{}", nonce())),
            pid
        );
        let cgroup = format!("{}id-{}", isolation::cgroups::SANDBOX_PREFIX, nonce());
        assert_eq!(crate::sweep::pid_of_cgroup(&cgroup), pid, "{cgroup}");
    }

    #[test]
    fn a_limit_above_the_hosts_hard_limit_is_refused_not_lowered() {
        let mut spec = SandboxSpec::new(AppSource::Library("/x.so".into()));
        let hard = Rlimits::from_limits(&proto::spec::Limits::default(), true);
        assert!(hard.clamped().is_empty());
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit fills a valid struct.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        if now.rlim_max == libc::RLIM_INFINITY {
            return; // nothing to be above
        }
        spec.limits.max_open_files = Some(now.rlim_max + 1);
        let err = check_hard_limits(&spec).unwrap_err();
        assert_eq!(err.kind(), "invalid_limits");
        let text = err.to_string();
        assert!(text.contains("--max-open-files"), "{text}");
        assert!(
            text.contains(&format!("hard limit {}", now.rlim_max)),
            "{text}"
        );
        spec.limits.max_open_files = Some(now.rlim_max);
        assert!(check_hard_limits(&spec).is_ok());
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_651_200 + 3661);
        assert_eq!(rfc3339(t), "2026-11-26T01:01:01Z");
    }
}
