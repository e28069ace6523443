//! Addresses (issue 25): a member that would announce an address no peer
//! can dial is caught, and says which key to set.
//!
//! - Statically, at start: `0.0.0.0`, `::` or port 0 are refused.
//! - At start, by dialing itself: the member dials its advertised address
//!   over the cluster's authenticated RPC and asks who answers. Nothing
//!   there, or another member, refuses the start (`member.advertise_check =
//!   "refuse"`, the default) or, with `"warn"`, is logged and shown in
//!   `shoal_member_advertise_reachable` and the gateway's `/v1/cluster`.
//! - While running, at its peers: a member alive by gossip whose address
//!   refuses every dial is reported by the others
//!   (`shoal_member_undialable{member}`, `/v1/cluster`'s `dialable`), once
//!   per change.

use std::time::Duration;

use shoal_node::config::{AdvertiseCheck, Config};
use shoal_node::env::Env;
use shoal_node::node::NodeHandle;
use shoal_tests::config::Fast;
use shoal_tests::http::fetch;
use shoal_tests::wait;

/// A port on 127.0.0.1 that nothing listens on: bound, read, released.
fn closed_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Waits until `node` has run `rounds` more gossip rounds (its own
/// heartbeat goes up once a round), so that a check that something did not
/// happen spans rounds of gossip, not a wall-clock pause that a loaded
/// machine could fill with fewer rounds.
async fn gossip_rounds(node: &NodeHandle, rounds: u64) {
    let beat = || {
        node.members()
            .iter()
            .find(|m| m.id.as_str() == node.id())
            .map_or(0, |m| m.heartbeat)
    };
    let from = beat();
    wait::until(Duration::from_secs(30), "gossip rounds", || async {
        beat() >= from + rounds
    })
    .await;
}

async fn start(config: Config) -> Result<NodeHandle, String> {
    shoal_node::node::start(config, Env::real())
        .await
        .map_err(|e| e.to_string())
}

/// One series' value from a member's Prometheus text.
fn series(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == name).then(|| v.parse().ok())?
    })
}

/// Polls `read` until `ok` holds of its answer or `bound` passes (a
/// [`wait::within`] that keeps the last answer, for the failure message).
async fn poll<T, F, Fut>(bound: Duration, mut read: F, ok: impl Fn(&T) -> bool) -> (bool, T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let until = std::time::Instant::now() + bound;
    loop {
        let answer = read().await;
        if ok(&answer) || std::time::Instant::now() >= until {
            return (ok(&answer), answer);
        }
        tokio::time::sleep(wait::POLL).await;
    }
}

async fn node_metrics(node: &NodeHandle) -> String {
    let addr = node.metrics_addr().expect("metrics served");
    fetch(addr, "GET", "/metrics", &[], b"").await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undialable_advertised_address_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    for advertise in ["0.0.0.0:7000", "127.0.0.1:0"] {
        let config = Fast::node("node-1", dir.path())
            .edit(|c| c.member.advertise = Some(advertise.into()))
            .build();
        let err = match start(config).await {
            Ok(node) => {
                node.shutdown().await;
                panic!("{advertise}: started")
            }
            Err(e) => e,
        };
        assert!(err.contains("member.advertise"), "{advertise}: {err}");
    }
    // A host name is each peer's to resolve, and this one resolves to the
    // member itself: it starts.
    let port = closed_port();
    let config = Fast::node("node-2", dir.path())
        .edit(|c| {
            c.member.listen = format!("127.0.0.1:{port}");
            c.member.advertise = Some(format!("localhost:{port}"));
        })
        .build();
    let node = start(config).await.expect("a host name is accepted");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertised_address_that_reaches_nothing_refuses_the_start_or_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("127.0.0.1:{}", closed_port());
    let config = |check: AdvertiseCheck| {
        Fast::node("node-1", dir.path())
            .edit(|c| {
                c.member.advertise = Some(closed.clone());
                c.member.advertise_check = check;
                c.member.advertise_check_ms = 500;
                c.metrics.listen = "127.0.0.1:0".into();
            })
            .build()
    };
    // The default refuses, naming the key, the address and what happened.
    let started = std::time::Instant::now();
    let err = match start(config(AdvertiseCheck::Refuse)).await {
        Ok(node) => {
            node.shutdown().await;
            panic!("a node advertising {closed}, where nothing listens, started");
        }
        Err(e) => e,
    };
    println!("refused after {:?}: {err}", started.elapsed());
    assert!(err.contains("member.advertise"), "{err}");
    assert!(err.contains(&closed), "{err}");
    assert!(err.contains("reaches nothing"), "{err}");
    // The refused start left nothing behind: the same data directory starts.
    let node = start(config(AdvertiseCheck::Off))
        .await
        .expect("the store of a refused start opens again");
    let text = node_metrics(&node).await;
    assert_eq!(
        series(&text, "shoal_member_advertise_reachable"),
        Some(-1.0)
    );
    node.shutdown().await;

    // `warn` serves, and says so in its metrics.
    let node = start(config(AdvertiseCheck::Warn))
        .await
        .expect("warn serves anyway");
    let (seen, text) = poll(
        Duration::from_secs(10),
        || node_metrics(&node),
        |text| series(text, "shoal_member_advertise_reachable") == Some(0.0),
    )
    .await;
    node.shutdown().await;
    assert!(
        seen,
        "shoal_member_advertise_reachable never turned 0:\n{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_advertised_address_of_another_member_is_told_apart() {
    let dir = tempfile::tempdir().unwrap();
    let first = start(Fast::node("node-1", dir.path()).build())
        .await
        .expect("node-1 starts");
    // node-2 announcing node-1's address: the handshake and `status`
    // succeed, and the answer is node-1's.
    let taken = first.advertise().to_string();
    let err = match start(
        Fast::node("node-2", dir.path())
            .seeds(std::slice::from_ref(&taken))
            .edit(|c| c.member.advertise = Some(taken.clone()))
            .build(),
    )
    .await
    {
        Ok(node) => {
            node.shutdown().await;
            panic!("a node advertising node-1's address started");
        }
        Err(e) => e,
    };
    println!("{err}");
    assert!(err.contains("member.advertise"), "{err}");
    assert!(err.contains("reaches a different member: node-1"), "{err}");
    // node-1 itself never heard of node-2: the refused member did not gossip.
    gossip_rounds(&first, 6).await;
    assert!(
        first.members().iter().all(|m| m.id.as_str() != "node-2"),
        "{:?}",
        first.members()
    );
    first.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_report_a_member_alive_by_gossip_whose_address_cannot_be_dialed() {
    let dir = tempfile::tempdir().unwrap();
    let node1 = start(
        Fast::node("node-1", dir.path())
            .edit(|c| c.metrics.listen = "127.0.0.1:0".into())
            .build(),
    )
    .await
    .expect("node-1 starts");
    let seeds = [node1.advertise().to_string()];
    let gw =
        shoal_gateway::Gateway::start(Fast::gateway("gw-1").seeds(&seeds).build(), Env::real())
            .await
            .expect("gateway starts");
    // node-3 is an ordinary member, stopped later: a crash is not an
    // undialable address.
    let node3 = start(Fast::node("node-3", dir.path()).seeds(&seeds).build())
        .await
        .expect("node-3 starts");
    // node-2 listens on a port of its own but announces a closed one; it
    // gossips out over its own connections, so the others hear it alive.
    let closed = format!("127.0.0.1:{}", closed_port());
    let node2 = start(
        Fast::node("node-2", dir.path())
            .seeds(&seeds)
            .edit(|c| {
                c.member.advertise = Some(closed.clone());
                c.member.advertise_check = AdvertiseCheck::Warn;
                c.member.advertise_check_ms = 200;
            })
            .build(),
    )
    .await
    .expect("node-2 starts (warn)");

    // node-1's metrics name it, once.
    let undialable = r#"shoal_member_undialable{member="node-2"}"#;
    let (seen, text) = poll(
        Duration::from_secs(15),
        || node_metrics(&node1),
        |text| series(text, undialable) == Some(1.0),
    )
    .await;
    assert!(seen, "node-1 never reported node-2:\n{text}");
    assert_eq!(
        series(&text, r#"shoal_member_undialable{member="gw-1"}"#),
        Some(0.0)
    );
    // The gateway's /v1/cluster says the same, with the dial's error.
    let member = |cluster: &serde_json::Value, id: &str| {
        cluster["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["id"] == id).cloned())
            .unwrap_or_default()
    };
    let (seen, cluster) = poll(
        Duration::from_secs(15),
        || async {
            let r = fetch(gw.http_addr(), "GET", "/v1/cluster", &[], b"").await;
            r.json().unwrap_or_default()
        },
        |cluster: &serde_json::Value| {
            member(cluster, "node-2")["dialable"] == false
                && member(cluster, "node-2")["dial_error"].is_string()
                && member(cluster, "node-1")["dialable"] == true
                && member(cluster, "gw-1")["dialable"] == true
        },
    )
    .await;
    assert!(seen, "the gateway's /v1/cluster: {cluster:#}");
    // And the dashboard's feed, which marks the member in its table.
    let r = fetch(gw.http_addr(), "GET", "/v1/cluster/stats", &[], b"").await;
    let stats: serde_json::Value = r.json().unwrap_or_default();
    assert!(
        member(&stats, "node-2")["dial_error"].is_string()
            && member(&stats, "node-1")["dial_error"].is_null(),
        "the gateway's /v1/cluster/stats: {stats:#}"
    );
    // Reported once per change: rounds later the count has not grown.
    gossip_rounds(&node1, 20).await;
    let text = node_metrics(&node1).await;
    assert_eq!(
        series(&text, "shoal_member_undialable_events_total"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(series(&text, undialable), Some(1.0));

    // node-3 stopping makes dials to it fail too, but gossip stops calling
    // it alive (no heartbeats) before its dials have failed for a failure
    // timeout: it is not reported.
    node3.shutdown().await;
    wait::until(
        Duration::from_secs(15),
        "node-1 to see node-3 down",
        || async {
            node1
                .members()
                .iter()
                .any(|m| m.id.as_str() == "node-3" && m.status == shoal_gossip::Status::Down)
        },
    )
    .await;
    let text = node_metrics(&node1).await;
    assert_eq!(
        series(&text, r#"shoal_member_undialable{member="node-3"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        series(&text, "shoal_member_undialable_events_total"),
        Some(1.0),
        "a stopped member was reported as undialable:\n{text}"
    );

    // Once node-2 is gone (down), it is no longer "alive but undialable".
    node2.shutdown().await;
    let cleared = wait::within(Duration::from_secs(15), || async {
        series(&node_metrics(&node1).await, undialable) == Some(0.0)
    })
    .await;
    gw.shutdown().await;
    node1.shutdown().await;
    assert!(cleared.is_some(), "node-2 still reported after it stopped");
}
