//! The `shoal-client` crate against an in-process cluster: the round trip
//! of contexts, siblings resolved by `update`, failover past a dead and an
//! overloaded gateway, `update` waiting out an overload, tokens, the typed
//! errors of the gateway's limits and of a lost quorum, expiry, and TLS.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use shoal_client::{Client, ClientBuilder, Error, Options, RetryPolicy};
use shoal_gateway::GatewayHandle;
use shoal_node::config::Config;
use shoal_tests::cluster::{Cluster, Spec};
use shoal_tests::tokens::write_tokens;
use shoal_tests::wait;
use tokio::io::AsyncWriteExt;

fn spec() -> Spec {
    Spec {
        nodes: 3,
        anti_entropy: false,
        ..Spec::default()
    }
}

fn url(addr: SocketAddr) -> String {
    format!("http://{addr}")
}

fn builder(addrs: &[SocketAddr]) -> ClientBuilder {
    Client::builder()
        .gateways(addrs.iter().map(|a| url(*a)))
        .request_timeout(Duration::from_secs(5))
}

fn client(addr: SocketAddr) -> Client {
    builder(&[addr]).build().expect("valid client settings")
}

/// A second gateway on the cluster's nodes, with `customize` applied.
async fn gateway(c: &Cluster, id: &str, customize: impl FnOnce(&mut Config)) -> GatewayHandle {
    c.start_gateway(id, |g| {
        g.security.cluster_secret = Some(shoal_tests::secret::secret());
        customize(g)
    })
    .await
}

fn values(read: &shoal_client::Read) -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = read.siblings().iter().map(|s| s.value.to_vec()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_get_delete_carry_contexts_in_buckets_for_any_key_bytes() {
    let c = Cluster::start(spec()).await;
    let client = client(c.gateway_addr());

    let absent = client.get("k").await.unwrap();
    assert!(!absent.is_found() && absent.context().is_none());

    let text = Options::new().content_type("text/plain");
    let first = client.put_with("k", "v1", None, &text).await.unwrap();
    let read = client.get("k").await.unwrap();
    assert_eq!(read.value().map(|v| &v[..]), Some(&b"v1"[..]));
    assert_eq!(read.siblings()[0].content_type, "text/plain");

    // With the context of what it replaces, a write leaves one value.
    client
        .put_with("k", "v2", Some(&first), &Options::new().w(3))
        .await
        .unwrap();
    let read = client.get_with("k", &Options::new().r(3)).await.unwrap();
    assert_eq!(values(&read), [b"v2".to_vec()]);
    assert_eq!(
        read.siblings()[0].content_type,
        shoal_client::DEFAULT_CONTENT_TYPE
    );

    // A delete with the read's context: absent, with the tombstones'
    // context, and a write with that one is again the only value.
    client.delete("k", read.context()).await.unwrap();
    let gone = client.get("k").await.unwrap();
    assert!(!gone.is_found());
    let tombstones = gone.context().expect("a deleted key has a context").clone();
    client.put("k", "v3", Some(&tombstones)).await.unwrap();
    assert_eq!(values(&client.get("k").await.unwrap()), [b"v3".to_vec()]);

    // Any bytes are a key, and the same key in a bucket is another key.
    for key in [
        &[0u8, 255, b'/', b' ', b'%', b'?'][..],
        b"..",
        b"a/../b",
        "é".as_bytes(),
    ] {
        client.put(key, key.to_vec(), None).await.unwrap();
        let read = client.get(key).await.unwrap();
        assert_eq!(values(&read), [key.to_vec()], "{key:?}");
    }
    let users = client.bucket("users").unwrap();
    users.put("k", "in users", None).await.unwrap();
    assert_eq!(
        values(&users.get("k").await.unwrap()),
        [b"in users".to_vec()]
    );
    assert_eq!(values(&client.get("k").await.unwrap()), [b"v3".to_vec()]);

    // The gateway's refusals, typed: a quorum outside 1..=N, a context
    // from another key (contexts are sealed to their bucket and key).
    let e = client
        .get_with("k", &Options::new().r(9))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadRequest { .. }), "{e}");
    let other = users.get("k").await.unwrap();
    let e = client.put("k", "x", other.context()).await.unwrap_err();
    assert!(
        matches!(&e, Error::BadRequest { message } if message.contains("context")),
        "{e}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_blind_puts_leave_siblings_and_update_resolves_them_to_one() {
    let c = Cluster::start(spec()).await;
    let client = client(c.gateway_addr());
    client.put("cart", "apple", None).await.unwrap();
    client.put("cart", "pear", None).await.unwrap();
    let read = client.get("cart").await.unwrap();
    assert!(read.has_siblings(), "{read:?}");
    assert_eq!(values(&read), [b"apple".to_vec(), b"pear".to_vec()]);
    assert!(read.value().is_none());
    assert!(read.siblings().iter().all(|s| s.written_at.is_some()));

    // A set union: right however often it is called.
    let handed = Arc::new(Mutex::new(Vec::new()));
    let seen = handed.clone();
    client
        .update("cart", move |siblings| {
            seen.lock().unwrap().push(siblings.len());
            let mut items: Vec<&[u8]> = siblings
                .iter()
                .flat_map(|s| s.value.split(|&b| b == b','))
                .collect();
            items.sort();
            items.dedup();
            items.join(&b',')
        })
        .await
        .unwrap();
    assert_eq!(handed.lock().unwrap().first(), Some(&2));
    let read = client.get("cart").await.unwrap();
    assert_eq!(values(&read), [b"apple,pear".to_vec()]);

    // On a key never written the closure sees nothing.
    let users = client.bucket("users").unwrap();
    users
        .update("new", |siblings| {
            assert!(siblings.is_empty());
            "first"
        })
        .await
        .unwrap();
    assert_eq!(
        values(&users.get("new").await.unwrap()),
        [b"first".to_vec()]
    );
    c.shutdown().await;
}

/// An address nothing listens on.
fn dead_address() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// Takes the only request slot of a gateway with
/// `http.max_concurrent_requests = 1`: a PUT whose body never ends, held
/// until the stream is dropped (the gateway's request timeout is set long).
/// Returns once the gateway answers `overloaded`. A probe in flight when
/// the PUT arrives would get the slot instead (the PUT is then refused),
/// so the PUT is sent again until it holds the slot.
async fn occupy(addr: SocketAddr) -> tokio::net::TcpStream {
    let probe = client(addr);
    for _ in 0..50 {
        let mut slow = tokio::net::TcpStream::connect(addr).await.unwrap();
        slow.write_all(b"PUT /v1/kv/slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        for _ in 0..10 {
            if let Err(Error::Overloaded { .. }) = probe.get("probe").await {
                return slow;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    panic!("the slow PUT never held the gateway's only request slot");
}

/// A gateway whose single request slot [`occupy`] can hold for as long as
/// a test needs.
async fn busy_gateway(c: &Cluster) -> GatewayHandle {
    gateway(c, "gw-busy", |g| {
        g.http.max_concurrent_requests = 1;
        g.http.request_timeout_ms = 60_000;
    })
    .await
}

/// `shoal_overloaded_total` of a gateway (open to anyone on loopback
/// without tokens).
async fn overloaded_total(addr: SocketAddr) -> u64 {
    let r = shoal_tests::http::fetch(addr, "GET", "/metrics", &[], b"").await;
    r.text()
        .lines()
        .find_map(|l| l.strip_prefix("shoal_overloaded_total "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_or_overloaded_gateway_passes_requests_to_the_next() {
    let c = Cluster::start(spec()).await;
    let main = c.gateway_addr();

    // The first address refuses connections: every call goes on to the
    // next, and later calls start there.
    let failover = builder(&[dead_address(), main]).build().unwrap();
    let ctx = failover.put("k", "v", None).await.unwrap();
    failover.put("k", "v2", Some(&ctx)).await.unwrap();
    assert_eq!(values(&failover.get("k").await.unwrap()), [b"v2".to_vec()]);

    // An overloaded gateway did nothing with a request: a write moves on too.
    let busy = busy_gateway(&c).await;
    let slow = occupy(busy.http_addr()).await;
    let alone = client(busy.http_addr());
    match alone.put("k", "v3", None).await {
        Err(e @ Error::Overloaded { .. }) => {
            assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
            assert_eq!((e.status(), e.code()), (Some(503), Some("overloaded")));
        }
        other => panic!("expected overloaded, got {other:?}"),
    }
    let both = builder(&[busy.http_addr(), main]).build().unwrap();
    both.put("k2", "through main", None).await.unwrap();
    assert_eq!(
        values(&both.get("k2").await.unwrap()),
        [b"through main".to_vec()]
    );
    drop(slow);
    busy.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_waits_out_an_overloaded_gateway_within_its_bounds() {
    let c = Cluster::start(spec()).await;
    let busy = busy_gateway(&c).await;
    let addr = busy.http_addr();

    // Bounded: one attempt only, and it is refused.
    let slow = occupy(addr).await;
    let once = builder(&[addr])
        .retry(RetryPolicy::never())
        .build()
        .unwrap();
    assert!(matches!(
        once.update("k", |_| "v").await,
        Err(Error::Overloaded { .. })
    ));

    // The slot is freed only once the update has been refused at least
    // once (the gateway counts it): the update must have waited out the
    // Retry-After and tried again.
    let before = overloaded_total(addr).await;
    let release = tokio::spawn(async move {
        wait::until(Duration::from_secs(10), "the update is refused", || async {
            overloaded_total(addr).await > before
        })
        .await;
        drop(slow);
    });
    let patient = builder(&[addr]).build().unwrap();
    let started = Instant::now();
    patient
        .update("k", |siblings| {
            assert!(siblings.is_empty());
            "after the wait"
        })
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "Retry-After (1 s) honoured: {:?}",
        started.elapsed()
    );
    release.await.unwrap();
    assert_eq!(
        values(&patient.get("k").await.unwrap()),
        [b"after the wait".to_vec()]
    );
    busy.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_sent_as_bearer_and_refusals_are_typed() {
    let c = Cluster::start(spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    write_tokens(
        &file,
        &[
            ("app", "tok-app", &["read", "write"]),
            ("reader", "tok-read", &["read"]),
        ],
    );
    let secure = gateway(&c, "gw-secure", |g| g.security.tokens_file = Some(file)).await;
    let addr = secure.http_addr();

    let app = builder(&[addr]).token("tok-app").build().unwrap();
    let ctx = app.put("k", "v", None).await.unwrap();
    assert_eq!(values(&app.get("k").await.unwrap()), [b"v".to_vec()]);

    let reader = builder(&[addr]).token("tok-read").build().unwrap();
    assert!(reader.get("k").await.unwrap().is_found());
    let e = reader.put("k", "w", Some(&ctx)).await.unwrap_err();
    assert!(matches!(e, Error::Forbidden { .. }), "{e}");
    assert!(!e.is_retryable());

    // A refusal is not passed on to the next gateway: it would refuse
    // too, or worse, accept what this one refused.
    let nobody = builder(&[addr, c.gateway_addr()]).build().unwrap();
    let e = nobody.get("k").await.unwrap_err();
    assert!(matches!(e, Error::Unauthorized { .. }), "{e}");
    let stranger = builder(&[addr]).token("tok-unknown").build().unwrap();
    assert!(matches!(
        stranger.delete("k", None).await,
        Err(Error::Unauthorized { .. })
    ));
    secure.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_and_a_lost_quorum_are_typed_errors() {
    let mut c = Cluster::start(spec()).await;
    let small = gateway(&c, "gw-small", |g| {
        g.limits.max_value_bytes = 1024;
        g.limits.max_key_bytes = 16;
    })
    .await;
    let client = client(small.http_addr());
    let e = client.put("k", vec![b'x'; 2048], None).await.unwrap_err();
    assert!(matches!(e, Error::ValueTooLarge { .. }), "{e}");
    assert_eq!(e.status(), Some(413));
    let e = client.get([b'k'; 17]).await.unwrap_err();
    assert!(matches!(e, Error::KeyTooLong { .. }), "{e}");
    let e = client.put("", "v", None).await.unwrap_err();
    assert!(matches!(e, Error::InvalidInput { .. }), "{e}");
    client.put("k", vec![b'x'; 1024], None).await.unwrap();
    small.shutdown().await;

    // Two of three nodes gone: W=2 cannot be met, R=1 still can.
    let main = builder(&[c.gateway_addr()])
        .retry(RetryPolicy::new().max_attempts(2))
        .build()
        .unwrap();
    main.put("q", "before", None).await.unwrap();
    c.stop(1).await;
    c.stop(2).await;
    let e = main.put("q", "after", None).await.unwrap_err();
    assert!(matches!(e, Error::QuorumFailed { .. }), "{e}");
    assert!(e.is_retryable());
    let started = Instant::now();
    let e = main.update("q", |_| "after").await.unwrap_err();
    assert!(e.is_retryable(), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_with_a_ttl_reads_absent_once_it_expires() {
    let c = Cluster::start(spec()).await;
    let client = client(c.gateway_addr());
    client
        .put_with(
            "session",
            "token",
            None,
            &Options::new().ttl(Duration::from_secs(1)),
        )
        .await
        .unwrap();
    client.put("kept", "v", None).await.unwrap();
    assert!(client.get("session").await.unwrap().is_found());
    wait::until(Duration::from_secs(10), "the ttl put expires", || async {
        !client.get("session").await.unwrap().is_found()
    })
    .await;
    assert!(client.get("kept").await.unwrap().is_found());
    let e = client
        .put_with("k", "v", None, &Options::new().ttl(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::BadRequest { .. }), "{e}");
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_gateways_ca_and_not_without() {
    let c = Cluster::start(spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("gw.crt"), dir.path().join("gw.key"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();
    let tls = gateway(&c, "gw-tls", |g| {
        g.gateway.tls.cert_file = Some(cert_file);
        g.gateway.tls.key_file = Some(key_file);
    })
    .await;
    let port = tls.http_addr().port();

    let by_name = Client::builder()
        .gateway(format!("https://localhost:{port}"))
        .ca_certificate_pem(cert.cert.pem())
        .request_timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let ctx = by_name.put("k", "over tls", None).await.unwrap();
    let read = by_name.get("k").await.unwrap();
    assert_eq!(values(&read), [b"over tls".to_vec()]);
    let by_ip = Client::builder()
        .gateway(format!("https://127.0.0.1:{port}"))
        .ca_certificate_pem(cert.cert.pem())
        .tls_server_name("localhost")
        .build()
        .unwrap();
    by_ip.put("k", "by ip", Some(&ctx)).await.unwrap();
    assert_eq!(values(&by_ip.get("k").await.unwrap()), [b"by ip".to_vec()]);

    // Another CA's certificate: the handshake fails, a connect error; and
    // https without any CA is refused when the client is built.
    let stranger = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let wrong = Client::builder()
        .gateway(format!("https://localhost:{port}"))
        .ca_certificate_pem(stranger.cert.pem())
        .build()
        .unwrap();
    let e = wrong.get("k").await.unwrap_err();
    assert!(
        matches!(&e, Error::Connect { message, .. } if message.contains("certificate")),
        "{e}"
    );
    assert!(matches!(
        Client::builder()
            .gateway(format!("https://localhost:{port}"))
            .build(),
        Err(Error::Config { .. })
    ));
    // Plain HTTP on the TLS port gets no answer it could mistake for one.
    let plain = client(tls.http_addr());
    assert!(plain.get("k").await.is_err());
    tls.shutdown().await;
    c.shutdown().await;
}
