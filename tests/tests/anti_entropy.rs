//! Scenario 3: anti-entropy alone repairs a replica. Hinted handoff is off,
//! so nothing else can: one node of four is stopped while clients write, comes
//! back having missed its share, and no client reads anything (reads would
//! repair). The test watches, through `/v1/debug/replicas` (which never
//! repairs), until the returned node holds every acknowledged write of the
//! keys it owns, and prints how long the Merkle exchanges took. Hints that
//! fallbacks store must stay undelivered throughout. Bounded: it fails if convergence takes longer than
//! the bound.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_tests::cluster::{node_id, replica_values, Cluster, Spec};
use shoal_tests::oracle::{History, Outcome};
use shoal_tests::{run, workload};

/// Keys (of `acknowledged`) that `owner` owns but does not hold the value of
/// yet, and how many keys it owns in all.
async fn missing_on(
    cluster: &Cluster,
    owner: &str,
    acknowledged: &HashMap<String, Vec<u8>>,
) -> (Vec<String>, usize) {
    let results: Vec<(String, Option<bool>)> = futures::stream::iter(acknowledged.iter())
        .map(|(key, value)| async move {
            let held = cluster.replicas(key).await.and_then(|body| {
                replica_values(&body)
                    .into_iter()
                    .find(|h| h.owner && h.node == owner)
                    .map(|h| h.values.contains(value))
            });
            (key.clone(), held)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let owned = results.iter().filter(|(_, h)| h.is_some()).count();
    let missing = results
        .into_iter()
        .filter(|(_, h)| *h == Some(false))
        .map(|(k, _)| k)
        .collect();
    (missing, owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anti_entropy_alone_repairs_a_returning_node() {
    let name = "anti_entropy_alone_repairs_a_returning_node";
    let seed = run::seed(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(Spec {
        nodes: 4,
        handoff: false,
        anti_entropy: true,
        ..Spec::default()
    })
    .await;
    let down = rng.gen_range(0..4);
    let owner = node_id(down);
    cluster.stop(down).await;
    let noticed = cluster.wait_not_alive(down, Duration::from_secs(15)).await;
    assert!(
        noticed.is_some(),
        "the gateway never saw {owner} down (seed {seed})"
    );

    let history = Arc::new(History::new());
    let load = workload::Spec {
        clients: 4,
        duration: run::duration(Duration::from_secs(3), Duration::from_secs(120)),
        shared_keys: 0,
        shared_ratio: 0.0,
        w: Some(2),
        r: Some(2),
        ..workload::Spec::default()
    };
    workload::run(&load, cluster.gateway_addr(), history.clone(), seed).await;
    // With `handoff.enabled = false` fallbacks still store hints (the
    // gateway plans sloppy quorums regardless) but no node delivers them;
    // the count must not fall, or handoff, not anti-entropy, did the work.
    let hints = cluster.hints();
    println!("{name}: {hints} hints stored on fallbacks, never to be delivered");
    let written: Vec<(String, Vec<u8>)> = history
        .writes()
        .into_iter()
        .filter(|w| w.outcome == Outcome::Ok)
        // Register writes supersede each other; the final check judges them.
        .filter(|w| w.span.is_none())
        .map(|w| (w.key, w.value))
        .collect();
    let acknowledged: HashMap<String, Vec<u8>> =
        run::sample(&written, 10_000, seed).into_iter().collect();

    cluster.restart(down).await;
    history.fault();
    let back = Instant::now();
    let bound = run::duration(Duration::from_secs(60), Duration::from_secs(300));
    let (first_missing, owned) = missing_on(&cluster, &owner, &acknowledged).await;
    println!(
        "{name}: {owner} back; it owns {owned} of {} acknowledged keys inspected (of {}) and lacks {} of them",
        acknowledged.len(),
        written.len(),
        first_missing.len()
    );
    assert!(
        !first_missing.is_empty(),
        "{owner} missed nothing while down, so nothing tests repair (seed {seed})"
    );
    let mut left: HashMap<String, Vec<u8>> = first_missing
        .iter()
        .map(|k| (k.clone(), acknowledged[k].clone()))
        .collect();
    while !left.is_empty() && back.elapsed() < bound {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (still, _) = missing_on(&cluster, &owner, &left).await;
        left.retain(|k, _| still.contains(k));
        assert!(
            cluster.hints() >= hints,
            "hints were delivered with handoff off ({} of {hints} left) (seed {seed})",
            cluster.hints()
        );
    }
    let took = back.elapsed();
    println!(
        "{name}: anti-entropy repaired {} of {} missing keys on {owner} in {took:?} (bound {bound:?}), no client read",
        first_missing.len() - left.len(),
        first_missing.len()
    );
    assert!(
        left.is_empty(),
        "{} keys still missing on {owner} after {bound:?}, e.g. {:?} (seed {seed})",
        left.len(),
        left.keys().take(5).collect::<Vec<_>>()
    );

    let verdict = workload::final_check(
        name,
        cluster.gateway_addr(),
        &history,
        Duration::from_secs(30),
        started,
    )
    .await;
    verdict.assert_holds(seed);
    cluster.shutdown().await;
}
