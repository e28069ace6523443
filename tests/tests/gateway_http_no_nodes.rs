//! HTTP-level behaviour that needs no storage node: validation, limits,
//! errors, health, the OpenAPI document, overload and shutdown.

use std::time::Duration;

use shoal_tests::config::Fast;
use shoal_tests::http::{fetch as request, Client};

use shoal_gateway::Gateway;
use shoal_node::env::Env;
use tokio::io::AsyncWriteExt;

/// Every network wait in these tests is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

/// (method, path, headers, body, expected status, expected error code)
type Case<'a> = (
    &'a str,
    &'a str,
    &'a [(&'a str, &'a str)],
    &'a [u8],
    u16,
    &'a str,
);

async fn start(extra: &str) -> shoal_gateway::GatewayHandle {
    Gateway::start(
        Fast::gateway("gw-test")
            .seeds(&[])
            .build_with_toml(extra)
            .expect("valid test config"),
        Env::real(),
    )
    .await
    .expect("gateway starts")
}

#[tokio::test]
async fn health_is_503_without_nodes() {
    let gw = start("").await;
    let r = request(gw.http_addr(), "GET", "/health", &[], b"").await;
    assert_eq!(r.status, 503);
    assert_eq!(r.json().expect("a JSON body")["status"], "unavailable");
    assert_eq!(r.json().expect("a JSON body")["live_nodes"], 0);
    gw.shutdown().await;
}

#[tokio::test]
async fn requests_are_validated_before_routing() {
    let gw = start("[limits]\nmax_key_bytes = 8\nmax_value_bytes = 16\n").await;
    let a = gw.http_addr();
    // (method, path, headers, body, status, code)
    let cases: &[Case] = &[
        ("GET", "/v1/kv/123456789", &[], b"", 414, "key_too_long"),
        ("PUT", "/v1/kv/123456789", &[], b"v", 414, "key_too_long"),
        ("DELETE", "/v1/kv/123456789", &[], b"", 414, "key_too_long"),
        (
            "GET",
            "/v1/cluster/preflist/123456789",
            &[],
            b"",
            414,
            "key_too_long",
        ),
        ("PUT", "/v1/kv/k", &[], &[b'x'; 17], 413, "value_too_large"),
        ("GET", "/v1/kv/%zz", &[], b"", 400, "bad_request"),
        ("GET", "/v1/kv/ab%4", &[], b"", 400, "bad_request"),
        ("GET", "/v1/kv/", &[], b"", 400, "bad_request"),
        ("PUT", "/v1/kv", &[], b"v", 400, "bad_request"),
        ("POST", "/v1/kv/k", &[], b"v", 405, "method_not_allowed"),
        ("DELETE", "/v1/cluster", &[], b"", 405, "method_not_allowed"),
        ("GET", "/v1/kv/k?r=0", &[], b"", 400, "bad_request"),
        ("GET", "/v1/kv/k?r=4", &[], b"", 400, "bad_request"),
        ("PUT", "/v1/kv/k?w=abc", &[], b"v", 400, "bad_request"),
        ("DELETE", "/v1/kv/k?w=9", &[], b"", 400, "bad_request"),
        (
            "PUT",
            "/v1/kv/k",
            &[("X-Shoal-Context", "!!")],
            b"v",
            400,
            "bad_request",
        ),
        (
            "PUT",
            "/v1/kv/k",
            &[("X-Shoal-Context", "AAAA")],
            b"v",
            400,
            "bad_request",
        ),
        ("GET", "/v1/nothing", &[], b"", 404, "not_found"),
        // Valid requests with no storage node: quorum failure, with counts.
        ("PUT", "/v1/kv/k", &[], b"v", 503, "quorum_failed"),
        ("GET", "/v1/kv/k", &[], b"", 503, "quorum_failed"),
        ("DELETE", "/v1/kv/k", &[], b"", 503, "quorum_failed"),
    ];
    for (method, path, headers, body, status, code) in cases {
        let r = request(a, method, path, headers, body).await;
        assert_eq!(
            r.status,
            *status,
            "{method} {path}: {:?}",
            r.json().expect("a JSON body")
        );
        assert_eq!(r.error_code(), *code, "{method} {path}");
        assert!(!r.json().expect("a JSON body")["message"]
            .as_str()
            .unwrap_or("")
            .is_empty());
        assert_eq!(r.header("content-type"), Some("application/json"));
    }
    let r = request(a, "PUT", "/v1/kv/k?w=1", &[], b"v").await;
    let message = r.json().expect("a JSON body")["message"]
        .as_str()
        .unwrap_or("")
        .to_string();
    assert!(message.contains("0 of 1 required"), "{message}");
    assert!(message.contains("may still have reached"), "{message}");
    gw.shutdown().await;
}

#[tokio::test]
async fn oversized_chunked_body_is_refused_without_reading_it_all() {
    let gw = start("[limits]\nmax_value_bytes = 1024\n").await;
    let head = "PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n";
    // 4 KiB in one chunk, then the stream stays open: the gateway must
    // answer without waiting for the end of the body.
    let mut raw = head.as_bytes().to_vec();
    raw.extend_from_slice(b"1000\r\n");
    raw.extend_from_slice(&[b'x'; 4096]);
    raw.extend_from_slice(b"\r\n");
    let r = Client::new(gw.http_addr(), WAIT)
        .request_raw(&raw)
        .await
        .expect("answered before the body ended");
    assert_eq!(r.status, 413);
    assert_eq!(r.error_code(), "value_too_large");
    gw.shutdown().await;
}

#[tokio::test]
async fn full_gateway_answers_overloaded_at_once() {
    let mut config = Fast::gateway("gw-test")
        .seeds(&[])
        .build_with_toml("")
        .expect("valid test config");
    config.http.max_concurrent_requests = 1;
    let gw = Gateway::start(config, Env::real()).await.unwrap();
    // Occupy the only slot: a PUT whose body never completes.
    let mut slow = tokio::net::TcpStream::connect(gw.http_addr())
        .await
        .unwrap();
    slow.write_all(b"PUT /v1/kv/k HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let mut refused = None;
    for _ in 0..50 {
        let r = request(gw.http_addr(), "GET", "/v1/kv/k", &[], b"").await;
        if r.status == 503 && r.error_code() == "overloaded" {
            refused = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = refused.expect("a second request was refused as overloaded");
    assert_eq!(r.header("retry-after"), Some("1"));
    // Health is not subject to admission control.
    let h = request(gw.http_addr(), "GET", "/health", &[], b"").await;
    assert_eq!(h.status, 503);
    assert_eq!(h.json().expect("a JSON body")["status"], "unavailable");
    drop(slow);
    gw.shutdown().await;
}

#[tokio::test]
async fn openapi_document_lists_the_api() {
    let gw = start("").await;
    let r = request(gw.http_addr(), "GET", "/v1/openapi.json", &[], b"").await;
    assert_eq!(r.status, 200);
    let doc = r.json().expect("a JSON body");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/v1/kv/{key}",
        "/v1/cluster",
        "/v1/cluster/preflist/{key}",
        "/v1/debug/replicas/{key}",
        "/health",
        "/v1/openapi.json",
        "/v1/buckets/{bucket}/keys/{key}",
        "/v1/buckets/{bucket}/keys",
        "/v1/buckets/{bucket}/props",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    for route in ["/v1/kv/{key}", "/v1/buckets/{bucket}/keys/{key}"] {
        let kv = &paths[route];
        for m in ["get", "put", "delete"] {
            assert!(kv.get(m).is_some(), "missing {m} {route}");
        }
        // A GET's 200 is the value in its own type, or JSON on request:
        // documenting it as JSON alone misled every client generated from
        // the document (found by fuzzing the API through it).
        let ok = &kv["get"]["responses"]["200"]["content"];
        assert!(
            ok.get("application/octet-stream").is_some(),
            "{route}: {ok}"
        );
        assert!(ok.get("application/json").is_some(), "{route}: {ok}");
    }
    assert!(paths["/v1/buckets/{bucket}/props"].get("put").is_some());
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    gw.shutdown().await;
}

#[tokio::test]
async fn cluster_view_lists_the_gateway_itself() {
    let gw = start("").await;
    let r = request(gw.http_addr(), "GET", "/v1/cluster", &[], b"").await;
    assert_eq!(r.status, 200);
    let body = r.json().expect("a JSON body");
    assert_eq!(body["n"], 3);
    assert_eq!(body["w"], 2);
    assert_eq!(body["r"], 2);
    let me = &body["members"][0];
    assert_eq!(me["id"], "gw-test");
    assert_eq!(me["role"], "gateway");
    assert_eq!(me["status"], "alive");
    assert_eq!(me["addr"], gw.rpc_addr().to_string());
    assert!(body["ownership"].as_object().unwrap().is_empty());
    let r = request(
        gw.http_addr(),
        "GET",
        "/v1/cluster/preflist/a%2Fb",
        &[],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json().expect("a JSON body")["key"], "a/b");
    assert_eq!(
        r.json().expect("a JSON body")["token"],
        shoal_ring::key_position(b"a/b")
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn missing_id_is_a_start_error_and_shutdown_is_bounded() {
    let mut config = Fast::gateway("x")
        .seeds(&[])
        .build_with_toml("")
        .expect("valid test config");
    config.member.id.clear();
    let err = Gateway::start(config, Env::real()).await.unwrap_err();
    assert!(err.to_string().contains("member.id"));
    let gw = start("").await;
    let addr = gw.http_addr();
    tokio::time::timeout(WAIT, gw.shutdown())
        .await
        .expect("shutdown is bounded");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
