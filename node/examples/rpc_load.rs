//! The replica service under load on loopback: coordinate-write and replicate
//! RPC latency (p50, p99) and throughput with 16 concurrent callers against
//! one node, with `sync = always` and `never`; then the time one node takes to
//! hand 10,000 hints to an owner that comes back.
//!
//! ```text
//! cargo run -p shoal-node --release --example rpc_load [-- SECONDS]
//! ```
//!
//! Closed loop: each caller sends its next request when the last one was
//! answered, over the node's shared pooled tarpc connection (as the gateway
//! does). Keys are unique, so every write is a fresh WAL append and nothing
//! is served from a cached state.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_node::config::{Config, SyncMode};
use shoal_node::env::Env;
use shoal_node::node::{self, NodeHandle};
use shoal_node::pool::Pool;
use shoal_node::rpc::{CoordinateRequest, ReplicateRequest};
use shoal_vclock::{Content, Context, SiblingSet};

const CALLERS: usize = 16;
const HINTS: usize = 10_000;
const RPC: Duration = Duration::from_secs(10);

/// One secret for every member this example starts.
fn secret() -> shoal_node::config::SecretText {
    static SECRET: std::sync::OnceLock<shoal_node::config::SecretText> = std::sync::OnceLock::new();
    SECRET
        .get_or_init(shoal_node::config::SecretText::random)
        .clone()
}

fn config(id: &str, dir: &Path, seeds: &[String], sync: SyncMode) -> Config {
    let mut c = Config::default();
    c.member.id = id.into();
    c.member.listen = "127.0.0.1:0".into();
    c.member.seeds = seeds.to_vec();
    c.member.data_dir = dir.join(id);
    c.security.cluster_secret = Some(secret());
    c.storage.sync = sync;
    c
}

fn pool() -> Pool {
    let transport = config("client", Path::new("."), &[], SyncMode::Never)
        .transport()
        .expect("the example's secret is valid");
    Pool::new(Env::real().net, transport, Duration::from_secs(2), 8 << 20)
}

fn value() -> Content {
    Content::value(vec![b'v'; 100], "application/octet-stream")
}

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Coordinate,
    Replicate,
}

/// One closed-loop run: returns sorted latencies and the wall time.
async fn run(
    addr: &str,
    op: Op,
    seconds: f64,
    template: Arc<SiblingSet>,
) -> Result<(Vec<Duration>, Duration), String> {
    let pool = Arc::new(pool());
    let start = Instant::now();
    let until = start + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let pool = pool.clone();
        let addr = addr.to_string();
        let template = template.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0u64;
            while Instant::now() < until {
                let key = format!("{caller}-{i}").into_bytes();
                i += 1;
                let t = Instant::now();
                let answer = match op {
                    Op::Coordinate => {
                        let request = CoordinateRequest {
                            key,
                            context: Context::empty(),
                            content: value(),
                            hint_for: None,
                            supersede: false,
                        };
                        pool.call(&addr, RPC, |c, ctx| async move {
                            c.coordinate(ctx, request).await.map(|r| r.map(|_| ()))
                        })
                        .await
                    }
                    Op::Replicate => {
                        let request = ReplicateRequest {
                            key,
                            siblings: (*template).clone(),
                            hint_for: None,
                        };
                        pool.call(&addr, RPC, |c, ctx| async move {
                            c.replicate(ctx, request).await
                        })
                        .await
                    }
                };
                match answer {
                    Ok(Ok(())) => lat.push(t.elapsed()),
                    Ok(Err(e)) => return Err(format!("remote error: {e}")),
                    Err(e) => return Err(format!("call failed: {e}")),
                }
            }
            Ok(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.map_err(|e| e.to_string())??);
    }
    let wall = start.elapsed();
    all.sort();
    Ok((all, wall))
}

/// Hints older than the TTL (by their newest write time) are dropped, so the
/// versions carry the real wall time.
fn now_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

async fn load(seconds: f64) -> Result<(), String> {
    println!("{CALLERS} callers, closed loop, {seconds} s per row, 100-byte values, unique keys");
    println!(
        "{:<8} {:<11} {:>10} {:>10} {:>10} {:>8}",
        "sync", "rpc", "ops/s", "p50 ms", "p99 ms", "ops"
    );
    let mut template = SiblingSet::new();
    template
        .update(&Context::empty(), "writer#1", value(), now_millis())
        .map_err(|e| e.to_string())?;
    let template = Arc::new(template);
    for (name, sync) in [("always", SyncMode::Always), ("never", SyncMode::Never)] {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let node = node::start(config("node-1", dir.path(), &[], sync), Env::real())
            .await
            .map_err(|e| e.to_string())?;
        for (label, op) in [("coordinate", Op::Coordinate), ("replicate", Op::Replicate)] {
            let (lat, wall) = run(node.advertise(), op, seconds, template.clone()).await?;
            println!(
                "{:<8} {:<11} {:>10.0} {:>10.3} {:>10.3} {:>8}",
                name,
                label,
                lat.len() as f64 / wall.as_secs_f64(),
                pct(&lat, 0.50),
                pct(&lat, 0.99),
                lat.len()
            );
        }
        node.shutdown().await;
    }
    Ok(())
}

async fn wait_until(
    what: &str,
    limit: Duration,
    mut cond: impl FnMut() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            return Err(format!("timed out after {limit:?} waiting for {what}"));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

fn all_alive(nodes: &[&NodeHandle], count: usize) -> bool {
    nodes.iter().all(|n| {
        let m = n.members();
        m.len() == count && m.iter().all(|i| i.status == shoal_gossip::Status::Alive)
    })
}

/// Two nodes: the owner stops, the holder takes 10,000 hints for it, the owner
/// returns on the same data directory; timed from its start until the holder
/// holds no hint. Default handoff and gossip settings.
async fn handoff() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let holder = node::start(
        config("holder", dir.path(), &[], SyncMode::Always),
        Env::real(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let seeds = vec![holder.advertise().to_string()];
    let owner = node::start(
        config("owner", dir.path(), &seeds, SyncMode::Always),
        Env::real(),
    )
    .await
    .map_err(|e| e.to_string())?;
    wait_until("both nodes alive", Duration::from_secs(30), || {
        all_alive(&[&holder, &owner], 2)
    })
    .await?;
    owner.shutdown().await;

    let mut set = SiblingSet::new();
    set.update(&Context::empty(), "writer#1", value(), now_millis())
        .map_err(|e| e.to_string())?;
    let pool = Arc::new(pool());
    let t = Instant::now();
    let mut tasks = Vec::new();
    for caller in 0..CALLERS {
        let (pool, set, addr) = (pool.clone(), set.clone(), holder.advertise().to_string());
        tasks.push(tokio::spawn(async move {
            for i in (caller..HINTS).step_by(CALLERS) {
                let request = ReplicateRequest {
                    key: format!("hinted-{i}").into_bytes(),
                    siblings: set.clone(),
                    hint_for: Some("owner".into()),
                };
                pool.call(&addr, RPC, |c, ctx| async move {
                    c.replicate(ctx, request).await
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            }
            Ok::<(), String>(())
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    let stored = t.elapsed();
    if holder.hint_count() != HINTS as u64 {
        return Err(format!(
            "holder has {} hints, wanted {HINTS}",
            holder.hint_count()
        ));
    }

    let t = Instant::now();
    let owner = node::start(
        config("owner", dir.path(), &seeds, SyncMode::Always),
        Env::real(),
    )
    .await
    .map_err(|e| e.to_string())?;
    wait_until(
        "the holder to see the owner alive",
        Duration::from_secs(30),
        || {
            holder.members().iter().any(|m| {
                m.id.as_str() == "owner"
                    && m.status == shoal_gossip::Status::Alive
                    && m.address == owner.advertise()
            })
        },
    )
    .await?;
    let seen = t.elapsed();
    wait_until(
        "every hint to be delivered",
        Duration::from_secs(300),
        || holder.hint_count() == 0,
    )
    .await?;
    let delivered = t.elapsed();
    let config = Config::default();
    println!(
        "\nhandoff: {HINTS} hints stored in {:.2} s; owner restarted, seen alive after {:.2} s, \
         all delivered and deleted after {:.2} s ({:.0} hints/s from restart) \
         [retry_interval_ms {}, gossip interval_ms {}]",
        stored.as_secs_f64(),
        seen.as_secs_f64(),
        delivered.as_secs_f64(),
        HINTS as f64 / delivered.as_secs_f64(),
        config.handoff.retry_interval_ms,
        config.gossip.interval_ms,
    );
    owner.shutdown().await;
    holder.shutdown().await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let seconds = match std::env::args().nth(1) {
        None => 5.0,
        Some(s) => match s.parse::<f64>() {
            Ok(v) if v > 0.0 && v <= 3600.0 => v,
            _ => {
                eprintln!("usage: rpc_load [SECONDS in (0, 3600]]; got {s:?}");
                std::process::exit(2);
            }
        },
    };
    if let Err(e) = load(seconds).await {
        eprintln!("rpc_load: {e}");
        std::process::exit(1);
    }
    if let Err(e) = handoff().await {
        eprintln!("rpc_load: {e}");
        std::process::exit(1);
    }
}
