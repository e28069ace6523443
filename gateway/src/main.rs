//! `shoal-gateway --config FILE`: runs a gateway until SIGTERM or SIGINT.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use shoal_gateway::Gateway;
use shoal_node::config::{Config, LogFormat};
use shoal_node::env::Env;

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
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-gateway: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
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
        wait_for_signal().await;
        tracing::info!("signal received; shutting down");
        gateway.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn init_logging(config: &Config) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| config.log.filter.clone());
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.log.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Human => builder.try_init(),
    };
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
