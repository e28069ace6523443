//! Scenario 2: hinted handoff. One node of four is down while clients write;
//! its share of those writes lands on fallbacks as hints. It comes back; the
//! test then reads, through `/v1/debug/replicas` (which never repairs), that
//! the owner holds every acknowledged write of its keys, and that every hint
//! was deleted. No client read happens before that check, so read repair
//! cannot be what put the data there.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_tests::cluster::{node_id, replica_values, Cluster, Holding, Spec};
use shoal_tests::oracle::{History, Outcome};
use shoal_tests::{run, wait, workload};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hinted_handoff_delivers_every_write_and_deletes_hints() {
    let name = "hinted_handoff_delivers_every_write_and_deletes_hints";
    let seed = run::seed(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let mut cluster = Cluster::start(Spec {
        nodes: 4,
        anti_entropy: false,
        ..Spec::default()
    })
    .await;
    let down = rng.gen_range(0..4);
    let owner = node_id(down);
    cluster.stop(down).await;
    let noticed = cluster.wait_not_alive(down, Duration::from_secs(15)).await;
    println!("{name}: {owner} stopped; gateway saw it down after {noticed:?}");
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
    let hints_held = cluster.hints();
    println!("{name}: {hints_held} hints held while {owner} was down");
    assert!(
        hints_held > 0,
        "no write was hinted for {owner} (seed {seed})"
    );

    cluster.restart(down).await;
    history.fault();
    let drain_bound = run::duration(Duration::from_secs(60), Duration::from_secs(600));
    let drained = wait::within(drain_bound, || async { cluster.hints() == 0 }).await;
    println!(
        "{name}: hints drained after {drained:?}; {} left",
        cluster.hints()
    );
    assert!(
        drained.is_some(),
        "{} hints still held {drain_bound:?} after {owner} returned (seed {seed})",
        cluster.hints()
    );

    // The owner's own copy, key by key, without repairing anything.
    let mut checked = 0u64;
    let mut missing = Vec::new();
    let acknowledged: HashMap<String, Vec<u8>> = history
        .writes()
        .into_iter()
        .filter(|w| w.outcome == Outcome::Ok)
        // Register writes supersede each other; the final check judges them.
        .filter(|w| w.span.is_none())
        .map(|w| (w.key, w.value))
        .collect();
    // Sixteen inspections at a time: each asks every replica of the key.
    let reports: Vec<(String, Option<Vec<Holding>>, String)> = futures::stream::iter(run::sample(
        &acknowledged.keys().cloned().collect::<Vec<_>>(),
        10_000,
        seed,
    ))
    .map(|key| async {
        let body = cluster.replicas(&key).await;
        let text = body.as_ref().map(|b| b.to_string()).unwrap_or_default();
        (key, body.as_ref().map(replica_values), text)
    })
    .buffer_unordered(16)
    .collect()
    .await;
    for (key, replicas, text) in reports {
        let replicas =
            replicas.unwrap_or_else(|| panic!("/v1/debug/replicas/{key} failed (seed {seed})"));
        assert!(
            !replicas.iter().any(|h| h.node.contains("hint for")),
            "{key}: a hint is still listed after the drain: {text} (seed {seed})"
        );
        let Some(held) = replicas.iter().find(|h| h.owner && h.node == owner) else {
            continue;
        };
        checked += 1;
        if !held.values.contains(&acknowledged[&key]) {
            missing.push(key.clone());
        }
    }
    println!(
        "{name}: {owner} owns {checked} of {} acknowledged keys (inspected up to 10,000); missing on it: {}",
        acknowledged.len(),
        missing.len()
    );
    assert!(
        checked > 0,
        "{owner} owned none of the keys written (seed {seed})"
    );
    assert!(
        missing.is_empty(),
        "{owner} lacks {} acknowledged writes after handoff, e.g. {:?} (seed {seed})",
        missing.len(),
        &missing[..missing.len().min(5)]
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
