//! Scenario 6: many clients read-modify-write one key. Each value is the set
//! of write ids the writer had seen plus its own (a grow-only set), written
//! with the context of its read, so the key holds the union of every
//! acknowledged write exactly when no update was lost: concurrent writes
//! survive as siblings, and a write supersedes only what its context saw.
//! The oracle checks each acknowledged value (present or superseded), and
//! the union of the final siblings must contain every acknowledged id.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_tests::cluster::{Cluster, Spec};
use shoal_tests::http::Client;
use shoal_tests::oracle::{History, Outcome};
use shoal_tests::run;
use shoal_tests::workload::{self, Latencies};

const KEY: &str = "hot-key";

/// The ids in a value (`id,id,...`).
fn ids(value: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(value)
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_modify_writes_lose_no_update() {
    let name = "concurrent_read_modify_writes_lose_no_update";
    let seed = run::seed(name);
    let started = Instant::now();
    let cluster = Cluster::start(Spec {
        nodes: 4,
        ..Spec::default()
    })
    .await;
    let history = Arc::new(History::new());
    let duration = run::duration(Duration::from_secs(8), Duration::from_secs(180));
    let clients = 12;
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (history, addr) = (history.clone(), cluster.gateway_addr());
            tokio::spawn(async move {
                let mut client = Client::new(addr, Duration::from_secs(5));
                let mut latencies = Latencies::default();
                let mut acked = Vec::new();
                let mut seq = 0;
                while Instant::now() < deadline {
                    seq += 1;
                    let id = format!("c{c}.{seq}");
                    let make = |seen: &[Vec<u8>]| {
                        let mut all: BTreeSet<String> = seen.iter().flat_map(|v| ids(v)).collect();
                        all.insert(id.clone());
                        all.into_iter().collect::<Vec<_>>().join(",").into_bytes()
                    };
                    let o = workload::read_modify_write(
                        &mut client,
                        &history,
                        KEY,
                        make,
                        None,
                        None,
                        &mut latencies,
                    )
                    .await;
                    if o == Outcome::Ok {
                        acked.push(id);
                    }
                }
                acked
            })
        })
        .collect();
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(
            tokio::time::timeout(duration + Duration::from_secs(20), t)
                .await
                .expect("client stops after its duration")
                .expect("client task"),
        );
    }

    let verdict = workload::final_check(
        name,
        cluster.gateway_addr(),
        &history,
        Duration::from_secs(20),
        started,
    )
    .await;

    let mut client = Client::new(cluster.gateway_addr(), Duration::from_secs(5));
    let scratch = History::new();
    let (finals, _) = workload::read(&mut client, &scratch, KEY, Some(3))
        .await
        .expect("final read of the hot key");
    let union: BTreeSet<String> = finals.iter().flat_map(|v| ids(v)).collect();
    let lost: Vec<&String> = acked.iter().filter(|id| !union.contains(*id)).collect();
    println!(
        "{name}: {clients} clients, {} acknowledged updates, {} final siblings, union of {} ids, lost updates {}",
        acked.len(),
        finals.len(),
        union.len(),
        lost.len()
    );
    assert!(
        acked.len() > 50,
        "too few acknowledged updates (seed {seed})"
    );
    verdict.assert_holds(seed);
    assert!(
        lost.is_empty(),
        "lost updates (seed {seed}): {:?}",
        &lost[..lost.len().min(10)]
    );
    cluster.shutdown().await;
}
