//! How a client is set up ([`ClientBuilder`]), how hard [`update`] tries
//! ([`RetryPolicy`]), and what one request may ask for ([`Options`]).
//!
//! [`update`]: crate::Client::update

use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::Duration;

use crate::error::Error;
use crate::Client;

/// Settings of a [`Client`]; [`build`](ClientBuilder::build) checks them
/// all at once, so that a bad address or certificate fails at start-up
/// rather than at the first request.
#[derive(Clone)]
pub struct ClientBuilder {
    pub(crate) gateways: Vec<String>,
    pub(crate) token: Option<String>,
    pub(crate) ca_pem: Option<Vec<u8>>,
    pub(crate) tls_config: Option<Arc<rustls::ClientConfig>>,
    pub(crate) tls_server_name: Option<String>,
    pub(crate) request_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) pool_idle_timeout: Duration,
    pub(crate) max_response_bytes: usize,
    pub(crate) retry: RetryPolicy,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            gateways: Vec::new(),
            token: None,
            ca_pem: None,
            tls_config: None,
            tls_server_name: None,
            // Above the gateway's own request budget (2 s by default), so
            // that a slow quorum comes back as `quorum_failed`, which says
            // what happened, rather than as a client timeout, which cannot.
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            // Below the gateway's `http.idle_timeout_ms` (60 s): a pooled
            // connection the gateway already closed costs a failed write.
            pool_idle_timeout: Duration::from_secs(30),
            // Values are at most 4 MiB by default; several siblings of
            // them, base64 in JSON, fit with room.
            max_response_bytes: 64 << 20,
            retry: RetryPolicy::default(),
        }
    }
}

impl fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the token itself: builders end up in logs.
        f.debug_struct("ClientBuilder")
            .field("gateways", &self.gateways)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("tls_config", &self.tls_config.is_some())
            .field("tls_server_name", &self.tls_server_name)
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ClientBuilder {
    /// Settings with no gateway yet and the defaults below.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a gateway: `http://host:port`, `https://host:port`, or
    /// `host:port` for plain HTTP. Requests go to the first that answers;
    /// one that cannot be reached or is overloaded passes the request on to
    /// the next, in the order added.
    pub fn gateway(mut self, address: impl Into<String>) -> Self {
        self.gateways.push(address.into());
        self
    }

    /// Adds several gateways, in order (see [`gateway`](Self::gateway)).
    pub fn gateways<I, S>(mut self, addresses: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.gateways.extend(addresses.into_iter().map(Into::into));
        self
    }

    /// Sends `Authorization: Bearer <token>` with every request: needed
    /// once the gateway has a tokens file (`security.tokens_file`).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Trusts the CA (or self-signed) certificates in `pem` for `https`
    /// gateways. There is no built-in trust store: gateways usually carry
    /// certificates of a private CA, and a public one can be given through
    /// [`tls_config`](Self::tls_config).
    pub fn ca_certificate_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Uses this rustls configuration for `https` gateways instead of one
    /// built from [`ca_certificate_pem`](Self::ca_certificate_pem): for
    /// client certificates, system roots or other protocol settings.
    pub fn tls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls_config = Some(config);
        self
    }

    /// The name the gateways' certificates are checked against, instead
    /// of each address's host: for gateways reached by IP address whose
    /// certificate names a host.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_server_name = Some(name.into());
        self
    }

    /// Bounds each attempt at one gateway, from connecting to the last byte
    /// of the answer (default 10 s). A call tries each gateway at most once,
    /// so it takes at most this times the number of gateways.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Bounds opening a connection, TLS handshake included (default 2 s),
    /// so that a dead gateway is passed over quickly.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an unused connection is kept for reuse (default 30 s).
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Largest answer body accepted (default 64 MiB); larger ones are
    /// [`Error::InvalidResponse`], so a broken server cannot exhaust memory.
    pub fn max_response_bytes(mut self, max: usize) -> Self {
        self.max_response_bytes = max;
        self
    }

    /// How [`Client::update`] retries (see [`RetryPolicy`]).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Checks the settings and builds the client. Needs no runtime; its
    /// requests need a tokio runtime with the `time` and `net` drivers.
    pub fn build(self) -> Result<Client, Error> {
        for (what, d) in [
            ("request_timeout", self.request_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(Error::Config {
                    message: format!("{what} must be more than zero"),
                });
            }
        }
        if self.max_response_bytes == 0 {
            return Err(Error::Config {
                message: "max_response_bytes must be more than zero".into(),
            });
        }
        Client::from_builder(self)
    }
}

/// How [`Client::update`] retries: bounded both by attempts and by time,
/// so that a cluster that stays unavailable fails the call instead of
/// holding it forever.
///
/// An attempt is a read and a write. After an `overloaded` answer the next
/// attempt waits the gateway's `Retry-After`; after other retryable errors
/// ([`Error::is_retryable`]) an exponential backoff with jitter, so that
/// clients that failed together do not come back together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    max_attempts: u32,
    max_elapsed: Duration,
    base_backoff: Duration,
    max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            max_elapsed: Duration::from_secs(10),
            base_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
        }
    }
}

impl RetryPolicy {
    /// The defaults: 5 attempts within 10 s, backoff from 50 ms to 1 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// One attempt, no retry.
    pub fn never() -> Self {
        Self::default().max_attempts(1)
    }

    /// Attempts in all, the first included (0 counts as 1).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// No retry starts once this much time has passed since the first
    /// attempt, nor waits past it (a `Retry-After` longer than what is
    /// left ends the retries).
    pub fn max_elapsed(mut self, elapsed: Duration) -> Self {
        self.max_elapsed = elapsed;
        self
    }

    /// The first backoff and the largest (each retry doubles it).
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.base_backoff = base;
        self.max_backoff = max.max(base);
        self
    }

    pub(crate) fn attempts(&self) -> u32 {
        self.max_attempts
    }

    pub(crate) fn elapsed_limit(&self) -> Duration {
        self.max_elapsed
    }

    /// The wait before attempt `failed + 1`, after `failed` attempts ended
    /// with `error`.
    pub(crate) fn delay(&self, failed: u32, error: &Error) -> Duration {
        if let Some(after) = error.retry_after() {
            return after;
        }
        let shift = failed.saturating_sub(1).min(20);
        let full = self
            .base_backoff
            .saturating_mul(1u32 << shift)
            .min(self.max_backoff);
        // "Equal jitter": half fixed, half random.
        let half = full / 2;
        half + half.mul_f64(random_unit())
    }
}

/// A number in [0, 1) without a random-number dependency: std's hasher
/// keys are random per process, and the clock varies per call.
fn random_unit() -> f64 {
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(t.as_nanos());
    }
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// What one request asks for beyond the key: quorums, an expiry, a
/// content type. Each applies to the requests that have it (`r` to reads;
/// `w`, `ttl` and `content_type` to writes) and is ignored by the others,
/// so that one `Options` can serve a whole [`update`](Client::update).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Options {
    r: Option<u32>,
    w: Option<u32>,
    ttl: Option<Duration>,
    content_type: Option<String>,
}

impl Options {
    /// The cluster's defaults for everything.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replicas that must answer a read (1..=N; the gateway refuses others
    /// with [`Error::BadRequest`]).
    pub fn r(mut self, r: u32) -> Self {
        self.r = Some(r);
        self
    }

    /// Replicas that must acknowledge a write (1..=N).
    pub fn w(mut self, w: u32) -> Self {
        self.w = Some(w);
        self
    }

    /// The written version expires after this (whole seconds, rounded up;
    /// the gateway takes 1 s to 2^31 s). Without it, the bucket's `ttl_s`
    /// applies, if it has one.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// The `Content-Type` stored with the value and given back by reads
    /// (default `application/octet-stream`).
    pub fn content_type(mut self, content_type: impl Into<String>) -> Self {
        self.content_type = Some(content_type.into());
        self
    }

    pub(crate) fn content_type_value(&self) -> Option<&str> {
        self.content_type.as_deref()
    }

    /// The query string of a read (`""` or `?r=2`).
    pub(crate) fn read_query(&self) -> String {
        self.r.map(|r| format!("?r={r}")).unwrap_or_default()
    }

    /// The query string of a write (`""`, `?w=2`, `?w=2&ttl=60`); a delete
    /// writes a tombstone, which never expires.
    pub(crate) fn write_query(&self, with_ttl: bool) -> String {
        let mut parts = Vec::new();
        if let Some(w) = self.w {
            parts.push(format!("w={w}"));
        }
        if let Some(ttl) = self.ttl.filter(|_| with_ttl) {
            let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
            parts.push(format!("ttl={secs}"));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("?{}", parts.join("&"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        assert_eq!(Options::new().read_query(), "");
        assert_eq!(Options::new().write_query(true), "");
        let o = Options::new().r(1).w(3).ttl(Duration::from_millis(1500));
        assert_eq!(o.read_query(), "?r=1");
        assert_eq!(o.write_query(true), "?w=3&ttl=2");
        assert_eq!(o.write_query(false), "?w=3");
        assert_eq!(
            Options::new()
                .ttl(Duration::from_secs(60))
                .write_query(true),
            "?ttl=60"
        );
        // Zero stays zero, for the gateway to refuse, not silently "never".
        assert_eq!(
            Options::new().ttl(Duration::ZERO).write_query(true),
            "?ttl=0"
        );
    }

    #[test]
    fn backoff_doubles_within_its_bounds_and_overload_waits_retry_after() {
        let p = RetryPolicy::new().backoff(Duration::from_millis(100), Duration::from_millis(800));
        let e = Error::QuorumFailed {
            message: String::new(),
        };
        for (failed, full) in [(1, 100), (2, 200), (3, 400), (4, 800), (5, 800), (60, 800)] {
            let d = p.delay(failed, &e);
            let full = Duration::from_millis(full);
            assert!(d >= full / 2 && d <= full, "{failed}: {d:?}");
        }
        let overloaded = Error::Overloaded {
            message: String::new(),
            retry_after: Duration::from_secs(3),
        };
        assert_eq!(p.delay(1, &overloaded), Duration::from_secs(3));
        assert_eq!(RetryPolicy::never().attempts(), 1);
        assert_eq!(RetryPolicy::new().max_attempts(0).attempts(), 1);
        let odd = RetryPolicy::new().backoff(Duration::from_secs(2), Duration::from_secs(1));
        assert!(odd.delay(1, &e) <= Duration::from_secs(2));
    }

    #[test]
    fn jitter_stays_in_range() {
        for _ in 0..1000 {
            let u = random_unit();
            assert!((0.0..1.0).contains(&u), "{u}");
        }
    }

    #[test]
    fn debug_never_shows_the_token() {
        let b = ClientBuilder::new()
            .gateway("127.0.0.1:1")
            .token("s3cr3t-token");
        let shown = format!("{b:?}");
        assert!(
            !shown.contains("s3cr3t") && shown.contains("redacted"),
            "{shown}"
        );
    }
}
