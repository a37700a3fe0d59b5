//! A batch of canary reloads: one sandbox at a time, each watched for its window; the first
//! canary that is rolled back (or cannot be) is that item's failure (`reload_refused`, with
//! the reason: the old version serves) and stops the batch: the sandboxes not reached yet
//! keep their version (their items are `cancelled`, naming the sandbox that failed).

use super::*;
use crate::manager::canary::{CanaryOptions, CanaryReport};

impl Manager {
    /// Canary-reloads `source` into each of `ids` in order (see the module docs); `opts`'
    /// cancel and timeout stop items not started, as in every batch.
    pub async fn batch_reload_canary(
        &self,
        ids: Vec<String>,
        source: ReloadSource,
        options: CanaryOptions,
        opts: &BatchOptions,
        progress: Progress<'_, CanaryReport>,
    ) -> Vec<BatchItem<CanaryReport>> {
        let deadline = opts.timeout.map(|t| Instant::now() + t);
        let mut stopped: Option<String> = None;
        let mut out = Vec::with_capacity(ids.len());
        for (i, id) in ids.into_iter().enumerate() {
            let cancelled = opts.cancel.as_ref().is_some_and(|c| *c.borrow());
            let result = if out
                .iter()
                .any(|done: &BatchItem<CanaryReport>| done.id == id)
            {
                Err(SandboxError::DuplicateInBatch(id.clone()))
            } else if let Some(failed) = &stopped {
                Err(SandboxError::Cancelled(format!(
                    "not reloaded: the canary on {failed} was rolled back, so the batch stopped"
                )))
            } else if cancelled {
                Err(SandboxError::Cancelled("the batch was cancelled".into()))
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                Err(SandboxError::Timeout {
                    op: "batch".into(),
                    ms: opts.timeout.map_or(0, |t| t.as_millis() as u64),
                })
            } else {
                match self
                    .reload_canary(&id, source.clone(), options.clone())
                    .await
                {
                    // A canary given up is this item's failure: the old version serves.
                    Ok(report) if report.outcome != "kept" && report.outcome != "no_change" => {
                        stopped = Some(id.clone());
                        Err(SandboxError::ReloadRefused(format!(
                            "canary {}: {}; v{} serves",
                            report.outcome.replace('_', " "),
                            report.reason.as_deref().unwrap_or("flagged"),
                            report.serving
                        )))
                    }
                    other => other,
                }
            };
            let item = BatchItem { id, result };
            progress(i, &item);
            out.push(item);
        }
        out
    }
}
