//! Buckets (issue 22) against an in-process cluster of four nodes and a
//! gateway: separate keyspaces with contexts bound to their bucket,
//! properties that reach every process and survive restarts, `lww` buckets
//! that resolve concurrent versions to one winner on every replica, and a
//! listing that walks the ring through a node failure.

use std::collections::BTreeSet;
use std::time::Duration;

use shoal_node::env::Env;
use shoal_node::keys;
use shoal_node::rpc::ReplicateRequest;
use shoal_tests::cluster::{Cluster, Spec};
use shoal_tests::http::{encode_key, Client, Reply};
use shoal_tests::wait;
use shoal_vclock::{Content, Context, Policy, SiblingSet};

const RPC: Duration = Duration::from_secs(3);

fn spec() -> Spec {
    Spec {
        nodes: 4,
        ..Spec::default()
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_are_separate_keyspaces_with_contexts_bound_to_them() {
    let c = Cluster::start(spec()).await;
    let mut client = c.client();
    let put = req(
        &mut client,
        "PUT",
        "/v1/buckets/carts/keys/k",
        &[("Content-Type", "text/plain")],
        b"in carts",
    )
    .await;
    assert_eq!(put.status, 204, "{}", put.text());
    let carts_context = put
        .header("x-shoal-context")
        .expect("a context")
        .to_string();
    assert_eq!(
        req(&mut client, "PUT", "/v1/kv/k", &[], b"in default")
            .await
            .status,
        204
    );
    let got = req(&mut client, "GET", "/v1/buckets/carts/keys/k", &[], b"").await;
    assert_eq!((got.status, got.text()), (200, "in carts".to_string()));
    assert_eq!(got.header("content-type"), Some("text/plain"));
    let got = req(&mut client, "GET", "/v1/buckets/default/keys/k", &[], b"").await;
    assert_eq!(
        (got.status, got.text()),
        (200, "in default".to_string()),
        "default is /v1/kv"
    );
    assert_eq!(
        req(&mut client, "GET", "/v1/buckets/other/keys/k", &[], b"")
            .await
            .status,
        404
    );

    // A context read in one bucket does not open in another.
    let wrong = req(
        &mut client,
        "PUT",
        "/v1/kv/k",
        &[("X-Shoal-Context", &carts_context)],
        b"x",
    )
    .await;
    assert_eq!(
        (wrong.status, wrong.error_code()),
        (400, "bad_request".to_string())
    );
    let right = req(
        &mut client,
        "PUT",
        "/v1/buckets/carts/keys/k",
        &[("X-Shoal-Context", &carts_context)],
        b"v2",
    )
    .await;
    assert_eq!(right.status, 204);
    let json = req(
        &mut client,
        "GET",
        "/v1/buckets/carts/keys/k",
        &[("Accept", "application/json")],
        b"",
    )
    .await;
    assert_eq!(
        json.json().unwrap()["siblings"].as_array().unwrap().len(),
        1
    );

    for bad in [
        "/v1/buckets/Carts/keys/k",
        "/v1/buckets/a%20b/keys/k",
        "/v1/buckets/c/keys/",
    ] {
        let r = req(&mut client, "GET", bad, &[], b"").await;
        assert_eq!(
            (r.status, r.error_code()),
            (400, "bad_request".to_string()),
            "{bad}"
        );
    }
    let long = format!("/v1/buckets/{}/keys/k", "b".repeat(65));
    assert_eq!(req(&mut client, "GET", &long, &[], b"").await.status, 400);

    // The debug view and the preflist take the bucket as a parameter.
    let debug = req(
        &mut client,
        "GET",
        "/v1/debug/replicas/k?bucket=carts",
        &[],
        b"",
    )
    .await;
    let body = debug.json().unwrap();
    let held: Vec<_> = shoal_tests::cluster::replica_values(&body);
    assert!(
        held.iter().any(|h| h.values.iter().any(|v| v == b"v2")),
        "{body}"
    );
    let token = body["token"].as_u64().unwrap();
    assert_eq!(token, keys::position(&keys::wire("carts", b"k")));
    let deleted = req(&mut client, "DELETE", "/v1/buckets/carts/keys/k", &[], b"").await;
    assert_eq!(deleted.status, 204);
    assert_eq!(
        req(&mut client, "GET", "/v1/kv/k", &[], b"").await.text(),
        "in default"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn props_reach_every_process_and_an_lww_bucket_keeps_one_winner() {
    let mut c = Cluster::start(spec()).await;
    let mut client = c.client();
    let fresh = req(&mut client, "GET", "/v1/buckets/reg/props", &[], b"").await;
    assert_eq!(
        fresh.json().unwrap(),
        serde_json::json!({"conflict": "siblings", "ttl_s": null})
    );
    for bad in [
        &br#"{"conflict":"newest"}"#[..],
        br#"{"colour":1}"#,
        br#"{"ttl_s":0}"#,
        b"not json",
    ] {
        let r = req(&mut client, "PUT", "/v1/buckets/reg/props", &[], bad).await;
        assert_eq!(
            (r.status, r.error_code()),
            (400, "bad_request".to_string()),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // A node that is down when the change is made learns it after.
    c.stop(3).await;
    let set = req(
        &mut client,
        "PUT",
        "/v1/buckets/reg/props",
        &[("Content-Type", "application/json")],
        br#"{"conflict":"lww"}"#,
    )
    .await;
    assert_eq!(set.status, 204, "{}", set.text());
    let got = req(&mut client, "GET", "/v1/buckets/reg/props", &[], b"").await;
    assert_eq!(got.json().unwrap()["conflict"], "lww");
    c.restart(3).await;
    let everywhere = wait::within(Duration::from_secs(5), || async {
        (0..4).all(|i| c.node(i).unwrap().bucket_props("reg").conflict == Policy::Lww)
    })
    .await;
    assert!(everywhere.is_some(), "every node has the change within 5 s");
    // And keeps it through a restart.
    c.stop(1).await;
    c.restart(1).await;
    assert_eq!(c.node(1).unwrap().bucket_props("reg").conflict, Policy::Lww);

    // Two versions written concurrently on two replicas (as two
    // coordinators cut off from each other would): the newer wins, a read
    // never answers 300, and read repair leaves the winner on every replica.
    let pool = shoal_tests::secret::pool(Env::real().net, Duration::from_secs(2), 8 << 20);
    let wire = keys::wire("reg", b"k");
    let version = |actor: &str, value: &str, at: u64| {
        let mut s = SiblingSet::new();
        s.update(
            &Context::empty(),
            actor,
            Content::value(value.as_bytes().to_vec(), "text/plain"),
            at,
        )
        .unwrap();
        s
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let preflist = req(
        &mut client,
        "GET",
        "/v1/cluster/preflist/k?bucket=reg",
        &[],
        b"",
    )
    .await;
    let owners: Vec<String> = preflist.json().unwrap()["owners"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_str().unwrap().to_string())
        .collect();
    for (owner, set) in owners.iter().zip([
        version("zz#1", "older", now - 10),
        version("aa#1", "newer", now),
    ]) {
        let i: usize = owner.trim_start_matches("node-").parse::<usize>().unwrap() - 1;
        let addr = c.node(i).unwrap().advertise().to_string();
        let request = ReplicateRequest {
            key: wire.clone(),
            siblings: set,
            hint_for: None,
        };
        pool.call(&addr, RPC, |c, ctx| async move {
            c.replicate(ctx, request).await
        })
        .await
        .expect("replicate call")
        .expect("replicate accepted");
    }
    // The restarted nodes' new addresses reach the gateway by gossip; until
    // then an r = 3 read may fail (not answer wrongly).
    let mut last = (0, String::new());
    for _ in 0..50 {
        let r = req(&mut client, "GET", "/v1/buckets/reg/keys/k?r=3", &[], b"").await;
        last = (r.status, r.text());
        if last.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(last, (200, "newer".to_string()));
    let converged = wait::within(Duration::from_secs(5), || async {
        let r = req(
            &mut c.client(),
            "GET",
            "/v1/debug/replicas/k?bucket=reg",
            &[],
            b"",
        )
        .await;
        let held = shoal_tests::cluster::replica_values(&r.json().unwrap());
        held.iter()
            .filter(|h| h.owner)
            .all(|h| h.values == vec![b"newer".to_vec()])
    })
    .await;
    assert!(
        converged.is_some(),
        "read repair leaves one winner on every owner"
    );
    // A blind write supersedes it; the same in a siblings bucket makes 300.
    assert_eq!(
        req(&mut client, "PUT", "/v1/buckets/reg/keys/k", &[], b"blind")
            .await
            .status,
        204
    );
    let read = req(&mut client, "GET", "/v1/buckets/reg/keys/k", &[], b"").await;
    assert_eq!((read.status, read.text()), (200, "blind".to_string()));
    c.shutdown().await;
}

/// Every page of a listing, until its cursor is null.
async fn list_all(
    client: &mut Client,
    bucket: &str,
    limit: usize,
    mut between: impl FnMut(usize),
) -> Vec<Vec<u8>> {
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0..10_000 {
        let path = match &cursor {
            None => format!("/v1/buckets/{bucket}/keys?limit={limit}"),
            Some(c) => format!("/v1/buckets/{bucket}/keys?limit={limit}&cursor={c}"),
        };
        let r = req(client, "GET", &path, &[], b"").await;
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json().unwrap();
        let got = body["keys"].as_array().unwrap();
        assert!(got.len() <= limit);
        keys.extend(
            got.iter()
                .map(|k| shoal_gateway::request::decode_key(k.as_str().unwrap()).unwrap()),
        );
        match body["cursor"].as_str() {
            None => return keys,
            Some(c) => cursor = Some(c.to_string()),
        }
        between(page);
    }
    panic!("the listing did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_walks_the_ring_once_through_a_node_failure() {
    let mut c = Cluster::start(spec()).await;
    let mut client = c.client();
    let mut live = BTreeSet::new();
    for i in 0..240u32 {
        let key = format!("item/{i}");
        let path = format!("/v1/buckets/list/keys/{}", encode_key(key.as_bytes()));
        assert_eq!(req(&mut client, "PUT", &path, &[], b"v").await.status, 204);
        live.insert(key.into_bytes());
    }
    for i in 0..30u32 {
        assert_eq!(
            req(&mut client, "PUT", &format!("/v1/kv/other-{i}"), &[], b"v")
                .await
                .status,
            204
        );
    }
    for i in (0..240u32).step_by(8) {
        let key = format!("item/{i}");
        let path = format!("/v1/buckets/list/keys/{}", encode_key(key.as_bytes()));
        // A delete with the read's context supersedes the value; a blind
        // one would only add a tombstone sibling beside it.
        let read = req(&mut client, "GET", &path, &[], b"").await;
        let context = read.header("x-shoal-context").unwrap().to_string();
        let deleted = req(
            &mut client,
            "DELETE",
            &path,
            &[("X-Shoal-Context", &context)],
            b"",
        )
        .await;
        assert_eq!(deleted.status, 204);
        live.remove(key.as_bytes());
    }
    let whole = list_all(&mut client, "list", 37, |_| {}).await;
    let positions: Vec<u64> = whole
        .iter()
        .map(|k| keys::position(&keys::wire("list", k)))
        .collect();
    assert!(positions.windows(2).all(|w| w[0] <= w[1]), "ring order");
    assert_eq!(whole.len(), live.len(), "no key twice, no deleted key");
    assert_eq!(whole.iter().cloned().collect::<BTreeSet<_>>(), live);
    let default = list_all(&mut client, "default", 1000, |_| {}).await;
    assert_eq!(
        default.len(),
        30,
        "the default bucket holds only its own keys"
    );
    assert!(list_all(&mut client, "empty", 10, |_| {}).await.is_empty());

    // A node fails between pages: the listing goes on from its cursor with
    // the other replicas, and still sees every key.
    let mut stopped = false;
    let mut pages = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            None => "/v1/buckets/list/keys?limit=50".to_string(),
            Some(c) => format!("/v1/buckets/list/keys?limit=50&cursor={c}"),
        };
        let r = req(&mut client, "GET", &path, &[], b"").await;
        if r.status == 503 {
            // The gateway has not yet seen the node go; bounded retries.
            tokio::time::sleep(Duration::from_millis(200)).await;
            pages.push(None);
            assert!(
                pages.len() < 100,
                "the listing recovers once the node is seen down"
            );
            continue;
        }
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json().unwrap();
        pages.push(Some(
            body["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| shoal_gateway::request::decode_key(k.as_str().unwrap()).unwrap())
                .collect::<Vec<_>>(),
        ));
        if !stopped {
            c.stop(2).await;
            stopped = true;
        }
        match body["cursor"].as_str() {
            None => break,
            Some(next) => cursor = Some(next.to_string()),
        }
    }
    let through: Vec<Vec<u8>> = pages.into_iter().flatten().flatten().collect();
    assert_eq!(through.len(), live.len(), "each key once");
    assert_eq!(through.into_iter().collect::<BTreeSet<_>>(), live);

    for bad in [
        "/v1/buckets/list/keys?limit=0",
        "/v1/buckets/list/keys?limit=10001",
        "/v1/buckets/list/keys?cursor=%%",
        "/v1/buckets/list/keys?cursor=AAAA",
    ] {
        let r = req(&mut client, "GET", bad, &[], b"").await;
        assert_eq!(
            (r.status, r.error_code()),
            (400, "bad_request".to_string()),
            "{bad}"
        );
    }
    c.shutdown().await;
}
