//! Prints the ring's balance and movement figures (issue 2, BENCHMARKS.md):
//! for 3, 10 and 100 members at several token counts, the max/mean replicated
//! share (n = 3) and the fraction of keys that move when one member joins, next
//! to the optimum 1/(m+1).
//!
//! `cargo run -p shoal-ring --release --example balance`
//!
//! Member ids are `node-1..node-m` (what `cargo xtask cluster up` uses), and, to
//! show that the figure is not a lucky draw of names, the mean and worst over 20
//! clusters of random ids.

use rand::{rngs::StdRng, Rng, SeedableRng};
use shoal_ring::{diff, Member, Ring, RingConfig, DEFAULT_VNODES_PER_WEIGHT};

const N: usize = 3;

fn build(ids: &[String], vnodes: u32) -> Ring {
    Ring::new(
        ids.iter().map(|id| Member::new(id.clone(), 1)),
        RingConfig {
            vnodes_per_weight: vnodes,
        },
    )
    .expect("valid ring")
}

/// (max/mean replicated share, primary fraction moved by a join / optimum,
/// replica fraction moved by a join / optimum, ranges per member)
fn measure(ids: &[String], joiner: &str, vnodes: u32) -> (f64, f64, f64, f64) {
    let ring = build(ids, vnodes);
    let own = ring.ownership(N);
    let shares: Vec<f64> = own.values().map(|o| o.replicated).collect();
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    let max = shares.iter().cloned().fold(0.0, f64::max);

    let mut bigger_ids = ids.to_vec();
    bigger_ids.push(joiner.to_string());
    let bigger = build(&bigger_ids, vnodes);
    let m = ids.len() as f64;
    // Primary moves: keys whose first owner changes (n = 1 diff).
    let primary_moved: f64 = diff(&ring, &bigger, 1)
        .iter()
        .map(|c| c.range.fraction())
        .sum();
    // Replica moves: copies that must be streamed to the joiner, as a fraction
    // of all copies; the optimum is that the joiner ends with 1/(m+1) of them.
    let copies = N.min(ids.len() + 1) as f64;
    let replica_moved: f64 = diff(&ring, &bigger, N)
        .iter()
        .map(|c| c.range.fraction() * c.gained.len() as f64 / copies)
        .sum();
    let optimum = 1.0 / (m + 1.0);
    let ranges_per_member = ring.ranges().len() as f64 / m;
    (
        max / mean,
        primary_moved / optimum,
        replica_moved / optimum,
        ranges_per_member,
    )
}

fn main() {
    println!(
        "shoal-ring balance (n = {N}); default vnodes_per_weight = {DEFAULT_VNODES_PER_WEIGHT}"
    );
    println!(
        "{:>7} {:>6} | {:>22} {:>24} {:>24} {:>8} | {:>24}",
        "members",
        "tokens",
        "max/mean repl. share",
        "join: primary moved/opt",
        "join: replicas moved/opt",
        "ranges",
        "20 random id sets: max/mean (avg, worst)"
    );
    let mut rng = StdRng::seed_from_u64(42);
    for &m in &[3usize, 10, 100] {
        for &vnodes in &[16u32, 32, 64, 128, 256] {
            let ids: Vec<String> = (1..=m).map(|i| format!("node-{i}")).collect();
            let joiner = format!("node-{}", m + 1);
            let (balance, primary, replicas, ranges) = measure(&ids, &joiner, vnodes);
            let trials = if m == 100 { 5 } else { 20 };
            let mut sum = 0.0;
            let mut worst: f64 = 0.0;
            for _ in 0..trials {
                let ids: Vec<String> = (0..m)
                    .map(|_| format!("n{:016x}", rng.gen::<u64>()))
                    .collect();
                let (b, _, _, _) = measure(&ids, "joiner", vnodes);
                sum += b;
                worst = worst.max(b);
            }
            println!(
                "{m:>7} {vnodes:>6} | {balance:>22.3} {primary:>24.3} {replicas:>24.3} {ranges:>8.0} | {:>12.3} {worst:>10.3}{}",
                sum / trials as f64,
                if m == 100 { " (5 sets)" } else { "" },
            );
        }
    }
    println!("optimum for a join: the new member ends up with 1/(m+1) of the keys (ratio 1.000)");
}
