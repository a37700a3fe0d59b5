//! One client connection: the peer check, bounded request lines (see [`conn`]), the
//! descriptors that come with them (see [`staging`]), one answer per request, and log lines
//! rate-limited per sandbox and per client.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::UnixStream;

use super::conn::{InputLimits, LineReader, write_all};
use super::shared::{InFlight, Shared};
use super::slots::Slot;
use super::staging::{self, CrateLimits};
use super::{dispatch, first_line, op_name};
use proto::control::{self as wire, Envelope, ReloadWire, Request, Response, WireError};
use sandbox::AppSource;

/// Writes one error line, within the request deadline, ignoring failures.
async fn say(stream: &UnixStream, timeout: Duration, kind: &str, message: String) {
    if let Ok(line) = wire::encode(&Response::Error(WireError::new(kind, message))) {
        let _ = tokio::time::timeout(timeout, write_all(stream, &line)).await;
    }
}

/// Serves one connection: checks the peer, then answers requests until it closes.
pub async fn handle(stream: UnixStream, conn: u64, slot: Slot, sh: Arc<Shared>) {
    let timeout = sh.limits.request_timeout;
    let uid = match super::peer::check(&stream, sh.owner) {
        Ok((uid, pid)) => {
            tracing::debug!(conn, uid, pid, "connected");
            uid
        }
        Err(e) => {
            sh.log("refused", || tracing::warn!(conn, "refused: {e}"));
            say(&stream, timeout, wire::PERMISSION_DENIED, e.to_string()).await;
            return;
        }
    };
    let client = format!("client uid {uid}");
    let input = InputLimits {
        max_request: sh.limits.max_request,
        request_timeout: timeout,
    };
    let mut reader = LineReader::new(input, Arc::clone(&sh.line_pool));
    loop {
        if !reader.mid_line() {
            slot.idle();
        }
        let next = tokio::select! {
            next = reader.next(&stream, || slot.busy()) => next,
            _ = slot.evicted.notified() => {
                sh.log("evicted", || tracing::info!(conn, "closed an idle connection to make room"));
                let max = sh.limits.max_connections;
                say(&stream, timeout, wire::BUSY, format!(
                    "closed: the daemon serves at most {max} connections and this one was the longest idle"
                )).await;
                return;
            }
        };
        let line = match next {
            Ok(Some(line)) => line,
            Ok(None) => return,
            Err(e) => {
                sh.log(&client, || tracing::warn!(conn, "bad input, closing: {e}"));
                say(&stream, timeout, wire::BAD_REQUEST, e.to_string()).await;
                return;
            }
        };
        slot.busy();
        let text = line.bytes.trim_ascii();
        if text.is_empty() && line.fds.is_empty() {
            continue;
        }
        // A batch: a stream of its own, then the connection closes.
        if let Some(req) = super::batch_request(text) {
            super::serve_batch(&stream, &sh, uid, req, text, line.fds).await;
            return;
        }
        // A stream, not one answer (a stray descriptor makes it a bad request below).
        if line.fds.is_empty()
            && let Some(req) = super::events_stream::parse(text)
        {
            if *sh.stop.borrow() {
                say(
                    &stream,
                    timeout,
                    wire::SHUTTING_DOWN,
                    "the daemon is shutting down".into(),
                )
                .await;
                return;
            }
            match super::events_stream::serve(&stream, &sh, &slot, req).await {
                super::events_stream::After::Continue => continue,
                super::events_stream::After::Close => return,
            }
        }
        if line.fds.is_empty()
            && let Some(req) = super::logs_stream::parse(text)
        {
            match super::logs_stream::serve(&stream, &sh, &slot, req).await {
                super::events_stream::After::Continue => continue,
                super::events_stream::After::Close => return,
            }
        }
        let response = respond(&stream, &sh, conn, uid, &client, text, line.fds).await;
        let encoded = wire::encode(&response).or_else(|e| {
            wire::encode(&Response::Error(WireError::new(
                wire::INTERNAL,
                format!("cannot encode the answer: {e}"),
            )))
        });
        let Ok(encoded) = encoded else { return };
        match tokio::time::timeout(timeout, write_all(&stream, &encoded)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::debug!(conn, "client went away: {e}");
                return;
            }
            Err(_) => {
                sh.log(&client, || {
                    tracing::warn!(conn, "client did not read its answer in time; closing")
                });
                return;
            }
        }
    }
}

fn bad(message: impl Into<String>) -> Response {
    Response::Error(WireError::new(wire::BAD_REQUEST, message))
}

/// Parses one line, takes its descriptors, and runs it (in a task of its own, so that a
/// panic becomes an `internal` answer, never a lost connection or a stuck shutdown).
async fn respond(
    stream: &UnixStream,
    sh: &Arc<Shared>,
    conn: u64,
    uid: u32,
    client: &str,
    text: &[u8],
    fds: Vec<OwnedFd>,
) -> Response {
    let request = match serde_json::from_slice::<Request>(text) {
        Ok(request) => request,
        Err(e) => {
            tracing::debug!(conn, "bad request: {e}");
            return bad(format!("not a valid request: {e}"));
        }
    };
    let announced = serde_json::from_slice::<Envelope>(text)
        .unwrap_or_default()
        .fds;
    if announced != fds.len() {
        return bad(format!(
            "the request announces {announced} descriptor(s) but {} came with it",
            fds.len()
        ));
    }
    if *sh.stop.borrow() {
        return Response::Error(WireError::new(
            wire::SHUTTING_DOWN,
            "the daemon is shutting down",
        ));
    }
    let op = op_name(&request);
    // An `ask` only reads (and spends a model's tokens): nobody waits for it once its client
    // has gone, so it is cancelled then. Everything else runs to its end (a create or an
    // `operate` stopped half-way would leave half a change).
    let cancellable = matches!(request, Request::Ask(_));
    let key = sandbox_of(&request).map_or_else(|| client.to_string(), |id| format!("sandbox {id}"));
    let guard = InFlight::enter(&sh.in_flight);
    let started = Instant::now();
    let task = {
        let sh = Arc::clone(sh);
        tokio::spawn(async move {
            let _guard = guard;
            let (request, cleanup) = match take_fds(&sh, uid, request, fds).await {
                Ok(prepared) => prepared,
                Err(e) => return Response::Error(e),
            };
            let response = dispatch(&sh, request).await;
            cleanup.run().await;
            response
        })
    };
    let mut task = task;
    let hung_up = async {
        match cancellable {
            true => super::conn::hung_up(stream).await,
            false => std::future::pending().await,
        }
    };
    let joined = tokio::select! {
        joined = &mut task => joined,
        () = hung_up => {
            task.abort();
            tracing::info!(conn, op, "the client hung up: the request is cancelled");
            return Response::Error(WireError::new(wire::INTERNAL, "cancelled: the client hung up"));
        }
    };
    let response = match joined {
        Ok(response) => response,
        Err(e) => {
            sh.log(&key, || {
                tracing::error!(conn, op, "request failed inside the daemon: {e}")
            });
            Response::Error(WireError::new(
                wire::INTERNAL,
                format!("the daemon failed while serving {op} (a bug; it keeps running): {e}"),
            ))
        }
    };
    match &response {
        Response::Ok(_) => {
            tracing::debug!(conn, op, ms = started.elapsed().as_millis() as u64, "ok")
        }
        Response::Error(e) => sh.log(
            &key,
            || tracing::info!(conn, op, kind = %e.kind, "failed: {}", first_line(&e.message)),
        ),
    }
    response
}

fn sandbox_of(request: &Request) -> Option<&str> {
    match request {
        Request::Create { id, .. }
        | Request::Info { id }
        | Request::Call { id, .. }
        | Request::Reload { id, .. }
        | Request::Rollback { id, .. }
        | Request::Usage { id }
        | Request::Workers { id, .. }
        | Request::Restart { id }
        | Request::Destroy { id }
        | Request::Logs { id, .. }
        | Request::PurgeLog { id } => Some(id),
        Request::Operate(req) => Some(&req.id),
        Request::Ask(req) => req.id.as_deref(),
        Request::Events { id, .. } => id.as_deref(),
        Request::Ping | Request::List | Request::Batch(_) | Request::DepsFetch { .. } => None,
    }
}

/// What to remove once a request is answered.
#[derive(Debug, Default)]
struct Cleanup {
    files: Vec<PathBuf>,
    dirs: Vec<PathBuf>,
    /// A crate staged under its app key: the key's lock, held until the answer.
    app: Option<super::staged_apps::StagedApp>,
}

impl Cleanup {
    async fn run(self) {
        let dirs = self.dirs;
        let files = self.files;
        let _ = tokio::task::spawn_blocking(move || {
            for f in files {
                let _ = std::fs::remove_file(f);
            }
            for d in dirs {
                let _ = std::fs::remove_dir_all(d);
            }
        })
        .await;
    }
}

pub(crate) fn deny_path(path: &Path) -> WireError {
    WireError::new(
        wire::PERMISSION_DENIED,
        format!(
            "{}: send it as a descriptor: the daemon opens no path for a client of another uid",
            path.display()
        ),
    )
}

/// Replaces the paths of a create or reload by the staged copies of the descriptors that
/// came with it. Without descriptors a path is used only for a peer of the daemon's uid.
async fn take_fds(
    sh: &Arc<Shared>,
    uid: u32,
    mut request: Request,
    mut fds: Vec<OwnedFd>,
) -> Result<(Request, Cleanup), WireError> {
    let mut cleanup = Cleanup::default();
    // A crate may come with a second descriptor: the tree (a workspace root) it is in.
    let tree = (fds.len() == 2).then(|| fds.pop()).flatten();
    let fd = fds.pop();
    if !fds.is_empty() {
        return Err(WireError::new(
            wire::BAD_REQUEST,
            "a request carries at most two descriptors (a crate and the tree it is in)",
        ));
    }
    let crate_source = matches!(
        &request,
        Request::Create { spec, .. } if matches!(spec.app, AppSource::Crate(_))
    ) || matches!(
        &request,
        Request::Reload {
            source: ReloadWire::Crate(_)
                | ReloadWire::Source {
                    crate_dir: Some(_),
                    ..
                },
            ..
        } | Request::DepsFetch { .. }
    );
    if tree.is_some() && !crate_source {
        return Err(WireError::new(
            wire::BAD_REQUEST,
            format!("{} takes at most one descriptor", op_name(&request)),
        ));
    }
    let mut tree = tree;
    let own = uid == sh.owner;
    match (&mut request, fd) {
        (Request::Create { spec, .. }, fd) => match (&mut spec.app, fd) {
            (AppSource::Library(path), Some(fd)) => {
                let staged = stage_lib(sh, fd, path).await?;
                cleanup.files.push(staged.clone());
                *path = staged;
            }
            (AppSource::Crate(path), Some(fd)) => {
                let app = stage_crate(sh, uid, fd, tree.take(), path).await?;
                *path = app.dir.clone();
                cleanup.app = Some(app);
            }
            (AppSource::Library(path) | AppSource::Crate(path), None) if !own => {
                return Err(deny_path(path));
            }
            _ => {}
        },
        (Request::Reload { source, .. }, fd) => match (source, fd) {
            (ReloadWire::Library(path), Some(fd)) => {
                let staged = stage_lib(sh, fd, path).await?;
                cleanup.files.push(staged.clone());
                *path = staged;
            }
            (
                ReloadWire::Crate(path)
                | ReloadWire::Source {
                    crate_dir: Some(path),
                    ..
                },
                Some(fd),
            ) => {
                let app = stage_crate(sh, uid, fd, tree.take(), path).await?;
                *path = app.dir.clone();
                cleanup.app = Some(app);
            }
            (
                ReloadWire::Source {
                    crate_dir: None, ..
                },
                Some(_),
            ) => {
                return Err(WireError::new(
                    wire::BAD_REQUEST,
                    "a source reload without crate_dir takes no descriptor",
                ));
            }
            (
                ReloadWire::Library(path)
                | ReloadWire::Crate(path)
                | ReloadWire::Source {
                    crate_dir: Some(path),
                    ..
                },
                None,
            ) if !own => return Err(deny_path(path)),
            _ => {}
        },
        (Request::DepsFetch { crate_dir }, Some(fd)) => {
            let app = stage_crate(sh, uid, fd, tree.take(), crate_dir).await?;
            *crate_dir = app.dir.clone();
            cleanup.app = Some(app);
        }
        (Request::DepsFetch { crate_dir }, None) if !own => return Err(deny_path(crate_dir)),
        (other, Some(_)) => {
            return Err(WireError::new(
                wire::BAD_REQUEST,
                format!("{} takes no descriptor", op_name(other)),
            ));
        }
        (_, None) => {}
    }
    Ok((request, cleanup))
}

pub(crate) async fn stage_lib(
    sh: &Shared,
    fd: OwnedFd,
    named: &Path,
) -> Result<PathBuf, WireError> {
    let (named, staging, manager) = (named.to_owned(), sh.staging.clone(), sh.manager.clone());
    tokio::task::spawn_blocking(move || {
        staging::stage_library(manager.libraries(), fd, &named, &staging)
    })
    .await
    .map_err(|e| WireError::new(wire::INTERNAL, e.to_string()))?
    .map_err(|e| WireError::new("io", e.to_string()))
}

/// Stages a crate at its app key's place (see [`staged_apps`](super::staged_apps)), so
/// every build of one client's crate shares one build directory.
pub(crate) async fn stage_crate(
    sh: &Shared,
    uid: u32,
    fd: OwnedFd,
    tree: Option<OwnedFd>,
    named: &Path,
) -> Result<super::staged_apps::StagedApp, WireError> {
    let limits: CrateLimits = sh.limits.crate_limits;
    let (named, staging) = (named.to_owned(), sh.staging.clone());
    tokio::task::spawn_blocking(move || {
        super::staged_apps::stage(fd, tree, &named, uid, &staging, limits)
    })
    .await
    .map_err(|e| WireError::new(wire::INTERNAL, e.to_string()))?
    .map_err(|e| WireError::new("io", e.to_string()))
}
