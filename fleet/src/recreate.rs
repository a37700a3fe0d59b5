//! Re-creating a sandbox from its spec and library on this node: after a failover claim,
//! or for a spec this node owns that its daemon does not run (it was restarted under the same
//! name, or an earlier re-creation failed). Ownership is checked by compare-and-set before
//! the daemon is asked and read again after it answered, so a node never keeps a sandbox
//! whose spec it no longer owns (destroyed or claimed meanwhile): it destroys it again.
//! A failed re-creation is tried again with a growing pause (at most a minute), with one
//! `fleet.recreate_failed` event per sandbox, not one per try.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use proto::control::Request;
use proto::spec::AppSource;

use crate::lattice::{SpecRecord, Waiting, now_ms};
use crate::node::Node;
use crate::wire;

/// Longest pause between two tries of a failed re-creation.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Failed re-creations remembered at most (the oldest entries go first past it).
const MAX_RETRIES: usize = 10_000;

/// Why this node re-creates a sandbox.
#[derive(Debug, Clone)]
pub(crate) enum Why {
    /// It claimed the sandbox of node `from`, which vanished.
    Failover {
        /// The owner that vanished.
        from: String,
        /// Why it waited for a node, if it did.
        waited: Option<Waiting>,
    },
    /// It took the sandbox that node `from` gave up (over its capacity after a restart).
    Released {
        /// The node that gave it up.
        from: String,
    },
    /// It owns the sandbox but its daemon does not run it (restarted under the same name).
    Readopt,
    /// An earlier re-creation here failed.
    Retry,
}

/// Failed re-creations to try again, by sandbox id.
#[derive(Debug, Default)]
pub(crate) struct Retries {
    pending: HashMap<String, Retry>,
}

#[derive(Debug)]
struct Retry {
    revision: u64,
    attempts: u32,
    next: Instant,
}

impl Retries {
    /// Whether `id`, at `revision`, failed before and its pause is over.
    pub(crate) fn due(&self, id: &str, revision: u64, now: Instant) -> bool {
        self.pending
            .get(id)
            .is_some_and(|r| r.revision == revision && r.next <= now)
    }

    /// Whether no re-creation waits to be tried again.
    pub(crate) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// Forgets the sandboxes `keep` says no.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&str) -> bool) {
        self.pending.retain(|id, _| keep(id));
    }

    /// Records a failure of `id` at `revision`; the number of failures so far.
    fn failed(&mut self, id: &str, revision: u64) -> u32 {
        if self.pending.len() >= MAX_RETRIES && !self.pending.contains_key(id) {
            return 1;
        }
        let entry = self.pending.entry(id.to_string()).or_insert(Retry {
            revision,
            attempts: 0,
            next: Instant::now(),
        });
        entry.attempts += 1;
        entry.revision = revision;
        let pause = Duration::from_secs(1u64 << entry.attempts.min(6)).min(MAX_BACKOFF);
        entry.next = Instant::now() + pause;
        entry.attempts
    }

    /// Moves `id`'s pending retry to `revision` (the record was rewritten by this node).
    fn moved(&mut self, id: &str, revision: u64) {
        if let Some(r) = self.pending.get_mut(id) {
            r.revision = revision;
        }
    }
}

/// Writes `record` at `revision` (compare-and-set); the new revision, None when another
/// writer came first.
pub(crate) async fn claim(node: &Node, record: &SpecRecord, revision: u64) -> Option<u64> {
    let bytes = serde_json::to_vec(record).ok()?;
    node.lattice
        .specs
        .update(&record.id, bytes.into(), revision)
        .await
        .ok()
}

/// Re-creates a sandbox this node owns but its daemon does not run: claims it again at
/// `revision` (so a destroy or a claim by another node in between wins), then re-creates it.
pub(crate) async fn readopt(
    node: &Node,
    record: SpecRecord,
    revision: u64,
    why: Why,
    retries: &mut Retries,
) {
    if record.node != node.name {
        return;
    }
    let touched = SpecRecord {
        waiting: None,
        ..record
    };
    let Some(revision) = claim(node, &touched, revision).await else {
        return;
    };
    retries.moved(&touched.id, revision);
    recreate(node, &touched, revision, why, retries).await;
}

/// Asks the daemon to create `record` (owned by this node at `revision`) and says so on the
/// events stream; a failure is tried again later (see [`Retries`]).
pub(crate) async fn recreate(
    node: &Node,
    record: &SpecRecord,
    revision: u64,
    why: Why,
    retries: &mut Retries,
) {
    let id = record.id.clone();
    let started = Instant::now();
    let result = async {
        let hash = wire::content_hash(&record.spec.app)?;
        let mut spec = record.spec.clone();
        spec.app = AppSource::Library(node.library(&hash).await?);
        node.forward(Request::Create {
            id: id.clone(),
            spec,
            watch: record.watch,
        })
        .await
    }
    .await;
    match result {
        Ok(_) => {
            retries.retain(|other| other != id);
            if !still_ours(node, &id).await {
                return;
            }
            let ms = started.elapsed().as_millis();
            let message = match &why {
                Why::Failover { from, waited } => format!(
                    "re-created from spec on node {} after node {from} vanished, in {ms} ms{}; \
                     in-memory state lost",
                    node.name,
                    waited.as_ref().map_or(String::new(), |w| format!(
                        " after waiting {} s ({})",
                        now_ms().saturating_sub(w.since_ms) / 1000,
                        w.reason
                    ))
                ),
                Why::Released { from } => format!(
                    "re-created from spec on node {} in {ms} ms: node {from} came back with \
                     a lower --capacity and gave it up; in-memory state lost",
                    node.name
                ),
                Why::Readopt => format!(
                    "re-adopted after restart: node {} re-created it from spec in {ms} ms; \
                     in-memory state lost",
                    node.name
                ),
                Why::Retry => format!(
                    "re-created from spec on node {} in {ms} ms after an earlier try failed; \
                     in-memory state lost",
                    node.name
                ),
            };
            tracing::info!(id, ?why, "fleet: re-created a sandbox from its spec");
            node.event("recreated", &id, message).await;
        }
        // It runs already (a request of the same id came first): nothing to do.
        Err(e) if e.kind == "already_exists" => retries.retain(|other| other != id),
        Err(e) => {
            let attempts = retries.failed(&id, revision);
            tracing::warn!(id, attempts, error = %e, "fleet: re-creating failed");
            if attempts == 1 {
                node.event(
                    "recreate_failed",
                    &id,
                    format!(
                        "re-creating on node {} failed: {}: {}; tried again with a growing \
                         pause (at most {} s) while this node owns it",
                        node.name,
                        e.kind,
                        e.message,
                        MAX_BACKOFF.as_secs()
                    ),
                )
                .await;
            }
        }
    }
}

/// Whether this node still owns `id` after re-creating it; when not (destroyed or claimed
/// meanwhile), the sandbox just made is destroyed again.
async fn still_ours(node: &Node, id: &str) -> bool {
    match node.lattice.spec(id).await {
        Ok(Some((record, _))) if record.node == node.name => true,
        // Unknown (JetStream unreachable): kept, as the claim a moment ago said it is ours.
        Err(e) => {
            tracing::warn!(id, error = %e, "fleet: ownership not checked after re-creating");
            true
        }
        Ok(other) => {
            let owner = other.map_or("nobody (destroyed)".to_string(), |(r, _)| r.node);
            tracing::warn!(
                id,
                owner,
                "fleet: re-created a sandbox no longer ours; destroying it"
            );
            if let Err(e) = node.forward(Request::Destroy { id: id.into() }).await {
                tracing::warn!(id, error = %e, "fleet: could not destroy it");
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_recreation_is_retried_later_and_only_at_its_revision() {
        let mut retries = Retries::default();
        let now = Instant::now();
        assert!(!retries.due("a", 7, now));
        assert_eq!(retries.failed("a", 7), 1);
        // Not before its pause (2 s after the first failure), then only at that revision.
        assert!(!retries.due("a", 7, Instant::now()));
        let later = Instant::now() + Duration::from_secs(3);
        assert!(retries.due("a", 7, later));
        assert!(
            !retries.due("a", 8, later),
            "the record changed: not ours to retry"
        );
        retries.moved("a", 8);
        assert!(retries.due("a", 8, later));
        // The pause grows and stops at a minute.
        for _ in 0..10 {
            retries.failed("a", 8);
        }
        assert!(!retries.due("a", 8, Instant::now() + Duration::from_secs(59)));
        assert!(retries.due("a", 8, Instant::now() + MAX_BACKOFF));
        retries.retain(|id| id != "a");
        assert!(retries.is_empty());
    }
}
