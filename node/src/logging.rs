//! Log output for the binaries: `RUST_LOG` wins over `log.filter`; human or
//! JSON lines on stderr.

use tracing_subscriber::EnvFilter;

use crate::config::{LogConfig, LogFormat};

/// Added to a filter that does not name tarpc: tarpc opens an INFO span for
/// every RPC on both ends, and with INFO enabled each one is allocated in the
/// subscriber's registry and entered on every poll (1-2% of a gateway's CPU
/// per read in `cargo xtask bench`'s profile) while nothing logs inside it.
/// Its warnings and errors still show.
const QUIET_RPC_SPANS: &str = "tarpc=warn";

/// `filter` with tarpc's per-call spans off unless it says otherwise.
fn with_quiet_rpc_spans(filter: &str) -> String {
    if filter.contains("tarpc") {
        filter.to_string()
    } else if filter.trim().is_empty() {
        format!("info,{QUIET_RPC_SPANS}")
    } else {
        format!("{filter},{QUIET_RPC_SPANS}")
    }
}

/// Installs the global subscriber (binaries only; libraries never do).
pub fn init(config: &LogConfig) {
    let from_env = std::env::var("RUST_LOG").ok();
    let filter = from_env
        .as_deref()
        .and_then(|f| EnvFilter::try_new(with_quiet_rpc_spans(f)).ok())
        .or_else(|| EnvFilter::try_new(with_quiet_rpc_spans(&config.filter)).ok())
        .unwrap_or_else(|| EnvFilter::new(with_quiet_rpc_spans("info")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match config.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Registers for SIGTERM and SIGINT now and returns a future that resolves on
/// the first of them. Registration is eager (not on first poll) so that a
/// signal arriving right after start-up, before the caller awaits, is not
/// lost to the default handler, which would kill the process uncleanly.
/// Call it inside the runtime, before announcing readiness.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let term = signal(SignalKind::terminate());
        let int = signal(SignalKind::interrupt());
        async move {
            match (term, int) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        biased;
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Parses `--config FILE` (the binaries' only argument) from `args`.
pub fn config_path(
    args: impl IntoIterator<Item = String>,
    binary: &str,
) -> Result<Option<std::path::PathBuf>, String> {
    let mut args = args.into_iter();
    let mut path = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--config" | "-c" => {
                path = Some(args.next().ok_or("--config needs a FILE")?.into());
            }
            "--help" | "-h" => {
                return Err(format!(
                    "usage: {binary} --config FILE\n\nConfig is TOML; every key can be overridden by SHOAL_<SECTION>__<KEY> environment variables."
                ))
            }
            other => return Err(format!("unexpected argument {other:?}; usage: {binary} --config FILE")),
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_spans_are_quiet_unless_the_filter_names_tarpc() {
        assert_eq!(with_quiet_rpc_spans("info"), "info,tarpc=warn");
        assert_eq!(with_quiet_rpc_spans(""), "info,tarpc=warn");
        assert_eq!(
            with_quiet_rpc_spans("debug,tarpc=trace"),
            "debug,tarpc=trace"
        );
        assert!(EnvFilter::try_new(with_quiet_rpc_spans("shoal_node=debug")).is_ok());
    }
}
