//! `cargo xtask sim`: the deterministic cluster simulation over many seeds,
//! in release mode (the `shoal-sim` binary of `shoal-tests`). Each failing
//! seed is printed with a one-line reproduction command, then a summary:
//! seeds, operations, faults, acknowledged writes checked, lost.

use clap::Args;

/// Arguments of `cargo xtask sim`.
#[derive(Args, Debug)]
pub struct SimArgs {
    /// Number of seeds to run (from --seed, or 1).
    #[arg(long)]
    seeds: Option<u64>,
    /// The first seed (alone: run just that one).
    #[arg(long)]
    seed: Option<u64>,
    /// No faults: stale register reads then fail the seed (W+R>N).
    #[arg(long)]
    clean: bool,
    /// Run every seed twice; a seed whose two traces differ fails.
    #[arg(long)]
    twice: bool,
    /// One summary line per seed.
    #[arg(long, short)]
    verbose: bool,
    /// Build and run in debug mode (slower; for debugging the harness).
    #[arg(long)]
    debug: bool,
}

/// Builds and runs `shoal-sim` with the given seeds.
pub fn run(args: &SimArgs) -> Result<(), String> {
    let mut cmd = crate::cargo();
    cmd.args(["run", "--quiet", "-p", "shoal-tests", "--bin", "shoal-sim"]);
    if !args.debug {
        cmd.arg("--release");
    }
    cmd.arg("--");
    if let Some(n) = args.seeds {
        cmd.args(["--seeds", &n.to_string()]);
    }
    if let Some(s) = args.seed {
        cmd.args(["--seed", &s.to_string()]);
    }
    if args.clean {
        cmd.arg("--clean");
    }
    if args.twice {
        cmd.arg("--twice");
    }
    if args.verbose {
        cmd.arg("--verbose");
    }
    crate::run_cmd(&mut cmd)
}
