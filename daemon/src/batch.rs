//! The daemon's side of a `batch` request (see `proto::batch`): one header line, one line
//! per item as it completes, one summary line, then the connection closes.
//!
//! Refused as a whole, before anything starts (one error line): a batch past the sandbox cap
//! (`--max-sandboxes`) or past `proto::batch::MAX_ITEMS` items, a selector that selects
//! nothing clear, descriptors that do not match its paths, a path a client of another uid
//! may not name, a daemon that is stopping.
//!
//! The batch runs in a task of its own that the connection never drops: when the client
//! hangs up (Ctrl-C) or the daemon starts stopping, the batch is cancelled: items not started
//! never start, items in flight finish, so only whole sandboxes remain, each one listed.
//!
//! Memory: a line per item queues while the client reads slowly, at most one per item of
//! the batch (bounded by its request and the cap).

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use super::conn::write_all;
use super::session::{deny_path, stage_crate, stage_lib};
use super::shared::{InFlight, Shared};
use proto::batch::{
    self as wb, BatchAction, BatchLine, BatchRequest, ItemError, ItemResult, Summary,
};
use proto::control::{self as wire, Envelope, Request, Response, WireError};
use sandbox::manager::{BatchItem, BatchOptions, default_concurrency};
use sandbox::{AppSource, ReloadSource, SandboxError};

/// The `batch` request in `line`, if that is what it is.
pub fn parse(line: &[u8]) -> Option<BatchRequest> {
    if !line.windows(7).any(|w| w == b"\"batch\"") {
        return None;
    }
    match serde_json::from_slice::<Request>(line) {
        Ok(Request::Batch(req)) => Some(req),
        _ => None,
    }
}

/// Refuses `more` new sandboxes past the daemon's cap.
pub fn room_for(sh: &Shared, more: usize) -> Result<(), WireError> {
    let now = sh.manager.ids().len();
    let cap = sh.limits.max_sandboxes;
    if now.saturating_add(more) > cap {
        return Err(WireError::new(
            wb::TOO_MANY,
            format!(
                "{more} more sandbox(es) would make {} of at most {cap} (--max-sandboxes); \
                 {now} exist",
                now.saturating_add(more)
            ),
        ));
    }
    Ok(())
}

async fn say(stream: &UnixStream, timeout: Duration, line: &impl Serialize) -> bool {
    match wire::encode(line) {
        Ok(bytes) => matches!(
            tokio::time::timeout(timeout, write_all(stream, &bytes)).await,
            Ok(Ok(()))
        ),
        Err(_) => false,
    }
}

/// Serves one batch on `stream`.
pub async fn serve(
    stream: &UnixStream,
    sh: &Arc<Shared>,
    uid: u32,
    req: BatchRequest,
    text: &[u8],
    fds: Vec<OwnedFd>,
) {
    let timeout = sh.limits.request_timeout;
    let _guard = InFlight::enter(&sh.in_flight);
    let mut staged = Staged::default();
    let prepared = prepare(sh, uid, req, text, fds, &mut staged).await;
    let (req, total) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            staged.remove().await;
            say(stream, timeout, &Response::Error(e)).await;
            return;
        }
    };
    let action = req.action.name();
    let header = Response::Ok(json!({"stream": "batch", "action": action, "items": total}));
    let mut gone = !say(stream, timeout, &header).await;
    let (cancel_tx, cancel_rx) = watch::channel(gone);
    let (tx, mut rx) = mpsc::unbounded_channel::<ItemResult>();
    let started = Instant::now();
    let task = tokio::spawn(run(Arc::clone(sh), req, cancel_rx, tx));
    let mut stop = sh.stop.clone();
    let mut summary = Summary {
        action: action.to_string(),
        total,
        ..Summary::default()
    };
    loop {
        let item = tokio::select! {
            item = rx.recv() => match item {
                Some(item) => item,
                None => break,
            },
            () = hung_up(stream), if !gone => {
                gone = true;
                let _ = cancel_tx.send(true);
                continue;
            }
            _ = stop.changed(), if !*cancel_tx.borrow() => {
                let _ = cancel_tx.send(true);
                continue;
            }
        };
        match &item.error {
            None => summary.ok += 1,
            Some(e) => {
                summary.failed += 1;
                summary.timed_out += usize::from(e.kind == "timeout");
            }
        }
        if !gone && !say(stream, timeout, &BatchLine::Item(item)).await {
            gone = true;
            let _ = cancel_tx.send(true);
        }
    }
    // The items' side effects (the watch set) are the task's; wait for them.
    let _ = task.await;
    staged.remove().await;
    summary.ms = started.elapsed().as_millis() as u64;
    if !gone {
        say(stream, timeout, &BatchLine::Summary(summary)).await;
    }
}

/// What was staged for a batch: library copies (removed after it) and crates at their app
/// keys' places (locked until it ends; `staged_apps` keeps or evicts the copies).
#[derive(Debug, Default)]
struct Staged {
    files: Vec<PathBuf>,
    apps: Vec<super::staged_apps::StagedApp>,
}

impl Staged {
    /// Removes the library copies and releases the app keys' locks.
    async fn remove(self) {
        let files = self.files;
        drop(self.apps);
        let _ = tokio::task::spawn_blocking(move || {
            for f in files {
                let _ = std::fs::remove_file(f);
            }
        })
        .await;
    }
}

/// Checks a batch as a whole and stages its descriptors; returns it with paths replaced by
/// the staged copies, and its item count.
async fn prepare(
    sh: &Arc<Shared>,
    uid: u32,
    mut req: BatchRequest,
    text: &[u8],
    fds: Vec<OwnedFd>,
    staged: &mut Staged,
) -> Result<(BatchRequest, usize), WireError> {
    let bad = |m: String| WireError::new(wire::BAD_REQUEST, m);
    if *sh.stop.borrow() {
        return Err(WireError::new(
            wire::SHUTTING_DOWN,
            "the daemon is shutting down",
        ));
    }
    let announced = serde_json::from_slice::<Envelope>(text)
        .unwrap_or_default()
        .fds;
    if announced != fds.len() {
        return Err(bad(format!(
            "the request announces {announced} descriptor(s) but {} came with it",
            fds.len()
        )));
    }
    let paths = wb::paths(&req.action);
    for path in &paths {
        if !path.is_absolute() {
            return Err(bad(format!("{} is not an absolute path", path.display())));
        }
    }
    if !fds.is_empty() && fds.len() != paths.len() {
        return Err(bad(format!(
            "a batch sends one descriptor per distinct path it names ({}), not {}",
            paths.len(),
            fds.len()
        )));
    }
    if fds.is_empty()
        && uid != sh.owner
        && let Some(path) = paths.first()
    {
        return Err(deny_path(path));
    }
    let existing = sh.manager.ids();
    let total = match &mut req.action {
        BatchAction::Create { items, .. } => {
            if items.len() > wb::MAX_ITEMS {
                return Err(bad(format!(
                    "a batch names at most {} items, not {}",
                    wb::MAX_ITEMS,
                    items.len()
                )));
            }
            room_for(sh, items.len())?;
            items.len()
        }
        BatchAction::Destroy { select }
        | BatchAction::Call { select, .. }
        | BatchAction::Reload { select, .. } => {
            let ids = select.resolve(&existing).map_err(bad)?;
            if ids.len() > wb::MAX_ITEMS {
                return Err(bad(format!(
                    "a batch names at most {} items",
                    wb::MAX_ITEMS
                )));
            }
            let n = ids.len();
            select.ids = Some(ids);
            (select.all, select.prefix) = (false, None);
            n
        }
    };
    // The descriptors, in the order of `paths`: each staged once, for every item naming it.
    let mut replaced: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (fd, path) in fds.into_iter().zip(&paths) {
        let crate_dir = match &req.action {
            BatchAction::Create { items, .. } => items
                .iter()
                .any(|i| matches!(&i.spec.app, AppSource::Crate(p) if p == path)),
            BatchAction::Reload { source, .. } => !matches!(source, ReloadSource::Library(_)),
            _ => false,
        };
        let copy = if crate_dir {
            // At the client's app key's place (`staged_apps`), held for the whole batch: one
            // build directory for every build of this crate, as for a single create.
            let app = stage_crate(sh, uid, fd, None, path).await?;
            let copy = app.dir.clone();
            staged.apps.push(app);
            copy
        } else {
            let copy = stage_lib(sh, fd, path).await?;
            staged.files.push(copy.clone());
            copy
        };
        replaced.push((path.clone(), copy));
    }
    let swap = |p: &mut PathBuf| {
        if let Some((_, copy)) = replaced.iter().find(|(named, _)| named == p) {
            *p = copy.clone();
        }
    };
    match &mut req.action {
        BatchAction::Create { items, .. } => {
            for item in items {
                let (AppSource::Library(p) | AppSource::Crate(p)) = &mut item.spec.app;
                swap(p);
            }
        }
        BatchAction::Reload { source, .. } => match source {
            ReloadSource::Library(p)
            | ReloadSource::Crate(p)
            | ReloadSource::Source {
                crate_dir: Some(p), ..
            } => swap(p),
            ReloadSource::Source { .. } => {}
        },
        _ => {}
    }
    Ok((req, total))
}

fn item_of<T: Serialize>(index: usize, item: &BatchItem<T>) -> ItemResult {
    let (ok, error) = match &item.result {
        Ok(value) => match serde_json::to_value(value) {
            Ok(v) => (Some(v), None),
            Err(e) => (
                None,
                Some(ItemError {
                    kind: wire::INTERNAL.into(),
                    message: e.to_string(),
                }),
            ),
        },
        Err(e) => (None, Some(error_of(e))),
    };
    ItemResult {
        index,
        id: item.id.clone(),
        ok,
        error,
    }
}

fn error_of(e: &SandboxError) -> ItemError {
    ItemError {
        kind: e.kind().into(),
        message: e.to_string(),
    }
}

/// Runs the batch, sending each item's result on `tx` as it completes.
async fn run(
    sh: Arc<Shared>,
    req: BatchRequest,
    cancel: watch::Receiver<bool>,
    tx: mpsc::UnboundedSender<ItemResult>,
) {
    let opts = BatchOptions {
        max_concurrency: req
            .max_concurrency
            .unwrap_or_else(default_concurrency)
            .max(1),
        timeout: req.timeout_ms.map(Duration::from_millis),
        cancel: Some(cancel),
    };
    let manager = &sh.manager;
    let ids = |select: proto::batch::Selector| select.ids.unwrap_or_default();
    match req.action {
        BatchAction::Create { items, watch } => {
            let items: Vec<(String, sandbox::SandboxSpec)> =
                items.into_iter().map(|i| (i.id, i.spec)).collect();
            let done = manager
                .batch_create(items, &opts, &mut |i, item| {
                    if item.result.is_ok() {
                        sh.watch.set(&item.id, watch);
                    }
                    let _ = tx.send(item_of(i, item));
                })
                .await;
            tracing::info!(
                made = done.iter().filter(|i| i.result.is_ok()).count(),
                of = done.len(),
                "batch create"
            );
        }
        BatchAction::Destroy { select } => {
            let done = manager
                .batch_destroy(ids(select), &opts, &mut |i, item| {
                    if item.result.is_ok() {
                        sh.watch.remove(&item.id);
                    }
                    let (ok, error) = match &item.result {
                        Ok(()) => (Some(json!({ "destroyed": item.id })), None),
                        Err(e) => (None, Some(error_of(e))),
                    };
                    let _ = tx.send(ItemResult {
                        index: i,
                        id: item.id.clone(),
                        ok,
                        error,
                    });
                })
                .await;
            tracing::info!(
                destroyed = done.iter().filter(|i| i.result.is_ok()).count(),
                of = done.len(),
                "batch destroy"
            );
        }
        BatchAction::Call {
            select,
            function,
            args,
            call_timeout_ms,
        } => {
            let timeout = call_timeout_ms.map(Duration::from_millis);
            let started = Instant::now();
            manager
                .batch_call(
                    ids(select),
                    &function,
                    args,
                    timeout,
                    &opts,
                    &mut |i, item| {
                        sh.metrics
                            .observe_call(started.elapsed(), item.result.is_ok());
                        let _ = tx.send(item_of(i, item));
                    },
                )
                .await;
        }
        BatchAction::Reload {
            select,
            source,
            canary: Some(canary),
        } => {
            let window = Duration::from_millis(canary.watch_for_ms);
            let options = sandbox::manager::CanaryOptions::new(window);
            manager
                .batch_reload_canary(ids(select), source, options, &opts, &mut |i, item| {
                    let _ = tx.send(item_of(i, item));
                })
                .await;
        }
        BatchAction::Reload {
            select,
            source,
            canary: None,
        } => {
            manager
                .batch_reload(ids(select), source, &opts, &mut |i, item| {
                    let _ = tx.send(item_of(i, item));
                })
                .await;
        }
    }
}

/// Returns when the client closes its end (anything it sends meanwhile is dropped: a batch
/// ends its connection).
async fn hung_up(stream: &UnixStream) {
    let mut buf = [0u8; 1024];
    loop {
        if stream.readable().await.is_err() {
            return;
        }
        match stream.try_read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_batch_requests_are_batches() {
        assert!(parse(br#"{"op":"batch","action":"destroy","select":{"all":true}}"#).is_some());
        assert!(parse(br#"{"op":"list"}"#).is_none());
        assert!(parse(br#"{"op":"batch","action":"explode"}"#).is_none());
    }
}
