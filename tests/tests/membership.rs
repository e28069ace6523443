//! Scenario 7: membership changes under load. Four in-process nodes and a
//! gateway; clients write and read at W=R=2 the whole time while a fifth node
//! joins (streaming the ranges it gains before it serves) and then one of the
//! original four is decommissioned (streaming its ranges to their new owners
//! before it leaves). Anti-entropy is off, so the handovers alone must carry
//! the data.
//!
//! Two checks: during the changes, a checker keeps reading back acknowledged
//! writes of unique keys (each written once, so nothing can supersede them)
//! and every such read must return the value; at the end, the oracle on the
//! final four-node ring.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_tests::cluster::{node_id, Cluster, Spec};
use shoal_tests::http::Client;
use shoal_tests::oracle::{History, Outcome};
use shoal_tests::{run, wait, workload};

/// Reads back random acknowledged unique-key writes until `stop`; returns
/// (reads, misses with details).
async fn checker(
    addr: std::net::SocketAddr,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> (u64, Vec<String>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut client = Client::new(addr, Duration::from_secs(5));
    let scratch = History::new();
    let (mut reads, mut misses) = (0, Vec::new());
    while !stop.load(Ordering::SeqCst) {
        let acked: Vec<_> = history
            .writes()
            .into_iter()
            .filter(|w| w.outcome == Outcome::Ok && w.key.starts_with("u-"))
            .collect();
        if acked.is_empty() {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        for _ in 0..50 {
            let w = &acked[rng.gen_range(0..acked.len())];
            reads += 1;
            match workload::read(&mut client, &scratch, &w.key, Some(2)).await {
                Some((values, _)) if values.contains(&w.value) => {}
                other => misses.push(format!(
                    "{} at {:?}: {:?}",
                    w.key,
                    Instant::now(),
                    other.map(|(v, _)| v.len())
                )),
            }
        }
    }
    (reads, misses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_decommission_under_load_lose_nothing() {
    let name = "join_and_decommission_under_load_lose_nothing";
    let seed = run::seed(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(Spec {
        nodes: 4,
        anti_entropy: false,
        request_timeout_ms: 3_000,
        ..Spec::default()
    })
    .await;
    let addr = cluster.gateway_addr();
    let history = Arc::new(History::new());
    let stop = Arc::new(AtomicBool::new(false));
    let load = workload::Spec {
        clients: 6,
        // An upper bound; the test stops the clients once the changes are
        // done (the long form keeps them going for minutes around them).
        duration: Duration::from_secs(240),
        shared_keys: 8,
        shared_ratio: 0.3,
        w: Some(2),
        r: Some(2),
        timeout: Duration::from_secs(5),
        prefix: String::new(),
        stop: Some(stop.clone()),
        ..workload::Spec::default()
    };
    let clients = tokio::spawn(workload::run(&load, addr, history.clone(), seed));
    let check = tokio::spawn(checker(addr, history.clone(), stop.clone(), seed ^ 7));
    // Between changes the load runs on the ring as it now is: until it has
    // acknowledged `phase` more operations (bounded), not for a fixed time.
    let phase = if run::long() { 20_000 } else { 300 };
    let settle = |history: Arc<History>| async move {
        let from = history.counts().ok;
        let ran = wait::within(Duration::from_secs(60), || {
            let history = history.clone();
            async move { history.counts().ok >= from + phase }
        })
        .await;
        assert!(
            ran.is_some(),
            "the load did not acknowledge {phase} operations within 60 s"
        );
    };
    settle(history.clone()).await;

    // Join node-5.
    let join_start = Instant::now();
    let joiner = cluster.add_node(|c| c.member.join = true).await;
    history.fault();
    let joined = wait::within(Duration::from_secs(60), || async {
        cluster.node(joiner).and_then(|n| n.join_report()).is_some()
            && cluster.wait_alive(5, Duration::ZERO).await.is_some()
    })
    .await;
    let report = cluster.node(joiner).and_then(|n| n.join_report());
    println!(
        "{name}: {} joined in {joined:?}: {report:?}",
        node_id(joiner)
    );
    assert!(
        joined.is_some(),
        "{} did not finish joining within 60 s (seed {seed})",
        node_id(joiner)
    );
    settle(history.clone()).await;

    // Decommission one of the original four.
    let leaving = rng.gen_range(0..4);
    let leave_start = Instant::now();
    let report = cluster.decommission(leaving, Duration::from_secs(60)).await;
    history.fault();
    println!(
        "{name}: {} decommissioned in {:?}: {report:?}",
        node_id(leaving),
        leave_start.elapsed()
    );
    assert!(
        report.is_ok(),
        "decommission of {} failed (seed {seed})",
        node_id(leaving)
    );
    let four = cluster.wait_alive(4, Duration::from_secs(30)).await;
    assert!(
        four.is_some(),
        "the gateway does not see the four remaining nodes (seed {seed})"
    );
    settle(history.clone()).await;
    stop.store(true, Ordering::SeqCst);
    let changes = join_start.elapsed();

    tokio::time::timeout(Duration::from_secs(30), clients)
        .await
        .expect("clients stop")
        .expect("client task");
    let (reads, misses) = tokio::time::timeout(Duration::from_secs(30), check)
        .await
        .expect("checker stops")
        .expect("checker task");
    println!(
        "{name}: during the changes ({changes:?}) the checker re-read {reads} acknowledged writes; unreadable: {}",
        misses.len()
    );
    for m in misses.iter().take(5) {
        println!("  {m}");
    }

    let verdict =
        workload::final_check(name, addr, &history, Duration::from_secs(30), started).await;
    verdict.assert_holds(seed);
    assert!(
        misses.is_empty(),
        "{} acknowledged writes were unreadable during the membership changes (seed {seed})",
        misses.len()
    );
    assert!(
        verdict.counts.ok > 100,
        "the workload barely ran (seed {seed})"
    );
    cluster.shutdown().await;
}
