//! `shoal-sim`: runs the deterministic cluster simulation over many seeds
//! (what `cargo xtask sim` calls, in release mode).
//!
//! ```text
//! shoal-sim [--seeds N] [--seed S] [--clean] [--twice] [--verbose] [--trace FILE]
//! ```
//!
//! `--seeds N` runs seeds `S..S+N` (S defaults to 1); `--seed S` alone runs
//! that one seed. Each failing seed is printed with a one-line reproduction
//! command; the summary ends with `lost: 0` when nothing acknowledged was
//! lost. `--twice` runs every seed a second time, in a fresh process, and
//! fails the seed unless both runs give the same trace hash (the determinism
//! check). `--trace FILE` writes each seed's trace to `FILE.<seed>` (diff two
//! runs to find where they part); `SHOAL_SIM_LOG=debug` (an env filter)
//! prints the services' logs stamped with simulated time. Exits 1 if any
//! seed failed.

use std::process::ExitCode;
use std::time::Instant;

use shoal_tests::sim::faults::FaultCounts;
use shoal_tests::sim::{run, Options};

/// Log timestamps in simulated time (the host's view), which is what a
/// reader of a seed's log needs; wall time would differ from run to run.
struct SimTime;

impl tracing_subscriber::fmt::time::FormatTime for SimTime {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(w, "{:?}", turmoil::sim_elapsed())
    }
}

fn main() -> ExitCode {
    // The nodes' and gateways' own logs, for debugging one seed:
    // SHOAL_SIM_LOG=debug shoal-sim --seed S 2> log
    if std::env::var_os("SHOAL_SIM_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_timer(SimTime)
            .with_ansi(false)
            .with_writer(std::io::stderr)
            .with_env_filter(tracing_subscriber::EnvFilter::from_env("SHOAL_SIM_LOG"))
            .init();
    }
    let mut seeds: Option<u64> = None;
    let mut first: Option<u64> = None;
    let mut faults = true;
    let mut verbose = false;
    let mut trace: Option<String> = None;
    let mut twice = false;
    let mut hash_only = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |what: &str| -> u64 {
            match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => n,
                None => {
                    eprintln!("{what} needs a number");
                    std::process::exit(2);
                }
            }
        };
        match arg.as_str() {
            "--seeds" => seeds = Some(number("--seeds")),
            "--seed" => first = Some(number("--seed")),
            "--clean" => faults = false,
            "--verbose" | "-v" => verbose = true,
            "--twice" => twice = true,
            "--hash-only" => hash_only = true,
            "--trace" => trace = args.next(),
            "--help" | "-h" => {
                println!(
                    "shoal-sim [--seeds N] [--seed S] [--clean] [--twice] [--verbose] [--trace FILE]"
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("unknown argument {other:?} (try --help)");
                return ExitCode::from(2);
            }
        }
    }
    let count = seeds.unwrap_or(if first.is_some() { 1 } else { 100 });
    let first = first.unwrap_or(1);
    if hash_only {
        // The replay side of `--twice`: one seed, its trace hash and length.
        let report = run(&Options::for_seed(first, faults));
        println!("{:016x} {}", report.trace_hash, report.trace_len);
        return ExitCode::SUCCESS;
    }
    let started = Instant::now();
    let (mut ops, mut acked, mut lost, mut stale, mut reads, mut sim_ms) = (0, 0, 0, 0, 0, 0);
    let mut replayed = 0u64;
    let mut totals = FaultCounts::default();
    let mut failed = Vec::new();
    for seed in first..first.saturating_add(count) {
        let options = Options::for_seed(seed, faults);
        // A panic in the harness itself still names its seed.
        let report = match std::panic::catch_unwind(|| run(&options)) {
            Ok(mut r) if twice => {
                match replay(seed, faults) {
                    Ok(again) if again == (r.trace_hash, r.trace_len) => replayed += 1,
                    Ok((hash, len)) => r.violations.push(format!(
                        "not deterministic: trace {:016x} ({} lines), then {hash:016x} ({len} lines)",
                        r.trace_hash, r.trace_len
                    )),
                    Err(e) => r.violations.push(format!("the replay failed: {e}")),
                }
                r
            }
            Ok(r) => r,
            Err(_) => {
                println!("FAIL seed {seed}: panicked");
                println!("  reproduce: cargo xtask sim --seed {seed}{}", flag(faults));
                failed.push(seed);
                continue;
            }
        };
        ops += report.ops;
        acked += report.acked_checked;
        lost += report.lost;
        stale += report.stale_reads;
        reads += report.register_reads;
        sim_ms += report.sim_ms;
        totals.merge(&report.faults);
        if verbose {
            println!("{}", report.summary());
        }
        if let Some(path) = &trace {
            let path = format!("{path}.{seed}");
            if let Err(e) = std::fs::write(&path, report.trace.join("\n")) {
                eprintln!("cannot write {path}: {e}");
            }
        }
        if !report.passed() {
            println!("FAIL {}", report.summary());
            for v in report.violations.iter().take(10) {
                println!("  {v}");
            }
            println!("  reproduce: cargo xtask sim --seed {seed}{}", flag(faults));
            failed.push(seed);
        }
    }
    let wall = started.elapsed();
    let minutes = wall.as_secs_f64() / 60.0;
    println!(
        "seeds: {count} ({} failed), operations: {ops}, faults: {} [{totals}], \
         acknowledged writes checked: {acked}, lost: {lost}",
        failed.len(),
        totals.total()
    );
    if twice {
        println!("determinism: {replayed} of {count} seeds replayed the same trace");
    }
    println!(
        "stale register reads: {stale}/{reads} ({:.2}%), wall {:.1} s: {:.1} seeds/min, \
         {:.0} simulated ops/s of wall time, {:.1} s simulated",
        if reads > 0 {
            stale as f64 * 100.0 / reads as f64
        } else {
            0.0
        },
        wall.as_secs_f64(),
        count as f64 / minutes.max(1e-9),
        ops as f64 / wall.as_secs_f64().max(1e-9),
        sim_ms as f64 / 1000.0
    );
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failing seeds: {failed:?}");
        ExitCode::FAILURE
    }
}

/// Runs `seed` again in a fresh process and returns its trace hash and
/// length. A fresh process is what reproducing a seed means (`cargo xtask
/// sim --seed S`); a second run inside this process would also inherit its
/// heap layout, and with it the order of anything keyed by address.
fn replay(seed: u64, faults: bool) -> Result<(u64, usize), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(["--hash-only", "--seed", &seed.to_string()]);
    if !faults {
        cmd.arg("--clean");
    }
    let out = cmd.output().map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    match (
        words.next().and_then(|h| u64::from_str_radix(h, 16).ok()),
        words.next().and_then(|l| l.parse().ok()),
    ) {
        (Some(hash), Some(len)) if out.status.success() => Ok((hash, len)),
        _ => Err(format!("{}: {text}", out.status)),
    }
}

fn flag(faults: bool) -> &'static str {
    if faults {
        ""
    } else {
        " --clean"
    }
}
