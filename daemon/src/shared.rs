//! What every connection of one daemon shares: the manager, the limits, the staging area,
//! the rate-limited log, the detector's watch set and the metrics.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use sandbox::Manager;
use sandbox::ratelimit::{RateLimiter, Verdict};
use tokio::sync::{Semaphore, watch};

use super::DaemonLimits;

/// What every connection of one daemon shares.
#[derive(Debug)]
pub struct Shared {
    /// The sandboxes.
    pub manager: Manager,
    /// The daemon's uid.
    pub owner: u32,
    /// True once the daemon is stopping.
    pub stop: watch::Receiver<bool>,
    /// Requests being served.
    pub in_flight: Arc<AtomicUsize>,
    /// Bytes of long request lines, shared (1 KiB per permit).
    pub line_pool: Arc<Semaphore>,
    /// The limits.
    pub limits: DaemonLimits,
    /// Where descriptors' contents are copied.
    pub staging: PathBuf,
    /// Log lines per sandbox or client.
    pub log_limit: RateLimiter<String>,
    /// Which sandboxes the detector watches.
    pub watch: Arc<::watch::WatchSet>,
    /// The daemon's metrics (call latency is recorded in the dispatch).
    pub metrics: Arc<::watch::metrics::Metrics>,
}

impl Shared {
    /// Logs through the rate limiter: `emit` runs when `key` is under its budget, after one
    /// `suppressed N` line when lines of `key` were dropped before.
    pub fn log(&self, key: &str, emit: impl FnOnce()) {
        if let Verdict::Pass { suppressed } = self.log_limit.check(&key.to_string()) {
            if suppressed > 0 {
                tracing::warn!(key, "suppressed {suppressed} log lines");
            }
            emit();
        }
    }

    /// Logs the `suppressed N` lines of keys that went quiet.
    pub fn flush_log(&self) {
        for (key, n) in self.log_limit.flush() {
            let key = key.unwrap_or_else(|| "(others)".into());
            tracing::warn!(key = %key, "suppressed {n} log lines");
        }
    }
}

/// Counts a request in flight for as long as it lives, panics included.
#[derive(Debug)]
pub struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    /// Counts one more request in `counter`.
    pub fn enter(counter: &Arc<AtomicUsize>) -> InFlight {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_request_is_no_longer_in_flight() {
        let counter = Arc::new(AtomicUsize::new(0));
        let guard = InFlight::enter(&counter);
        let task = tokio::spawn(async move {
            let _guard = guard;
            panic!("dispatch bug");
        });
        assert!(task.await.unwrap_err().is_panic());
        assert_eq!(counter.load(Ordering::Acquire), 0);
    }
}
