//! Waiting for a condition: poll it every [`POLL`] until it holds or the timeout passes. The
//! condition is checked once more at the deadline, so a slow last poll is not a failure.

use std::time::{Duration, Instant};

/// How often a condition is polled.
pub const POLL: Duration = Duration::from_millis(20);

/// Polls `cond` until it holds (true) or `timeout` passes (false), sleeping the thread.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(POLL);
    }
}

/// [`wait_until`] for async code: polls `cond` with the runtime's sleep in between.
pub async fn wait_until_async(timeout: Duration, mut cond: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Polls `get` until it returns `Some` or `timeout` passes; the last answer.
pub fn wait_for<T>(timeout: Duration, mut get: impl FnMut() -> Option<T>) -> Option<T> {
    let mut found = None;
    wait_until(timeout, || {
        found = get();
        found.is_some()
    });
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_condition_that_holds_returns_at_once_and_one_that_never_does_times_out() {
        let started = Instant::now();
        assert!(wait_until(Duration::from_secs(10), || true));
        assert!(started.elapsed() < Duration::from_secs(1));
        let mut polls = 0;
        assert!(!wait_until(Duration::from_millis(100), || {
            polls += 1;
            false
        }));
        assert!(polls >= 2, "{polls}");
        assert_eq!(wait_for(Duration::from_secs(1), || Some(7)), Some(7));
    }

    #[tokio::test]
    async fn the_async_variant_polls_the_same_way() {
        let mut n = 0;
        assert!(
            wait_until_async(Duration::from_secs(10), async || {
                n += 1;
                n == 3
            })
            .await
        );
        assert!(!wait_until_async(Duration::from_millis(50), async || false).await);
    }
}
