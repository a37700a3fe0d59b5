//! `host serve`: a foreground daemon that owns sandboxes and serves the control socket.
//!
//! One [`Manager`] owns every sandbox. The daemon listens on a Unix socket (see
//! [`socket_path`]) in a private directory, checks each peer's uid (see [`peer`]) and
//! answers newline-delimited JSON requests (see `proto::control`), each connection in its own task.
//! A bad request gets an error answer and never stops the daemon.
//!
//! One daemon per socket: a lock file next to the socket (`host.sock.lock`, holding the
//! daemon's pid) is `flock`ed for the daemon's lifetime, so a second daemon refuses to
//! start, while a socket file left by a dead daemon is replaced. SIGINT or SIGTERM removes
//! the socket, destroys every sandbox and removes the lock file.

mod batch;
mod bind;
mod canary;
pub mod conn;
pub mod deps_fetch;
pub mod events_stream;
pub mod http;
pub mod listen;
pub mod logs_stream;
pub mod metrics_http;
pub mod peer;
pub mod session;
pub mod shared;
pub mod slots;
pub mod socket_path;
mod stage_error;
pub mod staged_apps;
mod staged_manifest;
pub mod staging;
pub mod ui;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Semaphore, watch};

use ::watch::{WatchConfig, WatchSet};
use proto::control::{self as wire, Hello, ReloadWire, Request, Response, WireError};
use sandbox::ratelimit::{self, RateLimiter};
use sandbox::{AppSource, Manager, ManagerConfig, SandboxError};
use socket_path::SocketPath;

use bind::bind;
pub use bind::lock_path;

/// How long shutdown waits for requests still in flight (e.g. a create) to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the daemon could not start or run.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Another daemon serves this socket.
    #[error(
        "another daemon{} is already serving {}; stop it first, or pick another socket with --socket",
        pid.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        path.display()
    )]
    AlreadyRunning {
        /// The socket.
        path: PathBuf,
        /// The other daemon's pid, when its lock file says.
        pid: Option<i32>,
    },
    /// The socket path names something that is not a socket.
    #[error("{} exists and is not a socket; refusing to replace it", .0.display())]
    NotASocket(PathBuf),
    /// A file operation failed.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The sandbox manager could not start.
    #[error(transparent)]
    Manager(#[from] SandboxError),
    /// A detector sink (`--watch-jsonl`, `--watch-webhook`) could not be set up.
    #[error("watch: {0}")]
    Watch(#[source] ::watch::sinks::SinkError),
    /// A metrics or dashboard server could not start.
    #[error(transparent)]
    Listen(#[from] crate::http::ListenError),
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> DaemonError {
    let path = path.to_owned();
    move |source| DaemonError::Io { what, path, source }
}

/// What the daemon lets clients make it hold; see README "Daemon limits".
#[derive(Debug, Clone)]
pub struct DaemonLimits {
    /// Longest request line in bytes (`--max-request`, default 1 MiB).
    pub max_request: usize,
    /// Most connections at once (`--max-connections`, default 256).
    pub max_connections: usize,
    /// Time from a request's first byte to its newline, and for writing its answer
    /// (`--request-timeout`, default 10 s).
    pub request_timeout: Duration,
    /// Bytes shared by all connections for request lines longer than 64 KiB (default 16 MiB).
    pub line_pool: usize,
    /// Largest library in bytes (`--max-lib-size`, default 256 MiB).
    pub max_lib_size: u64,
    /// Bounds on a crate sent by descriptor.
    pub crate_limits: staging::CrateLimits,
    /// The HTTP servers to start (metrics, dashboard); none by default.
    pub http: crate::listen::HttpServers,
    /// Most sandboxes at once (`--max-sandboxes`, default [`DEFAULT_MAX_SANDBOXES`]): a
    /// create past it, or a batch that would go past it, is refused before it starts.
    pub max_sandboxes: usize,
}

/// The default sandbox cap of a daemon.
pub const DEFAULT_MAX_SANDBOXES: usize = 4096;

impl Default for DaemonLimits {
    fn default() -> DaemonLimits {
        DaemonLimits {
            max_request: wire::DEFAULT_MAX_REQUEST,
            max_connections: 256,
            request_timeout: Duration::from_secs(10),
            line_pool: 16 * 1024 * 1024,
            max_lib_size: sandbox::library::DEFAULT_MAX_SIZE,
            crate_limits: staging::CrateLimits::default(),
            http: crate::listen::HttpServers::default(),
            max_sandboxes: DEFAULT_MAX_SANDBOXES,
        }
    }
}

/// Runs the daemon on `socket` with the default limits; see [`serve_with`].
pub async fn serve(socket: &SocketPath, config: ManagerConfig) -> Result<(), DaemonError> {
    serve_with(socket, config, DaemonLimits::default()).await
}

/// Runs the daemon on `socket` until SIGINT or SIGTERM, then destroys every sandbox; no
/// sandbox is watched unless its create asks (see [`serve_watching`]).
pub async fn serve_with(
    socket: &SocketPath,
    config: ManagerConfig,
    limits: DaemonLimits,
) -> Result<(), DaemonError> {
    serve_watching(socket, config, limits, WatchConfig::default()).await
}

/// [`serve_with`] with the detector configured by `watch` (it runs whenever a sandbox is
/// watched: all by default with `watch.default_on`, else those created with `--watch`).
pub async fn serve_watching(
    socket: &SocketPath,
    config: ManagerConfig,
    limits: DaemonLimits,
    watch: WatchConfig,
) -> Result<(), DaemonError> {
    // Handlers first: a signal from now on is a clean shutdown, never a default death.
    let mut sigterm = signal(SignalKind::terminate()).map_err(io_err("signal", &socket.path))?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(io_err("signal", &socket.path))?;
    // The cgroup sandboxes go under, prepared before the daemon has any child (the pool starts
    // runners below) and before its socket exists: on cgroup v2 the daemon moves itself into
    // the `host` leaf of its own (delegated) cgroup, never a process it does not own
    // (isolation::cgroups::v2), so that the subtree's controllers can be enabled. A second
    // daemon refused by the lock below has only moved itself into the same leaf.
    let unified = nix::sys::statfs::statfs(isolation::cgroups::CGROUP_ROOT)
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC);
    if unified {
        match isolation::cgroups::CgroupSystem::shared(None) {
            Ok(sys) => tracing::info!("sandbox cgroups: {}", sys.describe()),
            Err(e) => tracing::info!("sandbox cgroups: {e}"),
        }
    }
    let bound = bind(socket)?;
    let config = ManagerConfig {
        max_lib_size: limits.max_lib_size,
        ..config
    };
    let staging_dir = staging::staging_of(&config.state_dir);
    let state_dir = config.state_dir.clone();
    // What dead hosts left (their pids are in the names): swept before serving, one line.
    let report = {
        let (state, staging) = (config.state_dir.clone(), staging_dir.clone());
        tokio::task::spawn_blocking(move || sandbox::sweep::sweep(&state, &staging))
            .await
            .unwrap_or_default()
    };
    tracing::info!("{report}");
    if !isolation::is_root() {
        tracing::warn!("every sandbox {}", sandbox::manager::SHARED_UID_WARNING);
    }
    let manager = Manager::new(config)?;
    {
        // Prepared runners, filled in the background: the socket serves meanwhile.
        let manager = manager.clone();
        tokio::spawn(async move {
            manager.warm_pool().await;
            let stats = manager.pool_stats();
            if stats.target > 0 {
                tracing::info!(
                    ready = stats.ready,
                    prepare_us = stats.last_prepare_us,
                    disabled = ?stats.disabled,
                    "runner pool filled"
                );
            }
        });
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    let watch_set = Arc::new(WatchSet::new(watch.default_on));
    let detector = ::watch::spawn(
        manager.clone(),
        watch,
        Arc::clone(&watch_set),
        stop_rx.clone(),
    )
    .map_err(DaemonError::Watch)?;
    let metrics = Arc::new(::watch::metrics::Metrics::new(
        ::watch::metrics::DEFAULT_CAP,
    ));
    limits
        .http
        .start(&manager, &metrics, &socket.path, &stop_rx)
        .await?;
    let permits = (limits.line_pool / conn::PERMIT_BYTES).min(Semaphore::MAX_PERMITS);
    let slots = slots::Slots::new(limits.max_connections);
    let shared = Arc::new(shared::Shared {
        manager: manager.clone(),
        owner: nix::unistd::geteuid().as_raw(),
        stop: stop_rx,
        in_flight: Arc::new(AtomicUsize::new(0)),
        line_pool: Arc::new(Semaphore::new(permits)),
        limits,
        staging: staging_dir,
        log_limit: RateLimiter::per_second(ratelimit::DEFAULT_PER_SECOND),
        watch: watch_set,
        metrics,
    });
    let mut connections = 0u64;
    let mut flush = tokio::time::interval(Duration::from_secs(5));
    tracing::info!(socket = %socket.path.display(), pid = std::process::id(), "listening");

    let signal_name = loop {
        tokio::select! {
            accepted = bound.listener.accept() => match accepted {
                Ok((stream, _)) => {
                    connections += 1;
                    let conn = connections;
                    match slots.take(conn) {
                        Ok((slot, _)) => {
                            tokio::spawn(session::handle(stream, conn, slot, Arc::clone(&shared)));
                        }
                        Err(full) => {
                            shared.log("busy", || tracing::warn!(
                                conn, "refused a connection: {} connections, none idle", full.max
                            ));
                            let refusal = Response::Error(WireError::new(wire::BUSY, format!(
                                "the daemon serves at most {} connections at once and all are \
                                 busy; try again",
                                full.max
                            )));
                            // Best effort, never waiting: the connection is closed right away.
                            if let Ok(line) = wire::encode(&refusal) {
                                let _ = stream.try_write(&line);
                            }
                        }
                    }
                }
                Err(e) => {
                    // E.g. out of fds: keep serving the connections we have.
                    shared.log("accept", || tracing::warn!("accept: {e}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = flush.tick() => shared.flush_log(),
            _ = sigterm.recv() => break "SIGTERM",
            _ = sigint.recv() => break "SIGINT",
        }
    };

    let count = manager.list().await.len();
    tracing::info!(signal = signal_name, sandboxes = count, "shutting down");
    let _ = stop_tx.send(true);
    bound.unlink_socket();
    // No new runs start once it is gone; runs already going end with their sandboxes.
    let _ = detector.await;
    manager.destroy_all().await;
    // A create still in flight would leave a sandbox behind: let it finish, then sweep.
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while shared.in_flight.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    manager.destroy_all().await;
    // The crates staged per app key go too (their build directories stay, keyed the same).
    let _ = std::fs::remove_dir_all(staged_apps::apps_dir(&shared.staging));
    let _ = std::fs::remove_dir(&shared.staging);
    remove_own_dirs(&state_dir, &shared.staging).await;
    drop(bound);
    tracing::info!("stopped");
    Ok(())
}

/// After a clean shutdown, what the daemon made for its sandboxes goes with it: the library
/// store's files no sandbox links (the sweep's rule, so a daemon sharing the state directory
/// keeps its own), the destroyed sandboxes' kept logs, then the state, store and staging
/// directories and, for the default
/// non-root `/var/tmp/sandbox-host-UID`, that directory, each only when empty (what another
/// daemon or a person put there stays).
async fn remove_own_dirs(state_dir: &Path, staging: &Path) {
    let (state, staging) = (state_dir.to_path_buf(), staging.to_path_buf());
    let _ = tokio::task::spawn_blocking(move || {
        let report = sandbox::sweep::sweep(&state, &staging);
        tracing::debug!("on the way out: {report}");
        let _ = std::fs::remove_dir(&state);
        let _ = std::fs::remove_dir(&staging);
        let _ = std::fs::remove_dir(sandbox::library::store_of(&state));
        let _ = std::fs::remove_dir(sandbox::library::none_store_of(&state));
        // Destroyed sandboxes' logs are kept for `host logs` of this daemon; it is going.
        let _ = std::fs::remove_dir_all(sandbox::log_retain::root_of(&state));
        let owner = state.parent().filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sandbox-host-"))
        });
        if let Some(owner) = owner {
            let _ = std::fs::remove_dir(owner);
        }
    })
    .await;
}

fn op_name(request: &Request) -> &'static str {
    match request {
        Request::Ping => "ping",
        Request::Create { .. } => "create",
        Request::List => "list",
        Request::Info { .. } => "info",
        Request::Call { .. } => "call",
        Request::Reload { .. } => "reload",
        Request::Rollback { .. } => "rollback",
        Request::Usage { .. } => "usage",
        Request::Workers { .. } => "workers",
        Request::Restart { .. } => "restart",
        Request::Destroy { .. } => "destroy",
        Request::Operate(_) => "operate",
        Request::Ask(_) => "ask",
        Request::Events { .. } => "events",
        Request::Logs { .. } => "logs",
        Request::PurgeLog { .. } => "purge_log",
        Request::Batch(_) => "batch",
        Request::DepsFetch { .. } => "deps_fetch",
    }
}

/// The `batch` request in `line`, if that is what it is (see [`batch`]).
fn batch_request(line: &[u8]) -> Option<proto::batch::BatchRequest> {
    batch::parse(line)
}

/// Serves one batch on `stream`; the connection closes after it (see [`batch`]).
async fn serve_batch(
    stream: &tokio::net::UnixStream,
    sh: &Arc<shared::Shared>,
    uid: u32,
    req: proto::batch::BatchRequest,
    text: &[u8],
    fds: Vec<std::os::fd::OwnedFd>,
) {
    batch::serve(stream, sh, uid, req, text, fds).await
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Paths cross the socket as the client saw them; the daemon has its own working directory.
fn require_absolute(path: &Path) -> Result<(), WireError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(WireError::new(
            wire::BAD_REQUEST,
            format!("{} is not an absolute path", path.display()),
        ))
    }
}

fn ok<T: serde::Serialize>(result: Result<T, SandboxError>) -> Response {
    match result {
        Ok(value) => match serde_json::to_value(value) {
            Ok(value) => Response::Ok(value),
            Err(e) => Response::Error(WireError::new(wire::INTERNAL, e.to_string())),
        },
        Err(e) => Response::Error(WireError::from(&e)),
    }
}

/// Runs one request against the manager.
async fn dispatch(sh: &shared::Shared, request: Request) -> Response {
    let manager = &sh.manager;
    match request {
        Request::Ping => ok(Ok(Hello {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            sandboxes: manager.list().await.len(),
        })),
        Request::DepsFetch { crate_dir } => match require_absolute(&crate_dir) {
            Ok(()) => deps_fetch::serve(manager, &crate_dir).await,
            Err(e) => Response::Error(e),
        },
        // Served by the connection itself (events_stream); here only with descriptors.
        Request::Events { .. } => Response::Error(WireError::new(
            wire::BAD_REQUEST,
            "events takes no descriptor",
        )),
        Request::Logs { .. } => Response::Error(WireError::new(
            wire::BAD_REQUEST,
            "logs takes no descriptor",
        )),
        Request::PurgeLog { id } => {
            if manager.info(&id).await.is_ok() {
                return Response::Error(WireError::new(
                    wire::BAD_REQUEST,
                    format!("sandbox {id} lives: destroy it first (host destroy {id} --purge)"),
                ));
            }
            let purged = manager.purge_log(&id);
            Response::Ok(serde_json::json!({ "purged": purged, "id": id }))
        }
        // Served by the connection itself (batch::serve); never dispatched.
        Request::Batch(_) => Response::Error(WireError::new(
            wire::BAD_REQUEST,
            "a batch is answered by a stream of its own",
        )),
        Request::Create { id, spec, watch } => {
            let (AppSource::Crate(path) | AppSource::Library(path)) = &spec.app;
            if let Err(e) = require_absolute(path) {
                return Response::Error(e);
            }
            if let Err(e) = batch::room_for(sh, 1) {
                return Response::Error(e);
            }
            let result = manager.create(&id, spec).await;
            if let Ok(info) = &result {
                sh.watch.set(&id, watch);
                tracing::info!(sandbox = %id, pid = info.pid, watched = sh.watch.watched(&id), "created");
            }
            ok(result)
        }
        Request::List => ok(Ok(manager.list().await)),
        Request::Info { id } => ok(manager.info(&id).await),
        Request::Call {
            id,
            function,
            args,
            timeout_ms,
        } => {
            let timeout = timeout_ms.map(Duration::from_millis);
            let started = Instant::now();
            let result = manager.run(&id, &function, args, timeout).await;
            sh.metrics.observe_call(started.elapsed(), result.is_ok());
            ok(result)
        }
        Request::Reload { id, source, canary } => {
            let path = match &source {
                ReloadWire::Library(p) | ReloadWire::Crate(p) => Some(p),
                ReloadWire::Source { crate_dir, .. } => crate_dir.as_ref(),
            };
            if let Some(Err(e)) = path.map(|p| require_absolute(p)) {
                return Response::Error(e);
            }
            if let Some(canary) = canary {
                return canary::reload(manager, &id, source.into(), canary).await;
            }
            let result = manager.reload(&id, source.into()).await;
            if let Ok(report) = &result {
                tracing::info!(
                    sandbox = %id,
                    status = %report.status,
                    from = report.from_version,
                    to = report.to_version,
                    compile_ms = report.compile_ms,
                    load_us = report.load_us,
                    "reload"
                );
            }
            ok(result)
        }
        Request::Rollback { id, version } => {
            let result = manager.rollback(&id, version).await;
            if let Ok(report) = &result {
                tracing::info!(sandbox = %id, from = report.from_version, to = report.to_version, "rollback");
            }
            ok(result)
        }
        Request::Usage { id } => ok(manager.usage(&id).await),
        Request::Workers { id, add } => match add {
            Some(count) => ok(manager.spawn_workers(&id, count).await),
            None => ok(manager.workers(&id).await),
        },
        Request::Restart { id } => {
            let result = manager.restart(&id).await;
            if result.is_ok() {
                tracing::info!(sandbox = %id, "restarted");
            }
            ok(result)
        }
        Request::Operate(req) => match ::watch::operate::operate(manager, req).await {
            Ok(outcome) => match serde_json::to_value(outcome) {
                Ok(value) => Response::Ok(value),
                Err(e) => Response::Error(WireError::new(wire::INTERNAL, e.to_string())),
            },
            Err(e) => Response::Error(e),
        },
        Request::Ask(req) => match ::watch::coordinator::ask::ask(manager, req).await {
            Ok(report) => ok(Ok(report)),
            Err(e) => Response::Error(e),
        },
        Request::Destroy { id } => {
            let result = manager.destroy(&id).await;
            if result.is_ok() {
                sh.watch.remove(&id);
                tracing::info!(sandbox = %id, "destroyed");
            }
            ok(result.map(|()| serde_json::json!({ "destroyed": id })))
        }
    }
}
