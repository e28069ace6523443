//! Several gateways against the same nodes (issue 8): they hold no state of
//! their own beyond gossip, so a write through one is read through another,
//! concurrent writers on different gateways produce siblings that either
//! gateway shows, and stopping one gateway leaves the other serving.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use shoal_tests::config::Fast;
use shoal_tests::http::fetch as request;
use shoal_tests::wait;

use shoal_gateway::Gateway;
use shoal_node::env::Env;
use shoal_node::node;

/// Every network wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

/// Waits (bounded) until `addr`'s gateway sees `count` members, all alive.
async fn until_all_alive(addr: SocketAddr, count: usize) {
    let last = std::sync::Mutex::new(serde_json::Value::Null);
    let seen = wait::within(WAIT, || async {
        let r = request(addr, "GET", "/v1/cluster", &[], b"").await;
        let json = r.json().expect("a JSON body");
        let members = json["members"].as_array().cloned().unwrap_or_default();
        *last.lock().unwrap() = json;
        members.len() == count && members.iter().all(|m| m["status"] == "alive")
    })
    .await;
    assert!(
        seen.is_some(),
        "gateway {addr} never saw {count} live members: {}",
        last.lock().unwrap()
    );
}

async fn put(addr: SocketAddr, key: &str, value: &str, context: Option<&str>) -> String {
    let mut headers = vec![("Content-Type", "text/plain")];
    if let Some(c) = context {
        headers.push(("X-Shoal-Context", c));
    }
    let r = request(
        addr,
        "PUT",
        &format!("/v1/kv/{key}?w=2"),
        &headers,
        value.as_bytes(),
    )
    .await;
    assert_eq!(
        r.status,
        204,
        "PUT via {addr}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.header("x-shoal-context").expect("context").to_string()
}

fn sibling_values(json: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = json["siblings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let b = base64::engine::general_purpose::STANDARD
                .decode(s["value"].as_str().unwrap())
                .unwrap();
            String::from_utf8(b).unwrap()
        })
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_serve_the_same_data() {
    let dir = tempfile::tempdir().unwrap();
    let first = node::start(
        Fast::node("node-1", dir.path())
            .seeds(&[])
            .handoff_retry_ms(50)
            .build(),
        Env::real(),
    )
    .await
    .unwrap();
    let seeds = vec![first.advertise().to_string()];
    let mut nodes = vec![first];
    for i in 2..=3 {
        nodes.push(
            node::start(
                Fast::node(&format!("node-{i}"), dir.path())
                    .seeds(&seeds)
                    .handoff_retry_ms(50)
                    .build(),
                Env::real(),
            )
            .await
            .unwrap(),
        );
    }
    let g1 = Gateway::start(
        Fast::gateway("gw-1")
            .seeds(&seeds)
            .build_with_toml("")
            .expect("valid test config"),
        Env::real(),
    )
    .await
    .unwrap();
    // The second gateway seeds through another node: neither needs the other.
    let seeds2 = vec![nodes[2].advertise().to_string()];
    let g2 = Gateway::start(
        Fast::gateway("gw-2")
            .seeds(&seeds2)
            .build_with_toml("")
            .expect("valid test config"),
        Env::real(),
    )
    .await
    .unwrap();
    let (a1, a2) = (g1.http_addr(), g2.http_addr());
    // Three nodes and two gateways: each gateway knows the other by gossip.
    until_all_alive(a1, 5).await;
    until_all_alive(a2, 5).await;

    // Written through one, read through the other, at R = 2.
    let ctx = put(a1, "shared", "from-gw-1", None).await;
    let r = request(a2, "GET", "/v1/kv/shared?r=2", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"from-gw-1"[..]));

    // Two clients on two gateways update from the same context: neither
    // gateway mints versions, so both updates survive as siblings.
    put(a1, "shared", "left", Some(&ctx)).await;
    put(a2, "shared", "right", Some(&ctx)).await;
    for addr in [a1, a2] {
        let r = request(
            addr,
            "GET",
            "/v1/kv/shared?r=3",
            &[("Accept", "application/json")],
            b"",
        )
        .await;
        assert_eq!(r.status, 200, "{:?}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            sibling_values(&r.json().expect("a JSON body")),
            ["left", "right"],
            "via {addr}"
        );
    }

    // A resolving write through the second gateway, with the merged context
    // it read, supersedes both siblings for readers of the first.
    let r = request(a2, "GET", "/v1/kv/shared", &[], b"").await;
    let merged = r.header("x-shoal-context").unwrap().to_string();
    put(a2, "shared", "left+right", Some(&merged)).await;
    let r = request(a1, "GET", "/v1/kv/shared?r=3", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"left+right"[..]));

    // A bucket's props set through one gateway reach the other, and two
    // concurrent changes through both converge to one record everywhere.
    let props = |addr| async move {
        request(addr, "GET", "/v1/buckets/b/props", &[], b"")
            .await
            .json()
            .expect("a JSON body")
    };
    let set = request(
        a1,
        "PUT",
        "/v1/buckets/b/props",
        &[],
        br#"{"conflict":"lww"}"#,
    )
    .await;
    assert_eq!(set.status, 204);
    let seen = shoal_tests::wait::within(Duration::from_secs(5), || async {
        props(a2).await["conflict"] == "lww"
    })
    .await;
    assert!(
        seen.is_some(),
        "the other gateway has the change within 5 s"
    );
    let (x, y) = tokio::join!(
        request(a1, "PUT", "/v1/buckets/b/props", &[], br#"{"ttl_s":60}"#),
        request(
            a2,
            "PUT",
            "/v1/buckets/b/props",
            &[],
            br#"{"conflict":"siblings"}"#
        ),
    );
    assert_eq!((x.status, y.status), (204, 204));
    let agreed = shoal_tests::wait::within(Duration::from_secs(5), || async {
        let (p1, p2) = (props(a1).await, props(a2).await);
        let on_nodes: Vec<_> = nodes.iter().map(|n| n.bucket_props("b")).collect();
        p1 == p2
            && on_nodes.windows(2).all(|w| w[0] == w[1])
            && p1["conflict"]
                == match on_nodes[0].conflict {
                    shoal_vclock::Policy::Lww => "lww",
                    shoal_vclock::Policy::Siblings => "siblings",
                }
            && p1["ttl_s"].as_u64() == on_nodes[0].ttl_s
    })
    .await;
    assert!(
        agreed.is_some(),
        "both gateways and every node hold one record"
    );

    // One gateway stops; the other keeps serving.
    tokio::time::timeout(WAIT, g1.shutdown())
        .await
        .expect("gateway shutdown is bounded");
    put(a2, "after", "still-served", None).await;
    let r = request(a2, "GET", "/v1/kv/after?r=2", &[], b"").await;
    assert_eq!((r.status, r.body.as_slice()), (200, &b"still-served"[..]));

    tokio::time::timeout(WAIT, g2.shutdown())
        .await
        .expect("gateway shutdown is bounded");
    for n in nodes {
        tokio::time::timeout(WAIT, n.shutdown()).await.ok();
    }
}
