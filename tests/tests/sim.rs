//! The deterministic cluster simulation (issue 12) under `cargo test`: a
//! clean run where every register read must see the latest acknowledged
//! write, a modest number of fault seeds (membership changes included)
//! checked by the oracle, and the same seed twice giving the same trace. `cargo xtask sim --seeds N` runs many
//! more seeds in release mode.
//!
//! Every run is bounded in simulated time (turmoil's simulation duration and
//! the checker's convergence bounds), so none can hang.

use shoal_tests::sim::{run, Options, Report};

/// Seeds with faults per `cargo test` run: a few minutes of CI on 2 cores.
const FAULT_SEEDS: std::ops::RangeInclusive<u64> = 1..=16;

#[track_caller]
fn assert_passed(report: &Report) {
    println!("{}", report.summary());
    assert!(
        report.passed(),
        "seed {} failed:\n  {}\nreproduce: cargo xtask sim --seed {}{}\n{}",
        report.seed,
        report.violations.join("\n  "),
        report.seed,
        if report.faults_enabled {
            ""
        } else {
            " --clean"
        },
        report.summary()
    );
}

#[test]
fn clean_run_reads_see_the_latest_acknowledged_write() {
    let report = run(&Options::for_seed(1, false));
    assert_passed(&report);
    assert!(report.register_reads > 0, "the workload read no register");
    assert_eq!(report.stale_reads, 0);
    assert_eq!(
        report.unknown + report.failed,
        0,
        "a clean run failed writes"
    );
    assert_eq!(report.faults.total(), 0);
    assert!(report.acked_checked > 0, "the oracle checked nothing");
}

#[test]
fn fault_seeds_lose_no_acknowledged_write() {
    let mut faults = 0;
    let mut checked = 0;
    for seed in FAULT_SEEDS {
        let report = run(&Options::for_seed(seed, true));
        assert_passed(&report);
        assert_eq!(report.lost, 0);
        faults += report.faults.total();
        checked += report.acked_checked;
    }
    println!("faults injected: {faults}, acknowledged writes checked: {checked}");
    assert!(faults > 0, "the schedule injected no fault");
    assert!(checked > 0, "the oracle checked nothing");
}

/// Seeds that once brought a deleted value back, each replayed as it ran
/// when it was found (a change to the workload or the fault schedule
/// changes what they do, so the range above stays the broad check).
#[test]
fn seeds_that_brought_a_deleted_value_back() {
    // 59: a coordinator slowed past its budget had stored the write; the
    // gateway had another coordinator mint it again, the client's context
    // covered only that copy, and a delete with it left the first standing.
    // 63: the tombstone GC purged a key while a member outside its owners
    // (an owner-to-be of a leave that a crash undid) still held an older
    // copy, which the leave's retry made an owner's again.
    for seed in [59, 63] {
        let report = run(&Options::for_seed(seed, true));
        assert_passed(&report);
    }
}

#[test]
fn same_seed_same_trace() {
    // A clean seed, and seed 11: a crash with unsynced writes (sync never),
    // link loss, latency spikes, a one-way partition, clock skew, a node
    // joining and a node decommissioned.
    for options in [Options::for_seed(2, false), Options::for_seed(11, true)] {
        let first = run(&options);
        let second = run(&options);
        println!("{}\n{}", first.summary(), second.summary());
        assert!(first.trace_len > 0);
        assert_eq!(
            (first.trace_hash, first.trace_len),
            (second.trace_hash, second.trace_len),
            "seed {} ({}) is not deterministic",
            options.seed,
            if options.faults { "faults" } else { "clean" }
        );
    }
    let eleven = run(&Options::for_seed(11, true));
    let f = eleven.faults;
    assert!(
        f.crash > 0
            && f.loss > 0
            && f.latency > 0
            && f.partition_oneway > 0
            && f.skew > 0
            && f.join > 0
            && f.decommission > 0,
        "seed 11 should crash a node, lose, delay and one-way-cut messages, skew a clock, \
         and join and decommission a node: {f}"
    );
    assert_eq!(eleven.sync, "Never", "seed 11 should run without fsync");
}
