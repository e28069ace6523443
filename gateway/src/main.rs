//! `shoal-gateway --config FILE`: runs a gateway until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shoal_gateway::Gateway;
use shoal_node::config::Config;
use shoal_node::env::Env;

/// mimalloc's per-thread free lists make an allocation a few dozen
/// instructions where glibc's took hundreds, and it returns freed pages
/// instead of keeping them in per-thread arenas (BENCHMARKS, "The allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The client-facing Shoal coordinator: HTTP API routed by the ring.
#[derive(Debug, Parser)]
#[command(name = "shoal-gateway", version)]
struct Args {
    /// TOML config file; every key can be overridden by `SHOAL_*` variables.
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(args.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal-gateway: {e}");
            return ExitCode::from(2);
        }
    };
    shoal_node::logging::init(&config.log);
    let runtime = match config.runtime.builder().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signal = shoal_node::logging::shutdown_signal();
        let gateway = match Gateway::start(config, Env::real()).await {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "gateway failed to start");
                eprintln!("shoal-gateway: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!(
            "shoal-gateway {} listening on http://{}",
            gateway.id(),
            gateway.http_addr()
        );
        signal.await;
        tracing::info!("signal received; shutting down");
        gateway.shutdown().await;
        ExitCode::SUCCESS
    })
}
