//! What every scenario shares around its workload: the seed, the short or
//! long form, and latency percentiles (bounded waiting is [`crate::wait`]).

use std::time::Duration;

use rand::{Rng, SeedableRng};

/// The run's seed: `SHOAL_TEST_SEED` if set (to replay a failure), else
/// random. Printed, with the line that replays it.
pub fn seed(test: &str) -> u64 {
    let seed = std::env::var("SHOAL_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::thread_rng().gen());
    println!(
        "{test}: seed {seed} (replay: SHOAL_TEST_SEED={seed} cargo nextest run -p shoal-tests {test}){}",
        if long() { " [long form]" } else { "" }
    );
    seed
}

/// Whether the long form was asked for (`SHOAL_LONG=1`): each scenario runs
/// for minutes instead of seconds.
pub fn long() -> bool {
    std::env::var("SHOAL_LONG").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// `short` in the short form, `long_form` under `SHOAL_LONG=1`.
pub fn duration(short: Duration, long_form: Duration) -> Duration {
    if long() {
        long_form
    } else {
        short
    }
}

/// The `p`-th percentile (0..=100) of `samples` (nearest rank); zero if empty.
pub fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// At most `max` of `items`, chosen by `seed`: the per-key inspections
/// (`/v1/debug/replicas` asks every replica) cost too much to run on the
/// hundreds of thousands of keys a long run writes, and a seeded sample
/// stays reproducible. Everything when there are `max` or fewer.
pub fn sample<T: Clone>(items: &[T], max: usize, seed: u64) -> Vec<T> {
    use rand::seq::SliceRandom;
    if items.len() <= max {
        return items.to_vec();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    items.choose_multiple(&mut rng, max).cloned().collect()
}

static PANICS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

static HOOK: std::sync::Once = std::sync::Once::new();

/// Counts every panic in this process from now on (still printing it), so a
/// test can assert that servers running in-process never panicked, even in
/// a spawned task whose panic would otherwise only reach stderr. Returns the
/// count so far: compare [`panics`] against it, since tests sharing a
/// process (plain `cargo test`) share the counter.
pub fn count_panics() -> u64 {
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            previous(info);
        }));
    });
    panics()
}

/// Panics counted since [`count_panics`].
pub fn panics() -> u64 {
    PANICS.load(std::sync::atomic::Ordering::SeqCst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_by_nearest_rank() {
        let ms = |v: &[u64]| {
            v.iter()
                .map(|&m| Duration::from_millis(m))
                .collect::<Vec<_>>()
        };
        assert_eq!(percentile(&[], 99.0), Duration::ZERO);
        let s = ms(&(1..=100).collect::<Vec<_>>());
        assert_eq!(percentile(&s, 99.0), Duration::from_millis(99));
        assert_eq!(percentile(&s, 50.0), Duration::from_millis(50));
        assert_eq!(percentile(&s, 100.0), Duration::from_millis(100));
        assert_eq!(percentile(&ms(&[7]), 99.0), Duration::from_millis(7));
    }
}
