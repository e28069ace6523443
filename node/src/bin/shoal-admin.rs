//! `shoal-admin repair ADDR` and `shoal-admin decommission ADDR`: operator
//! commands against one node's RPC address (what `nodetool` is to Cassandra).
//! `cargo xtask cluster repair|decommission NODE` runs this binary so that
//! xtask itself stays free of the RPC stack.
//!
//! It proves the cluster secret like any member: `--secret-file FILE`, or
//! else `SHOAL_SECURITY__CLUSTER_SECRET` (hex) or
//! `SHOAL_SECURITY__CLUSTER_SECRET_FILE` from the environment.

use std::process::ExitCode;
use std::time::Duration;

use shoal_node::config::Config;
use shoal_node::env::Env;
use shoal_node::pool::Pool;
use shoal_node::rpc::{HandoverReport, RepairReport};

const USAGE: &str = "usage: shoal-admin [--secret-file FILE] repair|decommission [--force] ADDR\n\
    ADDR is a node's RPC address (host:port).\n\
    --force        decommission even if fewer than N live storage members remain\n\
    --secret-file  the cluster secret (else SHOAL_SECURITY__CLUSTER_SECRET or\n\
                   SHOAL_SECURITY__CLUSTER_SECRET_FILE)\n\
    repair        run anti-entropy for the node's ranges now and print what moved\n\
    decommission  stream the node's ranges to their new owners, then stop it";

/// A decommission waits for gossip to settle and then streams every range
/// the node holds; a large node takes a while.
const DECOMMISSION_TIMEOUT: Duration = Duration::from_secs(3_600);
const REPAIR_TIMEOUT: Duration = Duration::from_secs(3_600);

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut secret_file = None;
    if args.first().map(String::as_str) == Some("--secret-file") {
        if args.len() < 2 {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
        secret_file = Some(std::path::PathBuf::from(args.remove(1)));
        args.remove(0);
    }
    let force = args.iter().any(|a| a == "--force");
    args.retain(|a| a != "--force");
    let (command, addr) = match args.as_slice() {
        [c, a] if c == "repair" || c == "decommission" => (c.clone(), a.clone()),
        [h] if h == "--help" || h == "-h" => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    if addr.parse::<std::net::SocketAddr>().is_err() {
        eprintln!("shoal-admin: {addr:?} is not a host:port address\n{USAGE}");
        return ExitCode::from(2);
    }
    // The same keys as every member's config, from the environment, with
    // the flag over both.
    let mut config = match Config::load(None) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("shoal-admin: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(path) = secret_file {
        config.security.cluster_secret = None;
        config.security.cluster_secret_file = Some(path);
    }
    let transport = match config.transport() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("shoal-admin: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shoal-admin: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let pool = Pool::new(Env::real().net, transport, Duration::from_secs(5), 64 << 20);
        let result = if command == "repair" {
            pool.call(&addr, REPAIR_TIMEOUT, |c, ctx| async move {
                c.repair(ctx).await
            })
            .await
            .map(|r| r.map(|report| print_repair(&report)))
        } else {
            pool.call(&addr, DECOMMISSION_TIMEOUT, |c, ctx| async move {
                c.decommission(ctx, force).await
            })
            .await
            .map(|r| r.map(|report| print_handover(&report)))
        };
        match result {
            Ok(Ok(())) => ExitCode::SUCCESS,
            Ok(Err(e)) => {
                eprintln!("shoal-admin: {command} refused: {e}");
                ExitCode::FAILURE
            }
            Err(e) => {
                eprintln!("shoal-admin: {command}: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn print_repair(r: &RepairReport) {
    println!(
        "repair of {}: {} exchange(s) in {} ms",
        r.node,
        r.exchanges.len(),
        r.elapsed_ms
    );
    println!(
        "{:<12} {:>6} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>11} {:>8}  result",
        "peer",
        "ranges",
        "leaves",
        "differing",
        "listed",
        "pulled",
        "pushed",
        "skipped",
        "bytes",
        "ms"
    );
    for e in &r.exchanges {
        println!(
            "{:<12} {:>6} {:>9} {:>9} {:>7} {:>7} {:>7} {:>7} {:>11} {:>8}  {}",
            e.peer,
            e.ranges,
            e.leaves_compared,
            e.leaves_differing,
            e.keys_listed,
            e.keys_pulled,
            e.keys_pushed,
            e.keys_skipped,
            e.bytes_sent + e.bytes_received,
            e.elapsed_ms,
            e.error.as_deref().unwrap_or("ok")
        );
    }
}

fn print_handover(r: &HandoverReport) {
    println!(
        "decommission of {}: {} range(s), {} key(s), {} bytes streamed in {} ms; the node now leaves and stops",
        r.node, r.ranges, r.keys, r.bytes, r.elapsed_ms
    );
}
