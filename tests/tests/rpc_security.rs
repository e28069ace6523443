//! The RPC port under attack (issue 18). Each test is a peer that speaks the
//! protocol correctly but lacks the cluster secret, holds another cluster's,
//! or holds ours and lies. Before the secure transport every one of them
//! owned the cluster: a forged `replicate` erased a key for good, `scan`
//! paged out the database, and a trickle of half-sent frames held memory.

use std::time::{Duration, Instant};

use shoal_node::config::{Config, SecretText};
use shoal_node::env::Env;
use shoal_node::pool::{CallError, Pool};
use shoal_node::rpc::{RemoteError, ReplicateRequest, ScanRequest};
use shoal_tests::cluster::{Cluster, Spec};
use shoal_tests::http::Client;
use shoal_vclock::{Content, Context, SiblingSet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const RPC: Duration = Duration::from_secs(3);

fn spec() -> Spec {
    Spec {
        nodes: 3,
        anti_entropy: false,
        ..Spec::default()
    }
}

/// A pool proving a secret other than the cluster's.
fn stranger() -> Pool {
    let mut c = Config::default();
    c.security.cluster_secret = Some(SecretText::random());
    Pool::new(
        Env::real().net,
        c.transport().unwrap(),
        Duration::from_secs(2),
        8 << 20,
    )
}

/// A context claiming every one of `actors` at 2^64-2 (the state that
/// erased a key before is minted from it, as a lying peer would).
fn absurd_context(actors: &[String]) -> Context {
    let entries: Vec<(String, u64)> = actors.iter().map(|a| (a.clone(), u64::MAX - 2)).collect();
    Context::decode(&shoal_tests::forge::context_bytes(0, &entries)).expect("a well-formed context")
}

/// The state that erased a key before: every actor of the key at 2^64-2.
fn absurd_state(actors: &[String]) -> SiblingSet {
    let context = absurd_context(actors);
    let mut set = SiblingSet::new();
    set.update(&context, "zz-attacker", Content::Tombstone, 1)
        .expect("below the overflow");
    set
}

async fn put(client: &mut Client, key: &str, value: &str) -> u16 {
    client
        .request("PUT", &format!("/v1/kv/{key}"), &[], value.as_bytes())
        .await
        .expect("PUT answered")
        .status
}

async fn get(client: &mut Client, key: &str) -> (u16, String) {
    let r = client
        .request("GET", &format!("/v1/kv/{key}"), &[], b"")
        .await
        .expect("GET answered");
    (r.status, r.text())
}

async fn actors_of(pool: &Pool, addr: &str, key: &[u8]) -> Vec<String> {
    let k = shoal_tests::wire(key);
    let set = pool
        .call(addr, RPC, |c, ctx| async move { c.read(ctx, k).await })
        .await
        .expect("read call")
        .expect("read answered")
        .expect("the key is stored here");
    set.clock()
        .entries()
        .iter()
        .map(|e| e.actor.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_secret_nothing_is_served_and_with_it_an_absurd_clock_is_refused() {
    let c = Cluster::start(spec()).await;
    let mut client = c.client();
    // W=3: node 0's copy is read directly below, and with W=2 the write may
    // be acknowledged before the third replica (possibly node 0) stored it
    // (CI saw "the key is stored here" fail once).
    assert_eq!(put(&mut client, "victim?w=3", "precious").await, 204);
    let addr = c.node(0).unwrap().advertise().to_string();
    let ours = shoal_tests::secret::pool(Env::real().net, Duration::from_secs(2), 8 << 20);
    let actors = actors_of(&ours, &addr, b"victim").await;

    // Another cluster's secret: refused at the handshake, for every RPC.
    let forged = ReplicateRequest {
        key: shoal_tests::wire(b"victim"),
        siblings: absurd_state(&actors),
        hint_for: None,
    };
    let them = stranger();
    let request = forged.clone();
    let replicate = them
        .call(&addr, RPC, |c, ctx| async move {
            c.replicate(ctx, request).await
        })
        .await;
    assert!(
        matches!(replicate, Err(CallError::Connect { .. })),
        "{replicate:?}"
    );
    let scan = them
        .call(&addr, RPC, |c, ctx| async move {
            c.scan(
                ctx,
                ScanRequest {
                    ranges: vec![],
                    cursor: None,
                    max_keys: 100,
                    values: true,
                },
            )
            .await
        })
        .await;
    assert!(matches!(scan, Err(CallError::Connect { .. })), "{scan:?}");
    let decommission = them
        .call(&addr, RPC, |c, ctx| async move {
            c.decommission(ctx, true).await
        })
        .await;
    assert!(
        matches!(decommission, Err(CallError::Connect { .. })),
        "{decommission:?}"
    );

    // A plaintext peer (the protocol before this change) gets no answer:
    // its first bytes fail the handshake and the node hangs up.
    // The node may hang up as soon as the first bytes fail, so a write can
    // meet a reset: that is the refusal too, not a test failure.
    let mut raw = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut frame = vec![0, 0, 0, 16];
    frame.extend_from_slice(&[0u8; 16]);
    let _ = raw.write_all(&frame).await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(10), raw.read(&mut buf))
        .await
        .expect("the node hangs up within the handshake timeout")
        .unwrap_or(0);
    assert_eq!(n, 0, "a plaintext peer got {n} bytes back");

    // With the secret, a write claiming an absurd clock is refused too.
    let request = forged.clone();
    let refused = ours
        .call(&addr, RPC, |c, ctx| async move {
            c.replicate(ctx, request).await
        })
        .await
        .expect("the call is answered");
    assert!(
        matches!(refused, Err(RemoteError::BadRequest { .. })),
        "{refused:?}"
    );
    let batch = ours
        .call(&addr, RPC, |c, ctx| async move {
            c.merge_batch(ctx, vec![(forged.key, forged.siblings)])
                .await
        })
        .await
        .expect("the call is answered");
    assert!(
        matches!(batch, Err(RemoteError::BadRequest { .. })),
        "{batch:?}"
    );

    // Nor may a coordinator mint from such a context: its copy would then
    // hold a clock every other replica refuses.
    let request = shoal_node::rpc::CoordinateRequest {
        key: shoal_tests::wire(b"victim"),
        context: absurd_context(&actors),
        content: Content::Tombstone,
        hint_for: None,
        supersede: false,
    };
    let minted = ours
        .call(&addr, RPC, |c, ctx| async move {
            c.coordinate(ctx, request).await
        })
        .await
        .expect("the call is answered");
    assert!(
        matches!(minted, Err(RemoteError::BadRequest { .. })),
        "{minted:?}"
    );

    // The key is intact and still writable.
    assert_eq!(
        get(&mut client, "victim").await,
        (200, "precious".to_string())
    );
    assert_eq!(put(&mut client, "victim", "again").await, 204);
    c.shutdown().await;
}

/// A thousand connections that each declare a 5 MiB frame and trickle
/// bytes: none gets past the handshake, none is given a frame buffer, each
/// is dropped at the handshake timeout, and meanwhile the node answers its
/// operator and the gateway serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_trickling_connections_leave_the_node_serving() {
    let c = Cluster::start_with(spec(), |_, config| {
        config.rpc.handshake_timeout_ms = 2_000;
    })
    .await;
    let addr = c.node(0).unwrap().advertise().to_string();
    let rss_before = rss_kib();
    let mut attackers = Vec::new();
    for _ in 0..1_000 {
        let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
            continue;
        };
        // A tarpc length prefix for 5 MiB, then the first body byte.
        let _ = s.write_all(&[0x00, 0x50, 0x00, 0x00, 0x00]).await;
        attackers.push(s);
    }
    assert!(attackers.len() >= 900, "only {} connected", attackers.len());
    let started = Instant::now();

    // The operator's status call and the gateway both work meanwhile.
    let ours = shoal_tests::secret::pool(Env::real().net, Duration::from_secs(3), 8 << 20);
    let status = ours
        .call(&addr, RPC, |c, ctx| async move { c.status(ctx).await })
        .await
        .expect("status call")
        .expect("status answered");
    assert_eq!(status.id, "node-1");
    let mut client = c.client();
    for i in 0..20 {
        assert_eq!(put(&mut client, &format!("k{i}"), "v").await, 204);
        assert_eq!(get(&mut client, &format!("k{i}")).await.0, 200);
    }
    // Trickle a byte each; the node still holds nothing for them.
    for s in &mut attackers {
        let _ = s.write_all(&[0]).await;
    }
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(
        grown < 256 << 10,
        "memory grew by {grown} KiB under 1,000 half-sent 5 MiB frames"
    );

    // Every attacker is hung up on once the handshake times out.
    let mut closed = 0;
    for s in &mut attackers {
        let mut buf = [0u8; 16];
        let left = Duration::from_secs(15).saturating_sub(started.elapsed());
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(left, s.read(&mut buf)).await {
            closed += 1;
        }
    }
    assert_eq!(closed, attackers.len(), "connections left open");
    c.shutdown().await;
}

/// A node started with another cluster's secret never becomes a member:
/// neither side ever completes a handshake with the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_the_wrong_secret_never_joins() {
    let mut c = Cluster::start(spec()).await;
    let intruder = c
        .add_node(|config| {
            config.security.cluster_secret = Some(SecretText::random());
        })
        .await;
    // Several failure-detector periods (1 s each in this cluster).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut client = c.client();
    let cluster = client
        .request("GET", "/v1/cluster", &[], b"")
        .await
        .expect("cluster view")
        .json()
        .expect("JSON");
    let ids: Vec<&str> = cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    let intruder_id = shoal_tests::cluster::node_id(intruder);
    assert!(!ids.contains(&intruder_id.as_str()), "{ids:?}");
    let seen_by_intruder = c.node(intruder).unwrap().members().len();
    assert_eq!(seen_by_intruder, 1, "the intruder learned of other members");
    c.shutdown().await;
}

/// Decommissioning nodes one after another must not take the cluster below
/// N storage members.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommission_below_n_is_refused() {
    let mut c = Cluster::start(spec()).await;
    let refused = c
        .decommission(2, Duration::from_secs(30))
        .await
        .expect_err("three nodes, N = 3: nothing to decommission to");
    assert!(refused.contains("fewer than N = 3"), "{refused}");
    // The node is still a full member and the cluster still writes at W.
    let mut client = c.client();
    assert_eq!(put(&mut client, "after", "v").await, 204);
    c.shutdown().await;
}

/// A member (holding the secret) that lies in gossip: an unrequested Ack2
/// that would evict node-2 for good, and storage members of weight 0, 1,000
/// and 10,000 pushed in an Ack. None of it is kept: node-2 stays alive on
/// every member, the ring still builds and keys still write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_gossip_neither_evicts_a_member_nor_skews_the_ring() {
    use shoal_gossip::{Ack, Ack2, Body, Lifecycle, Message, Record, Role, PROTOCOL_VERSION};
    let c = Cluster::start(spec()).await;
    let addr = c.node(0).unwrap().advertise().to_string();
    let ours = shoal_tests::secret::pool(Env::real().net, Duration::from_secs(2), 8 << 20);
    let record = |id: &str, weight: u32, lifecycle: Lifecycle, version: u64| Record {
        id: id.into(),
        address: "127.0.0.1:9".into(),
        role: Role::Storage,
        weight,
        zone: "default".into(),
        lifecycle,
        incarnation: version,
        meta_version: version,
        heartbeat: version,
    };
    let eviction = Message {
        version: PROTOCOL_VERSION,
        from: "liar".into(),
        body: Body::Ack2(Ack2 {
            records: vec![record("node-2", 1, Lifecycle::Left, u64::MAX)],
        }),
    };
    let fakes = Message {
        version: PROTOCOL_VERSION,
        from: "liar".into(),
        body: Body::Ack(Ack {
            records: [0, 1_000, 10_000]
                .iter()
                .map(|w| record(&format!("fake-{w}"), *w, Lifecycle::Active, 1))
                .collect(),
            heartbeats: vec![],
            requests: vec![],
            echo: None,
        }),
    };
    for message in [eviction, fakes] {
        let answer = ours
            .call(&addr, RPC, |c, ctx| async move {
                c.gossip(ctx, "127.0.0.1:9".into(), message).await
            })
            .await
            .expect("gossip call");
        assert!(answer.is_ok(), "{answer:?}");
    }
    // Several gossip rounds for anything accepted to spread.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for i in 0..3 {
        let members = c.node(i).unwrap().members();
        let two = members.iter().find(|m| m.id.as_str() == "node-2").unwrap();
        assert_eq!(two.status, shoal_gossip::Status::Alive, "on node-{}", i + 1);
        assert!(
            members.iter().all(|m| !m.id.as_str().starts_with("fake-")),
            "{members:?}"
        );
    }
    let mut client = c.client();
    for i in 0..20 {
        assert_eq!(put(&mut client, &format!("g{i}"), "v").await, 204);
    }
    c.shutdown().await;
}

/// A byte altered in flight (after the handshake) closes the connection:
/// the node never acts on, or answers, a message that fails its tag, and it
/// goes on serving everyone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_flipped_byte_in_flight_closes_the_connection() {
    let c = Cluster::start(spec()).await;
    let node = c.node(0).unwrap().advertise().to_string();
    // A relay that passes the handshake (50 bytes each way) and then flips
    // one bit of the first message from the client.
    let relay = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_addr = relay.local_addr().unwrap().to_string();
    let closed_by_node = tokio::spawn(async move {
        let (client, _) = relay.accept().await.unwrap();
        let server = tokio::net::TcpStream::connect(&node).await.unwrap();
        let (mut cr, mut cw) = client.into_split();
        let (mut sr, mut sw) = server.into_split();
        let down = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut sr, &mut cw).await;
        });
        let mut seen = 0usize;
        let mut buf = [0u8; 4096];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            for (i, b) in buf[..n].iter_mut().enumerate() {
                if seen + i == 60 {
                    *b ^= 0x01;
                }
            }
            seen += n;
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        // The node hung up: the server-to-client copy ends.
        tokio::time::timeout(Duration::from_secs(10), down)
            .await
            .is_ok()
    });
    let through_relay = shoal_tests::secret::pool(Env::real().net, Duration::from_secs(2), 8 << 20);
    let answer = through_relay
        .call(
            &relay_addr,
            RPC,
            |c, ctx| async move { c.status(ctx).await },
        )
        .await;
    assert!(
        answer.is_err(),
        "an altered message was answered: {answer:?}"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(15), closed_by_node)
            .await
            .expect("the relay finishes")
            .unwrap(),
        "the node kept the connection open"
    );
    // Everyone else is still served.
    let mut client = c.client();
    assert_eq!(put(&mut client, "after-flip", "v").await, 204);
    c.shutdown().await;
}

/// This process's resident memory, KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}
