//! `shoal-node --config FILE`: one Shoal replica.

use std::process::ExitCode;

use shoal_node::{config::Config, env::Env, logging};

/// mimalloc's per-thread free lists make an allocation a few dozen
/// instructions where glibc's took hundreds, and it returns freed pages
/// instead of keeping them in per-thread arenas (BENCHMARKS, "The allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let path = match logging::config_path(std::env::args().skip(1), "shoal-node") {
        Ok(p) => p,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let config = match Config::load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal-node: {e}");
            return ExitCode::from(2);
        }
    };
    logging::init(&config.log);
    let runtime = match config.runtime.builder().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-node: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let signal = logging::shutdown_signal();
        let node = match shoal_node::node::start(config, Env::real()).await {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("shoal-node: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("shoal-node {} listening on {}", node.id(), node.addr());
        tokio::select! {
            biased;
            _ = signal => tracing::info!("shutting down"),
            _ = node.stop_requested() => tracing::info!("decommissioned; shutting down"),
        }
        node.shutdown().await;
        ExitCode::SUCCESS
    })
}
