//! `host batch create|destroy|call|reload --cluster`: a batch fanned out by the client.
//!
//! The client does what a daemon does with a local batch (`sandbox/src/manager/batch.rs`),
//! item by item over the fleet: each item is the single routed request (a create placed on
//! a node, anything else sent to the sandbox's owner), at most `max_concurrency` in flight,
//! within the batch's timeout, one [`ItemResult`] per item (in completion order, `index` its
//! place), then a [`Summary`]. One bad item (a duplicate id, an unknown id, `no_capacity`)
//! never stops the others.
//!
//! - A library is uploaded once per content for the whole batch.
//! - Placement counts the creates of this batch already placed, so N creates spread as N
//!   single creates in a row would (most free capacity first; a failed create gives its slot
//!   back).
//! - Selectors (`--all`, `--prefix`, ids) resolve from the specs bucket, the fleet's truth;
//!   `--node NAME` keeps the sandboxes that node owns and `--label K=V` those created with
//!   that label.
//! - Past the timeout, items not started are `timeout`; a create in flight finishes and is
//!   then destroyed (reported `timeout`), so no sandbox the caller was told timed out stays
//!   behind; a call in flight was given at most the batch's remaining time.
//! - Canary reloads go one at a time; the first rolled back is that item's `reload_refused`
//!   and the items after it are `cancelled`.
//! - Ctrl-C ends the client: nothing further is sent, and what a node was sent it finishes
//!   (a create completes, or its node rolls it back), so `host list` shows whole sandboxes.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::time::Duration;

use proto::batch::{BatchAction, BatchRequest, ItemError, ItemResult, MAX_ITEMS, Summary};
use proto::control::{ReloadWire, Request, WireError};
use proto::spec::{AppSource, ReloadSource, SandboxSpec};
use serde_json::Value;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::client::FleetClient;
use crate::connect::{PlaceArgs, check_name};
use crate::error::FleetError;
use crate::lattice::SpecRecord;
use crate::wire::NO_CAPACITY;

/// Most items in flight at once, whatever is asked: a node answers `busy` past its own
/// [`crate::node::MAX_IN_FLIGHT`].
pub const MAX_CONCURRENCY: usize = crate::node::MAX_IN_FLIGHT;

/// A call's own timeout when the batch names none (the daemon's default).
const DEFAULT_CALL_MS: u64 = 5_000;

/// What the caller is shown while a batch runs.
pub trait Progress {
    /// The batch starts with `total` items.
    fn started(&mut self, total: usize);
    /// One item completed.
    fn item(&mut self, item: &ItemResult);
}

/// One item, ready to send.
#[derive(Debug, Clone)]
enum Work {
    /// Create: placed when it starts.
    Create(SandboxSpec),
    /// Anything else: sent to the owner.
    Routed { node: String, request: Request },
    /// Already failed (unknown id, a duplicate, a bad id).
    Failed(WireError),
}

/// A batch item's result as the wire shows it.
fn as_error(e: FleetError) -> WireError {
    match e {
        FleetError::Remote(e) => e,
        other => WireError::new(other.kind(), other.to_string()),
    }
}

/// Free slots per node among the live nodes that meet the constraints.
#[derive(Debug)]
struct Placer {
    free: BTreeMap<String, i64>,
    live: Vec<String>,
}

impl Placer {
    async fn new(
        client: &FleetClient,
        place: &PlaceArgs,
        specs: &BTreeMap<String, (SpecRecord, u64)>,
    ) -> Result<Placer, FleetError> {
        let want = place.labels()?;
        let live = client.lattice().live_nodes().await?;
        let mut owned: HashMap<&str, i64> = HashMap::new();
        for (record, _) in specs.values() {
            *owned.entry(record.node.as_str()).or_default() += 1;
        }
        let free = live
            .values()
            .filter(|n| place.node.as_ref().is_none_or(|only| &n.node == only))
            .filter(|n| want.iter().all(|(k, v)| n.labels.get(k) == Some(v)))
            .map(|n| {
                let used = owned.get(n.node.as_str()).copied().unwrap_or(0);
                (n.node.clone(), n.capacity as i64 - used)
            })
            .collect();
        Ok(Placer {
            free,
            live: live.into_keys().collect(),
        })
    }

    /// The node with the most free slots (ties: the name), its slot taken.
    fn take(&mut self) -> Result<String, WireError> {
        let best = self
            .free
            .iter()
            .filter(|(_, free)| **free > 0)
            .max_by(|a, b| a.1.cmp(b.1).then_with(|| b.0.cmp(a.0)))
            .map(|(node, _)| node.clone());
        match best {
            Some(node) => {
                *self.free.entry(node.clone()).or_default() -= 1;
                Ok(node)
            }
            None => Err(WireError::new(
                NO_CAPACITY,
                format!(
                    "no live node with free capacity meets the constraints (live: {})",
                    self.live.join(", ")
                ),
            )),
        }
    }

    fn give_back(&mut self, node: &str) {
        if let Some(free) = self.free.get_mut(node) {
            *free += 1;
        }
    }
}

/// Uploads each distinct library of `paths` once; their content names by path.
async fn upload_all(
    client: &FleetClient,
    paths: impl Iterator<Item = PathBuf>,
) -> Result<HashMap<PathBuf, PathBuf>, FleetError> {
    let mut names = HashMap::new();
    for path in paths {
        if let std::collections::hash_map::Entry::Vacant(slot) = names.entry(path) {
            let name = client.upload(slot.key()).await?;
            slot.insert(PathBuf::from(name));
        }
    }
    Ok(names)
}

/// The ids a selector names, each with its owner (None: not in the fleet).
fn select(
    selector: &proto::batch::Selector,
    place: &PlaceArgs,
    specs: &BTreeMap<String, (SpecRecord, u64)>,
) -> Result<Vec<(String, Option<String>)>, FleetError> {
    let want = place.labels()?;
    let existing: Vec<String> = if selector.ids.is_some() {
        Vec::new()
    } else {
        specs
            .values()
            .filter(|(r, _)| place.node.as_ref().is_none_or(|n| &r.node == n))
            .filter(|(r, _)| want.iter().all(|(k, v)| r.labels.get(k) == Some(v)))
            .map(|(r, _)| r.id.clone())
            .collect()
    };
    let ids = selector.resolve(&existing).map_err(FleetError::Input)?;
    Ok(ids
        .into_iter()
        .map(|id| {
            let owner = specs.get(&id).map(|(r, _)| r.node.clone());
            (id, owner)
        })
        .collect())
}

fn not_found(id: &str) -> WireError {
    WireError::new("not_found", format!("sandbox {id} not found in the fleet"))
}

/// The items of `action`: ids and their work, in input order.
async fn items(
    client: &FleetClient,
    action: &BatchAction,
    place: &PlaceArgs,
    specs: &BTreeMap<String, (SpecRecord, u64)>,
) -> Result<Vec<(String, Work)>, FleetError> {
    let routed = |id: &str, owner: Option<String>, request: Request| match owner {
        Some(node) => Work::Routed { node, request },
        None => Work::Failed(not_found(id)),
    };
    let mut out: Vec<(String, Work)> = match action {
        BatchAction::Create { items, .. } => {
            let mut libs = Vec::new();
            for item in items {
                match &item.spec.app {
                    AppSource::Library(p) => libs.push(p.clone()),
                    AppSource::Crate(_) => return Err(FleetError::Input(APP_REFUSED.into())),
                }
            }
            let names = upload_all(client, libs.into_iter()).await?;
            items
                .iter()
                .map(|item| {
                    let mut spec = item.spec.clone();
                    if let AppSource::Library(p) = &spec.app {
                        spec.app = AppSource::Library(names[p].clone());
                    }
                    (item.id.clone(), Work::Create(spec))
                })
                .collect()
        }
        BatchAction::Destroy { select: s } => select(s, place, specs)?
            .into_iter()
            .map(|(id, owner)| {
                let request = Request::Destroy { id: id.clone() };
                let work = routed(&id, owner, request);
                (id, work)
            })
            .collect(),
        BatchAction::Call {
            select: s,
            function,
            args,
            call_timeout_ms,
        } => select(s, place, specs)?
            .into_iter()
            .map(|(id, owner)| {
                let request = Request::Call {
                    id: id.clone(),
                    function: function.clone(),
                    args: args.clone(),
                    timeout_ms: *call_timeout_ms,
                };
                let work = routed(&id, owner, request);
                (id, work)
            })
            .collect(),
        BatchAction::Reload {
            select: s,
            source,
            canary,
        } => {
            let ReloadSource::Library(path) = source else {
                return Err(FleetError::Input(
                    "in a fleet, batch reload takes --lib FILE (a built library, uploaded once); \
                     --app and --source are not built for a fleet"
                        .into(),
                ));
            };
            let names = upload_all(client, std::iter::once(path.clone())).await?;
            let name = names[path].clone();
            select(s, place, specs)?
                .into_iter()
                .map(|(id, owner)| {
                    let request = Request::Reload {
                        id: id.clone(),
                        source: ReloadWire::Library(name.clone()),
                        canary: *canary,
                    };
                    let work = routed(&id, owner, request);
                    (id, work)
                })
                .collect()
        }
    };
    // Only the first occurrence of an id runs; a bad id fails alone.
    let mut seen = HashSet::new();
    for (id, work) in &mut out {
        if let Err(e) = check_name("sandbox", id) {
            *work = Work::Failed(WireError::new(proto::control::BAD_REQUEST, e.to_string()));
        } else if !seen.insert(id.clone()) {
            *work = Work::Failed(WireError::new(
                "duplicate_id",
                format!("sandbox {id} appears more than once in this batch"),
            ));
        }
    }
    Ok(out)
}

/// Why `--app` is refused in a fleet.
pub const APP_REFUSED: &str = "in a fleet, batch create takes --lib FILE (a built library, \
     uploaded to the fleet once by its sha256); --app is not built for a fleet";

/// One item's outcome from its task: its index, its node, its answer.
type Done = (usize, Option<String>, Result<Value, WireError>);

/// Runs `req` over the fleet (see the module docs); `place` constrains creates and filters
/// selectors. Refused as a whole (nothing sent): more than [`MAX_ITEMS`] items, a crate or
/// source to build, a library that cannot be uploaded, a bad selector.
pub async fn run(
    client: &FleetClient,
    req: BatchRequest,
    place: &PlaceArgs,
    progress: &mut dyn Progress,
) -> Result<Summary, FleetError> {
    let started = Instant::now();
    let specs = client.lattice().all_specs().await?;
    let items = items(client, &req.action, place, &specs).await?;
    if items.len() > MAX_ITEMS {
        return Err(FleetError::Input(format!(
            "a batch names at most {MAX_ITEMS} items, not {}",
            items.len()
        )));
    }
    let mut placer = match req.action {
        BatchAction::Create { .. } => Some(Placer::new(client, place, &specs).await?),
        _ => None,
    };
    let (watch, labels) = match &req.action {
        BatchAction::Create { watch, .. } => (*watch, place.labels()?),
        _ => (None, BTreeMap::new()),
    };
    let canary = matches!(
        req.action,
        BatchAction::Reload {
            canary: Some(_),
            ..
        }
    );
    let max = if canary {
        1
    } else {
        let live = client.lattice().live_nodes().await?.len().max(1);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        req.max_concurrency
            .unwrap_or(cpus * live)
            .clamp(1, MAX_CONCURRENCY)
    };
    let timeout_ms = req.timeout_ms;
    let deadline = timeout_ms.map(|ms| started + Duration::from_millis(ms));
    let mut summary = Summary {
        action: req.action.name().to_string(),
        total: items.len(),
        ..Summary::default()
    };
    progress.started(items.len());
    let ids: Vec<String> = items.iter().map(|(id, _)| id.clone()).collect();
    let mut finish = |summary: &mut Summary, index: usize, result: Result<Value, WireError>| {
        let item = match result {
            Ok(ok) => {
                summary.ok += 1;
                ItemResult {
                    index,
                    id: ids[index].clone(),
                    ok: Some(ok),
                    error: None,
                }
            }
            Err(e) => {
                summary.failed += 1;
                summary.timed_out += usize::from(e.kind == "timeout");
                ItemResult {
                    index,
                    id: ids[index].clone(),
                    ok: None,
                    error: Some(ItemError {
                        kind: e.kind,
                        message: e.message,
                    }),
                }
            }
        };
        progress.item(&item);
    };
    let mut pending: VecDeque<(usize, Work)> = VecDeque::new();
    for (index, (_, work)) in items.into_iter().enumerate() {
        match work {
            Work::Failed(e) => finish(&mut summary, index, Err(e)),
            work => pending.push_back((index, work)),
        }
    }
    let mut tasks: JoinSet<Done> = JoinSet::new();
    // Why no further item starts: the timeout, or a canary rolled back (its id).
    let mut timed_out = false;
    let mut stopped_by: Option<String> = None;
    loop {
        while !timed_out && stopped_by.is_none() && tasks.len() < max {
            let Some((index, work)) = pending.pop_front() else {
                break;
            };
            let id = ids[index].clone();
            let (node, mut request) = match work {
                Work::Create(spec) => {
                    match placer
                        .as_mut()
                        .map_or_else(|| Err(not_found(&id)), Placer::take)
                    {
                        Ok(node) => (node, Request::Create { id, spec, watch }),
                        Err(e) => {
                            finish(&mut summary, index, Err(e));
                            continue;
                        }
                    }
                }
                Work::Routed { node, request } => (node, request),
                Work::Failed(e) => {
                    finish(&mut summary, index, Err(e));
                    continue;
                }
            };
            if let (Request::Call { timeout_ms, .. }, Some(deadline)) = (&mut request, deadline) {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .as_millis() as u64;
                *timeout_ms = Some(timeout_ms.unwrap_or(DEFAULT_CALL_MS).min(left.max(1)));
            }
            let client = client.clone();
            let labels = labels.clone();
            tasks.spawn(async move {
                let answer = client
                    .send_labelled(&node, &request, &labels)
                    .await
                    .map_err(as_error);
                (index, Some(node), answer)
            });
        }
        if timed_out || stopped_by.is_some() {
            for (index, _) in pending.drain(..) {
                let e = match &stopped_by {
                    Some(failed) => WireError::new(
                        "cancelled",
                        format!(
                            "not reloaded: the canary on {failed} was rolled back, so the batch \
                             stopped"
                        ),
                    ),
                    None => WireError::new(
                        "timeout",
                        format!(
                            "batch {} of {} (not started) timed out after {} ms",
                            summary.action,
                            ids[index],
                            timeout_ms.unwrap_or(0)
                        ),
                    ),
                };
                finish(&mut summary, index, Err(e));
            }
        }
        let joined = tokio::select! {
            biased;
            () = until(deadline), if !timed_out => {
                timed_out = true;
                continue;
            }
            joined = tasks.join_next() => match joined {
                Some(joined) => joined,
                None if pending.is_empty() => break,
                None => continue,
            },
        };
        let Ok((index, node, mut result)) = joined else {
            continue;
        };
        let id = &ids[index];
        match (&req.action, &mut result, node.as_deref()) {
            (BatchAction::Create { .. }, Ok(info), Some(node)) => {
                if timed_out {
                    // Ended after the caller's deadline: not left for it to find.
                    let _ = client
                        .send(node, &Request::Destroy { id: id.clone() })
                        .await;
                    result = Err(WireError::new(
                        "timeout",
                        format!(
                            "batch create of {id} (ended after the batch timeout; rolled back) \
                             timed out after {} ms",
                            timeout_ms.unwrap_or(0)
                        ),
                    ));
                } else if let Some(map) = info.as_object_mut() {
                    map.insert("node".into(), node.into());
                }
            }
            (BatchAction::Create { .. }, Err(_), Some(node)) => {
                if let Some(placer) = placer.as_mut() {
                    placer.give_back(node);
                }
            }
            (BatchAction::Reload { .. }, Ok(report), _) if canary => {
                let outcome = report["outcome"].as_str().unwrap_or("kept");
                if outcome != "kept" && outcome != "no_change" {
                    stopped_by = Some(id.clone());
                    result = Err(WireError::new(
                        "reload_refused",
                        format!(
                            "canary {}: {}; v{} serves",
                            outcome.replace('_', " "),
                            report["reason"].as_str().unwrap_or("flagged"),
                            report["serving"]
                        ),
                    ));
                }
            }
            _ => {}
        }
        finish(&mut summary, index, result);
    }
    summary.ms = started.elapsed().as_millis() as u64;
    Ok(summary)
}

async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_spreads_its_creates_by_what_it_placed_already() {
        let mut placer = Placer {
            free: [("a", 20), ("b", 12), ("c", 15)]
                .map(|(n, f)| (n.to_string(), f))
                .into(),
            live: vec!["a".into(), "b".into(), "c".into()],
        };
        let mut placed: BTreeMap<String, usize> = BTreeMap::new();
        for _ in 0..17 {
            *placed.entry(placer.take().unwrap()).or_default() += 1;
        }
        // 47 free slots, 17 taken: each node is left with 10.
        assert_eq!(placed.values().copied().collect::<Vec<_>>(), [10, 2, 5]);
        placer.give_back("b");
        assert_eq!(placer.take().unwrap(), "b");
        for _ in 0..30 {
            placer.take().unwrap();
        }
        assert_eq!(placer.take().unwrap_err().kind, NO_CAPACITY);
    }
}
