//! The HTTP API against a real in-process cluster: four storage nodes and a
//! gateway on 127.0.0.1 (port 0), temp data dirs. One cluster serves every
//! scenario in turn (distinct keys), the destructive one last. Every wait is
//! bounded.

use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use shoal_tests::config::Fast;
use shoal_tests::http::{fetch as request, Reply};
use shoal_tests::wait;

use shoal_gateway::{Gateway, GatewayHandle};
use shoal_node::env::Env;
use shoal_node::node::{self, NodeHandle};
use shoal_ring::{Member, Ring, RingConfig};
use shoal_vclock::{Content, Context};

/// Every network wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

struct Cluster {
    nodes: Vec<NodeHandle>,
    gateway: GatewayHandle,
}

async fn start_cluster(dir: &Path, count: usize) -> Cluster {
    let first = node::start(
        Fast::node("node-1", dir)
            .seeds(&[])
            .handoff_retry_ms(50)
            .build(),
        Env::real(),
    )
    .await
    .unwrap();
    let seeds = vec![first.advertise().to_string()];
    let mut nodes = vec![first];
    for i in 2..=count {
        let n = node::start(
            Fast::node(&format!("node-{i}"), dir)
                .seeds(&seeds)
                .handoff_retry_ms(50)
                .build(),
            Env::real(),
        )
        .await
        .unwrap();
        nodes.push(n);
    }
    let mut config = Fast::gateway("gw-1")
        .seeds(&seeds)
        .build_with_toml("")
        .expect("valid test config");
    config.http.request_timeout_ms = 5_000;
    config.gossip.failure_timeout_ms = 1000;
    let gateway = Gateway::start(config, Env::real()).await.unwrap();
    let addr = gateway.http_addr();
    wait::until(WAIT, "the gateway to see every node alive", || async move {
        let r = request(addr, "GET", "/v1/cluster", &[], b"").await;
        let members = r.json().expect("a JSON body")["members"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        members.len() == count + 1 && members.iter().all(|m| m["status"] == "alive")
    })
    .await;
    Cluster { nodes, gateway }
}

impl Cluster {
    async fn req(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        request(self.gateway.http_addr(), method, path, headers, body).await
    }

    async fn put(&self, key: &str, value: &str, context: Option<&str>) -> String {
        let mut headers = vec![("Content-Type", "text/plain")];
        if let Some(c) = context {
            headers.push(("X-Shoal-Context", c));
        }
        let r = self
            .req("PUT", &format!("/v1/kv/{key}"), &headers, value.as_bytes())
            .await;
        assert_eq!(
            r.status,
            204,
            "PUT {key}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
        r.header("x-shoal-context").expect("context").to_string()
    }

    fn ring(&self) -> Ring {
        Ring::new(
            self.nodes.iter().map(|n| Member::new(n.id(), 1)),
            RingConfig::default(),
        )
        .unwrap()
    }
}

fn values(r: &Reply) -> Vec<String> {
    let mut v: Vec<String> = r.json().expect("a JSON body")["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(s["value"].as_str().unwrap())
                .unwrap();
            String::from_utf8(bytes).unwrap()
        })
        .collect();
    v.sort();
    v
}

async fn put_then_get(c: &Cluster) {
    let ctx = c.put("user:42", "hello", None).await;
    assert!(!ctx.is_empty());
    let r = c.req("GET", "/v1/kv/user:42", &[], b"").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, b"hello");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert!(r.header("x-shoal-context").is_some());
    let j = c
        .req(
            "GET",
            "/v1/kv/user:42",
            &[("Accept", "application/json")],
            b"",
        )
        .await;
    assert_eq!(j.status, 200);
    assert_eq!(j.json().expect("a JSON body")["key"], "user:42");
    assert_eq!(values(&j), vec!["hello"]);
    assert_eq!(
        j.json().expect("a JSON body")["siblings"][0]["content_type"],
        "text/plain"
    );
    assert!(j.json().expect("a JSON body")["siblings"][0]["written_at"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    // Overwrite with the context read: one value again.
    let ctx = r.header("x-shoal-context").unwrap().to_string();
    c.put("user:42", "hello again", Some(&ctx)).await;
    let r = c.req("GET", "/v1/kv/user:42", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"hello again"[..]));
    let missing = c.req("GET", "/v1/kv/never-written", &[], b"").await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.error_code(), "not_found");
    assert!(missing.header("x-shoal-context").is_none());
}

async fn siblings_from_concurrent_writes(c: &Cluster) {
    let ctx = c.put("cart", "base", None).await;
    c.put("cart", "apple", Some(&ctx)).await;
    c.put("cart", "pear", Some(&ctx)).await;
    let r = c.req("GET", "/v1/kv/cart", &[], b"").await;
    assert_eq!(r.status, 300, "{:?}", String::from_utf8_lossy(&r.body));
    assert_eq!(values(&r), vec!["apple", "pear"]);
    let merged_ctx = r.header("x-shoal-context").unwrap().to_string();
    assert_eq!(
        r.json().expect("a JSON body")["context"],
        merged_ctx.as_str()
    );
    // Resolving with the context of both siblings leaves one value.
    c.put("cart", "apple,pear", Some(&merged_ctx)).await;
    let r = c.req("GET", "/v1/kv/cart", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"apple,pear"[..]));
}

async fn blind_writes_keep_concurrent_versions(c: &Cluster) {
    c.put("blind", "one", None).await;
    c.put("blind", "two", None).await;
    let r = c.req("GET", "/v1/kv/blind", &[], b"").await;
    assert_eq!(r.status, 300);
    assert_eq!(values(&r), vec!["one", "two"]);
    let j = c
        .req(
            "GET",
            "/v1/kv/blind",
            &[("Accept", "application/json")],
            b"",
        )
        .await;
    assert_eq!(j.status, 200);
    assert_eq!(values(&j), vec!["one", "two"]);
}

async fn delete_then_recreate(c: &Cluster) {
    c.put("doomed", "v", None).await;
    let r = c.req("GET", "/v1/kv/doomed", &[], b"").await;
    let ctx = r.header("x-shoal-context").unwrap().to_string();
    let d = c
        .req("DELETE", "/v1/kv/doomed", &[("X-Shoal-Context", &ctx)], b"")
        .await;
    assert_eq!(d.status, 204);
    let r = c.req("GET", "/v1/kv/doomed", &[], b"").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.error_code(), "not_found");
    let tomb_ctx = r
        .header("x-shoal-context")
        .expect("404 after delete carries the tombstone's context")
        .to_string();
    let j = c
        .req(
            "GET",
            "/v1/kv/doomed",
            &[("Accept", "application/json")],
            b"",
        )
        .await;
    assert_eq!(j.status, 404);
    c.put("doomed", "reborn", Some(&tomb_ctx)).await;
    let r = c.req("GET", "/v1/kv/doomed", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"reborn"[..]));
}

async fn binary_keys(c: &Cluster) {
    let key: &[u8] = &[0, 1, b'/', b' ', b'%', 0xff, b'?', b'#'];
    let encoded = shoal_gateway::encode::encode_key(key);
    c.put(&encoded, "binary", None).await;
    let r = c.req("GET", &format!("/v1/kv/{encoded}"), &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"binary"[..]));
    c.put("a%2Fb", "encoded slash", None).await;
    c.put("a/b", "raw slash", None).await;
    let r = c.req("GET", "/v1/kv/a%2Fb", &[], b"").await;
    // Both spell the bytes `a/b`: percent-decoding makes them the same key.
    assert_eq!(r.status, 300);
    let p = c
        .req("GET", &format!("/v1/cluster/preflist/{encoded}"), &[], b"")
        .await;
    assert_eq!(p.status, 200);
    assert_eq!(
        p.json().expect("a JSON body")["token"],
        shoal_ring::key_position(key)
    );
    let owners: Vec<String> = p.json().expect("a JSON body")["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    let expected: Vec<String> = c
        .ring()
        .preference_list(key, 3)
        .into_iter()
        .map(str::to_string)
        .collect();
    assert_eq!(owners, expected);
}

async fn quorum_overrides(c: &Cluster) {
    for w in 1..=3 {
        let r = c
            .req("PUT", &format!("/v1/kv/quorum-{w}?w={w}"), &[], b"x")
            .await;
        assert_eq!(r.status, 204, "w={w}");
    }
    for r in 1..=3 {
        let g = c
            .req("GET", &format!("/v1/kv/quorum-3?r={r}"), &[], b"")
            .await;
        assert_eq!((g.status, g.body.as_slice()), (200, &b"x"[..]), "r={r}");
    }
    let bad = c.req("GET", "/v1/kv/quorum-3?r=4", &[], b"").await;
    assert_eq!(bad.status, 400);
}

async fn read_repair_is_visible_in_debug_replicas(c: &Cluster) {
    // Store a version on one owner only, behind the gateway's back.
    let key = b"repair-me".to_vec();
    let owners: Vec<String> = c
        .ring()
        .preference_list(&key, 3)
        .into_iter()
        .map(str::to_string)
        .collect();
    let first = c.nodes.iter().find(|n| n.id() == owners[0]).unwrap();
    let pool = shoal_tests::secret::real_pool(8 << 20);
    let request = shoal_node::rpc::CoordinateRequest {
        key: shoal_tests::wire(&key),
        context: Context::empty(),
        content: Content::value(b"lonely".to_vec(), "text/plain"),
        hint_for: None,
        supersede: false,
    };
    pool.call(
        first.advertise(),
        Duration::from_secs(5),
        |client, ctx| async move { client.coordinate(ctx, request).await },
    )
    .await
    .unwrap()
    .unwrap();
    let holders = |r: &Reply| -> usize {
        r.json().expect("a JSON body")["replicas"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["role"] == "owner" && x["siblings"].is_array())
            .count()
    };
    let before = c.req("GET", "/v1/debug/replicas/repair-me", &[], b"").await;
    assert_eq!(before.status, 200);
    assert_eq!(
        holders(&before),
        1,
        "{}",
        before.json().expect("a JSON body")
    );
    // Inspection did not repair anything.
    let again = c.req("GET", "/v1/debug/replicas/repair-me", &[], b"").await;
    assert_eq!(holders(&again), 1);
    let r = c.req("GET", "/v1/kv/repair-me?r=3", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"lonely"[..]));
    wait::until(WAIT, "read repair to reach every owner", || async {
        let r = c.req("GET", "/v1/debug/replicas/repair-me", &[], b"").await;
        holders(&r) == 3
    })
    .await;
    let after = c.req("GET", "/v1/debug/replicas/repair-me", &[], b"").await;
    let row = &after.json().expect("a JSON body")["replicas"][0];
    assert_eq!(row["reachable"], true);
    assert_eq!(row["siblings"][0]["tombstone"], false);
    assert!(row["siblings"][0]["clock"].is_object());
}

async fn cluster_and_health(c: &Cluster) {
    let h = c.req("GET", "/health", &[], b"").await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json().expect("a JSON body")["status"], "ok");
    let r = c.req("GET", "/v1/cluster", &[], b"").await;
    let body = r.json().expect("a JSON body");
    let ownership = body["ownership"].as_object().unwrap();
    assert_eq!(ownership.len(), c.nodes.len());
    let total: f64 = ownership.values().map(|v| v.as_f64().unwrap()).sum();
    assert!((total - 1.0).abs() < 1e-6, "{total}");
    let storage = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "storage")
        .count();
    assert_eq!(storage, c.nodes.len());
}

/// With every owner of a key down, a `w=1` write is coordinated by the one
/// live node standing in: it must keep the version as a hint for an owner
/// (so handoff delivers it), not only as data no owner will ever ask for.
async fn every_owner_down(c: &mut Cluster) {
    let survivor = c.nodes[0].id().to_string();
    // Down members stay in the ring: ownership does not move on failure.
    let ring = Ring::new(
        (1..=4).map(|i| Member::new(format!("node-{i}"), 1)),
        RingConfig::default(),
    )
    .unwrap();
    while c.nodes.len() > 1 {
        c.nodes.pop().unwrap().abort();
    }
    // Once the gateway knows them down (a write sent to an owner that dies
    // under it is answered "unknown" and not tried elsewhere, since that
    // owner may have stored it), the write plan skips them at once.
    let addr = c.gateway.http_addr();
    wait::until(WAIT, "the gateway to see three nodes down", || async move {
        let r = request(addr, "GET", "/v1/cluster", &[], b"").await;
        let members = r.json().expect("a JSON body")["members"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        members
            .iter()
            .filter(|m| m["role"] == "storage" && m["status"] != "alive")
            .count()
            == 3
    })
    .await;
    let key = (0..1000)
        .map(|i| format!("orphan-{i}"))
        .find(|k| {
            !ring
                .preference_list(k.as_bytes(), 3)
                .contains(&survivor.as_str())
        })
        .expect("some key has no replica on the survivor");
    let r = c
        .req("PUT", &format!("/v1/kv/{key}?w=1"), &[], b"stood in")
        .await;
    assert_eq!(r.status, 204, "{:?}", String::from_utf8_lossy(&r.body));
    let d = c
        .req("GET", &format!("/v1/debug/replicas/{key}"), &[], b"")
        .await;
    let rows = d.json().expect("a JSON body")["replicas"]
        .as_array()
        .cloned()
        .unwrap();
    assert!(
        rows.iter()
            .any(|x| x["node"] == survivor.as_str() && x["role"] == "hint"),
        "the stand-in holds no hint: {}",
        d.json().expect("a JSON body")
    );
}

/// Kills one owner of a key: a `w=3` write still succeeds through a fallback
/// that holds a hint, and reads still answer.
async fn one_node_down(mut c: Cluster) {
    let key = "survivor";
    let owners: Vec<String> = c
        .ring()
        .preference_list(key.as_bytes(), 3)
        .into_iter()
        .map(str::to_string)
        .collect();
    let victim = owners[1].clone();
    let index = c.nodes.iter().position(|n| n.id() == victim).unwrap();
    c.nodes.remove(index).abort();
    let r = c
        .req("PUT", &format!("/v1/kv/{key}?w=3"), &[], b"still here")
        .await;
    assert_eq!(r.status, 204, "{:?}", String::from_utf8_lossy(&r.body));
    let d = c
        .req("GET", &format!("/v1/debug/replicas/{key}"), &[], b"")
        .await;
    let rows = d.json().expect("a JSON body")["replicas"]
        .as_array()
        .cloned()
        .unwrap();
    assert!(
        rows.iter()
            .any(|x| x["role"] == "hint" && x["hint_for"] == victim.as_str()),
        "no hint for {victim}: {}",
        d.json().expect("a JSON body")
    );
    assert!(rows
        .iter()
        .any(|x| x["node"] == victim.as_str() && x["reachable"] == false));
    let g = c.req("GET", &format!("/v1/kv/{key}?r=2"), &[], b"").await;
    assert_eq!((g.status, g.body.as_slice()), (200, &b"still here"[..]));
    let p = c
        .req("GET", &format!("/v1/cluster/preflist/{key}"), &[], b"")
        .await;
    assert_eq!(
        p.json().expect("a JSON body")["owners"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    every_owner_down(&mut c).await;
    tokio::time::timeout(WAIT, c.gateway.shutdown())
        .await
        .expect("gateway shutdown is bounded");
    for n in c.nodes {
        tokio::time::timeout(WAIT, n.shutdown()).await.ok();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_api_against_a_real_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let c = start_cluster(dir.path(), 4).await;
    cluster_and_health(&c).await;
    put_then_get(&c).await;
    siblings_from_concurrent_writes(&c).await;
    blind_writes_keep_concurrent_versions(&c).await;
    delete_then_recreate(&c).await;
    binary_keys(&c).await;
    quorum_overrides(&c).await;
    read_repair_is_visible_in_debug_replicas(&c).await;
    one_node_down(c).await;
}
