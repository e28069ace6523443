//! The HTTP port under attack (issue 19). Before tokens, sealed contexts and
//! a bounded listener, each of these owned the gateway: one PUT with a
//! context floor of 2^64-2 bricked a key for good, a made-up or borrowed
//! context erased siblings, a 400 KB context grew a key's clock for ever,
//! a thousand sockets sending nothing held every file descriptor, and the
//! debug endpoint showed any key to anyone.

use std::time::{Duration, Instant};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use shoal_gateway::{Gateway, GatewayHandle};
use shoal_node::config::Config;
use shoal_node::env::Env;
use shoal_tests::cluster::{Cluster, Spec};
use shoal_tests::http::{Client, Reply};
use shoal_tests::tokens::write_tokens;
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(5);

fn spec() -> Spec {
    Spec {
        nodes: 3,
        anti_entropy: false,
        ..Spec::default()
    }
}

/// A second gateway on the cluster's nodes, with `customize` applied.
async fn gateway(c: &Cluster, customize: impl FnOnce(&mut Config)) -> GatewayHandle {
    c.start_gateway("gateway-secure", |g| {
        g.security.cluster_secret = Some(shoal_tests::secret::secret());
        customize(g)
    })
    .await
}

async fn call(
    client: &mut Client,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &[u8],
) -> Reply {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(a) = &auth {
        headers.push(("Authorization", a));
    }
    client
        .request(method, path, &headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} answered: {e:?}"))
}

async fn put_with(client: &mut Client, key: &str, context: Option<&str>, value: &str) -> Reply {
    let mut headers = Vec::new();
    if let Some(c) = context {
        headers.push(("X-Shoal-Context", c));
    }
    client
        .request("PUT", &format!("/v1/kv/{key}"), &headers, value.as_bytes())
        .await
        .expect("PUT answered")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_with_each_permission_against_each_route_and_revocation_within_5s() {
    let c = Cluster::start(spec()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tokens.toml");
    write_tokens(
        &file,
        &[
            ("reader", "tok-read", &["read"]),
            ("writer", "tok-write", &["write"]),
            ("admin", "tok-admin", &["admin"]),
            ("scraper", "tok-metrics", &["metrics"]),
        ],
    );
    let f = file.clone();
    let gw = gateway(&c, move |g| g.security.tokens_file = Some(f)).await;
    let mut client = Client::new(gw.http_addr(), T);

    // No token: 401 with the JSON body and WWW-Authenticate, except /health.
    let r = call(&mut client, "GET", "/v1/kv/k", None, b"").await;
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(r.error_code(), "unauthorized");
    assert!(r.header("www-authenticate").unwrap().starts_with("Bearer"));
    assert_eq!(
        call(&mut client, "GET", "/health", None, b"").await.status,
        200
    );
    let r = call(&mut client, "GET", "/v1/kv/k", Some("tok-unknown"), b"").await;
    assert_eq!((r.status, r.error_code().as_str()), (401, "unauthorized"));

    // route → which tokens pass (the others get 403 forbidden)
    let routes: [(&str, &str, &[&str]); 6] = [
        ("PUT", "/v1/kv/k", &["tok-write"]),
        ("GET", "/v1/kv/k", &["tok-read"]),
        ("GET", "/v1/cluster", &["tok-read"]),
        ("GET", "/v1/cluster/preflist/k", &["tok-read"]),
        ("GET", "/v1/debug/replicas/k", &["tok-admin"]),
        ("DELETE", "/v1/kv/k", &["tok-write"]),
    ];
    for (method, path, allowed) in routes {
        for token in ["tok-read", "tok-write", "tok-admin", "tok-metrics"] {
            let r = call(&mut client, method, path, Some(token), b"v").await;
            if allowed.contains(&token) {
                assert!(
                    matches!(r.status, 200 | 204),
                    "{method} {path} with {token}: {} {}",
                    r.status,
                    r.text()
                );
            } else {
                assert_eq!(r.status, 403, "{method} {path} with {token}: {}", r.text());
                assert_eq!(r.error_code(), "forbidden");
            }
        }
    }

    // Revoked: the writer's token stops working within 5 s, no restart.
    write_tokens(&file, &[("reader", "tok-read", &["read"])]);
    let client_ref = tokio::sync::Mutex::new(&mut client);
    let took = shoal_tests::wait::within(Duration::from_secs(5), || async {
        let mut client = client_ref.lock().await;
        let r = call(&mut client, "PUT", "/v1/kv/k", Some("tok-write"), b"v").await;
        assert!(matches!(r.status, 204 | 401), "{} {}", r.status, r.text());
        r.status == 401
    })
    .await;
    assert!(took.is_some(), "revocation took over 5 s");
    let r = call(&mut client, "GET", "/v1/kv/k", Some("tok-read"), b"").await;
    assert!(matches!(r.status, 200 | 300), "{} {}", r.status, r.text());
    gw.shutdown().await;
    c.shutdown().await;
}

/// The context of the issue: a counter floor of 2^64-2 and no entries.
const BRICK: &str = "If7__________wEA";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_borrowed_altered_and_oversized_contexts_are_refused() {
    let c = Cluster::start(spec()).await;
    let mut client = c.client();

    // A bricking context: refused, and the key stays writable.
    let r = put_with(&mut client, "brick", Some(BRICK), "x").await;
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (400, "bad_request"),
        "{}",
        r.text()
    );
    assert!(r.text().contains("context"), "{}", r.text());
    let r = put_with(&mut client, "brick", None, "v1").await;
    assert_eq!(r.status, 204);
    let ctx = r.header("x-shoal-context").unwrap().to_string();
    assert_eq!(
        put_with(&mut client, "brick", Some(&ctx), "v2")
            .await
            .status,
        204
    );

    // Two concurrent writes to b, and a's context sent with b: refused, and
    // both of b's siblings survive.
    assert_eq!(put_with(&mut client, "b", None, "b1").await.status, 204);
    assert_eq!(put_with(&mut client, "b", None, "b2").await.status, 204);
    let a = put_with(&mut client, "a", None, "a1").await;
    let a_ctx = a.header("x-shoal-context").unwrap().to_string();
    let r = put_with(&mut client, "b", Some(&a_ctx), "erase").await;
    assert_eq!(r.status, 400, "a context from another key: {}", r.text());
    let r = client.request("GET", "/v1/kv/b", &[], b"").await.unwrap();
    assert_eq!(r.status, 300, "b keeps its siblings: {}", r.text());

    // b's own context, one byte altered (every position): refused.
    let b_ctx = r.header("x-shoal-context").unwrap().to_string();
    let raw = URL_SAFE_NO_PAD.decode(&b_ctx).unwrap();
    for i in 0..raw.len() {
        let mut bad = raw.clone();
        bad[i] ^= 0x20;
        let bad = URL_SAFE_NO_PAD.encode(bad);
        let r = put_with(&mut client, "b", Some(&bad), "erase").await;
        assert_eq!(r.status, 400, "byte {i} altered: {}", r.text());
    }
    // A made-up context in the valid encoding, claiming a million more
    // writes of every actor than the key has seen: refused.
    let made_up = shoal_tests::forge::context_bytes(
        0,
        &[
            ("node-1#1".into(), 1_000_000),
            ("node-2#1".into(), 1_000_000),
        ],
    );
    let r = put_with(
        &mut client,
        "b",
        Some(&URL_SAFE_NO_PAD.encode(&made_up)),
        "erase",
    )
    .await;
    assert_eq!(r.status, 400, "{}", r.text());

    // Over limits.max_context_bytes (4 KiB by default): refused unread; at
    // 400 KB the HTTP layer may refuse the head first (431). Neither grows
    // the key.
    let big = "A".repeat(5_000);
    let r = put_with(&mut client, "b", Some(&big), "x").await;
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(r.text().contains("max_context_bytes"), "{}", r.text());
    let actors: Vec<(String, u64)> = (0..60_000).map(|i| (format!("a{i}"), 1)).collect();
    let huge = shoal_tests::forge::context_bytes(0, &actors);
    let huge = URL_SAFE_NO_PAD.encode(&huge);
    assert!(huge.len() > 400_000);
    match client
        .request("PUT", "/v1/kv/b", &[("X-Shoal-Context", &huge)], b"x")
        .await
    {
        Ok(r) => assert!(matches!(r.status, 400 | 431), "{} {}", r.status, r.text()),
        Err(e) => panic!("a 400 KB context must be answered, not hang: {e:?}"),
    }
    let mut client = c.client();
    let r = client
        .request("GET", "/v1/kv/b", &[("Accept", "application/json")], b"")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(
        r.header("x-shoal-context").unwrap().len() < 200,
        "the key's clock did not grow"
    );
    c.shutdown().await;
}

/// Sockets this process may open, from /proc (no unsafe code for getrlimit).
fn fd_soft_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).map(str::to_owned))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_connections_neither_starve_clients_nor_outlive_the_header_timeout() {
    let c = Cluster::start(spec()).await;
    // Each half-open socket costs two descriptors here (both ends live in
    // this process), plus the cluster's own.
    let half_open = 1_000.min(fd_soft_limit().saturating_sub(400) / 2);
    assert!(
        half_open >= 200,
        "too few file descriptors for this test: raise ulimit -n"
    );
    // A fifth of them fill every slot, and keep filling it as long as
    // sockets arrive faster than a fifth per header timeout (on a loaded
    // machine connecting all of them takes seconds).
    let cap = half_open / 5;
    let gw = gateway(&c, |g| {
        g.http.header_timeout_ms = 4_000;
        g.http.max_connections = cap;
    })
    .await;
    let addr = gw.http_addr();
    let mut sockets = Vec::with_capacity(half_open);
    for _ in 0..half_open {
        let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
        // A request head that never ends.
        let _ = s.write_all(b"GET /health HTTP/1.1\r\nHo").await;
        sockets.push(s);
    }
    // Every slot is held: a normal client is answered at once, 503.
    let start = Instant::now();
    let mut client = Client::new(addr, Duration::from_secs(1));
    let r = client
        .request("GET", "/health", &[], b"")
        .await
        .expect("answered within 1 s");
    assert!(start.elapsed() < Duration::from_secs(1));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (503, "overloaded"),
        "{}",
        r.text()
    );
    assert!(r.header("retry-after").is_some());

    // Once the header timeout has passed, the slowloris sockets are gone
    // (closed by the gateway: a read sees the end) and a client is served.
    let closed_by = tokio::time::Instant::now() + Duration::from_secs(7);
    for s in sockets.iter_mut().step_by(50) {
        let mut buf = [0u8; 256];
        let closed = tokio::time::timeout_at(closed_by, async {
            loop {
                match tokio::io::AsyncReadExt::read(s, &mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "a half-open connection outlived the header timeout"
        );
    }
    shoal_tests::wait::until(
        Duration::from_secs(3),
        "a client served after the header timeout",
        || async {
            let mut client = Client::new(addr, Duration::from_secs(1));
            matches!(client.request("GET", "/health", &[], b"").await, Ok(r) if r.status == 200)
        },
    )
    .await;
    drop(sockets);
    gw.shutdown().await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_on_a_network_address_without_tokens_refuses_to_start() {
    let mut g = Config::default();
    g.member.id = "gateway-open".into();
    g.member.listen = "127.0.0.1:0".into();
    g.security.cluster_secret = Some(shoal_tests::secret::secret());
    g.http.listen = "0.0.0.0:0".into();
    let e = Gateway::start(g.clone(), Env::real()).await.unwrap_err();
    assert!(e.to_string().contains("allow_anonymous"), "{e}");
    g.security.allow_anonymous = true;
    let gw = Gateway::start(g, Env::real())
        .await
        .expect("meant to be open");
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tls_the_listener_speaks_tls_only() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_file, key_file) = (dir.path().join("gw.crt"), dir.path().join("gw.key"));
    std::fs::write(&cert_file, cert.cert.pem()).unwrap();
    std::fs::write(&key_file, cert.key_pair.serialize_pem()).unwrap();

    let mut g = Config::default();
    g.member.id = "gateway-tls".into();
    g.member.listen = "127.0.0.1:0".into();
    g.security.cluster_secret = Some(shoal_tests::secret::secret());
    g.http.listen = "127.0.0.1:0".into();
    g.gateway.tls.cert_file = Some(cert_file);
    g.gateway.tls.key_file = Some(key_file);
    let gw = Gateway::start(g, Env::real())
        .await
        .expect("gateway starts");

    // A TLS client that trusts the certificate gets an HTTP answer (503:
    // no nodes behind this gateway).
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.cert.der().clone()).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(gw.http_addr())
        .await
        .unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio::time::timeout(T, connector.connect(name, tcp))
        .await
        .expect("handshake in time")
        .expect("handshake");
    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(T, tls.read_to_end(&mut answer))
        .await
        .expect("answer in time")
        .ok();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("\"status\":\"unavailable\""), "{answer}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut client = Client::new(gw.http_addr(), Duration::from_secs(2));
    assert!(client.request("GET", "/health", &[], b"").await.is_err());
    gw.shutdown().await;
}

/// `token` (a sealed context) rebuilt to claim a million more writes of
/// every actor whose name starts with `victim`, keeping the original tag, as
/// a client that knows the format would forge it.
fn forge_future_writes(token: &str, victim: &str) -> String {
    let raw = URL_SAFE_NO_PAD.decode(token).expect("a context token");
    let (body, tag) = raw.split_at(raw.len() - 16);
    let ctx = shoal_vclock::Context::decode(body).expect("a context");
    let entries: Vec<(String, u64)> = ctx
        .entries()
        .map(|(actor, n)| {
            let claimed = if actor.starts_with(victim) {
                n + 1_000_000
            } else {
                n
            };
            (actor.to_string(), claimed)
        })
        .collect();
    let mut out = shoal_tests::forge::context_bytes(ctx.counter_floor(), &entries);
    out.extend_from_slice(tag);
    URL_SAFE_NO_PAD.encode(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_context_across_a_partition_loses_no_acknowledged_write() {
    use shoal_tests::oracle::History;
    use shoal_tests::workload;
    let name = "a_forged_context_across_a_partition_loses_no_acknowledged_write";
    let started = Instant::now();
    let c = Cluster::start(spec()).await;
    let history = std::sync::Arc::new(History::new());
    let load = workload::Spec {
        clients: 4,
        duration: Duration::from_secs(8),
        shared_keys: 4,
        shared_ratio: 0.5,
        w: Some(2),
        r: Some(2),
        timeout: Duration::from_secs(5),
        prefix: String::new(),
        stop: None,
        ..workload::Spec::default()
    };
    let clients = tokio::spawn(workload::run(&load, c.gateway_addr(), history.clone(), 19));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Cut one owner off; on the other side, a client claims that owner's
    // future writes of every shared key (with and without their own tags).
    let victim = shoal_tests::cluster::node_id(1);
    c.faults.isolate(&victim);
    history.fault();
    let mut forger = c.client();
    let mut refused = 0;
    let cut_until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < cut_until {
        for k in 0..load.shared_keys {
            let key = format!("shared-{k}");
            let read = forger
                .request("GET", &format!("/v1/kv/{key}"), &[], b"")
                .await
                .expect("GET answered");
            let Some(token) = read.header("x-shoal-context").map(str::to_owned) else {
                continue;
            };
            let forged = forge_future_writes(&token, &victim);
            if forged == token {
                // The key's context names no write of the victim yet.
                continue;
            }
            let r = put_with(&mut forger, &key, Some(&forged), "forged").await;
            assert_eq!(r.status, 400, "a forged context was taken: {}", r.text());
            refused += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.faults.heal();
    tokio::time::timeout(Duration::from_secs(40), clients)
        .await
        .expect("clients stop")
        .expect("client task");
    assert!(refused > 0, "the forger found no context to forge");
    assert!(c.wait_alive(3, Duration::from_secs(20)).await.is_some());
    let verdict = workload::final_check(
        name,
        c.gateway_addr(),
        &history,
        Duration::from_secs(30),
        started,
    )
    .await;
    verdict.assert_holds(19);
    c.shutdown().await;
}
