//! What a node or gateway counts, and the Prometheus text it is scraped as.
//!
//! Counting must cost nothing the bench can see, so the hot path touches
//! only atomics it owns: [`Histogram::observe`] is two relaxed adds and a
//! bucket search over at most 20 bounds. Everything else (gauges such as
//! hints pending, members up, sstables) is read from live state when
//! `/metrics` is scraped, so it cannot drift from the truth and costs
//! nothing between scrapes. `prometheus-client` writes the text format
//! (version 0.0.4, what `promtool check metrics` reads); the values it is
//! handed come from here.
//!
//! Labels are bounded by construction: RPC names come from the service
//! definition, member ids from the membership (capped in gossip), and no
//! key or bucket is ever a label.
//!
//! ```
//! use shoal_node::metrics::{render, Histogram, LATENCY_BOUNDS};
//! use std::time::Duration;
//!
//! let h = Histogram::new(LATENCY_BOUNDS);
//! h.observe(Duration::from_micros(300));
//! let text = render(move |out| {
//!     out.counter("shoal_example_requests", "Requests served", 1)?;
//!     out.histogram("shoal_example_duration_seconds", "Time per request", &h.snapshot())
//! });
//! assert!(text.contains("shoal_example_requests_total 1"));
//! assert!(text.contains("shoal_example_duration_seconds_bucket{le=\"0.0005\"} 1"));
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

/// Bucket bounds (seconds) for request and RPC latencies: sub-millisecond
/// steps because a read served from memory takes 0.1-0.5 ms, up to 10 s
/// because a quorum that waits for a timeout must still land in a bucket.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

/// Bucket bounds (seconds) for an fsync: 50 us (a disk cache) to 5 s (a
/// saturated disk; what makes an operator look).
pub const FSYNC_BOUNDS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
    5.0,
];

/// Bucket bounds for siblings per read: 1 is the normal case; many is a
/// client that writes without contexts.
pub const SIBLING_BOUNDS: &[f64] = &[1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 16.0, 32.0, 64.0];

/// A histogram with fixed bounds, counted with atomics.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One count per bound, plus one for above the last (`+Inf`).
    counts: Box<[AtomicU64]>,
    /// Sum of observations, in millionths of the unit (us for seconds).
    sum_micros: AtomicU64,
}

impl Histogram {
    /// An empty histogram over `bounds` (ascending).
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Counts one duration (in seconds).
    pub fn observe(&self, d: Duration) {
        self.observe_value(d.as_secs_f64());
    }

    /// Counts one value in the histogram's unit.
    pub fn observe_value(&self, v: f64) {
        let i = self.bounds.partition_point(|b| *b < v);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        // Saturating float-to-int cast: a NaN or negative counts as 0.
        self.sum_micros
            .fetch_add((v * 1e6) as u64, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = Vec::with_capacity(self.counts.len());
        let mut total = 0;
        for (i, c) in self.counts.iter().enumerate() {
            total += c.load(Ordering::Relaxed);
            let bound = self.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            cumulative.push((bound, total));
        }
        HistogramSnapshot {
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
            count: total,
            cumulative,
        }
    }
}

/// A histogram's counts at one instant: cumulative per bound, as Prometheus
/// exposes them.
#[derive(Debug, Clone, PartialEq)]
pub struct HistogramSnapshot {
    /// Sum of the observations.
    pub sum: f64,
    /// How many.
    pub count: u64,
    /// `(upper bound, observations at or below it)`, the last bound `+Inf`.
    pub cumulative: Vec<(f64, u64)>,
}

impl HistogramSnapshot {
    /// Counts per bucket, not cumulative: what the encoder sums up itself.
    fn per_bucket(&self) -> Vec<(f64, u64)> {
        let mut below = 0;
        self.cumulative
            .iter()
            .map(|(b, c)| {
                let inside = c - below;
                below = *c;
                (*b, inside)
            })
            .collect()
    }

    /// The `q` quantile (0..=1) of what was observed since `earlier`, as
    /// Prometheus' `histogram_quantile` estimates it (linear within the
    /// bucket; the last finite bound for the `+Inf` bucket). `None` when
    /// nothing was observed in between.
    pub fn quantile_since(&self, earlier: Option<&HistogramSnapshot>, q: f64) -> Option<f64> {
        let delta: Vec<(f64, u64)> = self
            .cumulative
            .iter()
            .enumerate()
            .map(|(i, (b, c))| {
                let before = earlier.and_then(|e| e.cumulative.get(i)).map_or(0, |x| x.1);
                (*b, c.saturating_sub(before))
            })
            .collect();
        let total = delta.last()?.1;
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let (mut lower, mut below) = (0.0, 0u64);
        for (bound, count) in delta {
            if count as f64 >= rank {
                if bound.is_infinite() {
                    return Some(lower);
                }
                let inside = (count - below) as f64;
                let fraction = if inside > 0.0 {
                    (rank - below as f64) / inside
                } else {
                    1.0
                };
                return Some(lower + (bound - lower) * fraction.clamp(0.0, 1.0));
            }
            (lower, below) = (bound, count);
        }
        Some(lower)
    }
}

/// A set of histograms keyed by one bounded label (an RPC name, an
/// operation): created up front, so the hot path never takes a lock.
#[derive(Debug)]
pub struct HistogramSet {
    entries: Vec<(&'static str, Histogram)>,
    other: Histogram,
}

impl HistogramSet {
    /// One histogram per name over `bounds`, plus `other` for a name not
    /// listed.
    pub fn new(names: &[&'static str], bounds: &'static [f64]) -> Self {
        HistogramSet {
            entries: names.iter().map(|n| (*n, Histogram::new(bounds))).collect(),
            other: Histogram::new(bounds),
        }
    }

    /// The histogram of `name`.
    pub fn get(&self, name: &str) -> &Histogram {
        self.entries
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(&self.other, |(_, h)| h)
    }

    /// Every name with its counts, `other` last, skipping names never
    /// observed (an RPC a gateway never serves need not be a series).
    pub fn snapshots(&self) -> Vec<(String, HistogramSnapshot)> {
        self.entries
            .iter()
            .map(|(n, h)| (n.to_string(), h.snapshot()))
            .chain(std::iter::once((
                "other".to_string(),
                self.other.snapshot(),
            )))
            .filter(|(_, s)| s.count > 0)
            .collect()
    }
}

/// A counter per bounded label value, created up front.
#[derive(Debug)]
pub struct CounterSet {
    entries: Vec<(&'static str, AtomicU64)>,
}

impl CounterSet {
    /// One counter per name.
    pub fn new(names: &[&'static str]) -> Self {
        CounterSet {
            entries: names.iter().map(|n| (*n, AtomicU64::new(0))).collect(),
        }
    }

    /// Adds one to `name` (ignored for a name not listed: labels stay
    /// bounded).
    pub fn inc(&self, name: &str) {
        if let Some((_, c)) = self.entries.iter().find(|(n, _)| *n == name) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Every name with its count.
    pub fn values(&self) -> Vec<(String, u64)> {
        self.entries
            .iter()
            .map(|(n, c)| (n.to_string(), c.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Writes metric families; what a scrape's closure is given.
pub struct Exposition<'a, 'e> {
    encoder: &'a mut DescriptorEncoder<'e>,
}

type Labels<'l> = Vec<(&'l str, &'l str)>;

impl Exposition<'_, '_> {
    /// A counter; `name` without `_total` (the encoder appends it).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> fmt::Result {
        self.encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?
            .encode_counter::<NoLabelSet, _, u64>(&value, None)
    }

    /// A counter with one label per series.
    pub fn counters<'v>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels<'v>, u64)>,
    ) -> fmt::Result {
        let mut family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Counter)?;
        for (labels, value) in series {
            family
                .encode_family(&labels)?
                .encode_counter::<NoLabelSet, _, u64>(&value, None)?;
        }
        Ok(())
    }

    /// A gauge.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> fmt::Result {
        self.encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?
            .encode_gauge(&value)
    }

    /// A gauge with labels per series.
    pub fn gauges<'v>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels<'v>, f64)>,
    ) -> fmt::Result {
        let mut family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Gauge)?;
        for (labels, value) in series {
            family.encode_family(&labels)?.encode_gauge(&value)?;
        }
        Ok(())
    }

    /// A histogram.
    pub fn histogram(&mut self, name: &str, help: &str, h: &HistogramSnapshot) -> fmt::Result {
        self.encoder
            .encode_descriptor(name, help, None, MetricType::Histogram)?
            .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.per_bucket(), None)
    }

    /// A histogram with labels per series.
    pub fn histograms<'v>(
        &mut self,
        name: &str,
        help: &str,
        series: impl IntoIterator<Item = (Labels<'v>, HistogramSnapshot)>,
    ) -> fmt::Result {
        let mut family = self
            .encoder
            .encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (labels, h) in series {
            family
                .encode_family(&labels)?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &h.per_bucket(), None)?;
        }
        Ok(())
    }
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

type Write = dyn Fn(&mut Exposition<'_, '_>) -> fmt::Result + Send + Sync;

/// The one collector of a scrape: the closure that writes every family.
struct Scrape(Arc<Write>);

impl fmt::Debug for Scrape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Scrape")
    }
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        (self.0)(&mut Exposition {
            encoder: &mut encoder,
        })
    }
}

/// The Prometheus text of what `write` writes. A formatting error (which
/// only a bug in a closure could cause) yields what was written before it.
pub fn render(
    write: impl Fn(&mut Exposition<'_, '_>) -> fmt::Result + Send + Sync + 'static,
) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape(Arc::new(write))));
    let mut text = String::new();
    if let Err(e) = prometheus_client::encoding::prometheus_text::encode(&mut text, &registry) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_at_inf() {
        let h = Histogram::new(&[0.001, 0.01]);
        h.observe(Duration::from_micros(500));
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_secs(1));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(
            s.cumulative,
            vec![(0.001, 1), (0.01, 2), (f64::INFINITY, 3)]
        );
        assert!((s.sum - 1.0055).abs() < 1e-6, "{}", s.sum);
    }

    #[test]
    fn a_value_on_a_bound_counts_in_that_bucket() {
        // Prometheus buckets are `le`: less than or equal.
        let h = Histogram::new(&[1.0, 2.0]);
        h.observe_value(1.0);
        assert_eq!(h.snapshot().cumulative[0], (1.0, 1));
    }

    #[test]
    fn quantiles_interpolate_within_the_bucket() {
        let h = Histogram::new(&[0.001, 0.002, 0.004]);
        for _ in 0..99 {
            h.observe(Duration::from_micros(500));
        }
        h.observe(Duration::from_micros(3_000));
        let s = h.snapshot();
        let p50 = s.quantile_since(None, 0.5).unwrap();
        assert!(p50 > 0.0 && p50 <= 0.001, "{p50}");
        let p100 = s.quantile_since(None, 1.0).unwrap();
        assert!(p100 > 0.002 && p100 <= 0.004, "{p100}");
    }

    #[test]
    fn quantiles_count_only_what_came_after_the_earlier_snapshot() {
        let h = Histogram::new(&[0.001, 0.01, 0.1]);
        for _ in 0..1000 {
            h.observe(Duration::from_millis(50));
        }
        let before = h.snapshot();
        assert_eq!(before.quantile_since(Some(&before), 0.99), None);
        h.observe(Duration::from_micros(100));
        let p99 = h.snapshot().quantile_since(Some(&before), 0.99).unwrap();
        assert!(p99 <= 0.001, "{p99}");
    }

    #[test]
    fn past_the_last_bound_the_quantile_is_the_last_finite_bound() {
        let h = Histogram::new(&[0.001]);
        h.observe(Duration::from_secs(3));
        assert_eq!(h.snapshot().quantile_since(None, 0.99), Some(0.001));
    }

    #[test]
    fn sets_keep_labels_to_the_names_given() {
        let set = HistogramSet::new(&["read", "write"], LATENCY_BOUNDS);
        set.get("read").observe(Duration::from_millis(1));
        set.get("made-up").observe(Duration::from_millis(1));
        let names: Vec<_> = set.snapshots().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["read", "other"]);
        let counters = CounterSet::new(&["a"]);
        counters.inc("a");
        counters.inc("b");
        assert_eq!(counters.values(), vec![("a".to_string(), 1)]);
    }

    #[test]
    fn the_text_format_has_types_help_and_labels() {
        let h = Histogram::new(&[0.5]);
        h.observe_value(0.25);
        let text = render(move |out| {
            out.counter("shoal_t_requests", "Requests", 3)?;
            out.counters(
                "shoal_t_by_op",
                "By op",
                vec![(vec![("op", "get"), ("code", "200")], 2)],
            )?;
            out.gauges("shoal_t_up", "Up", vec![(vec![("member", "n-1")], 1.0)])?;
            out.histogram("shoal_t_seconds", "Time", &h.snapshot())
        });
        assert!(
            text.contains("# TYPE shoal_t_requests_total counter"),
            "{text}"
        );
        assert!(text.contains("shoal_t_requests_total 3"), "{text}");
        assert!(
            text.contains("shoal_t_by_op_total{op=\"get\",code=\"200\"} 2"),
            "{text}"
        );
        assert!(text.contains("shoal_t_up{member=\"n-1\"} 1"), "{text}");
        assert!(
            text.contains("shoal_t_seconds_bucket{le=\"+Inf\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("shoal_t_seconds_bucket{le=\"0.5\"} 1"),
            "{text}"
        );
        assert!(text.contains("shoal_t_seconds_sum 0.25"), "{text}");
        assert!(text.contains("shoal_t_seconds_count 1"), "{text}");
    }
}
