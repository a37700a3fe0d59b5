//! Booting a runner: the clone, the exec, both planes, and `init` (restrictions applied, the
//! app process forked): everything up to the point where the runner waits for its app.
//! Nothing of this is a tenant's but what the plan names (directory, ids), so a booted
//! runner can wait in the pool ([`super::pool`]) for the sandbox it will serve.
use super::*;

/// The sandbox a runner serves and the generation it serves as, once it has one.
pub(super) type Owner = Arc<std::sync::OnceLock<(std::sync::Weak<Sandbox>, u64)>>;

/// A runner that has answered `init` and waits for `load`.
#[derive(Debug)]
pub(super) struct Booted {
    pub process: Arc<procfs::Process>,
    pub control: Connection,
    pub data: Connection,
    /// The app process's host pid (0 if it could not be found).
    pub app_pid: i32,
    pub ready: InitReady,
    pub exit: watch::Receiver<Option<Exit>>,
    pub owner: Owner,
    /// What the host side applied (the spawn's mechanisms), to be completed and checked.
    pub report: Report,
    pub timings: StartupTimings,
    /// Whether it lives in a root of its own, and is the init of a pid namespace.
    pub own_root: bool,
    pub pid_ns: bool,
    pub errors: std::fs::File,
    pub setup: ChildSetup,
    /// What the kernel showed of init and the app process when a prepared runner was booted
    /// (no app code has run in it since): checked instead of reading `/proc` again.
    pub kernel_views: Option<Vec<crate::kernel_view::KernelView>>,
    /// A prepared runner's assignment: the control requests sent without waiting (answered
    /// before the sandbox goes live), and the rlimits `load` carries to the app process.
    pub pending: Vec<(&'static str, crate::connection::InFlight)>,
    pub load_rlimits: Option<(Limits, bool)>,
}

impl Booted {
    /// Kills the runner; its watcher reaps it.
    pub fn kill(&self) {
        kill_tree(&self.process);
    }

    /// Why a runner that failed after booting failed: the child's own error when it sent
    /// one, else how it exited, as its watcher saw.
    pub async fn failure(&mut self, e: ConnError) -> SandboxError {
        start_failure(&self.process, &mut self.errors, &self.setup, &self.exit, e).await
    }
}

/// A planned spawn: what [`Manager::prepare_spawn`] returns.
pub(super) struct Plan {
    pub request: SpawnRequest,
    pub restrictions: RunnerRestrictions,
    pub report: Report,
    pub own_root: bool,
    pub pid_ns: bool,
}

impl Manager {
    /// Spawns the planned runner and runs `init` on it with `lib`/`version` as the version
    /// its workers start on. Its watcher is started at once (with `owner` as its sandbox), so
    /// however the runner ends, it is reaped.
    pub(super) async fn boot(
        &self,
        plan: Plan,
        lib: PathBuf,
        version: u32,
        owner: Owner,
    ) -> Result<Booted, SandboxError> {
        let started = Instant::now();
        let Plan {
            request,
            restrictions,
            report,
            own_root,
            pid_ns,
        } = plan;
        let spawned = tokio::task::spawn_blocking(move || Spawner::global().spawn(request))
            .await
            .map_err(|e| SandboxError::Spawn {
                step: "spawn task",
                source: e.into(),
            })??;
        let spawn_us = micros(started);
        let pid = spawned.pid;
        // Before the watcher exists, so before anyone can reap the runner.
        let process = Arc::new(procfs::Process::open(pid));
        let (closed_tx, closed_rx) = oneshot::channel();
        let (data_closed_tx, data_closed_rx) = oneshot::channel();
        let (exit_tx, exit_rx) = watch::channel(None);
        let for_events = Arc::clone(&owner);
        let on_event = move |event| {
            if let Some(sb) = for_events.get().and_then(|(sb, _)| sb.upgrade()) {
                handle_event(&sb, event);
            }
        };
        // Two planes: init's control socket, whose events are init's observations, and the app
        // process's data socket, where only answers to our own requests count.
        // Until the watcher runs, a failure here must kill the runner itself.
        let control = Connection::new(spawned.control, on_event, closed_tx).map_err(|e| {
            kill_tree(&process);
            SandboxError::Spawn {
                step: "control socket",
                source: e,
            }
        })?;
        let data = Connection::new(
            spawned.data,
            |event| tracing::debug!(?event, "ignored an event on the data plane"),
            data_closed_tx,
        )
        .map_err(|e| {
            kill_tree(&process);
            SandboxError::Spawn {
                step: "data socket",
                source: e,
            }
        })?;
        let restrictions = serde_json::to_value(&restrictions).map_err(|e| {
            kill_tree(&process);
            SandboxError::Protocol(e.to_string())
        })?;
        let init = Request::Init {
            lib,
            version,
            restrictions,
        };
        let result = control.request(init, self.inner.config.start_timeout).await;
        tokio::spawn(watch_runner(
            Arc::clone(&owner),
            Arc::downgrade(&self.inner),
            Arc::clone(&process),
            (closed_rx, data_closed_rx),
            exit_tx,
        ));
        let mut errors = spawned.errors;
        let ready: InitReady = match result {
            Ok(Ok(value)) => serde_json::from_value(value).map_err(|e| {
                kill_tree(&process);
                SandboxError::Protocol(format!("init's ready: {e}"))
            })?,
            Ok(Err(err)) => {
                kill_tree(&process);
                return Err(SandboxError::InitFailed(err.message));
            }
            Err(e) => {
                return Err(
                    start_failure(&process, &mut errors, &spawned.setup, &exit_rx, e).await,
                );
            }
        };
        let ready_us = micros(started) - spawn_us;
        // The app process is init's only child at this point.
        let app_pid = procfs::children_of(pid).first().copied().unwrap_or(0);
        let timings = StartupTimings {
            spawn_us,
            ready_us,
            restrict_us: ready.restrict_us,
            root_us: child_us(&spawned.setup.timings().root_ns),
            ids_us: child_us(&spawned.setup.timings().ids_ns),
            app_fork_us: Some(ready.fork_us),
            ..StartupTimings::default()
        };
        Ok(Booted {
            process,
            control,
            data,
            app_pid,
            ready,
            exit: exit_rx,
            owner,
            report,
            timings,
            own_root,
            pid_ns,
            errors,
            setup: spawned.setup,
            kernel_views: None,
            pending: Vec::new(),
            load_rlimits: None,
        })
    }
}

/// The error of a runner that failed during its start: the child's own error (a failed
/// isolation step) when it sent one, else how it exited.
async fn start_failure(
    process: &procfs::Process,
    errors: &mut std::fs::File,
    setup: &ChildSetup,
    exit: &watch::Receiver<Option<Exit>>,
    e: ConnError,
) -> SandboxError {
    kill_tree(process);
    if let Some(err) = spawn::child_error(errors) {
        return SandboxError::Isolation(setup.describe(&err));
    }
    let mut exit = exit.clone();
    let how = tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|e| e.is_some()))
        .await
        .ok()
        .and_then(|r| r.ok().and_then(|v| v.clone()));
    SandboxError::InitFailed(match (e, how) {
        (_, Some(ended)) => format!("runner exited during start: {}", ended.reason()),
        (ConnError::Timeout, None) => "runner did not report ready in time".into(),
        (ConnError::Closed, None) => "runner closed its socket during start".into(),
    })
}
