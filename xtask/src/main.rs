//! `cargo xtask`: Shoal's project commands (matklad's cargo-xtask pattern).
//!
//! One binary with subcommands, no build scripts, few dependencies: it only
//! orchestrates `cargo` and the Shoal binaries.

use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

mod bench;
mod ci;
mod cluster;
mod deploy;
mod http;
mod sim;

/// Shoal project commands.
#[derive(Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// What `.ci/run` runs: fmt check, clippy -D warnings, all tests, benches compile.
    Ci(ci::CiArgs),
    /// A local cluster in the background: up, status, stop, kill, start, add, down.
    Cluster(cluster::ClusterArgs),
    /// Print Kubernetes or Docker Compose manifests for K nodes and a gateway (same binaries and config keys).
    Deploy(deploy::DeployArgs),
    /// Load-generate against a cluster (and with --compare, Redis and etcd); print ops/s and latency.
    Bench(bench::BenchArgs),
    /// Deterministic simulation of a whole cluster over many seeds (turmoil): oracle, faults, determinism.
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Cmd::Ci(args) => ci::run(&args),
        Cmd::Cluster(args) => cluster::run(&args),
        Cmd::Deploy(args) => deploy::run(&args),
        Cmd::Bench(args) => bench::run(&args),
        Cmd::Sim(args) => sim::run(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cmd`, echoing it first, and turns a non-zero exit into an error that
/// names the command.
pub(crate) fn run_cmd(cmd: &mut Command) -> Result<(), String> {
    eprintln!("$ {}", display(cmd));
    let status = cmd
        .status()
        .map_err(|e| format!("could not start `{}`: {e}", display(cmd)))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{}` failed with {status}", display(cmd)))
    }
}

fn display(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// The `cargo` that invoked us (so `cargo +toolchain xtask` stays consistent).
pub(crate) fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}
