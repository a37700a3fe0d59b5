//! A metric's baseline: mean and variance by Welford's method, exact over the first `window`
//! samples and exponentially weighted (weight `1/window`) after that, so it follows slow
//! drift like a window of that many samples would, in constant memory (a true sliding window
//! would keep every sample: 7200 per metric at 1 s over 2 h).

/// Mean and variance of what a metric usually is.
#[derive(Debug, Clone, PartialEq)]
pub struct Baseline {
    window: u64,
    n: u64,
    mean: f64,
    /// Sum of squared deviations (Welford's M2) while `n < window`; the variance itself after.
    m2: f64,
}

impl Baseline {
    /// An empty baseline learning over `window` samples (at least 2).
    pub fn new(window: u64) -> Baseline {
        Baseline {
            window: window.max(2),
            n: 0,
            mean: 0.0,
            m2: 0.0,
        }
    }

    /// Samples folded in so far (stops counting at the window).
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The mean, if any sample was folded in.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then_some(self.mean)
    }

    /// The (population) variance; 0 before two samples.
    pub fn variance(&self) -> f64 {
        match self.n {
            0 | 1 => 0.0,
            n if n < self.window => self.m2 / n as f64,
            _ => self.m2,
        }
    }

    /// Folds one sample in.
    pub fn add(&mut self, x: f64) {
        if !x.is_finite() {
            return;
        }
        if self.n < self.window {
            self.n += 1;
            let delta = x - self.mean;
            self.mean += delta / self.n as f64;
            self.m2 += delta * (x - self.mean);
            if self.n == self.window {
                // From now on m2 holds the variance, updated with weight 1/window.
                self.m2 /= self.n as f64;
            }
        } else {
            let alpha = 1.0 / self.window as f64;
            let delta = x - self.mean;
            self.mean += alpha * delta;
            self.m2 = (1.0 - alpha) * (self.m2 + alpha * delta * delta);
        }
    }

    /// How many standard deviations `x` is from the mean, the deviation floored at `min_std`
    /// (a metric that never moved, like an idle sandbox's process count, has no variance, and
    /// every change would otherwise be infinitely unusual). `None` before any sample.
    pub fn z(&self, x: f64, min_std: f64) -> Option<f64> {
        let mean = self.mean()?;
        let std = self.variance().sqrt().max(min_std).max(f64::MIN_POSITIVE);
        Some((x - mean) / std)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_variance_and_z_over_known_samples() {
        // (samples, window, mean, variance)
        let cases: &[(&[f64], u64, f64, f64)] = &[
            (&[], 10, 0.0, 0.0),
            (&[5.0], 10, 5.0, 0.0),
            (&[2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0], 100, 5.0, 4.0),
            (&[3.0; 50], 10, 3.0, 0.0),
            (&[1.0, f64::NAN, 3.0], 10, 2.0, 1.0),
        ];
        for (samples, window, mean, variance) in cases {
            let mut b = Baseline::new(*window);
            for &x in *samples {
                b.add(x);
            }
            assert_eq!(b.mean().unwrap_or(0.0), *mean, "{samples:?}");
            assert!(
                (b.variance() - variance).abs() < 1e-9,
                "{samples:?}: {}",
                b.variance()
            );
        }
        let mut b = Baseline::new(100);
        for x in [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0] {
            b.add(x);
        }
        assert_eq!(b.z(11.0, 0.0), Some(3.0));
        assert_eq!(b.z(5.0, 0.0), Some(0.0));
        assert_eq!(Baseline::new(5).z(1.0, 1.0), None);
    }

    #[test]
    fn a_flat_metric_uses_the_floor_and_a_full_window_follows_drift() {
        let mut b = Baseline::new(4);
        for _ in 0..4 {
            b.add(2.0);
        }
        assert_eq!(b.z(27.0, 1.0), Some(25.0));
        assert_eq!(b.count(), 4);
        // Past the window the baseline moves towards new values, never jumps.
        for _ in 0..100 {
            b.add(10.0);
        }
        assert!((b.mean().unwrap() - 10.0).abs() < 0.01);
        assert_eq!(b.count(), 4);
    }
}
