//! Deletes that never come back (issue 23, second part): tombstones are
//! purged once every replica holds them, never while a replica is away, and
//! a key written again after its purge is readable (no old clock swallows
//! the new write).

use std::sync::atomic::Ordering;
use std::time::Duration;

use shoal_tests::cluster::{Cluster, Spec};
use shoal_tests::http::{Client, Reply};
use shoal_tests::wait;

const KEYS: usize = 40;

fn spec() -> Spec {
    Spec {
        nodes: 3,
        ..Spec::default()
    }
}

fn fast_gc(_: usize, config: &mut shoal_node::config::Config) {
    config.tombstones.settle_ms = 300;
    config.tombstones.gc_interval_ms = 200;
}

async fn req(
    c: &mut Client,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    c.request(method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
}

/// Writes `key`, then deletes it with the read's context: tombstones only.
async fn write_then_delete(c: &mut Client, key: &str) {
    let path = format!("/v1/kv/{key}");
    assert_eq!(req(c, "PUT", &path, &[], b"doomed").await.status, 204);
    let read = req(c, "GET", &path, &[], b"").await;
    let context = read
        .header("x-shoal-context")
        .expect("a context")
        .to_string();
    let gone = req(
        c,
        "DELETE",
        &path,
        &[("X-Shoal-Context", context.as_str())],
        b"",
    )
    .await;
    assert_eq!(gone.status, 204, "{}", gone.text());
}

fn purged(c: &Cluster, i: usize) -> u64 {
    c.node(i).map_or(0, |n| {
        n.store()
            .counters()
            .tombstones_purged
            .load(Ordering::Relaxed)
    })
}

fn stored(c: &Cluster, i: usize, key: &str) -> bool {
    let wire = shoal_node::keys::wire(shoal_node::keys::DEFAULT_BUCKET, key.as_bytes());
    c.node(i)
        .is_some_and(|n| n.store().read(&wire).expect("read").is_some())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_purged_once_every_replica_holds_them_and_keys_live_again() {
    let c = Cluster::start_with(spec(), fast_gc).await;
    let mut client = c.client();
    for i in 0..KEYS {
        write_then_delete(&mut client, &format!("t{i}")).await;
    }
    wait::until(
        Duration::from_secs(30),
        "every replica to purge",
        || async { (0..3).all(|i| purged(&c, i) >= KEYS as u64) },
    )
    .await;
    for i in 0..KEYS {
        let key = format!("t{i}");
        for n in 0..3 {
            assert!(!stored(&c, n, &key), "{key} still stored on node {n}");
        }
        assert_eq!(
            req(&mut client, "GET", &format!("/v1/kv/{key}"), &[], b"")
                .await
                .status,
            404
        );
    }
    // Written again blindly after the purge: readable everywhere.
    for i in 0..KEYS {
        let path = format!("/v1/kv/t{i}");
        assert_eq!(
            req(&mut client, "PUT", &path, &[], b"back").await.status,
            204
        );
        let r = req(&mut client, "GET", &path, &[], b"").await;
        assert_eq!((r.status, r.body.as_slice()), (200, &b"back"[..]), "t{i}");
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delete_with_an_owner_away_longer_than_any_timer_never_comes_back() {
    let mut c = Cluster::start_with(spec(), fast_gc).await;
    let mut client = c.client();
    // Every replica holds the value; then node-3 goes away.
    for i in 0..KEYS {
        let path = format!("/v1/kv/a{i}");
        assert_eq!(
            req(&mut client, "PUT", &path, &[], b"old").await.status,
            204
        );
    }
    wait::until(
        Duration::from_secs(10),
        "node-3 to hold every value",
        || async { (0..KEYS).all(|i| stored(&c, 2, &format!("a{i}"))) },
    )
    .await;
    c.stop(2).await;
    c.wait_not_alive(2, Duration::from_secs(15))
        .await
        .expect("node-3 seen down");
    for i in 0..KEYS {
        let path = format!("/v1/kv/a{i}");
        let read = req(&mut client, "GET", &path, &[], b"").await;
        let context = read
            .header("x-shoal-context")
            .expect("a context")
            .to_string();
        let gone = req(
            &mut client,
            "DELETE",
            &path,
            &[("X-Shoal-Context", context.as_str())],
            b"",
        )
        .await;
        assert_eq!(gone.status, 204, "{}", gone.text());
    }
    // Ten settle times and GC passes later nothing is purged: a replica
    // that still holds the value is away.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        (purged(&c, 0), purged(&c, 1)),
        (0, 0),
        "purged while node-3 was away"
    );
    // node-3 returns with the old values; none comes back, and once it
    // holds the tombstones too they are purged everywhere.
    c.restart(2).await;
    c.wait_alive(3, Duration::from_secs(20))
        .await
        .expect("node-3 back");
    for i in 0..KEYS {
        let r = req(&mut client, "GET", &format!("/v1/kv/a{i}"), &[], b"").await;
        assert_eq!(r.status, 404, "a{i} came back: {}", r.text());
    }
    wait::until(
        Duration::from_secs(30),
        "every replica to purge",
        || async { (0..3).all(|i| purged(&c, i) >= KEYS as u64) },
    )
    .await;
    for i in 0..KEYS {
        let r = req(&mut client, "GET", &format!("/v1/kv/a{i}"), &[], b"").await;
        assert_eq!(
            r.status,
            404,
            "a{i} came back after the purge: {}",
            r.text()
        );
        for n in 0..3 {
            assert!(!stored(&c, n, &format!("a{i}")), "a{i} still on node {n}");
        }
    }
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_keys_are_collected_like_tombstones() {
    let c = Cluster::start_with(spec(), |i, config| {
        fast_gc(i, config);
        config.expiry.max_skew_ms = 100;
    })
    .await;
    let mut client = c.client();
    for i in 0..KEYS {
        let path = format!("/v1/kv/x{i}?ttl=1");
        assert_eq!(
            req(&mut client, "PUT", &path, &[], b"brief").await.status,
            204
        );
    }
    // Dead once expired; gone from every replica once the GC has checked.
    wait::until(
        Duration::from_secs(30),
        "every replica to drop them",
        || async { (0..KEYS).all(|i| (0..3).all(|n| !stored(&c, n, &format!("x{i}")))) },
    )
    .await;
    for i in 0..KEYS {
        let path = format!("/v1/kv/x{i}");
        assert_eq!(req(&mut client, "GET", &path, &[], b"").await.status, 404);
        assert_eq!(
            req(&mut client, "PUT", &path, &[], b"again").await.status,
            204
        );
        assert_eq!(
            req(&mut client, "GET", &path, &[], b"").await.body,
            b"again"
        );
    }
    c.shutdown().await;
}
