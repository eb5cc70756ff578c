//! The figures both tools print from a latency histogram.

use hdrhistogram::{Counter, Histogram};

/// Percentiles, maximum and mean of a histogram, in its unit (µs for the [`crate::Recorder`]'s).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Highest value.
    pub max: u64,
    /// Mean.
    pub mean: f64,
}

impl Percentiles {
    /// The figures of `h`; all zero when it is empty.
    pub fn of<T: Counter>(h: &Histogram<T>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let q = |x| h.value_at_quantile(x);
        Self {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max(),
            mean: h.mean(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_of_a_known_spread() {
        assert_eq!(
            Percentiles::of(&Histogram::<u64>::new(3).unwrap()),
            Percentiles::default()
        );
        let mut h = Histogram::<u32>::new_with_bounds(1, 1_000_000, 3).unwrap();
        for v in 1..=1000 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h);
        assert_eq!(
            (p.p50, p.p90, p.p99, p.p999, p.max),
            (500, 900, 990, 999, 1000)
        );
        assert!((p.mean - 500.5).abs() < 0.5);
    }
}
