//! `cargo xtask ci`: the whole gate, in the order that fails fastest.

use std::process::Command;

use clap::Args;

use crate::{cargo, run_cmd};

/// Arguments of `cargo xtask ci`.
#[derive(Args)]
pub(crate) struct CiArgs {
    /// Skip `cargo fmt --check` and clippy (tests, bench compilation and packaging only).
    #[arg(long)]
    no_lint: bool,
    /// Use `cargo test` even when cargo-nextest is installed.
    #[arg(long)]
    no_nextest: bool,
}

pub(crate) fn run(args: &CiArgs) -> Result<(), String> {
    if !args.no_lint {
        run_cmd(cargo().args(["fmt", "--all", "--check"]))?;
        run_cmd(cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // The process tests (tests/src/procs.rs) run the real binaries from
    // target/debug/; `cargo test` builds another package's bins only as test
    // harnesses, so a fresh clone has none until they are built as bins.
    run_cmd(cargo().args(["build", "-p", "shoal-node", "-p", "shoal-gateway", "--bins"]))?;
    // nextest's per-test slow-timeout (.config/nextest.toml) turns a hung test
    // into a named failure; it does not run doctests, so those run separately.
    if !args.no_nextest && has_nextest() {
        run_cmd(cargo().args([
            "nextest",
            "run",
            "--workspace",
            "--profile",
            "ci",
            "--no-tests",
            "warn",
        ]))?;
        run_cmd(cargo().args(["test", "--workspace", "--doc"]))?;
    } else {
        run_cmd(cargo().args(["test", "--workspace"]))?;
    }
    run_cmd(cargo().args(["bench", "--workspace", "--no-run"]))?;
    // The algorithm crates and the client are published; the services are
    // not. One invocation for all seven: cargo (>= 1.90) then resolves their dependencies on each
    // other (coordinator -> ring, vclock; merkle -> ring) from a local overlay
    // of the crates just packaged, since they are not on crates.io yet, and
    // verifies each by building it from its .crate (~30 s cold on 2 cores).
    // `shoal-client` (gateway/client) is published too. `--allow-dirty` so a
    // local run with uncommitted work checks what is on disk; CI's clone is
    // clean either way.
    run_cmd(cargo().args([
        "package",
        "--allow-dirty",
        "-p",
        "shoal-ring",
        "-p",
        "shoal-vclock",
        "-p",
        "shoal-merkle",
        "-p",
        "shoal-gossip",
        "-p",
        "shoal-storage",
        "-p",
        "shoal-coordinator",
        "-p",
        "shoal-client",
    ]))?;
    eprintln!("xtask ci: all checks passed");
    Ok(())
}

fn has_nextest() -> bool {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["nextest", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
