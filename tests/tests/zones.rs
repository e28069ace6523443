//! Zones (issue 25): `member.zone` travels in gossip, `/v1/cluster` and the
//! stats show it, and the N owners of every key lie in N distinct zones when
//! there are that many (in all of them otherwise), as the gateway plans and as
//! the data lands. A join into a zone and a decommission out of one stream
//! exactly what the zone-aware ring moves: with anti-entropy off, the
//! handover alone has to put every key on its new owners. Every wait is
//! bounded; every process started is stopped.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use shoal_node::config::Config;
use shoal_ring::{Member, Ring, RingConfig};
use shoal_tests::cluster::{node_id, replica_values, Cluster, Spec};
use shoal_tests::config::Fast;
use shoal_tests::http::{encode_key, fetch as request};
use shoal_tests::wait;

const WAIT: Duration = Duration::from_secs(30);
const KEYS: usize = 300;

async fn json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let r = request(addr, "GET", path, &[], b"").await;
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json().expect("a JSON body")
}

/// Storage members' zones as `/v1/cluster` shows them, with their status.
async fn zones(addr: SocketAddr) -> BTreeMap<String, (String, String, bool)> {
    json(addr, "/v1/cluster").await["members"]
        .as_array()
        .expect("members")
        .iter()
        .filter(|m| m["role"] == "storage")
        .map(|m| {
            (
                m["id"].as_str().unwrap().to_string(),
                (
                    m["zone"].as_str().expect("a zone").to_string(),
                    m["status"].as_str().unwrap().to_string(),
                    m["joining"].as_bool().unwrap(),
                ),
            )
        })
        .collect()
}

/// Waits until `/v1/cluster` shows exactly `expected` (id, zone) as alive,
/// serving storage members (others may be listed as left).
async fn wait_members(addr: SocketAddr, expected: &BTreeMap<String, String>) {
    wait::until(
        WAIT,
        "the gateway shows every node alive in its zone",
        || async {
            let seen: BTreeMap<String, String> = zones(addr)
                .await
                .into_iter()
                .filter(|(_, (_, status, joining))| status == "alive" && !joining)
                .map(|(id, (zone, _, _))| (id, zone))
                .collect();
            seen == *expected
        },
    )
    .await;
}

/// The ring the members should form, built here from their zones.
fn ring(members: &BTreeMap<String, String>) -> Ring {
    Ring::new(
        members
            .iter()
            .map(|(id, zone)| Member::new(id.clone(), 1).in_zone(zone.clone())),
        RingConfig::default(),
    )
    .expect("valid ring")
}

fn key(i: usize) -> String {
    format!("zoned-{i}")
}

/// Every key's owners from `GET /v1/cluster/preflist/{key}`: N distinct
/// members in `min(N, zones)` distinct zones, and exactly the ring's
/// zone-aware preference list.
async fn check_preflists(addr: SocketAddr, members: &BTreeMap<String, String>, n: usize) {
    let ring = ring(members);
    let zone_count = members.values().collect::<BTreeSet<_>>().len();
    for i in 0..KEYS {
        let k = key(i);
        let body = json(
            addr,
            &format!("/v1/cluster/preflist/{}", encode_key(k.as_bytes())),
        )
        .await;
        let owners: Vec<&str> = body["owners"]
            .as_array()
            .expect("owners")
            .iter()
            .map(|o| o.as_str().unwrap())
            .collect();
        assert_eq!(owners.len(), n, "{k}: {owners:?}");
        assert_eq!(owners.iter().collect::<BTreeSet<_>>().len(), n, "{k}");
        let in_zones: BTreeSet<&str> = owners.iter().map(|o| members[*o].as_str()).collect();
        assert_eq!(in_zones.len(), n.min(zone_count), "{k}: {owners:?}");
        assert_eq!(owners, ring.preference_list(k.as_bytes(), n), "{k}");
    }
}

async fn put_all(addr: SocketAddr, n: usize) {
    for i in 0..KEYS {
        let k = key(i);
        // W = N: every owner holds the value before the test looks (there is
        // no anti-entropy to fill a straggler in).
        let r = request(
            addr,
            "PUT",
            &format!("/v1/kv/{}?w={n}", encode_key(k.as_bytes())),
            &[("Content-Type", "text/plain")],
            k.as_bytes(),
        )
        .await;
        assert_eq!(r.status, 204, "PUT {k}: {}", r.text());
    }
}

/// Every key is held, unrepaired, by exactly its ring owners, one per zone.
async fn check_holdings(c: &Cluster, members: &BTreeMap<String, String>, n: usize) {
    let ring = ring(members);
    for i in 0..KEYS {
        let k = key(i);
        let body = c.replicas(&k).await.expect("a replicas answer");
        let holders: BTreeSet<String> = replica_values(&body)
            .into_iter()
            .filter(|h| h.owner && h.values == [k.as_bytes().to_vec()])
            .map(|h| h.node)
            .collect();
        let owners: BTreeSet<String> = ring
            .preference_list(k.as_bytes(), n)
            .into_iter()
            .map(str::to_string)
            .collect();
        assert_eq!(holders, owners, "{k}: {body}");
        let in_zones: BTreeSet<&str> = holders.iter().map(|h| members[h].as_str()).collect();
        assert_eq!(in_zones.len(), n, "{k}: {holders:?}");
    }
}

fn zone_of(i: usize, zones: &[&str]) -> String {
    zones[i % zones.len()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_zones_of_two_put_every_key_in_three_zones() {
    let abc = ["a", "b", "c"];
    let c = Cluster::start_with(
        Spec {
            nodes: 6,
            ..Spec::default()
        },
        |i, config| config.member.zone = zone_of(i, &abc),
    )
    .await;
    let addr = c.gateway_addr();
    let members: BTreeMap<String, String> =
        (0..6).map(|i| (node_id(i), zone_of(i, &abc))).collect();
    wait_members(addr, &members).await;
    // The gateway itself names no zone: the default.
    let cluster = json(addr, "/v1/cluster").await;
    let gateway = cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["role"] == "gateway")
        .expect("the gateway lists itself");
    assert_eq!(gateway["zone"], "default");
    // Each zone holds a third of the replicas.
    let mut by_zone: BTreeMap<&str, f64> = BTreeMap::new();
    for (id, share) in cluster["ownership"].as_object().unwrap() {
        *by_zone.entry(members[id].as_str()).or_default() += share.as_f64().unwrap();
    }
    for (zone, share) in &by_zone {
        assert!((share - 1.0 / 3.0).abs() < 1e-9, "zone {zone}: {share}");
    }
    // The dashboard's JSON carries the zone too.
    let stats = json(addr, "/v1/cluster/stats").await;
    for m in stats["members"].as_array().unwrap() {
        let id = m["id"].as_str().unwrap();
        let expected = members.get(id).map_or("default", String::as_str);
        assert_eq!(m["zone"], expected, "{id}");
    }
    check_preflists(addr, &members, 3).await;
    put_all(addr, 3).await;
    check_holdings(&c, &members, 3).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_zones_and_three_replicas_span_both_zones() {
    let ab = ["a", "b"];
    let c = Cluster::start_with(
        Spec {
            nodes: 4,
            ..Spec::default()
        },
        |i, config| config.member.zone = zone_of(i, &ab),
    )
    .await;
    let addr = c.gateway_addr();
    let members: BTreeMap<String, String> = (0..4).map(|i| (node_id(i), zone_of(i, &ab))).collect();
    wait_members(addr, &members).await;
    check_preflists(addr, &members, 3).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_into_a_zone_and_a_decommission_out_of_one_move_what_the_ring_says() {
    let abc = ["a", "b", "c"];
    let mut c = Cluster::start_with(
        Spec {
            nodes: 6,
            anti_entropy: false,
            request_timeout_ms: 3_000,
            ..Spec::default()
        },
        |i, config| config.member.zone = zone_of(i, &abc),
    )
    .await;
    let addr = c.gateway_addr();
    let mut members: BTreeMap<String, String> =
        (0..6).map(|i| (node_id(i), zone_of(i, &abc))).collect();
    wait_members(addr, &members).await;
    put_all(addr, 3).await;
    check_holdings(&c, &members, 3).await;

    // node-7 joins zone a: it takes zone a's replica of the keys it gains,
    // streamed from their current owners.
    let joiner = c
        .add_node(|config| {
            config.member.join = true;
            config.member.zone = "a".into();
        })
        .await;
    let joined = wait::within(Duration::from_secs(60), || async {
        c.node(joiner).and_then(|n| n.join_report()).is_some()
    })
    .await;
    let report = c.node(joiner).and_then(|n| n.join_report());
    println!(
        "{} joined zone a in {joined:?}: {report:?}",
        node_id(joiner)
    );
    assert!(joined.is_some(), "the join did not finish within 60 s");
    members.insert(node_id(joiner), "a".into());
    wait_members(addr, &members).await;
    check_preflists(addr, &members, 3).await;
    check_holdings(&c, &members, 3).await;
    let report = report.expect("a join report");
    assert!(report.keys > 0, "the joiner received nothing: {report:?}");

    // node-2 (zone b) leaves: its keys go to node-5, the other member of b.
    let report = c
        .decommission(1, Duration::from_secs(60))
        .await
        .expect("decommission");
    println!("node-2 left zone b: {report:?}");
    members.remove(&node_id(1));
    wait_members(addr, &members).await;
    check_preflists(addr, &members, 3).await;
    check_holdings(&c, &members, 3).await;
    c.shutdown().await;
}

#[test]
fn member_zone_is_checked_and_defaults_to_default() {
    let load = |toml: &str| Fast::member("node-1").build_with_toml(toml);
    assert_eq!(Config::default().member.zone, "default");
    let ok = load("[member]\nzone = \"eu-west-1a\"\n").expect("a valid zone");
    assert_eq!(ok.member.zone, "eu-west-1a");
    for bad in ["", "eu west", "zone/1", &"z".repeat(65)] {
        let err = load(&format!("[member]\nzone = {bad:?}\n")).expect_err(bad);
        assert!(err.to_string().contains("member.zone"), "{bad:?}: {err}");
    }
}
