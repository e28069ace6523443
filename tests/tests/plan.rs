//! Issue 25: a plan made from the running ring says what a join and a
//! decommission then move. Three in-process nodes hold a known set of keys
//! (every key on all three, N = 3, anti-entropy off so that the handovers
//! alone move data). The plan for adding node-4 is made from the gateway's
//! `/v1/cluster`, as `cargo xtask cluster plan add` makes it; node-4 then
//! joins, and the plan for decommissioning node-2 is made and carried out
//! the same way. After each change:
//!
//! - the ranges that changed owner are the planned ones, exactly: every
//!   key's owners, as the gateway routes it before and after, changed if and
//!   only if the key lies in a planned range, and changed to that range's
//!   planned replicas; the node's handover report streamed as many ranges
//!   as planned;
//! - the keys moved are the planned ones: the handover report counts
//!   exactly the loaded keys inside the planned ranges, the members that
//!   gain a range now store each of its keys (and a joiner nothing else);
//! - the estimate (keys x the planned share of the key space) is within
//!   five standard deviations of the count reported. Key positions are
//!   SHA-256 hashes, uniform on the ring, so the number of `k` keys inside a
//!   share `p` is binomial with deviation `sqrt(k p (1 - p))` (about 19
//!   keys of 2,000 at p = 3/4): five of them is where an estimate that is
//!   right is no longer plausibly wrong by chance (a two-sided normal tail
//!   of 6e-7), while an estimate off by a replica factor (copies for keys)
//!   misses by hundreds. The keys are fixed names, so the run is
//!   deterministic: the tolerance states what agreement means, it does not
//!   make room for flakiness.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_node::rpc::HandoverReport;
use shoal_ring::view::plan::Plan;
use shoal_ring::{key_position, Member, RingConfig, DEFAULT_ZONE};
use shoal_tests::cluster::{node_id, Cluster, Spec};
use shoal_tests::http::{encode_key, Client};
use shoal_tests::{wait, wire};

const KEYS: usize = 2_000;

fn key(i: usize) -> String {
    format!("plan-{i}")
}

async fn json(client: &mut Client, path: &str) -> serde_json::Value {
    let r = client
        .request("GET", path, &[], b"")
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json().unwrap_or_else(|| panic!("GET {path}: not JSON"))
}

/// The ring as `/v1/cluster` shows it, as the planner reads it: N and the
/// storage members that have not left (id, weight, zone), once nobody is
/// joining or leaving.
async fn ring_of(client: &mut Client, expected: usize) -> (usize, Vec<Member>) {
    let until = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v = json(client, "/v1/cluster").await;
        let members: Vec<&serde_json::Value> = v["members"]
            .as_array()
            .expect("members")
            .iter()
            .filter(|m| m["role"] == "storage" && m["status"] != "left")
            .collect();
        let settled = members.len() == expected
            && members
                .iter()
                .all(|m| m["status"] == "alive" && m["joining"] == false);
        if settled {
            let ring = members
                .iter()
                .map(|m| {
                    Member::new(
                        m["id"].as_str().unwrap(),
                        u32::try_from(m["weight"].as_u64().unwrap()).unwrap(),
                    )
                    .in_zone(m["zone"].as_str().unwrap_or(DEFAULT_ZONE))
                })
                .collect();
            return (v["n"].as_u64().unwrap() as usize, ring);
        }
        assert!(
            std::time::Instant::now() < until,
            "the gateway did not show {expected} settled storage members within 30 s: {v}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Every key's owners, as the gateway routes it now.
async fn owners(client: &mut Client) -> Vec<BTreeSet<String>> {
    let mut all = Vec::with_capacity(KEYS);
    for i in 0..KEYS {
        let k = key(i);
        let body = json(
            client,
            &format!("/v1/cluster/preflist/{}", encode_key(k.as_bytes())),
        )
        .await;
        all.push(
            body["owners"]
                .as_array()
                .expect("owners")
                .iter()
                .map(|o| o.as_str().unwrap().to_string())
                .collect(),
        );
    }
    all
}

/// The loaded keys inside the plan's ranges.
fn planned_keys(plan: &Plan) -> BTreeSet<usize> {
    (0..KEYS)
        .filter(|i| plan.change_at(key_position(key(*i).as_bytes())).is_some())
        .collect()
}

/// The checks common to the join and the decommission; see the module docs.
fn check_moved(
    what: &str,
    plan: &Plan,
    report: &HandoverReport,
    before: &[BTreeSet<String>],
    after: &[BTreeSet<String>],
) -> BTreeSet<usize> {
    let planned = planned_keys(plan);
    assert!(!plan.changes.is_empty(), "{what}: nothing planned");
    // The ranges that changed owner.
    for i in 0..KEYS {
        let change = plan.change_at(key_position(key(i).as_bytes()));
        assert_eq!(
            before[i] != after[i],
            change.is_some(),
            "{what}: {}: owners {:?} -> {:?}, planned {change:?}",
            key(i),
            before[i],
            after[i]
        );
        if let Some(c) = change {
            let old: BTreeSet<String> = c.old_replicas.iter().cloned().collect();
            let new: BTreeSet<String> = c.new_replicas.iter().cloned().collect();
            assert_eq!((&before[i], &after[i]), (&old, &new), "{what}: {}", key(i));
        }
    }
    assert_eq!(
        report.ranges,
        plan.changes.len() as u64,
        "{what}: ranges streamed vs planned ({report:?})"
    );
    // The keys moved.
    assert_eq!(
        report.keys,
        planned.len() as u64,
        "{what}: keys reported vs loaded keys in the planned ranges ({report:?})"
    );
    let (estimate, spread) = (
        plan.keys_moved(KEYS as u64),
        plan.keys_moved_spread(KEYS as u64),
    );
    println!(
        "{what}: {} ranges ({:.2}% of the key space), {} keys moved; estimated {estimate:.0} +- {spread:.1}",
        report.ranges,
        plan.key_space * 100.0,
        report.keys
    );
    assert!(
        (report.keys as f64 - estimate).abs() <= 5.0 * spread,
        "{what}: {} keys moved, estimated {estimate:.0} (5 sd = {:.0})",
        report.keys,
        5.0 * spread
    );
    planned
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_predicts_the_ranges_and_keys_a_join_and_a_decommission_move() {
    let mut cluster = Cluster::start(Spec {
        nodes: 3,
        anti_entropy: false,
        ..Spec::default()
    })
    .await;
    let mut client = cluster.client();
    for i in 0..KEYS {
        let k = key(i);
        // W = 3: every owner holds every key before anything moves.
        let r = client
            .request(
                "PUT",
                &format!("/v1/kv/{}?w=3", encode_key(k.as_bytes())),
                &[("Content-Type", "text/plain")],
                k.as_bytes(),
            )
            .await
            .unwrap_or_else(|e| panic!("PUT {k}: {e}"));
        assert_eq!(r.status, 204, "PUT {k}: {}", r.text());
    }
    let start = owners(&mut client).await;

    // The join: planned with the id `add_node` gives the next node and the
    // weight and zone it starts with (the config's defaults), which is all
    // its tokens depend on.
    let (n, ring) = ring_of(&mut client, 3).await;
    let joiner = Member::new(node_id(3), 1);
    let plan = Plan::join(&ring, &joiner, n, RingConfig::default()).expect("join plan");
    assert!(plan.changes.iter().all(|c| c.gained == [node_id(3)]));
    let j = cluster.add_node(|c| c.member.join = true).await;
    assert_eq!(cluster.node(j).unwrap().id(), node_id(3));
    let bound = Duration::from_secs(60);
    wait::until(bound, "node-4 to finish its join", || async {
        cluster.node(j).and_then(|n| n.join_report()).is_some()
    })
    .await;
    let report = cluster.node(j).unwrap().join_report().unwrap();
    let (_, ring4) = ring_of(&mut client, 4).await;
    let joined = owners(&mut client).await;
    let planned = check_moved("join", &plan, &report, &start, &joined);
    // Where the keys live now: the joiner stores exactly the planned ones.
    let store = cluster.node(j).unwrap().store().clone();
    for i in 0..KEYS {
        let held = store.read(&wire(key(i))).expect("read").is_some();
        assert_eq!(held, planned.contains(&i), "node-4 holding {}", key(i));
    }

    // The decommission of node-2, planned from the ring node-4 joined.
    let leaver = 1;
    let plan =
        Plan::leave(&ring4, &node_id(leaver), n, RingConfig::default()).expect("decommission plan");
    let report = cluster
        .decommission(leaver, bound)
        .await
        .expect("decommission");
    ring_of(&mut client, 3).await;
    let left = owners(&mut client).await;
    let planned = check_moved("decommission", &plan, &report, &joined, &left);
    // Every member that gains a range stores each of its keys.
    for i in &planned {
        let c = plan.change_at(key_position(key(*i).as_bytes())).unwrap();
        for gainer in &c.gained {
            let index: usize = gainer.strip_prefix("node-").unwrap().parse().unwrap();
            let node = cluster.node(index - 1).expect("gainer running");
            let held = node.store().read(&wire(key(*i))).expect("read").is_some();
            assert!(
                held,
                "{gainer} does not hold {} after the decommission",
                key(*i)
            );
        }
    }
    cluster.shutdown().await;
}
