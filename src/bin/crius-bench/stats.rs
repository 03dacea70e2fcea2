//! Latency statistics: nearest-rank percentiles and the ratio of medians.

use std::time::Duration;

use serde::Serialize;

/// The distribution of one metric on one side, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Summary {
    pub n: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

impl Summary {
    /// Summarises `samples`; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let mean = ms.iter().sum::<f64>() / ms.len() as f64;
        Some(Summary {
            n: ms.len(),
            p50_ms: percentile(&ms, 50.0)?,
            p90_ms: percentile(&ms, 90.0)?,
            p99_ms: percentile(&ms, 99.0)?,
            max_ms: *ms.last()?,
            mean_ms: mean,
        })
    }
}

/// The nearest-rank `p`th percentile of ascending `sorted`: the smallest sample such that
/// at least `p` percent of the samples are less than or equal to it. Every reported value
/// is a real measurement, never an interpolation.
// The rank lies in 0..=len because p is within 0..=100, so the cast cannot truncate.
#[allow(clippy::cast_possible_truncation)]
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() || !(0.0..=100.0).contains(&p) {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// `a / b`, or `None` when either side is missing or `b` is not positive.
pub fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 && a.is_finite() && b.is_finite() => Some(a / b),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: &[u64]) -> Vec<Duration> {
        values.iter().map(|v| Duration::from_millis(*v)).collect()
    }

    #[test]
    fn percentile_of_one_to_hundred_is_the_rank_itself() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 90.0), Some(90.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
    }

    #[test]
    fn percentile_uses_nearest_rank_without_interpolation() {
        let v = [10.0, 20.0, 30.0, 40.0];
        assert_eq!(percentile(&v, 50.0), Some(20.0));
        assert_eq!(percentile(&v, 51.0), Some(30.0));
        assert_eq!(percentile(&v, 99.0), Some(40.0));
        assert_eq!(percentile(&v, 0.0), Some(10.0));
    }

    #[test]
    fn percentile_of_nothing_or_out_of_range_is_none() {
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(percentile(&[1.0], 101.0), None);
        assert_eq!(percentile(&[1.0], -1.0), None);
    }

    #[test]
    fn summary_sorts_unordered_samples() {
        let s = Summary::of(&ms(&[5, 1, 4, 2, 3])).expect("samples");
        assert_eq!(s.n, 5);
        assert_eq!(s.p50_ms, 3.0);
        assert_eq!(s.p90_ms, 5.0);
        assert_eq!(s.max_ms, 5.0);
        assert_eq!(s.mean_ms, 3.0);
    }

    #[test]
    fn summary_of_a_single_sample_is_that_sample_everywhere() {
        let s = Summary::of(&ms(&[7])).expect("one sample");
        assert_eq!((s.p50_ms, s.p99_ms, s.max_ms), (7.0, 7.0, 7.0));
    }

    #[test]
    fn summary_of_no_samples_is_none() {
        assert_eq!(Summary::of(&[]), None);
    }

    #[test]
    fn ratio_divides_a_by_b() {
        assert_eq!(ratio(Some(10.0), Some(4.0)), Some(2.5));
        assert_eq!(ratio(Some(1.0), Some(10.0)), Some(0.1));
    }

    #[test]
    fn ratio_is_none_when_a_side_is_missing_or_zero() {
        assert_eq!(ratio(None, Some(1.0)), None);
        assert_eq!(ratio(Some(1.0), None), None);
        assert_eq!(ratio(Some(1.0), Some(0.0)), None);
        assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
    }
}
