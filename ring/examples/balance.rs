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
//!
//! Then the same within zones (issue 25): members spread round robin over
//! zones (what `cluster up --zones` does), the balance inside each zone, each
//! zone's share, and what a join into one zone moves.
//! `cargo run -p shoal-ring --release --example balance -- zones` prints only
//! that table.

use std::collections::BTreeMap;

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
    if std::env::args().nth(1).as_deref() != Some("zones") {
        plain();
        println!();
    }
    zones();
}

fn plain() {
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

/// Members `ids[i]` in zone `zones[i % zones.len()]`, or by the explicit
/// per-zone counts of `sizes`.
fn zoned(ids: &[String], sizes: &[usize]) -> Vec<Member> {
    let mut out = Vec::new();
    let mut next = ids.iter();
    // Round robin over the zones that still want members.
    let mut left = sizes.to_vec();
    while left.iter().any(|&l| l > 0) {
        for (z, l) in left.iter_mut().enumerate() {
            if *l > 0 {
                *l -= 1;
                let id = next.next().expect("enough ids");
                out.push(
                    Member::new(id.clone(), 1)
                        .in_zone(format!("zone-{}", (b'a' + z as u8) as char)),
                );
            }
        }
    }
    out
}

struct ZoneFigures {
    /// max/mean replicated share over all members.
    all: f64,
    /// The worst zone's max/mean replicated share among its own members.
    within: f64,
    /// The worst zone's max/mean primary share on a ring of that zone alone.
    alone: f64,
    /// Smallest and largest zone share of all copies.
    zone_shares: (f64, f64),
    /// Copies the joiner receives / its zone's mean share per member after.
    join: f64,
    /// Whether the join moved copies only to the joiner.
    only_joiner: bool,
}

fn measure_zones(members: &[Member], joiner: Member, vnodes: u32, n: usize) -> ZoneFigures {
    let config = RingConfig {
        vnodes_per_weight: vnodes,
    };
    let ring = Ring::new(members.iter().cloned(), config).expect("valid ring");
    let own = ring.ownership(n);
    let shares: Vec<f64> = own.values().map(|o| o.replicated).collect();
    let mean = shares.iter().sum::<f64>() / shares.len() as f64;
    let all = shares.iter().cloned().fold(0.0, f64::max) / mean;
    let mut by_zone: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for (id, o) in &own {
        by_zone
            .entry(ring.zone_of(id).expect("member"))
            .or_default()
            .push(o.replicated);
    }
    let mut within: f64 = 0.0;
    let (mut lo, mut hi) = (f64::MAX, 0f64);
    for s in by_zone.values() {
        let total: f64 = s.iter().sum();
        lo = lo.min(total);
        hi = hi.max(total);
        within = within.max(s.iter().cloned().fold(0.0, f64::max) / (total / s.len() as f64));
    }
    let mut alone: f64 = 0.0;
    for zone in by_zone.keys() {
        let own = Ring::new(members.iter().filter(|m| m.zone == *zone).cloned(), config)
            .expect("valid ring")
            .ownership(1);
        let mean = 1.0 / own.len() as f64;
        alone = alone.max(own.values().map(|o| o.primary).fold(0.0, f64::max) / mean);
    }
    let mut with = members.to_vec();
    with.push(joiner.clone());
    let bigger = Ring::new(with, config).expect("valid ring");
    let changes = diff(&ring, &bigger, n);
    let only_joiner = changes.iter().all(|c| c.gained == [joiner.id.clone()]);
    let copies = n.min(members.len() + 1) as f64;
    let moved: f64 = changes
        .iter()
        .map(|c| c.range.fraction() * c.gained.len() as f64 / copies)
        .sum();
    let after = bigger.ownership(n);
    let zone_after: Vec<f64> = after
        .iter()
        .filter(|(id, _)| bigger.zone_of(id) == Some(joiner.zone.as_str()))
        .map(|(_, o)| o.replicated)
        .collect();
    let fair = zone_after.iter().sum::<f64>() / zone_after.len() as f64;
    ZoneFigures {
        all,
        within,
        alone,
        zone_shares: (lo, hi),
        join: moved / fair,
        only_joiner,
    }
}

fn zones() {
    println!(
        "zones (n = {N}, {DEFAULT_VNODES_PER_WEIGHT} tokens): members round robin over the zones; a join adds one member to zone-a"
    );
    println!(
        "{:>12} {:>7} | {:>10} {:>16} {:>16} {:>17} {:>17} | {:>28}",
        "zone sizes",
        "members",
        "max/mean",
        "in-zone max/mean",
        "zone alone, n=1",
        "zone shares",
        "join: moved/opt",
        "20 random id sets: in-zone (avg, worst)"
    );
    let mut rng = StdRng::seed_from_u64(25);
    let layouts: [&[usize]; 9] = [
        &[2, 2, 2],
        &[3, 3, 3],
        &[4, 4, 4],
        &[10, 10, 10],
        &[34, 33, 33],
        &[3, 3],
        &[5, 5],
        &[2, 2, 2, 2],
        &[1, 2, 3],
    ];
    for sizes in layouts {
        let m: usize = sizes.iter().sum();
        let ids: Vec<String> = (1..=m).map(|i| format!("node-{i}")).collect();
        let joiner = Member::new(format!("node-{}", m + 1), 1).in_zone("zone-a");
        let f = measure_zones(&zoned(&ids, sizes), joiner, DEFAULT_VNODES_PER_WEIGHT, N);
        assert!(f.only_joiner, "a join moved copies to others");
        let trials = if m > 50 { 5 } else { 20 };
        let (mut sum, mut worst) = (0.0, 0f64);
        for _ in 0..trials {
            let ids: Vec<String> = (0..m)
                .map(|_| format!("n{:016x}", rng.gen::<u64>()))
                .collect();
            let g = measure_zones(
                &zoned(&ids, sizes),
                Member::new("joiner", 1).in_zone("zone-a"),
                DEFAULT_VNODES_PER_WEIGHT,
                N,
            );
            assert!(g.only_joiner, "a join moved copies to others");
            sum += g.within;
            worst = worst.max(g.within);
        }
        let sizes_text: Vec<String> = sizes.iter().map(usize::to_string).collect();
        println!(
            "{:>12} {m:>7} | {:>10.3} {:>16.3} {:>16.3} {:>8.3}..{:<8.3} {:>17.3} | {:>12.3} {worst:>10.3}{}",
            sizes_text.join("+"),
            f.all,
            f.within,
            f.alone,
            f.zone_shares.0,
            f.zone_shares.1,
            f.join,
            sum / trials as f64,
            if trials == 5 { " (5 sets)" } else { "" },
        );
    }
    println!(
        "in-zone: the worst zone's max/mean share among its members; zone alone: the same for primaries on a ring of that zone's members only (equal when n = zones)"
    );
    println!(
        "zone shares: each zone's part of all copies (1/zones when n = zones); join: copies the joiner receives / the mean share of a member of its zone after the join (1.000 = its fair share; only the joiner gains)"
    );
}
