//! Latency histogram: log-linear buckets (HdrHistogram's layout, by hand).
//!
//! Values below 2^[`SUB_BITS`] get one bucket each; above, every power of two is
//! split into 2^[`SUB_BITS`] equal buckets, so a reported percentile is within
//! 1/2^([`SUB_BITS`]+1) (under 1 %) of the true value while recording stays one
//! array increment. A sorted vector of samples would be exact but costs memory
//! and a sort per phase at 100k+ samples per second.

/// Sub-bucket bits: 64 buckets per power of two.
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;
/// Enough buckets for any `u64`.
const BUCKETS: usize = ((64 - SUB_BITS as usize) + 1) * SUB as usize;

/// Latencies in nanoseconds.
#[derive(Clone)]
pub(crate) struct Histogram {
    counts: Vec<u64>,
    count: u64,
    sum: u128,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

fn index(v: u64) -> usize {
    if v < SUB {
        // Lossless: v < 64.
        return v as usize;
    }
    let e = 63 - v.leading_zeros(); // floor(log2 v) >= SUB_BITS
    let m = v >> (e - SUB_BITS); // in [SUB, 2 SUB)
    let i = u64::from(e - SUB_BITS + 1) * SUB + (m - SUB);
    usize::try_from(i).unwrap_or(BUCKETS - 1)
}

/// The smallest value that lands in bucket `i`, and the bucket's width.
fn bounds(i: usize) -> (u64, u64) {
    let i = i as u64;
    if i < SUB {
        return (i, 1);
    }
    let k = i / SUB; // >= 1
    let m = i % SUB + SUB;
    let shift = u32::try_from(k - 1).unwrap_or(63);
    (m << shift, 1u64 << shift)
}

impl Histogram {
    pub(crate) fn record(&mut self, nanos: u64) {
        self.counts[index(nanos)] += 1;
        self.count += 1;
        self.sum += u128::from(nanos);
        self.max = self.max.max(nanos);
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    pub(crate) fn mean(&self) -> u64 {
        if self.count == 0 {
            0
        } else {
            u64::try_from(self.sum / u128::from(self.count)).unwrap_or(u64::MAX)
        }
    }

    /// The value at quantile `q` (0..=1): the midpoint of the bucket holding the
    /// ceil(q * count)-th smallest sample, capped at the exact maximum; 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let q = q.clamp(0.0, 1.0);
        // Float rank: exact for counts below 2^53, far beyond a bench run.
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "rank is in 1..=count, which fits f64 exactly here"
        )]
        let rank = ((q * self.count as f64).ceil() as u64).clamp(1, self.count);
        let mut seen = 0;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bounds(i);
                return (low + (width - 1) / 2).min(self.max);
            }
        }
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(samples: &[u64], q: f64, expect: u64) {
        let mut h = Histogram::default();
        for &s in samples {
            h.record(s);
        }
        assert_eq!(h.quantile(q), expect, "q={q} over {samples:?}");
    }

    #[test]
    fn small_values_are_exact() {
        check(&[], 0.5, 0);
        check(&[7], 0.5, 7);
        check(&[1, 2, 3, 4], 0.5, 2);
        check(&[1, 2, 3, 4], 0.75, 3);
        check(&[1, 2, 3, 4], 1.0, 4);
        check(&[1, 2, 3, 4], 0.0, 1);
        check(&[63, 0, 10], 0.99, 63);
    }

    #[test]
    fn buckets_are_contiguous_and_cover_u64() {
        let mut next = 0u64;
        for i in 0..BUCKETS {
            let (low, width) = bounds(i);
            assert_eq!(low, next, "bucket {i}");
            assert_eq!(index(low), i);
            assert_eq!(index(low + (width - 1)), i);
            next = low.wrapping_add(width);
        }
        assert_eq!(next, 0, "the last bucket ends at u64::MAX");
        assert_eq!(index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn percentiles_within_one_percent() {
        // 1..=100_000 us in ns: p50 = 50 ms, p99 = 99 ms, p99.9 = 99.9 ms.
        let mut h = Histogram::default();
        for us in 1..=100_000u64 {
            h.record(us * 1000);
        }
        for (q, exact) in [
            (0.5, 50_000_000u64),
            (0.99, 99_000_000),
            (0.999, 99_900_000),
        ] {
            let got = h.quantile(q);
            let err = got.abs_diff(exact) as f64 / exact as f64;
            assert!(err < 0.01, "q={q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(1.0), 100_000_000);
        assert_eq!(h.mean(), 50_000_500);
    }

    #[test]
    fn merge_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (
            Histogram::default(),
            Histogram::default(),
            Histogram::default(),
        );
        for v in 0..5000u64 {
            let x = v * v % 1_000_003;
            if v % 3 == 0 { &mut a } else { &mut b }.record(x);
            all.record(x);
        }
        a.merge(&b);
        assert_eq!(a.count(), all.count());
        for q in [0.1, 0.5, 0.9, 0.99, 0.999, 1.0] {
            assert_eq!(a.quantile(q), all.quantile(q));
        }
        assert_eq!(a.mean(), all.mean());
    }
}
