//! The detector's side of the coordinator (`host serve --watch-coordinator`): after a
//! detector run whose operator raised a notification, the coordinator runs over that sandbox
//! and every other watched sandbox flagged within the last few samples, so spikes that share
//! a cause become one insight. One coordinator run at a time for the whole daemon; a trigger
//! waits for the one running, and is done when that one (started after the trigger) covered
//! its sandbox already.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::{Coordinator, CoordinatorConfig, Providers, Trigger, report_insights, sandbox_members};
use crate::provider::choose_provider_with;
use sandbox::Manager;

/// Sandboxes one detector coordination covers, at most.
pub const MAX_COVERED: usize = 16;

/// Which sandboxes the detector flagged lately, and whether a coordination runs.
#[derive(Debug, Default)]
pub struct Flagged {
    recent: Mutex<HashMap<String, Instant>>,
    /// When a coordination covering each sandbox last started.
    covered: Mutex<HashMap<String, Instant>>,
    busy: tokio::sync::Mutex<()>,
}

impl Flagged {
    /// Sandbox `id` had a flagged sample at `now`.
    pub fn mark(&self, id: &str, now: Instant) {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.insert(id.to_string(), now);
    }

    /// The sandboxes flagged within `window` of now (forgetting older ones), `first` first,
    /// recorded as covered from now.
    fn cover(&self, first: &str, window: Duration) -> Vec<String> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        recent.retain(|_, at| at.elapsed() <= window);
        let mut ids: Vec<String> = recent.keys().filter(|k| *k != first).cloned().collect();
        ids.sort();
        ids.insert(0, first.to_string());
        ids.truncate(MAX_COVERED);
        let now = Instant::now();
        let mut covered = self.covered.lock().unwrap_or_else(|e| e.into_inner());
        covered.retain(|id, _| recent.contains_key(id));
        for id in &ids {
            covered.insert(id.clone(), now);
        }
        ids
    }

    /// Whether a coordination that started at or after `since` covered `id`.
    fn covered_since(&self, id: &str, since: Instant) -> bool {
        let covered = self.covered.lock().unwrap_or_else(|e| e.into_inner());
        covered.get(id).is_some_and(|at| *at >= since)
    }
}

/// What a detector coordination needs to know.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Provider (`--watch-provider`), else the daemon's environment, else mock.
    pub provider: Option<String>,
    /// Model.
    pub model: Option<String>,
    /// The daemon's provider variables.
    pub env: BTreeMap<String, String>,
    /// Deadline of the whole coordination.
    pub deadline: Duration,
    /// Flagged within this long counts as the same incident.
    pub window: Duration,
}

/// Runs the coordinator after a detector run on `id` triggered at `since`, unless a
/// coordination started since then covered it; its insights go to the event stream.
pub async fn coordinate(
    manager: &Manager,
    flagged: &Flagged,
    setup: &Setup,
    id: &str,
    since: Instant,
) {
    let _one = flagged.busy.lock().await;
    if flagged.covered_since(id, since) {
        tracing::info!(sandbox = %id, "a coordination since the trigger covered this sandbox");
        return;
    }
    let env = setup.env.clone();
    let lookup = move |k: &str| env.get(k).cloned();
    let providers = match choose_provider_with(
        setup.provider.as_deref(),
        setup.model.as_deref(),
        &lookup,
    )
    .await
    {
        Ok(choice) => match choice.provider {
            Some(p) => Providers::Model(p),
            None => Providers::Mock,
        },
        Err(e) => {
            tracing::warn!(sandbox = %id, "no coordination: {e}");
            return;
        }
    };
    let ids: Vec<String> = flagged
        .cover(id, setup.window)
        .into_iter()
        .filter(|s| manager.ids().contains(s))
        .collect();
    let reason = json!({"flagged": ids}).to_string();
    let report = Coordinator::new(
        manager.clone(),
        sandbox_members(manager, &ids, false),
        providers,
    )
    .with_config(CoordinatorConfig {
        deadline: setup.deadline,
        ..CoordinatorConfig::default()
    })
    .run(
        Trigger::Incident(format!(
            "the host's detector flagged these sandboxes: {reason}"
        )),
        CancellationToken::new(),
    )
    .await;
    tracing::info!(sandboxes = ?ids, insights = report.insights.len(),
        grounded = report.insights.iter().filter(|i| i.grounded).count(), "detector coordination");
    report_insights(manager.events(), &report);
}
