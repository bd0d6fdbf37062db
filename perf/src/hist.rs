//! Latency histograms (hdrhistogram, microseconds) and their summary as
//! printed and as JSON. Pure data; no I/O.

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency recorded exactly: one hour; longer ones are clamped.
const MAX_LATENCY_MICROS: u64 = 3_600_000_000;
/// Significant decimal digits kept (0.1 % relative error).
const SIGNIFICANT_DIGITS: u8 = 3;

/// A latency histogram in microseconds.
#[derive(Clone, Debug)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

impl Latency {
    /// An empty histogram.
    pub fn new() -> Self {
        // Both bounds are valid constants, so this cannot fail.
        let h = Histogram::new_with_bounds(1, MAX_LATENCY_MICROS, SIGNIFICANT_DIGITS)
            .unwrap_or_else(|_| unreachable!("constant histogram bounds are valid"));
        Latency(h)
    }

    /// Records one latency; out-of-range values are clamped, never lost.
    pub fn record(&mut self, micros: u64) {
        self.0.saturating_record(micros.max(1));
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &Latency) {
        // Same bounds on both sides: `add` cannot fail; clamp if it ever did.
        let _ = self.0.add(&other.0);
    }

    /// Number of values recorded.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// The percentiles the tools report.
    pub fn summary(&self) -> Summary {
        let h = &self.0;
        let q = |p: f64| {
            if h.is_empty() {
                0
            } else {
                h.value_at_quantile(p)
            }
        };
        Summary {
            count: h.len(),
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            p50_us: q(0.50),
            p90_us: q(0.90),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0 } else { h.max() },
        }
    }
}

/// Percentiles of a latency histogram, in microseconds.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Summary {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean_us: f64,
    /// Median.
    pub p50_us: u64,
    /// 90th percentile.
    pub p90_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Largest value.
    pub max_us: u64,
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.count == 0 {
            return write!(f, "no samples");
        }
        write!(
            f,
            "n={} p50={} p90={} p99={} p99.9={} max={}",
            self.count,
            ms(self.p50_us),
            ms(self.p90_us),
            ms(self.p99_us),
            ms(self.p999_us),
            ms(self.max_us)
        )
    }
}

/// Microseconds as milliseconds with three decimals and a unit.
pub fn ms(micros: u64) -> String {
    format!("{:.3}ms", micros as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_merge() {
        let mut a = Latency::new();
        for v in 1..=1000 {
            a.record(v);
        }
        let mut b = Latency::new();
        b.record(10_000_000_000); // clamped to an hour, still counted
        a.merge(&b);
        let s = a.summary();
        assert_eq!(s.count, 1001);
        assert!((495..=505).contains(&s.p50_us), "{s:?}");
        assert!((985..=995).contains(&s.p99_us), "{s:?}");
        assert!(s.max_us >= MAX_LATENCY_MICROS * 999 / 1000, "{s:?}");
        assert_eq!(Latency::new().summary().count, 0);
    }
}
