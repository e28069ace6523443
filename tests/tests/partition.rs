//! Scenario 4: network partition. Five in-process nodes and a gateway, every
//! socket through the fault-injecting `Net`. While clients write, one node is
//! cut off from every other node and from the gateway (a blackhole: calls
//! time out, they are not refused), then the partition heals. Writes must go
//! on succeeding through sloppy quorum during the cut; after healing, the
//! owners of every key must converge to the same state, and the oracle must
//! hold.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_tests::cluster::{node_id, replica_values, Cluster, Spec};
use shoal_tests::oracle::History;
use shoal_tests::{run, wait, workload};

/// Keys whose owners (per `/v1/debug/replicas`) do not all hold the same
/// values yet.
async fn divergent(cluster: &Cluster, keys: &[String]) -> Vec<String> {
    let checks = futures::stream::iter(keys.iter().cloned())
        .map(|key| async move {
            let Some(body) = cluster.replicas(&key).await else {
                return Some(key);
            };
            let owners: Vec<BTreeSet<Vec<u8>>> = replica_values(&body)
                .into_iter()
                .filter(|h| h.owner)
                .map(|h| h.values.into_iter().collect())
                .collect();
            (owners.len() < 3 || owners.windows(2).any(|w| w[0] != w[1])).then_some(key)
        })
        .buffer_unordered(16);
    checks.filter_map(|k| async move { k }).collect().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_node_heals_and_converges() {
    let name = "partitioned_node_heals_and_converges";
    let seed = run::seed(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let cluster = Cluster::start(Spec {
        nodes: 5,
        ..Spec::default()
    })
    .await;
    let history = Arc::new(History::new());
    let total = run::duration(Duration::from_secs(16), Duration::from_secs(240));
    let load = workload::Spec {
        clients: 8,
        duration: total,
        shared_keys: 8,
        shared_ratio: 0.3,
        w: Some(2),
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

    // Cut a random node off for the middle half of the run; in the long
    // form, a new random node every 30 s (10 s calm, 20 s cut).
    let (calm, cut) = if run::long() {
        (Duration::from_secs(10), Duration::from_secs(20))
    } else {
        (total / 4, total / 2)
    };
    let end = Instant::now() + total;
    let mut during = Vec::new();
    let mut victims = Vec::new();
    while Instant::now() + calm + cut < end {
        tokio::time::sleep(calm).await;
        let victim = node_id(rng.gen_range(0..5));
        let before = history.counts().ok;
        cluster.faults.isolate(&victim);
        history.fault();
        tokio::time::sleep(cut).await;
        cluster.faults.heal();
        during.push(history.counts().ok - before);
        victims.push(victim);
    }
    tokio::time::timeout(total + Duration::from_secs(30), clients)
        .await
        .expect("clients stop after their duration")
        .expect("client task");
    println!("{name}: isolated {victims:?}; operations acknowledged during each cut: {during:?}");
    assert!(
        during.iter().all(|&ok| ok > 20),
        "writes stalled during the partition: {during:?} (seed {seed})"
    );

    let healed = cluster.wait_alive(5, Duration::from_secs(20)).await;
    assert!(
        healed.is_some(),
        "the gateway did not see all 5 nodes alive again (seed {seed})"
    );
    // Hints first, then replica convergence, both before any client read
    // (which would repair).
    let drained = wait::within(Duration::from_secs(60), || async { cluster.hints() == 0 }).await;
    println!("{name}: hints drained {drained:?} after healing");
    let keys = run::sample(&history.keys(), 10_000, seed);
    let mut left = keys.clone();
    let converge_start = Instant::now();
    let bound = run::duration(Duration::from_secs(30), Duration::from_secs(120));
    loop {
        left = divergent(&cluster, &left).await;
        if left.is_empty() || converge_start.elapsed() >= bound {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "{name}: {} of {} keys (of {} written) converged on all owners in {:?}",
        keys.len() - left.len(),
        keys.len(),
        history.keys().len(),
        converge_start.elapsed()
    );
    if let Some(key) = left.first() {
        println!(
            "{name}: e.g. {key}: {}",
            cluster.replicas(key).await.unwrap_or_default()
        );
    }
    // The oracle runs either way (after the convergence check, since its
    // reads repair), so a failure says whether data was lost or only slow
    // to spread.
    let verdict = workload::final_check(
        name,
        cluster.gateway_addr(),
        &history,
        Duration::from_secs(30),
        started,
    )
    .await;
    verdict.assert_holds(seed);
    assert!(
        left.is_empty(),
        "{} keys never converged on their owners within {bound:?} of healing, e.g. {:?} (seed {seed})",
        left.len(),
        &left[..left.len().min(5)]
    );
    cluster.shutdown().await;
}
