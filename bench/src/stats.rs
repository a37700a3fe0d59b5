//! Hand-rolled percentiles and the JSON shapes of `summary.json`.

use std::time::Duration;

use serde_json::{Value, json};

/// Nearest-rank percentile of `sorted` (ascending) for `q` in `0.0..=1.0`.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// p50 and p99 of a set of samples, in the samples' unit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pct {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Number of samples.
    pub n: usize,
}

impl Pct {
    /// Percentiles of durations, in microseconds.
    pub fn of_us(samples: &[Duration]) -> Pct {
        Pct::of(samples.iter().map(|d| d.as_secs_f64() * 1e6).collect())
    }

    /// Percentiles of durations, in milliseconds.
    pub fn of_ms(samples: &[Duration]) -> Pct {
        Pct::of(samples.iter().map(|d| d.as_secs_f64() * 1e3).collect())
    }

    /// Percentiles of raw numbers.
    pub fn of(mut values: Vec<f64>) -> Pct {
        values.sort_by(f64::total_cmp);
        Pct {
            p50: percentile(&values, 0.50),
            p99: percentile(&values, 0.99),
            n: values.len(),
        }
    }

    /// `{"p50": .., "p99": .., "n": ..}`, rounded to 0.1.
    pub fn to_json(self) -> Value {
        json!({ "p50": round1(self.p50), "p99": round1(self.p99), "n": self.n })
    }
}

/// Rounds to one decimal.
pub fn round1(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// `{"p50": null, "p99": null, "skipped": reason}`: a measurement that was not taken, with
/// the reason; never a guess.
pub fn skipped(reason: impl Into<String>) -> Value {
    json!({ "p50": null, "p99": null, "skipped": reason.into() })
}

/// Runs the blocking measurement `measure` off the runtime: its value, or [`skipped`] with
/// the reason it gives (or with `what` when its thread failed).
pub async fn blocking(
    what: &str,
    measure: impl FnOnce() -> anyhow::Result<Value> + Send + 'static,
) -> Value {
    tokio::task::spawn_blocking(move || measure().unwrap_or_else(|e| skipped(format!("{e:#}"))))
        .await
        .unwrap_or_else(|e| skipped(format!("{what} task failed: {e}")))
}

/// The p50 of a `{p50, p99}` value, if it was measured.
pub fn p50_of(v: &Value) -> Option<f64> {
    v.get("p50").and_then(Value::as_f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), 50.0);
        assert_eq!(percentile(&v, 0.99), 99.0);
        assert_eq!(percentile(&v, 1.0), 100.0);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn pct_sorts_its_input() {
        let p = Pct::of(vec![3.0, 1.0, 2.0]);
        assert_eq!((p.p50, p.p99, p.n), (2.0, 3.0, 3));
    }

    #[test]
    fn skipped_and_measured_shapes() {
        assert_eq!(skipped("x")["skipped"], "x");
        assert_eq!(p50_of(&skipped("x")), None);
        let p = Pct::of(vec![1.0, 2.0]).to_json();
        assert_eq!(p50_of(&p), Some(1.0));
    }
}
