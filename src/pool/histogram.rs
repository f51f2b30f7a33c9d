//! A lock-free histogram of durations with fixed buckets, for the request
//! latency and queue wait metrics. Recording is two relaxed atomic adds and
//! a scan of 13 bounds, with no lock and no allocation, because it happens
//! on every request; the cumulative counts OpenMetrics wants are summed at
//! scrape time instead.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets in microseconds, with the `le` label each
/// is exposed under (OpenMetrics' canonical form: `1.0`, not `1`). The
/// `+Inf` bucket comes after them.
pub const BUCKETS: [(u64, &str); 13] = [
    (1_000, "0.001"),
    (2_500, "0.0025"),
    (5_000, "0.005"),
    (10_000, "0.01"),
    (25_000, "0.025"),
    (50_000, "0.05"),
    (100_000, "0.1"),
    (250_000, "0.25"),
    (500_000, "0.5"),
    (1_000_000, "1.0"),
    (2_500_000, "2.5"),
    (5_000_000, "5.0"),
    (10_000_000, "10.0"),
];

/// Counts of observations per bucket (not cumulative; the last is `+Inf`
/// only) and their sum.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let at = BUCKETS.partition_point(|&(bound, _)| bound < micros);
        self.counts[at].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The cumulative counts as of now. Each bucket is read once, so the
    /// counts are monotonic and the `+Inf` one equals the count even while
    /// requests are being recorded; the sum may lag by those in flight.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = [0; BUCKETS.len() + 1];
        let mut total = 0;
        for (c, n) in cumulative.iter_mut().zip(&self.counts) {
            total += n.load(Ordering::Relaxed);
            *c = total;
        }
        HistogramSnapshot {
            cumulative,
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Observations at or below each bound of [`BUCKETS`], then all of them.
    pub cumulative: [u64; BUCKETS.len() + 1],
    pub sum_micros: u64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.cumulative[BUCKETS.len()]
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros as f64 / 1e6
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_are_inclusive_and_counts_cumulative() {
        let h = Histogram::default();
        for ms in [0, 1, 2, 3, 30, 1_000, 12_000] {
            h.observe(Duration::from_millis(ms));
        }
        h.observe(Duration::from_micros(1_001));
        let s = h.snapshot();
        // le 0.001: 0 ms and exactly 1 ms; 1.001 ms is in the next one.
        assert_eq!(s.cumulative[0], 2);
        assert_eq!(s.cumulative[1], 4, "1.001 ms and 2 ms");
        assert_eq!(s.cumulative[2], 5, "3 ms");
        assert_eq!(s.cumulative[4], 5);
        assert_eq!(s.cumulative[5], 6, "30 ms");
        assert_eq!(s.cumulative[9], 7, "1 s is in le=1.0");
        assert_eq!(s.cumulative[12], 7);
        assert_eq!(s.count(), 8, "12 s only in +Inf");
        assert_eq!(s.sum_micros, 13_037_001);
        assert!((s.sum_seconds() - 13.037001).abs() < 1e-9);
        assert!(s.cumulative.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn bounds_ascend_and_labels_match_them() {
        assert!(BUCKETS.windows(2).all(|w| w[0].0 < w[1].0));
        for (micros, le) in BUCKETS {
            let secs: f64 = le.parse().unwrap();
            assert_eq!((secs * 1e6).round() as u64, micros, "{le}");
            assert!(le.contains('.'), "{le} is not in canonical form");
        }
    }

    #[test]
    fn huge_durations_land_in_the_last_bucket() {
        let h = Histogram::default();
        h.observe(Duration::MAX);
        assert_eq!(h.snapshot().cumulative[BUCKETS.len() - 1], 0);
        assert_eq!(h.snapshot().count(), 1);
    }
}
