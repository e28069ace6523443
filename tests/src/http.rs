//! The test kit's one HTTP/1.1 client, for real sockets and the simulation.
//!
//! Built on hyper's client connection API, which runs over any byte stream:
//! a [`Dial`] opens either a real TCP connection ([`Tcp`]) or a turmoil one
//! ([`Sim`]), so the fault suite, the in-process tests and the simulation
//! read responses with the same parser the gateway's own server speaks.
//!
//! What a general client would hide, and the oracles need: whether a request
//! left this process before it failed. A connect error means the gateway
//! never saw the request ([`SendError::NotSent`]); an error or a timeout once
//! the request may have been written means it may have acted on it
//! ([`SendError::Indeterminate`]).
//!
//! The connection is not driven by a spawned task: each request polls it
//! together with the exchange, so a client needs no runtime handle, and in
//! the simulation no extra task takes part in the schedule.

use std::future::{poll_fn, Future};
use std::io;
use std::net::SocketAddr;
use std::pin::{pin, Pin};
use std::task::{Context, Poll};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{timeout_at, Instant};

/// Largest response body this client accepts; larger means a broken server.
const MAX_BODY: usize = 64 << 20;

/// The bound of [`fetch`]: generous, since a test that gets no answer fails
/// anyway and a slow CI machine should not be the reason.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers in the order received; names lower-case, as hyper keeps them
    /// (HTTP/1.1 names are case-insensitive).
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `error` code of a JSON error body, or `""`.
    pub fn error_code(&self) -> String {
        self.json()
            .and_then(|j| j["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The body as lossy text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The connection could not be opened: the request never left.
    NotSent(String),
    /// The request was (at least partly) written, then the connection failed
    /// or the deadline passed: the server may or may not have acted on it.
    Indeterminate(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NotSent(m) => write!(f, "not sent: {m}"),
            SendError::Indeterminate(m) => write!(f, "indeterminate: {m}"),
        }
    }
}

/// How a [`Client`] opens a connection: the one thing that differs between
/// real sockets and the simulation's.
pub trait Dial {
    /// The connection's byte stream.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Opens a connection.
    fn dial(&self) -> BoxFuture<'static, io::Result<Self::Stream>>;

    /// The `Host` header's value.
    fn authority(&self) -> String;
}

/// Real TCP to one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tcp(pub SocketAddr);

impl Dial for Tcp {
    type Stream = tokio::net::TcpStream;

    fn dial(&self) -> BoxFuture<'static, io::Result<Self::Stream>> {
        let addr = self.0;
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            // Small requests; Nagle would add delay to every one of them.
            let _ = stream.set_nodelay(true);
            Ok(stream)
        })
    }

    fn authority(&self) -> String {
        self.0.to_string()
    }
}

/// Turmoil's simulated TCP to `host:port` (only inside a simulated host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sim(pub String);

impl Dial for Sim {
    type Stream = turmoil::net::TcpStream;

    fn dial(&self) -> BoxFuture<'static, io::Result<Self::Stream>> {
        let host = self.0.clone();
        Box::pin(async move { turmoil::net::TcpStream::connect(host.as_str()).await })
    }

    fn authority(&self) -> String {
        self.0.clone()
    }
}

type Body = Full<Bytes>;

/// hyper's future that performs one connection's reads and writes.
type Driver<S> = Pin<Box<http1::Connection<TokioIo<S>, Body>>>;

/// One open HTTP/1.1 connection: the request handle and the connection
/// future that performs its I/O whenever it is polled.
struct Conn<S: AsyncRead + AsyncWrite + Unpin> {
    sender: http1::SendRequest<Body>,
    /// The connection future; `None` once it finished (closed or failed).
    /// Dropped then, not kept: a finished connection that still held its
    /// request channel would leave a request waiting on it forever.
    io: Option<Driver<S>>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Conn<S> {
    async fn open(stream: S) -> hyper::Result<Self> {
        let (sender, io) = http1::handshake(TokioIo::new(stream)).await?;
        Ok(Self {
            sender,
            io: Some(Box::pin(io)),
        })
    }

    /// Sends `req` and reads its whole response, polling the connection
    /// alongside (the connection first, so a close that arrived while the
    /// connection was idle is seen before the request is written).
    async fn exchange(&mut self, req: hyper::Request<Body>) -> Result<Reply, Failure> {
        let Conn { sender, io } = self;
        let mut exchange = pin!(exchange(sender, req));
        poll_fn(|cx| {
            if io.as_mut().is_some_and(|f| f.as_mut().poll(cx).is_ready()) {
                *io = None;
            }
            exchange.as_mut().poll(cx)
        })
        .await
    }

    fn reusable(&self) -> bool {
        self.io.is_some() && !self.sender.is_closed()
    }
}

/// Why one exchange on one connection gave no reply.
#[derive(Debug)]
enum Failure {
    /// The connection was closed before this request was written.
    Unsent,
    /// No response head arrived; the request may have been written.
    NoResponse(hyper::Error),
    /// The response broke off, or was too large.
    Broken(String),
}

async fn exchange(
    sender: &mut http1::SendRequest<Body>,
    req: hyper::Request<Body>,
) -> Result<Reply, Failure> {
    if sender.ready().await.is_err() {
        return Err(Failure::Unsent);
    }
    let response = match sender.try_send_request(req).await {
        Ok(r) => r,
        Err(mut e) => {
            if e.take_message().is_some() {
                return Err(Failure::Unsent);
            }
            return Err(Failure::NoResponse(e.into_error()));
        }
    };
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let mut incoming = response.into_body();
    let mut body = Vec::new();
    while let Some(frame) = incoming.frame().await {
        let frame = frame.map_err(|e| Failure::Broken(format!("read body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            if body.len() + data.len() > MAX_BODY {
                return Err(Failure::Broken("malformed response: body too large".into()));
            }
            body.extend_from_slice(&data);
        }
    }
    Ok(Reply {
        status,
        headers,
        body,
    })
}

/// Whether an error on a reused connection means the server had closed it
/// while idle (so the request was not processed and one retry is safe).
fn stale(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() || e.is_canceled() || e.is_closed() {
        return true;
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            );
        }
        source = s.source();
    }
    false
}

/// One keep-alive connection to a gateway, reopened after any failure.
pub struct Client<D: Dial = Tcp> {
    dial: D,
    timeout: Duration,
    conn: Option<Conn<D::Stream>>,
}

impl<D: Dial + std::fmt::Debug> std::fmt::Debug for Client<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("dial", &self.dial)
            .field("timeout", &self.timeout)
            .field("connected", &self.conn.is_some())
            .finish()
    }
}

impl Client<Tcp> {
    /// A client for the gateway at `addr`; every request is bounded by
    /// `timeout` (connect included).
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self::with(Tcp(addr), timeout)
    }

    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.dial.0
    }

    /// Points the client at another gateway (a restarted one).
    pub fn set_addr(&mut self, addr: SocketAddr) {
        self.dial = Tcp(addr);
        self.conn = None;
    }
}

impl Client<Sim> {
    /// A client inside the simulation for the gateway at `host` (`name:port`);
    /// `timeout` is simulated time.
    pub fn sim(host: impl Into<String>, timeout: Duration) -> Self {
        Self::with(Sim(host.into()), timeout)
    }
}

impl<D: Dial> Client<D> {
    /// A client that opens its connections with `dial`.
    pub fn with(dial: D, timeout: Duration) -> Self {
        Self {
            dial,
            timeout,
            conn: None,
        }
    }

    /// Sends one request and reads its response. `Host` and
    /// `Content-Length` are added unless `headers` has them. A request hyper
    /// refuses to write (a method, path or header that is not valid HTTP,
    /// as the fuzz tests send) goes out as raw bytes instead, so the gateway
    /// still sees it exactly as given.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, SendError> {
        let deadline = Instant::now() + self.timeout;
        let has = |name: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(name));
        let mut all: Vec<(&str, String)> = Vec::with_capacity(headers.len() + 2);
        if !has("host") {
            all.push(("host", self.dial.authority()));
        }
        if !has("content-length") {
            all.push(("content-length", body.len().to_string()));
        }
        all.extend(headers.iter().map(|(k, v)| (*k, v.to_string())));
        let body = Bytes::copy_from_slice(body);
        if build(method, path, &all, body.clone()).is_err() {
            let mut raw = format!("{method} {path} HTTP/1.1\r\n");
            for (k, v) in &all {
                raw.push_str(&format!("{k}: {v}\r\n"));
            }
            raw.push_str("\r\n");
            let mut raw = raw.into_bytes();
            raw.extend_from_slice(&body);
            return self.raw(raw, deadline).await;
        }
        // A pooled connection the server closed while idle fails on first
        // use; that request was never processed, so one fresh retry is safe.
        let mut retried_after_send = false;
        for attempt in 0..2 {
            let reused = self.conn.is_some();
            if !reused {
                match timeout_at(deadline, self.connect()).await {
                    Ok(Ok(conn)) => self.conn = Some(conn),
                    // The first attempt may have been processed after all (a
                    // server that died before answering looks the same), so
                    // a retry that never left is still indeterminate.
                    Ok(Err(m)) if retried_after_send => {
                        return Err(SendError::Indeterminate(format!(
                            "retry not sent ({m}) after the connection closed"
                        )))
                    }
                    Ok(Err(m)) => return Err(SendError::NotSent(m)),
                    Err(_) if retried_after_send => {
                        return Err(SendError::Indeterminate("timed out".into()))
                    }
                    Err(_) => return Err(SendError::NotSent("connect timed out".into())),
                }
            }
            let conn = self.conn.as_mut().expect("connection just opened");
            let req = build(method, path, &all, body.clone())
                .map_err(|e| SendError::NotSent(format!("invalid request: {e}")))?;
            let result = timeout_at(deadline, conn.exchange(req)).await;
            let keep = conn.reusable();
            if !matches!(result, Ok(Ok(_))) || !keep {
                self.conn = None;
            }
            match result {
                Ok(Ok(reply)) => return Ok(reply),
                Err(_) => return Err(SendError::Indeterminate("timed out".into())),
                Ok(Err(Failure::Unsent)) if attempt == 0 => continue,
                Ok(Err(Failure::Unsent)) if retried_after_send => {
                    return Err(SendError::Indeterminate(
                        "retry not sent after the connection closed".into(),
                    ))
                }
                Ok(Err(Failure::Unsent)) => {
                    return Err(SendError::NotSent(
                        "connection closed before the request".into(),
                    ))
                }
                Ok(Err(Failure::NoResponse(e))) if reused && attempt == 0 && stale(&e) => {
                    retried_after_send = true;
                }
                Ok(Err(Failure::NoResponse(e))) => {
                    return Err(SendError::Indeterminate(format!("no response: {e}")))
                }
                Ok(Err(Failure::Broken(m))) => return Err(SendError::Indeterminate(m)),
            }
        }
        Err(SendError::Indeterminate(
            "connection closed twice before a response".into(),
        ))
    }

    /// Sends `raw` bytes as a request (for malformed-input tests) on a fresh
    /// connection, and reads one response.
    pub async fn request_raw(&mut self, raw: &[u8]) -> Result<Reply, SendError> {
        let deadline = Instant::now() + self.timeout;
        self.raw(raw.to_vec(), deadline).await
    }

    async fn connect(&self) -> Result<Conn<D::Stream>, String> {
        let stream = self
            .dial
            .dial()
            .await
            .map_err(|e| format!("connect: {e}"))?;
        Conn::open(stream)
            .await
            .map_err(|e| format!("handshake: {e}"))
    }

    /// `raw` goes out in place of a placeholder request hyper writes, so that
    /// hyper still parses the answer. Never on the keep-alive connection:
    /// after bytes hyper did not frame, the connection's state is unknown.
    async fn raw(&self, raw: Vec<u8>, deadline: Instant) -> Result<Reply, SendError> {
        let stream = match timeout_at(deadline, self.dial.dial()).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(SendError::NotSent(format!("connect: {e}"))),
            Err(_) => return Err(SendError::NotSent("connect timed out".into())),
        };
        let method = if raw.starts_with(b"HEAD ") {
            "HEAD"
        } else {
            "GET"
        };
        let placeholder = build(method, "/", &[], Bytes::new())
            .map_err(|e| SendError::NotSent(format!("placeholder request: {e}")))?;
        let result = timeout_at(deadline, async {
            let mut conn = Conn::open(Substitute::new(stream, raw))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            conn.exchange(placeholder).await.map_err(|f| match f {
                Failure::Unsent => "connection closed before the request".to_string(),
                Failure::NoResponse(e) => format!("no response: {e}"),
                Failure::Broken(m) => m,
            })
        })
        .await;
        match result {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(m)) => Err(SendError::Indeterminate(m)),
            Err(_) => Err(SendError::Indeterminate("timed out".into())),
        }
    }
}

fn build(
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<hyper::Request<Body>, hyper::http::Error> {
    let mut req = hyper::Request::builder()
        .method(hyper::Method::from_bytes(method.as_bytes())?)
        .uri(path);
    for (k, v) in headers {
        req = req.header(
            hyper::header::HeaderName::from_bytes(k.as_bytes())?,
            hyper::header::HeaderValue::from_bytes(v.as_bytes())?,
        );
    }
    req.body(Full::new(body))
}

/// A stream that writes `raw` instead of whatever its user writes (which
/// it reports written and drops); reads pass through.
struct Substitute<S> {
    inner: S,
    raw: Vec<u8>,
    written: usize,
    /// The user wrote: only then may `raw` go out. hyper flushes an idle
    /// connection too, and an answer that came before its request would be
    /// an unsolicited response to it.
    started: bool,
}

impl<S> Substitute<S> {
    fn new(inner: S, raw: Vec<u8>) -> Self {
        Self {
            inner,
            raw,
            written: 0,
            started: false,
        }
    }
}

impl<S: AsyncWrite + Unpin> Substitute<S> {
    fn poll_raw(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.started && self.written < self.raw.len() {
            match Pin::new(&mut self.inner).poll_write(cx, &self.raw[self.written..]) {
                Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                Poll::Ready(Ok(n)) => self.written += n,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Substitute<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Substitute<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.started = true;
        match self.poll_raw(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.len())),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.poll_raw(cx) {
            Poll::Ready(Ok(())) => Pin::new(&mut self.inner).poll_flush(cx),
            other => other,
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// One request on a fresh connection, for tests that assert on the answer:
/// panics, naming the request, when none arrives within [`FETCH_TIMEOUT`].
pub async fn fetch(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    Client::new(addr, FETCH_TIMEOUT)
        .request(method, path, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{method} {path} to {addr}: {e}"))
}

/// The gateway's own key encoding, so tests and gateway agree on every key.
pub use shoal_gateway::encode::encode_key;

/// The values of a read's JSON form (`siblings[].value`, base64-decoded).
pub fn sibling_values(json: &serde_json::Value) -> Vec<Vec<u8>> {
    json["siblings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["value"].as_str())
                .filter_map(decode_value)
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes a standard-base64 value from a debug or read body.
pub fn decode_value(v: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(v).ok()
}
#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server answering each request on a connection with the next of
    /// `answers` (raw bytes); `None` closes the connection without answering.
    async fn server(answers: Vec<Option<&'static [u8]>>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let answers = answers.clone();
                tokio::spawn(async move {
                    for answer in answers {
                        let mut seen = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        match answer {
                            Some(bytes) => s.write_all(bytes).await.unwrap(),
                            None => return,
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn keep_alive_content_length_chunked_and_head() {
        let addr = server(vec![
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello"),
            Some(b"HTTP/1.1 300 Multiple Choices\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n"),
            Some(b"HTTP/1.1 204 No Content\r\n\r\n"),
        ])
        .await;
        let mut c = Client::new(addr, Duration::from_secs(2));
        let r = c.request("GET", "/a", &[], b"").await.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("X-A")),
            (200, &b"hello"[..], Some("1"))
        );
        let r = c.request("GET", "/b", &[], b"").await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (300, &b"abcde"[..]));
        let r = c.request("HEAD", "/c", &[], b"").await.unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0));
        let r = c.request("PUT", "/d", &[], b"").await.unwrap();
        assert_eq!(r.status, 204);
    }

    #[tokio::test]
    async fn refused_is_not_sent_and_a_silent_close_is_indeterminate() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = free.local_addr().unwrap();
        drop(free);
        let mut c = Client::new(closed, Duration::from_secs(2));
        assert!(matches!(
            c.request("PUT", "/k", &[], b"v").await,
            Err(SendError::NotSent(_))
        ));
        let addr = server(vec![None]).await;
        let mut c = Client::new(addr, Duration::from_secs(2));
        assert!(matches!(
            c.request("PUT", "/k", &[], b"v").await,
            Err(SendError::Indeterminate(_))
        ));
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_reopened() {
        // Each connection answers once, then closes: the second request
        // finds its pooled connection dead and must go out on a new one.
        let addr = server(vec![Some(
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
        )])
        .await;
        let mut c = Client::new(addr, Duration::from_secs(2));
        for _ in 0..3 {
            let r = c.request("GET", "/a", &[], b"").await.unwrap();
            assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A server that records the bytes of the first request it gets and
    /// answers it with `answer`.
    async fn recorder(
        answer: &'static [u8],
    ) -> (SocketAddr, tokio::sync::oneshot::Receiver<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => seen.extend_from_slice(&buf[..n]),
                }
            }
            let _ = s.write_all(answer).await;
            let _ = tx.send(seen);
        });
        (addr, rx)
    }

    #[tokio::test]
    async fn raw_bytes_go_out_exactly_and_the_answer_is_parsed() {
        let (addr, seen) = recorder(
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbad",
        )
        .await;
        let mut c = Client::new(addr, Duration::from_secs(2));
        let raw = b"GET /\x01 HTTP/1.1\r\nX: \xff\r\n\r\n";
        let r = c.request_raw(raw).await.unwrap();
        assert_eq!((r.status, r.text().as_str()), (400, "bad"));
        assert_eq!(seen.await.unwrap(), raw.to_vec());
    }

    #[tokio::test]
    async fn a_request_hyper_cannot_write_goes_out_raw() {
        let (addr, seen) = recorder(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
        let mut c = Client::new(addr, Duration::from_secs(2));
        let r = c
            .request("GET", "/v1/kv/a b", &[("X-Odd", "v")], b"")
            .await
            .unwrap();
        assert_eq!(r.status, 400);
        let seen = String::from_utf8(seen.await.unwrap()).unwrap();
        assert!(seen.starts_with("GET /v1/kv/a b HTTP/1.1\r\n"), "{seen:?}");
        assert!(
            seen.contains("X-Odd: v\r\n") && seen.contains("content-length: 0\r\n"),
            "{seen:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_never_answers_times_out_as_indeterminate() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let held = tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            drop(s);
        });
        let mut c = Client::new(addr, Duration::from_millis(200));
        match c.request("PUT", "/k", &[], b"v").await {
            Err(SendError::Indeterminate(m)) => assert!(m.contains("timed out"), "{m}"),
            other => panic!("expected a timeout, got {other:?}"),
        }
        held.abort();
    }
}
