//! Membership changes under load (issue 10): while a client writes and reads
//! at W=R=2 through the gateway, a fifth node joins (streaming its ranges
//! before it serves reads) and then the fourth is decommissioned (streaming
//! its ranges to their new owners before it leaves). Every request must
//! succeed throughout and every acknowledged write stay readable. Anti-entropy
//! is off, so the handover alone has to carry the data. Every wait is
//! bounded; every process started is stopped.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shoal_gateway::Gateway;
use shoal_node::config::Config;
use shoal_node::env::Env;
use shoal_node::node::{self, NodeHandle};
use shoal_tests::config::Fast;
use shoal_tests::http::fetch as request;
use shoal_tests::wait;

const CHANGE_WAIT: Duration = Duration::from_secs(30);
const GATEWAY_TIMEOUT_MS: u64 = 3_000;

fn node_config(id: &str, dir: &Path, seeds: &[String]) -> Config {
    Fast::node(id, dir)
        .seeds(seeds)
        .edit(|c| {
            c.anti_entropy.enabled = false;
            c.anti_entropy.leaf_bits = 16;
            // The handover's settle time is gossip rounds plus this request
            // timeout: the gateway's, so no write planned before a change
            // outlives the wait.
            c.http.request_timeout_ms = GATEWAY_TIMEOUT_MS;
        })
        .build()
}

async fn cluster_json(addr: std::net::SocketAddr) -> serde_json::Value {
    request(addr, "GET", "/v1/cluster", &[], b"")
        .await
        .json()
        .expect("a JSON body")
}

async fn wait_for(
    what: &str,
    addr: std::net::SocketAddr,
    cond: impl Fn(&serde_json::Value) -> bool,
) {
    wait::until(CHANGE_WAIT, what, || async {
        cond(&cluster_json(addr).await)
    })
    .await;
}

fn member<'a>(v: &'a serde_json::Value, id: &str) -> Option<&'a serde_json::Value> {
    v["members"]
        .as_array()?
        .iter()
        .find(|m| m["id"].as_str() == Some(id))
}

async fn put(addr: std::net::SocketAddr, key: &str, value: &str) -> Result<(), String> {
    let r = request(
        addr,
        "PUT",
        &format!("/v1/kv/{key}"),
        &[("Content-Type", "text/plain")],
        value.as_bytes(),
    )
    .await;
    if r.status == 204 {
        Ok(())
    } else {
        Err(format!(
            "PUT {key}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ))
    }
}

async fn get(addr: std::net::SocketAddr, key: &str, expect: &str) -> Result<(), String> {
    let r = request(addr, "GET", &format!("/v1/kv/{key}"), &[], b"").await;
    if r.status == 200 && r.body == expect.as_bytes() {
        Ok(())
    } else {
        Err(format!(
            "GET {key}: {} {}",
            r.status,
            String::from_utf8_lossy(&r.body)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_then_decommission_under_load_keep_every_acknowledged_write_readable() {
    let dir = tempfile::tempdir().unwrap();
    let first = node::start(node_config("node-1", dir.path(), &[]), Env::real())
        .await
        .unwrap();
    let seeds = vec![first.advertise().to_string()];
    let mut nodes: Vec<NodeHandle> = vec![first];
    for i in 2..=4 {
        let c = node_config(&format!("node-{i}"), dir.path(), &seeds);
        nodes.push(node::start(c, Env::real()).await.unwrap());
    }
    let mut gw_config = Fast::gateway("gw-1")
        .seeds(&seeds)
        .build_with_toml("")
        .expect("valid test config");
    gw_config.http.request_timeout_ms = GATEWAY_TIMEOUT_MS;
    let gateway = Gateway::start(gw_config, Env::real()).await.unwrap();
    let addr = gateway.http_addr();
    wait_for("the gateway to see four live nodes", addr, |v| {
        (1..=4).all(|i| member(v, &format!("node-{i}")).is_some_and(|m| m["status"] == "alive"))
    })
    .await;

    for i in 0..300 {
        put(addr, &format!("pre-{i}"), &format!("p{i}"))
            .await
            .unwrap();
    }

    // The client: write a new key, read an older acknowledged one, all the
    // time; every failure is recorded.
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let client = tokio::spawn({
        let (stop, rounds) = (stop.clone(), rounds.clone());
        async move {
            let mut acked = Vec::new();
            let mut errors = Vec::new();
            let until = Instant::now() + Duration::from_secs(90);
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) && Instant::now() < until {
                let key = format!("live-{i}");
                match put(addr, &key, &format!("v{i}")).await {
                    Ok(()) => acked.push(i),
                    Err(e) => errors.push(e),
                }
                let back = acked[acked.len().saturating_sub(1) / 2..].first().copied();
                if let Some(j) = back {
                    if let Err(e) = get(addr, &format!("live-{j}"), &format!("v{j}")).await {
                        errors.push(e);
                    }
                }
                if let Err(e) =
                    get(addr, &format!("pre-{}", i % 300), &format!("p{}", i % 300)).await
                {
                    errors.push(e);
                }
                i += 1;
                rounds.fetch_add(1, Ordering::SeqCst);
            }
            (acked, errors)
        }
    });

    // Join node-5.
    let started = Instant::now();
    let mut c = node_config("node-5", dir.path(), &seeds);
    c.member.join = true;
    let joiner = node::start(c, Env::real()).await.unwrap();
    wait_for("the gateway to see node-5 joining", addr, |v| {
        member(v, "node-5").is_some_and(|m| m["joining"] == true)
    })
    .await;
    // While node-5 joins, writes of keys it will replicate reach it too
    // (dual writes), though reads do not ask it yet.
    let future = shoal_ring::Ring::new(
        (1..=5).map(|i| shoal_ring::Member::new(format!("node-{i}"), 1)),
        shoal_ring::RingConfig::default(),
    )
    .unwrap();
    let mut dual = Vec::new();
    for i in 0..40 {
        let key = format!("during-join-{i}");
        put(addr, &key, "d").await.unwrap();
        if future
            .preference_list(key.as_bytes(), 3)
            .contains(&"node-5")
        {
            dual.push(key);
        }
    }
    assert!(!dual.is_empty());
    wait::until(CHANGE_WAIT, "writes during the join reach node-5", || {
        std::future::ready(dual.iter().all(|k| {
            joiner
                .store()
                .read(&shoal_tests::wire(k.as_bytes()))
                .unwrap()
                .is_some()
        }))
    })
    .await;
    wait_for("node-5 to finish joining", addr, |v| {
        member(v, "node-5").is_some_and(|m| m["joining"] == false && m["status"] == "alive")
    })
    .await;
    println!(
        "join: {:?} in {:?}",
        joiner.join_report(),
        started.elapsed()
    );
    nodes.push(joiner);

    // Decommission node-4.
    let started = Instant::now();
    let pool = shoal_tests::secret::real_pool(16 << 20);
    let leaving = nodes.remove(3);
    let report = pool
        .call(leaving.advertise(), CHANGE_WAIT, |c, ctx| async move {
            c.decommission(ctx, false).await
        })
        .await
        .unwrap()
        .unwrap();
    assert!(report.keys > 0, "{report:?}");
    tokio::time::timeout(CHANGE_WAIT, leaving.stop_requested())
        .await
        .expect("the node asks to stop after a decommission");
    leaving.shutdown().await;
    // Its directory cannot serve again: its ranges belong to others now.
    let again = node::start(node_config("node-4", dir.path(), &seeds), Env::real()).await;
    assert!(
        matches!(again, Err(node::NodeError::Decommissioned { .. })),
        "{again:?}"
    );
    wait_for("the gateway to see node-4 leave", addr, |v| {
        member(v, "node-4").is_none_or(|m| m["status"] == "left")
    })
    .await;
    println!("decommission: {report:?}, {:?} in all", started.elapsed());
    // Let the client run some rounds (write, read back) on the new ring.
    let after = rounds.load(Ordering::SeqCst) + 20;
    wait::until(CHANGE_WAIT, "the client to run on the new ring", || {
        std::future::ready(rounds.load(Ordering::SeqCst) >= after)
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let (acked, errors) = client.await.unwrap();
    println!(
        "client: {} writes acknowledged, {} errors",
        acked.len(),
        errors.len()
    );
    assert!(
        errors.is_empty(),
        "{} failed requests, first: {:?}",
        errors.len(),
        &errors[..errors.len().min(5)]
    );
    assert!(acked.len() > 20, "the client ran throughout");

    // Everything acknowledged is readable from the final ring.
    for i in 0..300 {
        get(addr, &format!("pre-{i}"), &format!("p{i}"))
            .await
            .unwrap();
    }
    for i in &acked {
        get(addr, &format!("live-{i}"), &format!("v{i}"))
            .await
            .unwrap();
    }
    gateway.shutdown().await;
    for n in nodes {
        n.shutdown().await;
    }
}
