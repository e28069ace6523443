//! Faults on real interfaces: real `shoal-node` processes, each in a network
//! namespace of its own on a bridge the test makes (`shoal_tests::netns`),
//! the gateway in the test's namespace. A link taken down while clients
//! write, one-way packet drops by iptables inside one namespace, a whole
//! zone SIGKILLed at once, a SIGKILL/restart loop of one node: each judged
//! by the oracle, with no acknowledged write lost. Without root, or where
//! `ip netns add` is refused, every test prints why and passes as skipped
//! (the iptables one also without iptables). Every wait is bounded; every
//! process started is killed and every namespace removed, also on a panic.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shoal_tests::http::{encode_key, Client};
use shoal_tests::netns::{NetCluster, NetSpec};
use shoal_tests::oracle::History;
use shoal_tests::{run, workload};

fn spec(nodes: usize, sync: &'static str) -> NetSpec {
    NetSpec {
        nodes,
        n: 3,
        w: 2,
        r: 2,
        sync,
        zones: Vec::new(),
    }
}

/// The cluster, or `None` after printing why this machine cannot run it.
async fn start(name: &str, spec: &NetSpec) -> Option<NetCluster> {
    match NetCluster::start(spec).await {
        Ok(c) => Some(c),
        Err(why) => {
            println!("{name}: SKIPPED: {why}");
            None
        }
    }
}

fn load(duration: Duration) -> workload::Spec {
    workload::Spec {
        clients: 6,
        duration,
        shared_keys: 8,
        shared_ratio: 0.3,
        w: Some(2),
        r: Some(2),
        timeout: Duration::from_secs(5),
        prefix: String::new(),
        stop: None,
        ..workload::Spec::default()
    }
}

/// Waits for the clients, then for every node alive, then runs the
/// oracle (r = 3, bounded) and asserts it held.
async fn finish(
    name: &str,
    c: &NetCluster,
    clients: tokio::task::JoinHandle<workload::Latencies>,
    history: &History,
    started: Instant,
    seed: u64,
) {
    tokio::time::timeout(Duration::from_secs(60), clients)
        .await
        .expect("clients stop after their duration")
        .expect("client task");
    let healed = c.wait_alive(c.len(), Duration::from_secs(30)).await;
    assert!(
        healed.is_some(),
        "the gateway did not see all {} nodes alive again within 30 s (seed {seed})",
        c.len()
    );
    let verdict = workload::final_check(
        name,
        c.gateway_addr(),
        history,
        Duration::from_secs(60),
        started,
    )
    .await;
    assert!(
        verdict.counts.ok > 100,
        "the workload barely ran: {} (seed {seed})",
        verdict.summary()
    );
    assert!(verdict.counts.faults > 0, "no fault was injected");
    verdict.assert_holds(seed);
}

/// (a) One node's link goes down for the middle half of the run (its veth
/// on the bridge: every packet to and from it is lost, nothing is
/// refused), then comes back up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_down_partition_then_heal() {
    let name = "link_down_partition_then_heal";
    let seed = run::seed(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let Some(c) = start(name, &spec(5, "never")).await else {
        return;
    };
    let history = Arc::new(History::new());
    let total = Duration::from_secs(16);
    let clients = tokio::spawn(workload::run(
        &load(total),
        c.gateway_addr(),
        history.clone(),
        seed,
    ));
    tokio::time::sleep(total / 4).await;
    let victim = rng.gen_range(0..c.len());
    let before = history.counts().ok;
    c.net().set_link(victim, false);
    history.fault();
    let down = c.wait_alive(c.len() - 1, Duration::from_secs(10)).await;
    tokio::time::sleep((total / 2).saturating_sub(down.unwrap_or_default())).await;
    let during = history.counts().ok - before;
    c.net().set_link(victim, true);
    println!(
        "{name}: {} cut off (link down); the gateway saw it gone after {down:?}; \
         {during} operations acknowledged during the cut",
        c.id(victim)
    );
    assert!(
        down.is_some(),
        "the gateway still saw every node alive 10 s after the link went down"
    );
    assert!(
        during > 20,
        "writes stalled during the partition: {during} (seed {seed})"
    );
    finish(name, &c, clients, &history, started, seed).await;
}

/// (b) Inside one node's namespace, iptables drops every packet from the
/// gateway and from two other nodes (their packets in; its own still go
/// out), for the middle half of the run; then `-F INPUT` heals it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_way_drops_by_iptables() {
    let name = "one_way_drops_by_iptables";
    let seed = run::seed(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let Some(c) = start(name, &spec(5, "never")).await else {
        return;
    };
    if let Err(why) = c.net().iptables_usable() {
        println!("{name}: SKIPPED: iptables does not run in a namespace here: {why}");
        return;
    }
    let history = Arc::new(History::new());
    let total = Duration::from_secs(16);
    let clients = tokio::spawn(workload::run(
        &load(total),
        c.gateway_addr(),
        history.clone(),
        seed,
    ));
    tokio::time::sleep(total / 4).await;
    let victim = rng.gen_range(0..c.len());
    let others: Vec<usize> = (0..c.len()).filter(|&i| i != victim).collect();
    let mut from = vec![c.net().host()];
    from.extend(others.iter().take(2).map(|&i| c.net().node_host(i)));
    for source in &from {
        c.net()
            .iptables(victim, &["-A", "INPUT", "-s", source, "-j", "DROP"])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    history.fault();
    let rules = c.net().iptables(victim, &["-S", "INPUT"]).unwrap();
    assert_eq!(rules.matches("-j DROP").count(), from.len(), "{rules}");
    let before = history.counts().ok;
    tokio::time::sleep(total / 2).await;
    let during = history.counts().ok - before;
    c.net()
        .iptables(victim, &["-F", "INPUT"])
        .unwrap_or_else(|e| panic!("{e}"));
    let rules = c.net().iptables(victim, &["-S", "INPUT"]).unwrap();
    assert!(!rules.contains("DROP"), "{rules}");
    println!(
        "{name}: {} dropped packets from {from:?}; {during} operations acknowledged meanwhile",
        c.id(victim)
    );
    assert!(
        during > 20,
        "writes stalled during the drops: {during} (seed {seed})"
    );
    finish(name, &c, clients, &history, started, seed).await;
}

/// GET with `r`: the status (0: no answer), the values in JSON form, and
/// the answer (or error) as text for failure messages.
async fn get(client: &mut Client, key: &str, r: usize) -> (u16, Vec<Vec<u8>>, String) {
    let path = format!("/v1/kv/{}?r={r}", encode_key(key.as_bytes()));
    match client
        .request("GET", &path, &[("Accept", "application/json")], b"")
        .await
    {
        Ok(reply) => {
            let values = reply
                .json()
                .map(|j| shoal_tests::http::sibling_values(&j))
                .unwrap_or_default();
            (reply.status, values, reply.text())
        }
        Err(e) => (0, Vec::new(), e.to_string()),
    }
}

/// (c) Six nodes in three zones (two each), N=3 W=2 R=2: every key has a
/// replica in each zone. Both nodes of one zone are SIGKILLed at once while
/// clients write; then every key written so far still reads at R=2 with
/// every acknowledged value, and new keys write at W=2 and read back. The
/// zone comes back and the oracle runs at R=3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zone_lost_at_once_keeps_every_key_readable_and_writable() {
    let name = "a_zone_lost_at_once_keeps_every_key_readable_and_writable";
    let seed = run::seed(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let zones = ["a", "b", "c"];
    let mut spec = spec(6, "always");
    spec.zones = zones.iter().map(|z| z.to_string()).collect();
    let Some(mut c) = start(name, &spec).await else {
        return;
    };
    let history = Arc::new(History::new());
    let total = Duration::from_secs(14);
    let clients = tokio::spawn(workload::run(
        &load(total),
        c.gateway_addr(),
        history.clone(),
        seed,
    ));
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Node i is in zones[i % 3]: zone z holds nodes z and z + 3.
    let zone = rng.gen_range(0..3);
    let lost = [zone, zone + 3];
    tokio::task::block_in_place(|| {
        for &i in &lost {
            c.kill_node(i);
        }
    });
    history.fault();
    let gone = c.wait_alive(4, Duration::from_secs(15)).await;
    println!(
        "{name}: zone {} ({} and {}) SIGKILLed; the gateway saw 4 alive after {gone:?}",
        zones[zone],
        c.id(lost[0]),
        c.id(lost[1])
    );
    assert!(gone.is_some(), "the gateway never saw the zone gone");
    tokio::time::timeout(Duration::from_secs(60), clients)
        .await
        .expect("clients stop after their duration")
        .expect("client task");

    // With the zone still down: every key reads at R=2 (the oracle over the
    // history, so with every acknowledged value) ...
    let zone_down = workload::verify(c.gateway_addr(), &history, 2, Duration::from_secs(30)).await;
    println!("{name}: zone down, R=2: {}", zone_down.summary());
    zone_down.assert_holds(seed);
    let keys = history.keys();
    let gateway = c.gateway_addr();
    let unreadable: Vec<(String, u16)> = futures::stream::iter(keys.iter().cloned())
        .map(|key| async move {
            let mut client = Client::new(gateway, Duration::from_secs(5));
            let response = client
                .request(
                    "GET",
                    &format!("{}?r=2", workload::path_of(&key)),
                    &[("Accept", "application/json")],
                    b"",
                )
                .await;
            let status = response.map_or(0, |r| r.status);
            (![200, 300, 404].contains(&status)).then_some((key, status))
        })
        .buffer_unordered(8)
        .filter_map(|k| async move { k })
        .collect()
        .await;
    assert!(
        unreadable.is_empty(),
        "{} of {} keys did not read at R=2 with a zone down: {:?}",
        unreadable.len(),
        keys.len(),
        &unreadable[..unreadable.len().min(10)]
    );
    // ... and new keys write at W=2 and read back at R=2.
    let mut client = Client::new(gateway, Duration::from_secs(5));
    let probes = 100;
    let mut retried = 0;
    for i in 0..probes {
        let key = format!("zone-down-{i}");
        let value = format!("written with zone {} down: {i}", zones[zone]);
        let reply = client
            .request(
                "PUT",
                &format!("/v1/kv/{}?w=2", encode_key(key.as_bytes())),
                &[("Content-Type", "text/plain")],
                value.as_bytes(),
            )
            .await
            .unwrap_or_else(|e| panic!("PUT {key}: {e}"));
        assert_eq!(
            reply.status,
            204,
            "PUT {key} with a zone down: {}",
            reply.text()
        );
        // A read may meet a live owner suspected for a moment on a loaded
        // machine (seen once in five parallel runs): up to 3 tries within a
        // few seconds, counted and printed.
        let mut tries = 1;
        let (mut status, mut values, mut text) = get(&mut client, &key, 2).await;
        while status != 200 && tries < 3 {
            println!("{name}: GET {key} answered {status} ({text}); again");
            tokio::time::sleep(Duration::from_secs(1)).await;
            tries += 1;
            (status, values, text) = get(&mut client, &key, 2).await;
        }
        retried += usize::from(tries > 1);
        assert_eq!(status, 200, "GET {key} with a zone down: {text}");
        assert_eq!(values, [value.into_bytes()], "GET {key}");
    }
    println!(
        "{name}: with the zone down, {} keys read at R=2 and {probes} new keys wrote at W=2 \
         and read back ({retried} of those reads needed a second try)",
        keys.len()
    );

    // The zone comes back; the oracle at R=3.
    tokio::task::block_in_place(|| {
        for &i in &lost {
            c.start_node(i);
        }
    });
    let back = c.wait_alive(6, Duration::from_secs(30)).await;
    assert!(back.is_some(), "the zone did not come back within 30 s");
    let verdict = workload::final_check(
        name,
        c.gateway_addr(),
        &history,
        Duration::from_secs(60),
        started,
    )
    .await;
    assert!(verdict.counts.ok > 100, "{}", verdict.summary());
    verdict.assert_holds(seed);
}

/// (d) One node is SIGKILLed and restarted in its namespace again and
/// again (every 1 to 2 s, down 0.5 to 1.5 s) under writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_restart_loop_in_a_namespace() {
    let name = "sigkill_restart_loop_in_a_namespace";
    let seed = run::seed(name);
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();
    let Some(mut c) = start(name, &spec(4, "always")).await else {
        return;
    };
    let history = Arc::new(History::new());
    let total = Duration::from_secs(16);
    let clients = tokio::spawn(workload::run(
        &load(total),
        c.gateway_addr(),
        history.clone(),
        seed,
    ));
    let victim = rng.gen_range(0..c.len());
    let end = Instant::now() + total;
    let mut kills = 0;
    while Instant::now() + Duration::from_secs(3) < end {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(1_000..2_000))).await;
        tokio::task::block_in_place(|| c.kill_node(victim));
        history.fault();
        kills += 1;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(500..1_500))).await;
        tokio::task::block_in_place(|| c.start_node(victim));
    }
    println!(
        "{name}: {} SIGKILLed and restarted {kills} times",
        c.id(victim)
    );
    finish(name, &c, clients, &history, started, seed).await;
}
