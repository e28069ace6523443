//! `cargo xtask ci`: the whole gate, in the order that fails fastest.

use std::process::Command;

use clap::Args;

use crate::{cargo, run_cmd};

/// Arguments of `cargo xtask ci`.
#[derive(Args)]
pub(crate) struct CiArgs {
    /// Skip `cargo fmt --check` and clippy (tests and bench compilation only).
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
