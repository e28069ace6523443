//! Scenario 5: a slow node. Five in-process nodes; after a baseline phase,
//! one node answers every call 400 ms late (a delay line in the
//! fault-injecting `Net`, so its throughput does not collapse, only its
//! latency). A W=2 write needs two of three replicas and an R=2 read two of
//! three answers, so neither should wait for the slow one: p99 of both must
//! stay under the added delay. p50/p99 of both phases are printed.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_tests::cluster::{node_id, Cluster, Spec};
use shoal_tests::oracle::History;
use shoal_tests::run::percentile;
use shoal_tests::{run, workload};

const DELAY: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_node_does_not_slow_quorums() {
    let name = "slow_node_does_not_slow_quorums";
    let seed = run::seed(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let cluster = Cluster::start(Spec {
        nodes: 5,
        request_timeout_ms: 3_000,
        ..Spec::default()
    })
    .await;
    let history = Arc::new(History::new());
    let phase = run::duration(Duration::from_secs(6), Duration::from_secs(120));
    let load = |prefix: &str| workload::Spec {
        clients: 6,
        duration: phase,
        shared_keys: 16,
        shared_ratio: 0.5,
        w: Some(2),
        r: Some(2),
        timeout: Duration::from_secs(5),
        prefix: prefix.into(),
        stop: None,
        ..workload::Spec::default()
    };
    let base = workload::run(
        &load("base-"),
        cluster.gateway_addr(),
        history.clone(),
        seed,
    )
    .await;
    let slow = node_id(rng.gen_range(0..5));
    cluster.faults.set_delay(&slow, DELAY);
    history.fault();
    let slowed = workload::run(
        &load("slow-"),
        cluster.gateway_addr(),
        history.clone(),
        seed ^ 1,
    )
    .await;
    cluster.faults.set_delay(&slow, Duration::ZERO);

    let show = |what: &str, s: &[Duration]| {
        println!(
            "{name}: {what}: {} ops, p50 {:?}, p99 {:?}",
            s.len(),
            percentile(s, 50.0),
            percentile(s, 99.0)
        );
    };
    show("baseline W=2 writes", &base.writes);
    show("baseline R=2 reads", &base.reads);
    show(&format!("{slow} +{DELAY:?}: W=2 writes"), &slowed.writes);
    show(&format!("{slow} +{DELAY:?}: R=2 reads"), &slowed.reads);

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
        slowed.writes.len() > 50 && slowed.reads.len() > 50,
        "too few operations to judge latency (seed {seed})"
    );
    let (w99, r99) = (
        percentile(&slowed.writes, 99.0),
        percentile(&slowed.reads, 99.0),
    );
    assert!(
        r99 < DELAY,
        "R=2 reads waited for the slow node {slow}: p99 {r99:?} >= {DELAY:?} (seed {seed})"
    );
    assert!(
        w99 < DELAY,
        "W=2 writes waited for the slow node {slow}: p99 {w99:?} >= {DELAY:?} (seed {seed})"
    );
    cluster.shutdown().await;
}
