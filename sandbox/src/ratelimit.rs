//! A small per-key rate limiter for log lines and events: at most `per_window` per key in
//! each window (e.g. 20 per second per sandbox); past that, items are counted, not passed,
//! and the next item passed for that key carries the count, so the caller writes one
//! `suppressed N` line instead of N lines. [`RateLimiter::flush`] hands over counts of keys
//! that went quiet.
//!
//! Memory is bounded: at most `max_keys` keys are tracked; when full, keys idle for a whole
//! window are forgotten (their counts handed over by the next `flush`), and a key that still
//! finds no room shares one overflow bucket.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What to do with one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Pass it; `suppressed` items of this key were dropped before it (write one summary
    /// line for them first when non-zero).
    Pass {
        /// Items dropped since the last one passed.
        suppressed: u64,
    },
    /// Drop it (counted).
    Drop,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    window_start: Instant,
    passed: u32,
    suppressed: u64,
}

/// Which bucket a key lands in.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Slot<K> {
    Key(K),
    Overflow,
}

/// At most `per_window` items per key and window; see the module docs.
#[derive(Debug)]
pub struct RateLimiter<K> {
    per_window: u32,
    window: Duration,
    max_keys: usize,
    buckets: Mutex<HashMap<Slot<K>, Bucket>>,
    /// Counts of forgotten keys, handed over by the next flush.
    forgotten: Mutex<Vec<(Option<K>, u64)>>,
}

/// Default items per key per second for the daemon's own log lines.
pub const DEFAULT_PER_SECOND: u32 = 20;
/// Default number of keys tracked at once.
pub const DEFAULT_MAX_KEYS: usize = 4096;

impl<K: Clone + Eq + Hash> RateLimiter<K> {
    /// `per_window` items per key in every `window`, tracking at most `max_keys` keys.
    pub fn new(per_window: u32, window: Duration, max_keys: usize) -> RateLimiter<K> {
        RateLimiter {
            per_window,
            window,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(HashMap::new()),
            forgotten: Mutex::new(Vec::new()),
        }
    }

    /// `per_second` items per key per second, [`DEFAULT_MAX_KEYS`] keys.
    pub fn per_second(per_second: u32) -> RateLimiter<K> {
        RateLimiter::new(per_second, Duration::from_secs(1), DEFAULT_MAX_KEYS)
    }

    /// Decides about one item of `key` now.
    pub fn check(&self, key: &K) -> Verdict {
        self.check_at(key, Instant::now())
    }

    /// Decides about one item of `key` at `now`.
    pub fn check_at(&self, key: &K, now: Instant) -> Verdict {
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let mut slot = Slot::Key(key.clone());
        if !buckets.contains_key(&slot) && buckets.len() >= self.max_keys {
            self.forget_idle(&mut buckets, now);
            if buckets.len() >= self.max_keys {
                slot = Slot::Overflow;
            }
        }
        let bucket = buckets.entry(slot).or_insert(Bucket {
            window_start: now,
            passed: 0,
            suppressed: 0,
        });
        if now.duration_since(bucket.window_start) >= self.window {
            bucket.window_start = now;
            bucket.passed = 0;
        }
        if bucket.passed < self.per_window {
            bucket.passed += 1;
            Verdict::Pass {
                suppressed: std::mem::take(&mut bucket.suppressed),
            }
        } else {
            bucket.suppressed += 1;
            Verdict::Drop
        }
    }

    fn forget_idle(&self, buckets: &mut HashMap<Slot<K>, Bucket>, now: Instant) {
        let mut forgotten = self.forgotten.lock().unwrap_or_else(|e| e.into_inner());
        buckets.retain(|slot, b| {
            let idle = now.duration_since(b.window_start) >= self.window;
            if idle && b.suppressed > 0 {
                let key = match slot {
                    Slot::Key(k) => Some(k.clone()),
                    Slot::Overflow => None,
                };
                // Bounded too: merge into one entry when too many pile up.
                if forgotten.len() < self.max_keys {
                    forgotten.push((key, b.suppressed));
                } else if let Some(last) = forgotten.last_mut() {
                    last.0 = None;
                    last.1 += b.suppressed;
                }
            }
            !idle || *slot == Slot::Overflow
        });
    }

    /// Counts dropped for keys whose window has ended, handed over once each: `(key, n)`,
    /// with `None` for the overflow bucket. Call it now and then to log `suppressed N` for
    /// keys that went quiet.
    pub fn flush(&self) -> Vec<(Option<K>, u64)> {
        self.flush_at(Instant::now())
    }

    /// [`RateLimiter::flush`] at `now`.
    pub fn flush_at(&self, now: Instant) -> Vec<(Option<K>, u64)> {
        let mut out =
            std::mem::take(&mut *self.forgotten.lock().unwrap_or_else(|e| e.into_inner()));
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        for (slot, b) in buckets.iter_mut() {
            if b.suppressed > 0 && now.duration_since(b.window_start) >= self.window {
                let key = match slot {
                    Slot::Key(k) => Some(k.clone()),
                    Slot::Overflow => None,
                };
                out.push((key, std::mem::take(&mut b.suppressed)));
            }
        }
        out
    }

    /// Keys tracked now (for tests and bounds checks).
    pub fn tracked(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_n_per_window_then_counts_and_reports_once() {
        let rl = RateLimiter::new(3, Duration::from_secs(1), 16);
        let t0 = Instant::now();
        let key = "sb-a".to_string();
        for _ in 0..3 {
            assert_eq!(rl.check_at(&key, t0), Verdict::Pass { suppressed: 0 });
        }
        for _ in 0..1000 {
            assert_eq!(rl.check_at(&key, t0), Verdict::Drop);
        }
        // Another key has its own budget.
        assert_eq!(
            rl.check_at(&"sb-b".to_string(), t0),
            Verdict::Pass { suppressed: 0 }
        );
        // Next window: the first item carries the count, once.
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(rl.check_at(&key, t1), Verdict::Pass { suppressed: 1000 });
        assert_eq!(rl.check_at(&key, t1), Verdict::Pass { suppressed: 0 });
    }

    #[test]
    fn flush_reports_keys_that_went_quiet() {
        let rl = RateLimiter::new(1, Duration::from_secs(1), 16);
        let t0 = Instant::now();
        rl.check_at(&1u32, t0);
        rl.check_at(&1u32, t0);
        rl.check_at(&1u32, t0);
        assert!(rl.flush_at(t0).is_empty(), "window still open");
        assert_eq!(rl.flush_at(t0 + Duration::from_secs(2)), vec![(Some(1), 2)]);
        assert!(rl.flush_at(t0 + Duration::from_secs(3)).is_empty(), "once");
    }

    #[test]
    fn keys_are_bounded() {
        let rl = RateLimiter::new(1, Duration::from_secs(1), 8);
        let t0 = Instant::now();
        for k in 0..10_000u32 {
            rl.check_at(&k, t0);
            rl.check_at(&k, t0);
        }
        assert!(rl.tracked() <= 9, "{}", rl.tracked());
        // The overflow bucket passed one and dropped the rest; idle keys are forgotten
        // later and their counts still reported.
        let later = t0 + Duration::from_secs(2);
        rl.check_at(&99_999, later);
        let total: u64 = rl.flush_at(later).iter().map(|(_, n)| n).sum();
        assert!(total >= 8, "{total}");
    }
}
