//! The dashboard's event stream: the bus's events as they happen and one usage sample per
//! [`SAMPLE_PERIOD`], computed once for all viewers.
//!
//! A viewer never holds the daemon back: events come from the bus's broadcast channel (a
//! viewer that falls behind gets a `lagged` event with the count it missed) and samples from
//! a watch channel (a slow viewer skips to the newest sample).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast, watch};

use super::{BACKLOG, MAX_VIEWERS, Ui};
use sandbox::Manager;
use sandbox::events::Event;

/// How often a usage sample is taken while someone watches.
pub const SAMPLE_PERIOD: Duration = Duration::from_secs(1);
/// Most sandboxes in one sample (the rest are counted in its `omitted`).
pub const MAX_SANDBOXES: usize = 200;
/// Info and usage reads of one sample in parallel.
const PARALLEL: usize = 8;
/// How long one sandbox's reads may take before the sample leaves its usage out.
const READ_TIMEOUT: Duration = Duration::from_secs(2);

/// Takes a sample every period while at least one viewer is connected, until `stop`.
pub(super) async fn sample_loop(
    manager: Manager,
    tx: watch::Sender<Arc<str>>,
    viewers: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(SAMPLE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = stop.changed() => if changed.is_err() || *stop.borrow() {
                return;
            } else {
                continue;
            },
        }
        if viewers.available_permits() == MAX_VIEWERS {
            continue;
        }
        let sample = take_sample(&manager).await;
        tx.send_replace(Arc::from(sample.to_string()));
    }
}

/// One sample: every sandbox's info (status, versions, limits, isolation) and usage.
async fn take_sample(manager: &Manager) -> Value {
    let ids = manager.ids();
    let omitted = ids.len().saturating_sub(MAX_SANDBOXES);
    let mut rows: Vec<Value> = futures_util::stream::iter(ids.into_iter().take(MAX_SANDBOXES))
        .map(|id| async move {
            let info = tokio::time::timeout(READ_TIMEOUT, manager.info(&id))
                .await
                .ok()?
                .ok()?;
            let usage = tokio::time::timeout(READ_TIMEOUT, manager.usage(&id))
                .await
                .ok()
                .and_then(Result::ok);
            Some(json!({
                "id": info.id,
                "status": info.status,
                "crash_reason": info.crash_reason,
                "pid": info.pid,
                "version": info.app.version,
                "app_name": info.app.name,
                "app_version": info.app.app_version,
                "restart_count": info.restart_count,
                "limits": info.limits,
                "isolation": info.isolation,
                "warnings": info.warnings,
                "usage": usage.map(|u| json!({
                    "processes": u.processes,
                    "threads": u.threads,
                    "memory_bytes": u.memory_bytes,
                    "cpu_percent": u.cpu_percent,
                    "cpu_time_ms": u.cpu_time_ms,
                    "open_fds": u.open_fds,
                    "disk_bytes": u.disk_bytes,
                    "worker_restarts": u.worker_restarts,
                    "oom_kills": u.oom_kills,
                })),
            }))
        })
        .buffer_unordered(PARALLEL)
        .filter_map(std::future::ready)
        .collect()
        .await;
    rows.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    json!({
        "time": sandbox::events::now_rfc3339(),
        "sandboxes": rows,
        "omitted": omitted,
    })
}

/// What one viewer's stream holds.
struct Viewer {
    first: Option<Arc<str>>,
    backlog: VecDeque<Arc<Event>>,
    live: broadcast::Receiver<Arc<Event>>,
    samples: watch::Receiver<Arc<str>>,
    stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
}

fn bus_event(event: &Event) -> SseEvent {
    let data = serde_json::to_string(event).unwrap_or_else(|_| "{}".into());
    SseEvent::default()
        .event("event")
        .id(event.seq.to_string())
        .data(data)
}

fn sample_event(sample: &str) -> SseEvent {
    SseEvent::default().event("sample").data(sample)
}

impl Viewer {
    async fn next(mut self) -> Option<(Result<SseEvent, Infallible>, Viewer)> {
        if let Some(sample) = self.first.take() {
            return Some((Ok(sample_event(&sample)), self));
        }
        if let Some(event) = self.backlog.pop_front() {
            return Some((Ok(bus_event(&event)), self));
        }
        if *self.stop.borrow() {
            return None;
        }
        let out = tokio::select! {
            biased;
            changed = self.stop.changed() => {
                let _ = changed;
                return None;
            }
            received = self.live.recv() => match received {
                Ok(event) => bus_event(&event),
                Err(broadcast::error::RecvError::Lagged(n)) => SseEvent::default()
                    .event("lagged")
                    .data(json!({ "missed": n }).to_string()),
                Err(broadcast::error::RecvError::Closed) => return None,
            },
            changed = self.samples.changed() => match changed {
                Ok(()) => {
                    let sample = Arc::clone(&self.samples.borrow_and_update());
                    sample_event(&sample)
                }
                Err(_) => return None,
            },
        };
        Some((Ok(out), self))
    }
}

/// `GET /events`: the server-sent event stream of one viewer.
pub(super) async fn events(State(ui): State<Ui>) -> Response {
    let Ok(permit) = Arc::clone(&ui.viewers).try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the dashboard serves at most {MAX_VIEWERS} viewers at once\n"),
        )
            .into_response();
    };
    let sub = ui.manager.events().subscribe(BACKLOG, |_| true);
    let mut samples = ui.samples.clone();
    // The newest sample right away, so a new page has a table without waiting a period;
    // a page opened before the first sample gets one taken now.
    let mut first = Arc::clone(&samples.borrow_and_update());
    if &*first == "{\"sandboxes\":[]}" {
        first = Arc::from(take_sample(&ui.manager).await.to_string());
    }
    let viewer = Viewer {
        first: Some(first),
        backlog: sub.backlog.into(),
        live: sub.live,
        samples,
        stop: ui.stop.clone(),
        _permit: permit,
    };
    let stream = futures_util::stream::unfold(viewer, Viewer::next);
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
