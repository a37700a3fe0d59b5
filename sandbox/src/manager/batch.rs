//! Batch operations: create, destroy, call or reload many sandboxes at once, at most
//! `max_concurrency` at a time, within an optional timeout for the whole batch, with one
//! result per item in input order, so that one bad item never hides the others. Each item
//! fails with the same typed error as the single operation.
//!
//! Every item runs in a task of its own that is never dropped half-way (a dropped create
//! would leave a half-made sandbox). When the batch timeout passes:
//! * items not started never start, and are reported `timeout`;
//! * a create in flight is finished (or fails), then destroyed, and reported `timeout`: nothing
//!   half-made remains, and nothing the caller was told timed out stays behind;
//! * a call in flight was given at most the batch's remaining time as its own timeout;
//! * a destroy or reload in flight finishes and reports what it did (a kill or a swap cut in
//!   the middle is worse than a late answer).
//!
//! Cancelled ([`BatchOptions::cancel`], e.g. the client hung up), items not started are
//! reported `cancelled`, and items in flight finish and keep their result (a sandbox made
//! whole stays; `list` shows only whole sandboxes).
//!
//! A crate (create from a crate, reload from a crate or from source) is built once per
//! distinct crate directory before any item starts, then every item uses that one library;
//! the library store shares it between sandboxes by content hash (one file, hard links).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use tokio::task::JoinSet;

use super::*;

/// The default concurrency of a batch: the number of CPUs.
pub fn default_concurrency() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// How a batch runs.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// Items in flight at once (at least 1).
    pub max_concurrency: usize,
    /// Time for the whole batch, builds included; none by default.
    pub timeout: Option<Duration>,
    /// Set to `true` to cancel: items not started yet never start.
    pub cancel: Option<watch::Receiver<bool>>,
}

impl Default for BatchOptions {
    fn default() -> BatchOptions {
        BatchOptions {
            max_concurrency: default_concurrency(),
            timeout: None,
            cancel: None,
        }
    }
}

/// The result of one item of a batch.
#[derive(Debug)]
pub struct BatchItem<T> {
    /// The sandbox it is about.
    pub id: String,
    /// What the single operation would have returned.
    pub result: Result<T, SandboxError>,
}

/// Told of each item as it completes (its index in the input, and its result).
pub type Progress<'a, T> = &'a mut (dyn FnMut(usize, &BatchItem<T>) + Send);

type ItemFuture<T> = Pin<Box<dyn Future<Output = Result<T, SandboxError>> + Send>>;

/// What becomes of an item that finishes after the batch timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Late {
    /// Its result stands (destroy, reload, call).
    Keep,
    /// It is destroyed and reported timed out (create).
    RollBack,
}

/// Why the batch stopped starting items.
#[derive(Debug, Clone, Copy)]
enum Stop {
    Timeout,
    Cancelled,
}

impl Manager {
    /// Creates one sandbox per `(id, spec)`; see the module docs for the timeout.
    pub async fn batch_create(
        &self,
        items: Vec<(String, SandboxSpec)>,
        opts: &BatchOptions,
        progress: Progress<'_, SandboxInfo>,
    ) -> Vec<BatchItem<SandboxInfo>> {
        let deadline = deadline_of(opts);
        let firsts = first_occurrences(items.iter().map(|(id, _)| id.as_str()));
        // One build per distinct crate, before anything starts.
        let mut builds: HashMap<PathBuf, Result<PathBuf, Arc<SandboxError>>> = HashMap::new();
        for (i, (_, spec)) in items.iter().enumerate() {
            if let (true, AppSource::Crate(dir)) = (firsts[i], &spec.app)
                && !builds.contains_key(dir)
            {
                let built = self.inner.config.compiler.build(dir).await;
                let built = built.map(|b| b.lib).map_err(|e| Arc::new(e.into()));
                builds.insert(dir.clone(), built);
            }
        }
        let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
        let work = items
            .into_iter()
            .enumerate()
            .map(|(i, (id, spec))| {
                if !firsts[i] {
                    return Err(SandboxError::DuplicateInBatch(id));
                }
                let built = match (&spec.app, builds.get(dir_of(&spec.app))) {
                    (AppSource::Crate(_), Some(Ok(lib))) => Some(lib.clone()),
                    (AppSource::Crate(_), Some(Err(e))) => {
                        return Err(SandboxError::Shared(Arc::clone(e)));
                    }
                    _ => None,
                };
                let manager = self.clone();
                Ok(
                    Box::pin(async move { manager.create_built(&id, spec, built).await })
                        as ItemFuture<SandboxInfo>,
                )
            })
            .collect();
        self.run_batch(
            "create",
            ids,
            work,
            opts,
            deadline,
            Late::RollBack,
            progress,
        )
        .await
    }

    /// Destroys every sandbox of `ids` (each returns once its processes are dead; cgroups
    /// and directories go in the background, see [`Manager::settled`]).
    pub async fn batch_destroy(
        &self,
        ids: Vec<String>,
        opts: &BatchOptions,
        progress: Progress<'_, ()>,
    ) -> Vec<BatchItem<()>> {
        let deadline = deadline_of(opts);
        let firsts = first_occurrences(ids.iter().map(String::as_str));
        let work = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                if !firsts[i] {
                    return Err(SandboxError::DuplicateInBatch(id.clone()));
                }
                let (manager, id) = (self.clone(), id.clone());
                Ok(Box::pin(async move { manager.destroy(&id).await }) as ItemFuture<()>)
            })
            .collect();
        self.run_batch("destroy", ids, work, opts, deadline, Late::Keep, progress)
            .await
    }

    /// Calls `function(args)` in every sandbox of `ids`; each call's timeout is `timeout`
    /// (the manager's default when `None`), cut to what is left of the batch's.
    pub async fn batch_call(
        &self,
        ids: Vec<String>,
        function: &str,
        args: serde_json::Value,
        timeout: Option<Duration>,
        opts: &BatchOptions,
        progress: Progress<'_, serde_json::Value>,
    ) -> Vec<BatchItem<serde_json::Value>> {
        let deadline = deadline_of(opts);
        let firsts = first_occurrences(ids.iter().map(String::as_str));
        let per_call = timeout.unwrap_or(self.inner.config.call_timeout);
        let work = ids
            .iter()
            .enumerate()
            .map(|(i, id)| {
                if !firsts[i] {
                    return Err(SandboxError::DuplicateInBatch(id.clone()));
                }
                let (manager, id) = (self.clone(), id.clone());
                let (function, args) = (function.to_string(), args.clone());
                Ok(Box::pin(async move {
                    let left = deadline.map_or(per_call, |d| {
                        d.saturating_duration_since(tokio::time::Instant::now())
                    });
                    manager
                        .run(&id, &function, args, Some(per_call.min(left)))
                        .await
                }) as ItemFuture<serde_json::Value>)
            })
            .collect();
        self.run_batch("call", ids, work, opts, deadline, Late::Keep, progress)
            .await
    }

    /// Reloads `source` into every sandbox of `ids`: one build per distinct crate, then the
    /// swaps in parallel. A version that fails in one sandbox leaves that one on its old
    /// version and is that item's error only.
    pub async fn batch_reload(
        &self,
        ids: Vec<String>,
        source: ReloadSource,
        opts: &BatchOptions,
        progress: Progress<'_, ReloadReport>,
    ) -> Vec<BatchItem<ReloadReport>> {
        let deadline = deadline_of(opts);
        let firsts = first_occurrences(ids.iter().map(String::as_str));
        // The crate each item builds from (None: a library, nothing to build).
        let crates: Vec<Result<Option<PathBuf>, SandboxError>> = ids
            .iter()
            .map(|id| match &source {
                ReloadSource::Library(_) => Ok(None),
                ReloadSource::Crate(dir)
                | ReloadSource::Source {
                    crate_dir: Some(dir),
                    ..
                } => Ok(Some(dir.clone())),
                ReloadSource::Source {
                    crate_dir: None, ..
                } => match &self.get(id)?.spec.app {
                    AppSource::Crate(dir) => Ok(Some(dir.clone())),
                    AppSource::Library(_) => Err(SandboxError::ReloadRefused(
                        "a source reload needs a crate: this sandbox was created from a library"
                            .into(),
                    )),
                },
            })
            .collect();
        let mut builds: HashMap<PathBuf, Result<(PathBuf, u64), Arc<SandboxError>>> =
            HashMap::new();
        for (i, dir) in crates.iter().enumerate() {
            if let (true, Ok(Some(dir))) = (firsts[i], dir)
                && !builds.contains_key(dir)
            {
                let compiler = &self.inner.config.compiler;
                let built = match &source {
                    ReloadSource::Source { lib_rs, .. } => compiler.build_source(dir, lib_rs).await,
                    _ => compiler.build(dir).await,
                };
                let built = built
                    .map(|b| (b.lib, b.compile_ms))
                    .map_err(|e| Arc::new(e.into()));
                builds.insert(dir.clone(), built);
            }
        }
        let work = ids
            .iter()
            .zip(crates)
            .enumerate()
            .map(|(i, (id, dir))| {
                if !firsts[i] {
                    return Err(SandboxError::DuplicateInBatch(id.clone()));
                }
                let (lib, compile_ms) = match (dir?, &source) {
                    (None, ReloadSource::Library(lib)) => (lib.clone(), None),
                    (Some(dir), _) => match &builds[&dir] {
                        Ok((lib, ms)) => (lib.clone(), Some(*ms)),
                        Err(e) => return Err(SandboxError::Shared(Arc::clone(e))),
                    },
                    (None, _) => unreachable!("only a library source names no crate"),
                };
                let (manager, id) = (self.clone(), id.clone());
                Ok(Box::pin(async move {
                    let mut report = manager.reload(&id, ReloadSource::Library(lib)).await?;
                    report.compile_ms = compile_ms;
                    Ok(report)
                }) as ItemFuture<ReloadReport>)
            })
            .collect();
        self.run_batch("reload", ids, work, opts, deadline, Late::Keep, progress)
            .await
    }

    /// Runs the items' futures in input order, at most `max_concurrency` at once, until all
    /// ended; returns their results in input order. `work[i]` is an error when item `i`
    /// fails before it starts.
    #[allow(clippy::too_many_arguments)]
    async fn run_batch<T: Send + 'static>(
        &self,
        op: &'static str,
        ids: Vec<String>,
        work: Vec<Result<ItemFuture<T>, SandboxError>>,
        opts: &BatchOptions,
        deadline: Option<tokio::time::Instant>,
        late: Late,
        progress: Progress<'_, T>,
    ) -> Vec<BatchItem<T>> {
        let max = opts.max_concurrency.max(1);
        let mut results: Vec<Option<Result<T, SandboxError>>> =
            std::iter::repeat_with(|| None).take(ids.len()).collect();
        let mut finish = |i: usize, result: Result<T, SandboxError>| {
            let item = BatchItem {
                id: ids[i].clone(),
                result,
            };
            progress(i, &item);
            results[i] = Some(item.result);
        };
        let mut pending = std::collections::VecDeque::new();
        for (i, item) in work.into_iter().enumerate() {
            match item {
                Err(e) => finish(i, Err(e)),
                Ok(future) => pending.push_back((i, future)),
            }
        }
        let mut tasks = JoinSet::new();
        let mut index_of = HashMap::new();
        let mut stopped: Option<Stop> = None;
        let mut cancel = opts.cancel.clone();
        let ms = opts.timeout.map_or(0, |t| t.as_millis() as u64);
        loop {
            while stopped.is_none() && tasks.len() < max {
                let Some((i, future)) = pending.pop_front() else {
                    break;
                };
                let handle = tasks.spawn(future);
                index_of.insert(handle.id(), i);
            }
            if let Some(why) = stopped {
                // Whatever did not start never will.
                for (i, _) in pending.drain(..) {
                    finish(i, Err(not_started(op, &ids[i], why, ms)));
                }
            }
            let joined = tokio::select! {
                // A stop is seen before any further item is let start.
                biased;
                () = until(deadline), if stopped.is_none() => {
                    stopped = Some(Stop::Timeout);
                    continue;
                }
                () = cancelled(&mut cancel), if stopped.is_none() => {
                    stopped = Some(Stop::Cancelled);
                    continue;
                }
                joined = tasks.join_next_with_id() => match joined {
                    Some(joined) => joined,
                    None if pending.is_empty() => break,
                    None => continue,
                },
            };
            let (task, result) = match joined {
                Ok((task, result)) => (task, result),
                Err(e) => (
                    e.id(),
                    Err(SandboxError::Protocol(format!(
                        "batch {op}: the item's task failed: {e}"
                    ))),
                ),
            };
            let Some(i) = index_of.remove(&task) else {
                continue;
            };
            let id = &ids[i];
            let result = match stopped {
                Some(Stop::Timeout) if late == Late::RollBack => {
                    // Ended after the caller's deadline: not left for it to find (a failed
                    // create has removed what it made already).
                    if result.is_ok() {
                        let _ = self.destroy(id).await;
                    }
                    Err(SandboxError::Timeout {
                        op: format!(
                            "batch {op} of {id} (ended after the batch timeout; rolled back)"
                        ),
                        ms,
                    })
                }
                _ => result,
            };
            finish(i, result);
        }
        ids.into_iter()
            .zip(results)
            .map(|(id, result)| BatchItem {
                result: result.unwrap_or_else(|| {
                    Err(SandboxError::Protocol(format!("batch {op}: no result")))
                }),
                id,
            })
            .collect()
    }
}

/// The error of an item that never started.
fn not_started(op: &str, id: &str, why: Stop, ms: u64) -> SandboxError {
    match why {
        Stop::Cancelled => {
            SandboxError::Cancelled(format!("batch {op} of {id}: the batch was cancelled"))
        }
        Stop::Timeout => SandboxError::Timeout {
            op: format!("batch {op} of {id} (not started)"),
            ms,
        },
    }
}

fn deadline_of(opts: &BatchOptions) -> Option<tokio::time::Instant> {
    opts.timeout.map(|t| tokio::time::Instant::now() + t)
}

fn dir_of(app: &AppSource) -> &Path {
    match app {
        AppSource::Crate(p) | AppSource::Library(p) => p,
    }
}

/// For each id, whether it is the first time it appears.
fn first_occurrences<'a>(ids: impl Iterator<Item = &'a str>) -> Vec<bool> {
    let mut seen = HashSet::new();
    ids.map(|id| seen.insert(id)).collect()
}

async fn until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

async fn cancelled(cancel: &mut Option<watch::Receiver<bool>>) {
    if let Some(rx) = cancel
        && rx.wait_for(|c| *c).await.is_ok()
    {
        return;
    }
    // No canceller, or it is gone without cancelling: never.
    std::future::pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_first_occurrence_of_an_id_runs() {
        assert_eq!(
            first_occurrences(["a", "b", "a", "c", "b"].into_iter()),
            vec![true, true, false, true, false]
        );
    }

    #[test]
    fn a_shared_error_keeps_its_kind() {
        let e = SandboxError::Shared(Arc::new(SandboxError::Build(
            appbuild::error::BuildError::failed("nope"),
        )));
        assert_eq!(e.kind(), "build_failed");
        assert!(e.to_string().contains("nope"));
        assert_eq!(
            SandboxError::DuplicateInBatch("x".into()).kind(),
            "duplicate_id"
        );
    }
}
