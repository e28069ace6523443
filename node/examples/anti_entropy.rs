//! Anti-entropy and join-streaming figures on real nodes over 127.0.0.1
//! (issue 10): `cargo run -p shoal-node --release --example anti_entropy`.
//!
//! Two nodes (N=2, so both replicate the whole ring) hold 100,000 keys, one
//! of them missing 1%: the repair RPC's time and bytes, next to the bytes of
//! a full key/digest listing of the ring; then the bytes between the now
//! equal replicas; then a third node joins and streams its ranges.
//! Default tree shape (2^20 leaves) and default anti-entropy rate limits;
//! `sync = "never"` so the figures measure the exchange, not fsync.
//! `LEAF_BITS=16` runs it with a coarser tree.

use std::time::{Duration, Instant};

use shoal_node::anti_entropy::wire_size;
use shoal_node::config::{Config, SyncMode};
use shoal_node::env::Env;
use shoal_node::node::{self, NodeHandle};
use shoal_node::pool::Pool;
use shoal_node::rpc::{ExchangeReport, ScanRequest};
use shoal_vclock::{Content, Context, SiblingSet};

const KEYS: usize = 100_000;
const VALUE_BYTES: usize = 100;
const RPC: Duration = Duration::from_secs(60);

/// One secret for every member this example starts.
fn secret() -> shoal_node::config::SecretText {
    static SECRET: std::sync::OnceLock<shoal_node::config::SecretText> = std::sync::OnceLock::new();
    SECRET
        .get_or_init(shoal_node::config::SecretText::random)
        .clone()
}

fn config(id: &str, dir: &std::path::Path, seeds: &[String]) -> Config {
    let mut c = Config::default();
    c.member.id = id.into();
    c.member.listen = "127.0.0.1:0".into();
    c.member.seeds = seeds.to_vec();
    c.member.data_dir = dir.join(id);
    c.security.cluster_secret = Some(secret());
    c.replication.n = 2;
    c.replication.w = 1;
    c.replication.r = 1;
    c.gossip.interval_ms = 100;
    c.gossip.failure_timeout_ms = 2_000;
    c.anti_entropy.enabled = false;
    c.handoff.enabled = false;
    c.http.request_timeout_ms = 500;
    c.storage.sync = SyncMode::Never;
    c.log.filter = "warn".into();
    c.anti_entropy.leaf_bits = leaf_bits();
    c
}

/// `LEAF_BITS=16` compares a coarser tree (default: the config default, 20).
fn leaf_bits() -> u8 {
    std::env::var("LEAF_BITS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Config::default().anti_entropy.leaf_bits)
}

async fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn load(pool: &Pool, n: &NodeHandle, items: &[(Vec<u8>, SiblingSet)]) {
    for batch in items.chunks(2_000) {
        let batch = batch.to_vec();
        pool.call(n.advertise(), RPC, |c, ctx| async move {
            c.merge_batch(ctx, batch).await
        })
        .await
        .expect("call")
        .expect("merge");
    }
}

async fn repair(pool: &Pool, n: &NodeHandle) -> (ExchangeReport, Duration) {
    let t = Instant::now();
    let report = pool
        .call(
            n.advertise(),
            RPC,
            |c, ctx| async move { c.repair(ctx).await },
        )
        .await
        .expect("call")
        .expect("repair");
    (
        report.exchanges.into_iter().next().expect("one peer"),
        t.elapsed(),
    )
}

/// Bytes of listing every `(key, digest)` of the ring from `n`, as the scan
/// RPC answers it: what a Merkle-less repair would have to send.
async fn full_listing_bytes(pool: &Pool, n: &NodeHandle) -> (u64, u64) {
    let (mut bytes, mut keys) = (0, 0);
    let mut cursor = None;
    loop {
        let request = ScanRequest {
            ranges: vec![shoal_merkle::TokenRange::FULL],
            cursor,
            max_keys: 10_000,
            values: false,
        };
        bytes += wire_size(&request);
        let page = pool
            .call(n.advertise(), RPC, |c, ctx| async move {
                c.scan(ctx, request).await
            })
            .await
            .expect("call")
            .expect("scan");
        bytes += wire_size(&page);
        keys += page.entries.len() as u64;
        cursor = page.next;
        if cursor.is_none() {
            return (bytes, keys);
        }
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = node::start(config("node-1", dir.path(), &[]), Env::real())
        .await
        .expect("start");
    let seeds = vec![a.advertise().to_string()];
    let b = node::start(config("node-2", dir.path(), &seeds), Env::real())
        .await
        .expect("start");
    wait("two live nodes", || {
        a.members().len() == 2 && b.members().len() == 2
    })
    .await;
    let transport = config("client", dir.path(), &[])
        .transport()
        .expect("the example's secret is valid");
    let pool = Pool::new(Env::real().net, transport, Duration::from_secs(5), 64 << 20);

    let items: Vec<(Vec<u8>, SiblingSet)> = (0..KEYS)
        .map(|i| {
            let key = format!("user:{i:08}").into_bytes();
            let mut set = SiblingSet::new();
            let content = Content::value(vec![b'x'; VALUE_BYTES], "application/octet-stream");
            set.update(&Context::empty(), "loader#1", content, 1)
                .expect("version");
            (key, set)
        })
        .collect();
    load(&pool, &a, &items).await;
    let missing: Vec<(Vec<u8>, SiblingSet)> = items
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 100 != 0)
        .map(|(_, kv)| kv.clone())
        .collect();
    load(&pool, &b, &missing).await;
    println!(
        "{} keys of {VALUE_BYTES} bytes on node-1, {} on node-2; 2^{} leaves",
        KEYS,
        missing.len(),
        leaf_bits()
    );

    let (listing_bytes, listed) = full_listing_bytes(&pool, &a).await;
    let (diff, took) = repair(&pool, &a).await;
    assert_eq!(diff.error, None, "{diff:?}");
    assert_eq!(
        a.store().with_tree(|t| t.root_hash()),
        b.store().with_tree(|t| t.root_hash()),
        "converged"
    );
    let (equal, equal_took) = repair(&pool, &a).await;

    println!();
    println!("| case | time | bytes moved | of which Merkle / listing / states | keys repaired | rounds | leaves differing |");
    println!("|---|---|---|---|---|---|---|");
    println!(
        "| 1% missing on one replica (1,000 keys) | {:.0} ms | {} ({:.1} KiB) | {} / {} / {} | {} | {} | {} |",
        took.as_secs_f64() * 1e3,
        diff.bytes_sent + diff.bytes_received,
        (diff.bytes_sent + diff.bytes_received) as f64 / 1024.0,
        diff.bytes_merkle,
        diff.bytes_listing,
        diff.bytes_sent + diff.bytes_received - diff.bytes_merkle - diff.bytes_listing,
        diff.keys_pulled + diff.keys_pushed,
        diff.rounds,
        diff.leaves_differing
    );
    println!(
        "| full key/digest listing of the ring ({listed} keys), for reference | - | {listing_bytes} ({:.1} KiB) | - | - | - | - |",
        listing_bytes as f64 / 1024.0
    );
    println!(
        "| equal replicas | {:.1} ms | {} | {} / 0 / 0 | 0 | {} | 0 |",
        equal_took.as_secs_f64() * 1e3,
        equal.bytes_sent + equal.bytes_received,
        equal.bytes_merkle,
        equal.rounds
    );

    // A third node joins: with N=2 it takes about 2/3 of the ring.
    let mut c = config("node-3", dir.path(), &seeds);
    c.member.join = true;
    let joiner = node::start(c, Env::real()).await.expect("start");
    wait("the join to finish", || joiner.join_report().is_some()).await;
    let report = joiner.join_report().expect("report");
    let secs = report.elapsed_ms as f64 / 1e3;
    println!();
    println!("| join streaming | keys | bytes | time | keys/s | MB/s |");
    println!("|---|---|---|---|---|---|");
    println!(
        "| node-3 joins node-1, node-2 (N=2, {} ranges) | {} | {} | {:.2} s | {:.0} | {:.1} |",
        report.ranges,
        report.keys,
        report.bytes,
        secs,
        report.keys as f64 / secs,
        report.bytes as f64 / secs / 1e6
    );
    joiner.shutdown().await;
    b.shutdown().await;
    a.shutdown().await;
}
