//! The HTTP listener: TLS, a connection cap, header and idle timeouts, over
//! hyper's HTTP/1.1 connection driver.
//!
//! axum's `serve` has none of these bounds, so a client sending one header
//! byte a minute, or holding thousands of idle sockets, could exhaust the
//! gateway's file descriptors (and then it could not dial a node either).
//! Here every connection has a deadline for its request head (counted from
//! accept, and from the first byte of each later request), an idle limit
//! between requests, and past `http.max_connections` a new connection is
//! answered 503 `overloaded` and closed.
//!
//! hyper's own `header_read_timeout` also runs while a keep-alive
//! connection waits for its next request, which would cap idle connections
//! at the header timeout; so both deadlines are kept here, from the bytes
//! the connection moves and the requests it has in flight.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use shoal_node::env::{BoxConn, Listener};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Bounds of the client listener (`http.*` keys).
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request head must arrive whole within this.
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub idle_timeout: Duration,
    /// Connections served at once.
    pub max_connections: usize,
}

/// Over-limit connections answered at once; past it they are just closed,
/// so that refusing cannot itself become the thing that piles up.
const MAX_REFUSALS: usize = 256;

/// How long an over-limit connection gets to take its 503 (a TLS handshake
/// included); short, so that refusals turn over faster than a flood of new
/// connections can arrive.
const REFUSAL_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a refused connection's request bytes are read and dropped after
/// the 503, so that closing with unread data (a reset) does not destroy the
/// answer before the client reads it.
const REFUSAL_LINGER: Duration = Duration::from_millis(100);

/// The 503 of a full gateway, the JSON body every other refusal has.
fn refusal(max: usize) -> Vec<u8> {
    let body = format!(
        "{{\"error\":\"overloaded\",\"message\":\"the gateway is serving its limit of {max} connections; retry after {} s\"}}",
        crate::http::RETRY_AFTER_SECS
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: {}\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        crate::http::RETRY_AFTER_SECS,
        body.len()
    )
    .into_bytes()
}

/// What a connection's watcher needs to know: when bytes last moved, whether
/// a request head is being received (since when), and how many requests are
/// in the handlers.
struct Activity {
    origin: Instant,
    last_io_ms: AtomicU64,
    /// ms (since `origin`) the current request head started; [`NO_HEAD`]
    /// while between requests or while a request is being handled.
    head_since_ms: AtomicU64,
    in_flight: AtomicUsize,
}

const NO_HEAD: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_io_ms: AtomicU64::new(0),
            // A new connection owes its first head from the start, so one
            // that sends nothing at all is closed too.
            head_since_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    fn on_read(&self) {
        let now = self.now_ms();
        self.last_io_ms.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Acquire) == 0 {
            let _ = self.head_since_ms.compare_exchange(
                NO_HEAD,
                now,
                Ordering::AcqRel,
                Ordering::Relaxed,
            );
        }
    }

    fn on_write(&self) {
        self.last_io_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Why the connection should close now, if it should.
    fn expired(&self, limits: &Limits) -> Option<&'static str> {
        let now = self.now_ms();
        let head = self.head_since_ms.load(Ordering::Acquire);
        if head != NO_HEAD && now.saturating_sub(head) > limits.header_timeout.as_millis() as u64 {
            return Some("request head not received within http.header_timeout_ms");
        }
        let idle = self.in_flight.load(Ordering::Acquire) == 0 && head == NO_HEAD;
        let quiet = now.saturating_sub(self.last_io_ms.load(Ordering::Relaxed));
        if idle && quiet > limits.idle_timeout.as_millis() as u64 {
            return Some("idle for http.idle_timeout_ms");
        }
        None
    }
}

/// Marks one request as being handled, until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn start(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        activity.head_since_ms.store(NO_HEAD, Ordering::Release);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.0.on_write();
    }
}

/// A connection that reports its reads and writes to its [`Activity`].
struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.on_read();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.on_write();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A plain or TLS connection.
type ClientConn = Box<dyn shoal_node::env::Conn>;

/// The accept side shared by the client listeners (HTTP, RESP): the next
/// connection, reaping finished ones meanwhile so the set stays as small as
/// the cap, and backing off when accepting fails.
pub(crate) struct Accepter {
    what: &'static str,
    failures: u32,
}

impl Accepter {
    pub(crate) fn new(what: &'static str) -> Self {
        Self { what, failures: 0 }
    }

    /// The next accepted connection, or `None` once `shutdown` is set.
    pub(crate) async fn next(
        &mut self,
        listener: &mut Box<dyn Listener>,
        shutdown: &mut watch::Receiver<bool>,
        connections: &mut JoinSet<()>,
    ) -> Option<(BoxConn, std::net::SocketAddr)> {
        loop {
            let accepted = tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return None,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = listener.accept() => accepted,
            };
            match accepted {
                Ok(accepted) => {
                    self.failures = 0;
                    return Some(accepted);
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin, and say so once per burst.
                    if self.failures == 0 {
                        tracing::warn!(error = %e, listener = self.what, "accept failed");
                    }
                    self.failures = self.failures.saturating_add(1);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

/// Serves `app` on `listener` until `shutdown`, then stops accepting, lets
/// every connection finish the request it is on, and returns once all have
/// closed (the caller bounds how long it waits).
pub async fn serve(
    mut listener: Box<dyn Listener>,
    app: Router,
    limits: Limits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
    counters: Arc<crate::observe::GatewayCounters>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let mut connections = JoinSet::new();
    let mut accepter = Accepter::new("HTTP");
    loop {
        let Some((conn, peer)) = accepter
            .next(&mut listener, &mut shutdown, &mut connections)
            .await
        else {
            break;
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            counters.connection_refused();
            if let Ok(permit) = refusals.clone().try_acquire_owned() {
                let tls = tls.clone();
                let max = limits.max_connections;
                tokio::spawn(async move {
                    let _permit = permit;
                    let _ = tokio::time::timeout(REFUSAL_TIMEOUT, refuse(conn, tls, max)).await;
                });
            }
            tracing::debug!(%peer, "connection refused: http.max_connections reached");
            continue;
        };
        let app = app.clone();
        let tls = tls.clone();
        let stop = shutdown.clone();
        connections.spawn(async move {
            let _slot = slot;
            let conn: ClientConn = match tls {
                None => conn,
                Some(acceptor) => {
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(conn)).await {
                        Ok(Ok(stream)) => Box::new(stream),
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    }
                }
            };
            serve_connection(conn, app, limits, stop).await;
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Answers an over-limit connection 503 and closes it.
async fn refuse(conn: BoxConn, tls: Option<tokio_rustls::TlsAcceptor>, max: usize) {
    let mut conn: ClientConn = match tls {
        None => conn,
        Some(acceptor) => match acceptor.accept(conn).await {
            Ok(stream) => Box::new(stream),
            Err(_) => return,
        },
    };
    // Answer once the request has begun (or after a moment): a client that
    // gets an answer before it has sent anything may take it for a broken
    // connection rather than a 503.
    let mut sink = [0u8; 1024];
    let began = matches!(
        tokio::time::timeout(
            REFUSAL_LINGER,
            tokio::io::AsyncReadExt::read(&mut conn, &mut sink),
        )
        .await,
        Ok(Ok(n)) if n > 0
    );
    if conn.write_all(&refusal(max)).await.is_ok() {
        let _ = conn.shutdown().await;
        // A request that has begun was read (a small one whole), so closing
        // now resets nothing. One that has not: its bytes may still come,
        // and closing with them unread would reset the connection and
        // destroy the 503 before the client reads it, so drain them a moment.
        // Refusals stay quick either way: a flood of them must not hold the
        // refusal slots a later client needs for its answer.
        if !began {
            let drain = async {
                while let Ok(n) = tokio::io::AsyncReadExt::read(&mut conn, &mut sink).await {
                    if n == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(REFUSAL_LINGER, drain).await;
        }
    }
}

async fn serve_connection(
    conn: ClientConn,
    app: Router,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: conn,
        activity: activity.clone(),
    });
    let tracked = activity.clone();
    let service =
        hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            let guard = InFlight::start(&tracked);
            let app = app.clone();
            async move {
                let response = tower_service_call(app, request).await;
                drop(guard);
                response
            }
        });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).keep_alive(true);
    let connection = builder.serve_connection(io, service);
    tokio::pin!(connection);
    // Checked often enough that a deadline is overshot by at most a quarter.
    let tick = (limits.header_timeout.min(limits.idle_timeout) / 4)
        .clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticker = tokio::time::interval(tick);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut stopping = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "HTTP connection ended with an error");
                }
                return;
            }
            _ = shutdown.wait_for(|s| *s), if !stopping => {
                // Finish the request in progress, take no more.
                connection.as_mut().graceful_shutdown();
                stopping = true;
            }
            _ = ticker.tick() => {
                if let Some(why) = activity.expired(&limits) {
                    tracing::debug!(reason = why, "closing HTTP connection");
                    return;
                }
            }
        }
    }
}

/// Runs one request through the router (axum's `Router` is a tower service
/// that is always ready).
async fn tower_service_call(
    app: Router,
    request: hyper::Request<hyper::body::Incoming>,
) -> Result<axum::response::Response, std::convert::Infallible> {
    use tower_service::Service;
    let mut app = app;
    app.call(request.map(axum::body::Body::new)).await
}

/// Loads the TLS certificate chain and key of `gateway.tls`.
pub fn tls_acceptor(
    cert_file: &std::path::Path,
    key_file: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .map_err(|e| format!("gateway.tls.cert_file {cert_file:?}: {e}"))?
        .collect::<Result<_, _>>()
        .map_err(|e| format!("gateway.tls.cert_file {cert_file:?}: {e}"))?;
    if certs.is_empty() {
        return Err(format!(
            "gateway.tls.cert_file {cert_file:?} holds no certificate"
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|e| format!("gateway.tls.key_file {key_file:?}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("gateway.tls: the key does not fit the certificate: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}
