//! Convergence figures for the gossip membership, from the deterministic
//! simulator in `tests/sim`: `cargo run -p shoal-gossip --release --example
//! convergence [-- --loss-rounds-1000 N] [--only SIZE]`.
//!
//! For each cluster size: rounds until a new member is known to all, rounds until
//! a crash is seen as down by all, false downs at 10% message loss, and bincode
//! bytes sent per member per round (default config: fan-out 3, down after 10
//! silent rounds).
//!
//! The 10% loss run is 10,000 rounds for 10 and 100 members but 150 for 1,000
//! by default: one process simulating 1,000 full members walks about six
//! million digest entries per round, 0.3 to 0.6 s per round on a shared 2-core
//! box. `--loss-rounds-1000 10000` runs the full length (about an hour).

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::time::Instant;

use shoal_gossip::Status;
use sim::{Sim, SimConfig};

const SEED: u64 = 20_240_605;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let loss_rounds_1000: u64 = args
        .iter()
        .position(|a| a == "--loss-rounds-1000")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(150);
    let only: Option<usize> = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok());
    println!("seed {SEED}; default config (fan-out 3, down after 10 silent rounds)");
    println!(
        "{:>6} {:>8} {:>10} {:>6} {:>9} {:>10} {:>14} {:>12}",
        "n", "warm-up", "join(all)", "reach", "crash", "loss rnds", "false downs", "B/member/rnd"
    );
    for n in [10usize, 100, 1_000] {
        if only.is_some_and(|o| o != n) {
            continue;
        }
        let started = Instant::now();
        let mut sim = Sim::new(SimConfig::new(n), SEED);
        let warmup = sim
            .run_until(500, Sim::converged)
            .expect("cluster converges");

        sim.measure_bytes(true);
        let before = sim.stats.bytes;
        let measured_rounds = 20;
        sim.run(measured_rounds);
        let per_member_round =
            (sim.stats.bytes - before) as f64 / (n as f64 * measured_rounds as f64);
        sim.measure_bytes(false);

        let j = sim.add_node();
        let join = sim
            .run_until(200, |s| s.all_know(j))
            .expect("joiner is learned");
        let reach = 2 * (n as f64 + 1.0).log2().ceil() as u64 + 4;

        assert!(sim.run_until(100, Sim::converged).is_some());
        sim.crash(n / 2);
        let crash = sim
            .run_until(200, |s| s.all_see(n / 2, Status::Down))
            .expect("crash is detected");

        let rounds = if n >= 1_000 { loss_rounds_1000 } else { 10_000 };
        let mut cfg = SimConfig::new(n);
        cfg.loss = 0.1;
        let mut lossy = Sim::new(cfg, SEED + 1);
        lossy.discard_events();
        lossy
            .run_until(500, Sim::converged)
            .expect("lossy cluster converges");
        lossy.stats.false_downs = 0;
        lossy.run(rounds);
        println!(
            "{:>6} {:>8} {:>10} {:>6} {:>9} {:>10} {:>14} {:>12.0}   ({:.1?})",
            n,
            warmup,
            join,
            format!("<={reach}"),
            crash,
            rounds,
            lossy.stats.false_downs,
            per_member_round,
            started.elapsed()
        );
    }
    println!("join: rounds until every member lists the new one; crash: rounds until every live member shows it down");
}
