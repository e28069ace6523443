//! Scenario 1: SIGKILL under load. Five real `shoal-node` processes and a
//! real gateway; eight clients write unique keys and read-modify-write shared
//! ones while a random node is SIGKILLed and restarted on its data directory
//! every few seconds. Then the cluster is healed and every acknowledged write
//! is read back and judged by the oracle. Once with W=2 (sync `periodic`: a
//! killed node may lose its unsynced tail, the other acknowledging replica
//! still has it), once with W=1 under `sync = "always"` (the single
//! acknowledging replica must have it on disk).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_tests::oracle::History;
use shoal_tests::procs::{ProcCluster, Spec};
use shoal_tests::{run, workload};

async fn sigkill_under_load(name: &str, w: usize, sync: &'static str) {
    let seed = run::seed(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let spec = Spec {
        nodes: 5,
        n: 3,
        w,
        r: 2,
        sync,
    };
    let mut cluster = ProcCluster::start(&spec).await;
    let history = Arc::new(History::new());
    let duration = run::duration(Duration::from_secs(30), Duration::from_secs(300));
    let load = workload::Spec {
        clients: 8,
        duration,
        shared_keys: 16,
        shared_ratio: 0.3,
        w: Some(w),
        r: Some(2),
        timeout: Duration::from_secs(5),
        prefix: String::new(),
        stop: None,
        ..workload::Spec::default()
    };
    let clients = tokio::spawn(workload::run(
        &load,
        cluster.gateway_addr(),
        history.clone(),
        seed,
    ));

    // Kill a random node, let the cluster notice, restart it, let it settle,
    // repeat until the load ends.
    let end = Instant::now() + duration;
    let mut kills = Vec::new();
    while Instant::now() + Duration::from_secs(3) < end {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1_000..2_500))).await;
        let victim = rng.gen_range(0..cluster.len());
        tokio::task::block_in_place(|| cluster.kill_node(victim));
        history.fault();
        kills.push(cluster.id(victim).to_string());
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2_500))).await;
        tokio::task::block_in_place(|| cluster.start_node(victim));
    }
    let latencies = tokio::time::timeout(duration + Duration::from_secs(30), clients)
        .await
        .expect("clients stop after their duration")
        .expect("client task");
    println!(
        "{name}: {} kills ({}), {} acknowledged writes during the load",
        kills.len(),
        kills.join(" "),
        latencies.writes.len()
    );

    let healed = cluster
        .wait_alive(cluster.len(), Duration::from_secs(30))
        .await;
    assert!(
        healed.is_some(),
        "the cluster did not heal within 30 s (seed {seed})"
    );
    let verdict = workload::final_check(
        name,
        cluster.gateway_addr(),
        &history,
        Duration::from_secs(60),
        started,
    )
    .await;
    assert!(
        verdict.counts.ok > 100,
        "the workload barely ran: {} (seed {seed})",
        verdict.summary()
    );
    assert!(!kills.is_empty(), "no fault was injected (seed {seed})");
    verdict.assert_holds(seed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_w2() {
    sigkill_under_load("sigkill_under_load_w2", 2, "always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_w1_sync_always() {
    sigkill_under_load("sigkill_under_load_w1_sync_always", 1, "always").await;
}
