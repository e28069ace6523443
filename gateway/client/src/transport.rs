//! Getting a request to some gateway and its answer back: hyper-util's
//! pooled HTTP/1.1 client over TCP or rustls, a timeout on every attempt,
//! and failover from one gateway to the next.
//!
//! Failover follows what the request may have done. A request that could
//! not be connected, or that an overloaded gateway refused, did nothing,
//! so any request moves on to the next gateway. A read may also move on
//! after a timeout, a broken connection or a missed quorum, since reading
//! twice is harmless; a write then stops and says so, because it may have
//! been applied and only the caller knows whether writing again is right.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::ClientBuilder;
use crate::error::{chain, Error};
use crate::read::Context;

/// The header carrying the causal context, both ways.
pub(crate) const CONTEXT_HEADER: &str = "x-shoal-context";

/// Idle connections kept per gateway: enough for a busy task set, few
/// enough that a burst does not leave hundreds of sockets behind.
const MAX_IDLE_PER_GATEWAY: usize = 32;

/// One request, ready for any gateway.
pub(crate) struct Call<'a> {
    pub method: Method,
    /// Path and query, e.g. `/v1/kv/k?r=1`.
    pub path: String,
    pub context: Option<&'a Context>,
    pub content_type: Option<&'a str>,
    pub body: Bytes,
    /// Whether sending it twice does no harm (reads).
    pub idempotent: bool,
}

/// A whole answer.
pub(crate) struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Which gateway answered (for messages).
    pub gateway: String,
}

impl Answer {
    /// A header as text (`None` when absent or not text).
    pub fn header(&self, name: impl hyper::header::AsHeaderName) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `X-Shoal-Context` of the answer.
    pub fn context(&self) -> Result<Option<Context>, Error> {
        self.header(CONTEXT_HEADER)
            .map(|c| Context::new(c).map_err(|e| self.invalid(format!("its context: {e}"))))
            .transpose()
    }

    /// The error this (non-success) answer stands for.
    pub fn error(&self) -> Error {
        Error::from_answer(
            self.status,
            self.header(RETRY_AFTER),
            self.context().ok().flatten(),
            &self.body,
        )
    }

    /// An [`Error::InvalidResponse`] from this gateway.
    pub fn invalid(&self, message: impl Into<String>) -> Error {
        Error::InvalidResponse {
            gateway: self.gateway.clone(),
            message: message.into(),
        }
    }
}

/// The gateways, the connection pool and the bounds of every attempt.
pub(crate) struct Transport {
    http: HttpClient<Connector, Full<Bytes>>,
    /// `scheme://authority[/prefix]`, without a trailing slash.
    gateways: Vec<String>,
    /// Where the next call starts: the gateway that answered last, so that
    /// one dead gateway costs one failed connect, not one per call.
    preferred: AtomicUsize,
    token: Option<HeaderValue>,
    request_timeout: Duration,
    max_response_bytes: usize,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("gateways", &self.gateways)
            .field("request_timeout", &self.request_timeout)
            .finish_non_exhaustive()
    }
}

impl Transport {
    pub(crate) fn new(settings: &ClientBuilder) -> Result<Transport, Error> {
        if settings.gateways.is_empty() {
            return Err(Error::Config {
                message: "no gateway address given".into(),
            });
        }
        let mut gateways = Vec::new();
        let mut any_https = false;
        for text in &settings.gateways {
            let (base, https) = parse_gateway(text)?;
            any_https |= https;
            gateways.push(base);
        }
        let tls = match (&settings.tls_config, &settings.ca_pem) {
            (Some(config), _) => Some(TlsConnector::from(config.clone())),
            (None, Some(pem)) => Some(tls_connector(pem)?),
            (None, None) if any_https => return Err(Error::Config {
                message:
                    "an https gateway needs a CA certificate (ca_certificate_pem) or a tls_config"
                        .into(),
            }),
            (None, None) => None,
        };
        let server_name = settings
            .tls_server_name
            .as_deref()
            .map(|name| {
                ServerName::try_from(name.to_string()).map_err(|e| Error::Config {
                    message: format!("tls_server_name {name:?}: {e}"),
                })
            })
            .transpose()?;
        let token = settings
            .token
            .as_deref()
            .map(|t| {
                let mut v =
                    HeaderValue::from_str(&format!("Bearer {t}")).map_err(|_| Error::Config {
                        message: "the token holds characters a header cannot carry".into(),
                    })?;
                v.set_sensitive(true);
                Ok::<_, Error>(v)
            })
            .transpose()?;
        let mut tcp = HttpConnector::new();
        tcp.enforce_http(false);
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(settings.connect_timeout));
        let connector = Connector {
            tcp,
            tls,
            server_name,
            handshake_timeout: settings.connect_timeout,
        };
        let http = HttpClient::builder(TokioExecutor::new())
            .pool_idle_timeout(settings.pool_idle_timeout)
            .pool_max_idle_per_host(MAX_IDLE_PER_GATEWAY)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        Ok(Transport {
            http,
            gateways,
            preferred: AtomicUsize::new(0),
            token,
            request_timeout: settings.request_timeout,
            max_response_bytes: settings.max_response_bytes,
        })
    }

    pub(crate) fn gateways(&self) -> impl Iterator<Item = &str> {
        self.gateways.iter().map(String::as_str)
    }

    /// Sends `call` to the preferred gateway and, as the module docs say,
    /// on to the others; each is tried at most once. Answers of 5xx come
    /// back as errors, every other answer as it is.
    pub(crate) async fn send(&self, call: &Call<'_>) -> Result<Answer, Error> {
        let n = self.gateways.len();
        let start = self.preferred.load(Ordering::Relaxed) % n.max(1);
        let mut failure: Option<Error> = None;
        for i in 0..n {
            let index = (start + i) % n;
            let outcome = match self.attempt(index, call).await {
                Ok(answer) if answer.status >= 500 => Err(answer.error()),
                other => other,
            };
            match outcome {
                Ok(answer) => {
                    self.preferred.store(index, Ordering::Relaxed);
                    return Ok(answer);
                }
                Err(e) if e.not_acted_on() || (call.idempotent && e.is_retryable()) => {
                    failure = Some(match failure {
                        // An answer says more than a failed connection.
                        Some(old) if old.status().is_some() && e.status().is_none() => old,
                        _ => e,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Err(failure.unwrap_or_else(|| Error::Config {
            message: "no gateway address given".into(),
        }))
    }

    /// One request to one gateway, bounded by the request timeout.
    async fn attempt(&self, index: usize, call: &Call<'_>) -> Result<Answer, Error> {
        let gateway = &self.gateways[index];
        let uri =
            Uri::try_from(format!("{gateway}{}", call.path)).map_err(|e| Error::InvalidInput {
                message: format!("cannot form the URL: {e}"),
            })?;
        let mut request = Request::builder().method(call.method.clone()).uri(uri);
        if let Some(context) = call.context {
            request = request.header(CONTEXT_HEADER, context.as_str());
        }
        if let Some(content_type) = call.content_type {
            request = request.header(CONTENT_TYPE, content_type);
        }
        if let Some(token) = &self.token {
            request = request.header(AUTHORIZATION, token.clone());
        }
        let request =
            request
                .body(Full::new(call.body.clone()))
                .map_err(|e| Error::InvalidInput {
                    message: format!("cannot form the request (a header value?): {e}"),
                })?;
        let exchange = async {
            let response = self.http.request(request).await.map_err(|e| {
                let message = chain(&e);
                if e.is_connect() {
                    Error::Connect {
                        gateway: gateway.clone(),
                        message,
                    }
                } else {
                    Error::Transport {
                        gateway: gateway.clone(),
                        message,
                    }
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, self.max_response_bytes)
                .collect()
                .await
                .map_err(|e| {
                    if e.downcast_ref::<LengthLimitError>().is_some() {
                        Error::InvalidResponse {
                            gateway: gateway.clone(),
                            message: format!(
                                "the body is over max_response_bytes ({})",
                                self.max_response_bytes
                            ),
                        }
                    } else {
                        Error::Transport {
                            gateway: gateway.clone(),
                            message: format!("reading the body: {}", chain(e.as_ref())),
                        }
                    }
                })?
                .to_bytes();
            Ok(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body,
                gateway: gateway.clone(),
            })
        };
        match tokio::time::timeout(self.request_timeout, exchange).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Error::Timeout {
                gateway: gateway.clone(),
                after: self.request_timeout,
            }),
        }
    }
}

/// `http://host:port[/prefix]` from an address as given (`host:port` alone
/// means plain HTTP), and whether it is `https`.
fn parse_gateway(text: &str) -> Result<(String, bool), Error> {
    let bad = |why: &str| Error::Config {
        message: format!("gateway address {text:?}: {why}"),
    };
    let text = text.trim();
    let full = if text.contains("://") {
        text.to_string()
    } else {
        format!("http://{text}")
    };
    let uri: Uri = full.parse().map_err(|e| bad(&format!("{e}")))?;
    let https = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("the scheme must be http or https")),
    };
    let authority = uri.authority().ok_or_else(|| bad("no host"))?;
    if authority.host().is_empty() {
        return Err(bad("no host"));
    }
    if authority.as_str().contains('@') {
        return Err(bad("user info is not supported (use a token)"));
    }
    // `http` takes any text after the colon; a port that is not a number
    // would only fail at the first connect.
    let after_host = authority
        .as_str()
        .strip_prefix(authority.host())
        .unwrap_or_default();
    if !after_host.is_empty() && authority.port_u16().is_none() {
        return Err(bad("the port is not a number in 0..=65535"));
    }
    if uri.query().is_some() {
        return Err(bad("a query string is not supported"));
    }
    let scheme = if https { "https" } else { "http" };
    let prefix = uri.path().trim_end_matches('/');
    Ok((format!("{scheme}://{authority}{prefix}"), https))
}

/// A TLS connector trusting the certificates of `pem`, with ring's
/// primitives as the gateway's listener uses (aws-lc-rs, rustls' default,
/// needs cmake and a long C build).
fn tls_connector(pem: &[u8]) -> Result<TlsConnector, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |why: String| Error::Config {
        message: format!("ca_certificate_pem: {why}"),
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("holds no certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(TlsConnector::from(Arc::new(config)))
}

/// Opens connections for the pool: TCP, then TLS for `https`.
#[derive(Clone)]
struct Connector {
    tcp: HttpConnector,
    tls: Option<TlsConnector>,
    server_name: Option<ServerName<'static>>,
    handshake_timeout: Duration,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for Connector {
    type Response = Stream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Stream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.tcp, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme_str() == Some("https");
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let connecting = tower_service::Service::<Uri>::call(&mut self.tcp, uri);
        let tls = self.tls.clone();
        let server_name = self.server_name.clone();
        let handshake_timeout = self.handshake_timeout;
        Box::pin(async move {
            let tcp = connecting.await?;
            if !https {
                return Ok(Stream::Plain(tcp));
            }
            let tls = tls.ok_or("https without a TLS configuration")?;
            let name = match server_name {
                Some(name) => name,
                None => ServerName::try_from(host)?,
            };
            let stream =
                tokio::time::timeout(handshake_timeout, tls.connect(name, tcp.into_inner()))
                    .await
                    .map_err(|_| {
                        io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out")
                    })??;
            Ok(Stream::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A pooled connection, plain or TLS.
enum Stream {
    Plain(TokioIo<TcpStream>),
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        match self {
            Stream::Plain(s) => s.connected(),
            Stream::Tls(s) => s.inner().get_ref().0.connected(),
        }
    }
}

impl hyper::rt::Read for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_addresses() {
        let ok = |t: &str| parse_gateway(t).unwrap();
        assert_eq!(
            ok("127.0.0.1:8080"),
            ("http://127.0.0.1:8080".into(), false)
        );
        assert_eq!(ok(" http://h:1/ "), ("http://h:1".into(), false));
        assert_eq!(ok("https://h:8443"), ("https://h:8443".into(), true));
        assert_eq!(ok("http://[::1]:80"), ("http://[::1]:80".into(), false));
        assert_eq!(ok("http://h/shoal/"), ("http://h/shoal".into(), false));
        for bad in [
            "",
            "ftp://h:1",
            "http://",
            "http://u:p@h:1",
            "http://h:1/?a=b",
            "h:1:2:3",
            "http://h:port",
        ] {
            assert!(
                matches!(parse_gateway(bad), Err(Error::Config { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn certificates_that_are_not_pem_are_refused_at_build() {
        for pem in [
            &b""[..],
            b"not a certificate",
            b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        ] {
            assert!(
                matches!(tls_connector(pem), Err(Error::Config { .. })),
                "{}",
                String::from_utf8_lossy(pem)
            );
        }
    }
}
