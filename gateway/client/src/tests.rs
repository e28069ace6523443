//! The client against scripted HTTP servers: what goes on the wire, how
//! answers are read, when a request moves to the next gateway, and how
//! `update` retries. (The real gateway is in tests/tests/client_crate.rs.)

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::*;

/// One request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the script answers: raw response bytes, or silence (the
/// connection is held open, unanswered, for a few seconds).
enum Reply {
    Raw(String),
    Silence,
}

fn answer(status: &str, headers: &[(&str, &str)], body: &str) -> Reply {
    let mut raw = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        raw.push_str(&format!("{k}: {v}\r\n"));
    }
    raw.push_str("\r\n");
    raw.push_str(body);
    Reply::Raw(raw)
}

fn error(status: &str, code: &str, headers: &[(&str, &str)]) -> Reply {
    let body = format!(r#"{{"error":"{code}","message":"scripted {code}"}}"#);
    let mut h = vec![("content-type", "application/json")];
    h.extend_from_slice(headers);
    answer(status, &h, &body)
}

type Script = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

/// A server answering request number `i` (counted over all connections)
/// with `script(i, &request)`; returns its address and what it saw.
async fn server(
    script: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static,
) -> (SocketAddr, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let script: Arc<Script> = Arc::new(script);
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, script.clone(), log.clone()));
        }
    });
    (addr, seen)
}

async fn serve(mut stream: TcpStream, script: Arc<Script>, log: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_string();
        let path = first.next().unwrap_or_default().to_string();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let request = Seen {
            method,
            path,
            headers,
            body,
        };
        let reply = {
            let mut log = log.lock().unwrap();
            let i = log.len();
            log.push(request.clone());
            script(i, &request)
        };
        match reply {
            Reply::Raw(raw) => {
                if stream.write_all(raw.as_bytes()).await.is_err() {
                    return;
                }
            }
            Reply::Silence => {
                tokio::time::sleep(Duration::from_secs(5)).await;
                return;
            }
        }
    }
}

/// An address nothing listens on.
fn closed_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

fn client(addrs: &[SocketAddr]) -> ClientBuilder {
    Client::builder()
        .gateways(addrs.iter().map(|a| a.to_string()))
        .request_timeout(Duration::from_secs(3))
}

fn seen(log: &Arc<Mutex<Vec<Seen>>>) -> Vec<Seen> {
    log.lock().unwrap().clone()
}

#[tokio::test]
async fn a_write_carries_key_context_type_token_and_quorum_and_returns_the_new_context() {
    let (addr, log) =
        server(|_, _| answer("204 No Content", &[("x-shoal-context", "ctx-2")], "")).await;
    let c = client(&[addr]).token("tok-1").build().unwrap();
    let old = Context::new("ctx-1").unwrap();
    let options = Options::new()
        .w(3)
        .ttl(Duration::from_secs(60))
        .content_type("text/plain");
    let new = c
        .put_with(b"a/b c", "v", Some(&old), &options)
        .await
        .unwrap();
    assert_eq!(new.as_str(), "ctx-2");
    let deleted = c
        .bucket("users")
        .unwrap()
        .delete_with(
            "k",
            Some(&new),
            &Options::new().w(1).ttl(Duration::from_secs(5)),
        )
        .await
        .unwrap();
    assert_eq!(deleted.as_str(), "ctx-2");
    let seen = seen(&log);
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(seen[0].path, "/v1/kv/a%2Fb%20c?w=3&ttl=60");
    assert_eq!(seen[0].header("x-shoal-context"), Some("ctx-1"));
    assert_eq!(seen[0].header("content-type"), Some("text/plain"));
    assert_eq!(seen[0].header("authorization"), Some("Bearer tok-1"));
    assert_eq!(seen[0].body, b"v");
    // A tombstone never expires: no ttl on a delete.
    assert_eq!(seen[1].method, "DELETE");
    assert_eq!(seen[1].path, "/v1/buckets/users/keys/k?w=1");
    assert_eq!(seen[1].header("x-shoal-context"), Some("ctx-2"));
    // A blind write sends no context at all.
    c.put("k", "v", None).await.unwrap();
    assert_eq!(seen_last(&log).header("x-shoal-context"), None);
}

fn seen_last(log: &Arc<Mutex<Vec<Seen>>>) -> Seen {
    log.lock().unwrap().last().cloned().unwrap()
}

#[tokio::test]
async fn reads_of_one_value_of_siblings_and_of_nothing() {
    let siblings = r#"{"key":"k","key_encoded":"k","context":"ctx-s","siblings":[
        {"value":"YQ==","content_type":"text/plain","written_at":"2026-01-01T00:00:00Z"},
        {"value":"Yg==","content_type":"text/plain","written_at":"2026-01-01T00:00:01Z"}]}"#;
    let (addr, log) = server(move |_, req| match req.path.as_str() {
        "/v1/kv/one?r=1" => answer(
            "200 OK",
            &[("x-shoal-context", "ctx-1"), ("content-type", "text/plain")],
            "hello",
        ),
        "/v1/kv/two" => answer(
            "300 Multiple Choices",
            &[
                ("x-shoal-context", "ctx-s"),
                ("content-type", "application/json"),
            ],
            siblings,
        ),
        "/v1/kv/deleted" => error(
            "404 Not Found",
            "not_found",
            &[("x-shoal-context", "ctx-t")],
        ),
        "/v1/kv/gone" => error("404 Not Found", "not_found", &[]),
        _ => error("400 Bad Request", "bad_request", &[]),
    })
    .await;
    let c = client(&[addr]).build().unwrap();
    let r = c.get_with("one", &Options::new().r(1)).await.unwrap();
    assert_eq!(r.value().map(|v| &v[..]), Some(&b"hello"[..]));
    assert_eq!(r.siblings()[0].content_type, "text/plain");
    assert_eq!(r.context().unwrap().as_str(), "ctx-1");
    let r = c.get("two").await.unwrap();
    assert!(r.has_siblings());
    let values: Vec<&[u8]> = r.siblings().iter().map(|s| &s.value[..]).collect();
    assert_eq!(values, [&b"a"[..], b"b"]);
    assert_eq!(r.context().unwrap().as_str(), "ctx-s");
    let r = c.get("deleted").await.unwrap();
    assert!(!r.is_found());
    assert_eq!(r.context().unwrap().as_str(), "ctx-t");
    let r = c.get("gone").await.unwrap();
    assert!(!r.is_found() && r.context().is_none());
    assert!(matches!(c.get("x").await, Err(Error::BadRequest { .. })));
    // Reads ask for the raw form: no Accept header that would turn a lone
    // value into JSON.
    assert!(seen(&log).iter().all(|s| s.header("accept").is_none()));
}

#[tokio::test]
async fn bad_answers_are_errors_naming_the_gateway() {
    let (addr, _) = server(|_, req| match req.path.as_str() {
        "/v1/kv/no-context" => answer("200 OK", &[], "v"),
        "/v1/kv/bad-json" => answer("300 Multiple Choices", &[], "{nope"),
        "/v1/kv/big" => answer("200 OK", &[("x-shoal-context", "c")], &"x".repeat(2048)),
        "/v1/kv/teapot" => answer("418 I'm a teapot", &[], "short and stout"),
        _ => answer("204 No Content", &[], ""),
    })
    .await;
    let c = client(&[addr]).max_response_bytes(1024).build().unwrap();
    for key in ["no-context", "bad-json", "big"] {
        match c.get(key).await {
            Err(Error::InvalidResponse { gateway, .. }) => {
                assert_eq!(gateway, format!("http://{addr}"))
            }
            other => panic!("{key}: {other:?}"),
        }
    }
    assert!(matches!(
        c.get("teapot").await,
        Err(Error::Unexpected { status: 418, .. })
    ));
    // A write answered without the new context cannot be continued from.
    assert!(matches!(
        c.put("k", "v", None).await,
        Err(Error::InvalidResponse { .. })
    ));
}

#[tokio::test]
async fn inputs_that_cannot_be_sent_are_refused_before_any_request() {
    let (addr, log) =
        server(|_, _| answer("204 No Content", &[("x-shoal-context", "c")], "")).await;
    let c = client(&[addr]).build().unwrap();
    assert!(matches!(c.get("").await, Err(Error::InvalidInput { .. })));
    assert!(matches!(
        c.bucket("No Such"),
        Err(Error::InvalidInput { .. })
    ));
    let bad_type = Options::new().content_type("text/plain\r\nx-evil: 1");
    assert!(matches!(
        c.put_with("k", "v", None, &bad_type).await,
        Err(Error::InvalidInput { .. })
    ));
    assert!(seen(&log).is_empty());
}

#[tokio::test]
async fn a_dead_or_overloaded_gateway_passes_any_request_on_and_the_next_call_starts_where_it_worked(
) {
    let (busy, busy_log) = server(|_, _| {
        error(
            "503 Service Unavailable",
            "overloaded",
            &[("retry-after", "1")],
        )
    })
    .await;
    let (good, good_log) =
        server(|_, _| answer("204 No Content", &[("x-shoal-context", "c")], "")).await;
    let c = client(&[closed_port(), busy, good]).build().unwrap();
    c.put("k", "v", None).await.unwrap();
    assert_eq!((seen(&busy_log).len(), seen(&good_log).len()), (1, 1));
    c.put("k", "v", None).await.unwrap();
    assert_eq!((seen(&busy_log).len(), seen(&good_log).len()), (1, 2));

    // Every gateway overloaded or dead: the overload is what is reported,
    // since it says when to come back.
    let c = client(&[busy, closed_port()]).build().unwrap();
    match c.put("k", "v", None).await {
        Err(e @ Error::Overloaded { .. }) => {
            assert_eq!(e.retry_after(), Some(Duration::from_secs(1)));
            assert!(e.is_retryable());
        }
        other => panic!("{other:?}"),
    }
    let c = client(&[closed_port()]).build().unwrap();
    assert!(matches!(c.get("k").await, Err(Error::Connect { .. })));
}

#[tokio::test]
async fn a_missed_quorum_moves_a_read_on_but_not_a_write() {
    let (flaky, flaky_log) =
        server(|_, _| error("503 Service Unavailable", "quorum_failed", &[])).await;
    let (good, good_log) = server(|_, req| {
        if req.method == "GET" {
            answer("200 OK", &[("x-shoal-context", "c")], "v")
        } else {
            answer("204 No Content", &[("x-shoal-context", "c")], "")
        }
    })
    .await;
    let c = client(&[flaky, good]).build().unwrap();
    assert!(c.get("k").await.unwrap().is_found());
    // The read moved the preferred gateway; start the write at the flaky one.
    let c = client(&[flaky, good]).build().unwrap();
    match c.put("k", "v", None).await {
        Err(e @ Error::QuorumFailed { .. }) => assert!(e.is_retryable()),
        other => panic!("{other:?}"),
    }
    assert_eq!(seen(&flaky_log).len(), 2);
    assert_eq!(
        seen(&good_log).len(),
        1,
        "the write went to one gateway only"
    );
}

#[tokio::test]
async fn a_silent_gateway_times_out_each_attempt_and_a_read_tries_the_next() {
    let (silent, _) = server(|_, _| Reply::Silence).await;
    let (good, _) = server(|_, _| answer("200 OK", &[("x-shoal-context", "c")], "v")).await;
    let c = client(&[silent, good])
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let t = Instant::now();
    assert!(c.get("k").await.unwrap().is_found());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let c = client(&[silent])
        .request_timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let t = Instant::now();
    match c.put("k", "v", None).await {
        Err(Error::Timeout { after, .. }) => assert_eq!(after, Duration::from_millis(300)),
        other => panic!("{other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
}

#[tokio::test]
async fn update_hands_over_every_sibling_and_writes_with_the_context_read() {
    let siblings = r#"{"key":"k","key_encoded":"k","context":"ctx-both","siblings":[
        {"value":"YQ==","content_type":"text/plain","written_at":"2026-01-01T00:00:00Z"},
        {"value":"Yg==","content_type":"text/plain","written_at":"2026-01-01T00:00:01Z"}]}"#;
    let (addr, log) = server(move |_, req| {
        if req.method == "GET" {
            answer(
                "300 Multiple Choices",
                &[("x-shoal-context", "ctx-both")],
                siblings,
            )
        } else {
            answer("204 No Content", &[("x-shoal-context", "ctx-merged")], "")
        }
    })
    .await;
    let c = client(&[addr]).build().unwrap();
    let ctx = c
        .bucket("b")
        .unwrap()
        .update("k", |s| {
            let mut v: Vec<u8> = s.iter().flat_map(|s| s.value.to_vec()).collect();
            v.sort();
            v
        })
        .await
        .unwrap();
    assert_eq!(ctx.as_str(), "ctx-merged");
    let put = seen_last(&log);
    assert_eq!(put.path, "/v1/buckets/b/keys/k");
    assert_eq!(put.header("x-shoal-context"), Some("ctx-both"));
    assert_eq!(put.body, b"ab");
}

#[tokio::test]
async fn update_waits_out_retry_after_and_re_reads_after_a_missed_quorum() {
    // GET overloaded (Retry-After 1), GET ok, PUT quorum_failed, GET ok, PUT ok.
    let (addr, log) = server(|i, req| match (i, req.method.as_str()) {
        (0, _) => error(
            "503 Service Unavailable",
            "overloaded",
            &[("retry-after", "1")],
        ),
        (2, "PUT") => error("503 Service Unavailable", "quorum_failed", &[]),
        (_, "GET") => answer("200 OK", &[("x-shoal-context", &format!("ctx-{i}"))], "1"),
        _ => answer("204 No Content", &[("x-shoal-context", "done")], ""),
    })
    .await;
    let c = client(&[addr]).build().unwrap();
    let calls = Arc::new(Mutex::new(0));
    let counted = calls.clone();
    let t = Instant::now();
    let ctx = c
        .update("k", move |_| {
            *counted.lock().unwrap() += 1;
            "2"
        })
        .await
        .unwrap();
    assert_eq!(ctx.as_str(), "done");
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    assert_eq!(
        *calls.lock().unwrap(),
        2,
        "resolved once per completed read"
    );
    let seen = seen(&log);
    let methods: Vec<&str> = seen.iter().map(|s| s.method.as_str()).collect();
    assert_eq!(methods, ["GET", "GET", "PUT", "GET", "PUT"]);
    // Each write carries the context of the read just before it.
    assert_eq!(seen[2].header("x-shoal-context"), Some("ctx-1"));
    assert_eq!(seen[4].header("x-shoal-context"), Some("ctx-3"));
}

#[tokio::test]
async fn update_gives_up_within_its_bounds_and_at_once_on_a_refusal() {
    let (busy, log) = server(|_, _| {
        error(
            "503 Service Unavailable",
            "overloaded",
            &[("retry-after", "0")],
        )
    })
    .await;
    let c = client(&[busy])
        .retry(RetryPolicy::new().max_attempts(3))
        .build()
        .unwrap();
    assert!(matches!(
        c.update("k", |_| "v").await,
        Err(Error::Overloaded { .. })
    ));
    assert_eq!(seen(&log).len(), 3);

    // A Retry-After past max_elapsed ends the retries instead of sleeping.
    let (slow, log) = server(|_, _| {
        error(
            "503 Service Unavailable",
            "overloaded",
            &[("retry-after", "5")],
        )
    })
    .await;
    let c = client(&[slow])
        .retry(RetryPolicy::new().max_elapsed(Duration::from_millis(500)))
        .build()
        .unwrap();
    let t = Instant::now();
    assert!(c.update("k", |_| "v").await.is_err());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(seen(&log).len(), 1);

    let (refusing, log) = server(|_, _| error("403 Forbidden", "forbidden", &[])).await;
    let c = client(&[refusing]).build().unwrap();
    assert!(matches!(
        c.update("k", |_| "v").await,
        Err(Error::Forbidden { .. })
    ));
    assert_eq!(seen(&log).len(), 1);
}

#[test]
fn building_checks_every_setting() {
    let bad = [
        Client::builder(),
        Client::builder().gateway("ftp://h"),
        Client::builder().gateway("https://localhost:1"),
        Client::builder().gateway("h:1").token("bad\ntoken"),
        Client::builder()
            .gateway("https://h:1")
            .ca_certificate_pem("nope"),
        Client::builder()
            .gateway("h:1")
            .request_timeout(Duration::ZERO),
        Client::builder()
            .gateway("h:1")
            .connect_timeout(Duration::ZERO),
        Client::builder().gateway("h:1").max_response_bytes(0),
        Client::builder()
            .gateway("h:1")
            .tls_server_name("bad name!"),
    ];
    for b in bad {
        let shown = format!("{b:?}");
        assert!(matches!(b.build(), Err(Error::Config { .. })), "{shown}");
    }
    let c = Client::new("localhost:8080").unwrap();
    assert_eq!(c.gateways().collect::<Vec<_>>(), ["http://localhost:8080"]);
    assert_eq!(c.bucket("users").unwrap().name(), "users");
}
