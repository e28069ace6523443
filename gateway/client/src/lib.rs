//! `shoal-client`: an async Rust client for the HTTP API of a Shoal
//! gateway (Shoal is a Dynamo-style key-value store).
//!
//! Shoal keeps concurrent writes as siblings rather than picking a winner,
//! and lets a write say which versions it replaces through an opaque causal
//! context. Getting that right by hand is where HTTP clients go wrong: a
//! write without the context it read stands beside what it meant to
//! replace. This crate carries the context for you ([`Read::context`] into
//! [`Client::put`]), hands you every sibling, and offers
//! [`Client::update`], which reads, lets a closure resolve, writes with the
//! right context and retries the whole round on overload or a missed
//! quorum, within bounds.
//!
//! It also spreads one logical client over several gateways (a dead or
//! overloaded one passes the request on), sends bearer tokens, speaks TLS
//! with a given CA (rustls, ring), turns every error code of the API into
//! its own [`Error`] variant, and bounds every wait.
//!
//! Building a client checks its settings and needs no runtime:
//!
//! ```
//! use std::time::Duration;
//! use shoal_client::{Client, Options, RetryPolicy};
//!
//! let client = Client::builder()
//!     .gateway("http://127.0.0.1:8080")
//!     .gateway("127.0.0.1:8081") // plain HTTP when no scheme is given
//!     .token("the token of `cargo xtask cluster token add`")
//!     .request_timeout(Duration::from_secs(5))
//!     .retry(RetryPolicy::new().max_attempts(3))
//!     .build()?;
//! assert_eq!(
//!     client.gateways().collect::<Vec<_>>(),
//!     ["http://127.0.0.1:8080", "http://127.0.0.1:8081"]
//! );
//!
//! // Settings that cannot work fail here, not at the first request.
//! assert!(Client::builder().gateway("https://localhost:8443").build().is_err());
//! assert!(Client::builder().gateway("ftp://x").build().is_err());
//!
//! // Keys are bytes; in a path they travel percent-encoded.
//! assert_eq!(shoal_client::encode_key(b"user/42"), "user%2F42");
//! let _per_request = Options::new().w(3).ttl(Duration::from_secs(60));
//! # Ok::<(), shoal_client::Error>(())
//! ```
//!
//! Reading, writing with the context read, and resolving siblings:
//!
//! ```no_run
//! use shoal_client::Client;
//!
//! # async fn run() -> Result<(), shoal_client::Error> {
//! let client = Client::new("http://127.0.0.1:8080")?;
//! let first = client.put("greeting", "hello", None).await?;
//! // Writing with the context of the first write replaces it ...
//! client.put("greeting", "hola", Some(&first)).await?;
//! let read = client.get("greeting").await?;
//! assert_eq!(read.value().map(|v| &v[..]), Some(&b"hola"[..]));
//!
//! // ... and a closure resolving whatever siblings concurrent writers left
//! // is all a read-modify-write needs.
//! client
//!     .update("greeting", |siblings| {
//!         let mut words: Vec<Vec<u8>> = siblings.iter().map(|s| s.value.to_vec()).collect();
//!         words.sort();
//!         words.dedup();
//!         words.join(&b'|')
//!     })
//!     .await?;
//!
//! let users = client.bucket("users")?;
//! users.delete("alice", read.context()).await.ok(); // another key: its own context
//! # Ok(())
//! # }
//! ```
//!
//! Requests need a tokio runtime (`time` and `net`). Layout:
//! - [`Client`], [`Bucket`] — the operations.
//! - [`ClientBuilder`], [`RetryPolicy`], [`Options`] — settings.
//! - [`Read`], [`Sibling`], [`Context`] — what reads give back.
//! - [`Error`] — what can go wrong.
//! - `transport` — the pooled HTTP client, TLS, failover.

mod config;
mod error;
mod key;
mod read;
mod transport;

use std::sync::Arc;
use std::time::Instant;

pub use bytes::Bytes;
use hyper::Method;

pub use config::{ClientBuilder, Options, RetryPolicy};
pub use error::Error;
pub use key::encode_key;
pub use read::{Context, Read, Sibling, DEFAULT_CONTENT_TYPE};

use transport::{Call, Transport};

/// A client of one Shoal cluster, through one or more of its gateways.
///
/// Cheap to clone (clones share the connection pool), and safe to use from
/// many tasks at once. Operations on the bucket `default` are methods here;
/// [`Client::bucket`] gives the same for another bucket.
#[derive(Debug, Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    transport: Transport,
    retry: RetryPolicy,
}

/// The operations of [`Client`] on one named bucket
/// (`/v1/buckets/{bucket}/keys/{key}`); a context read here is valid only
/// for this bucket's key.
#[derive(Debug, Clone)]
pub struct Bucket {
    inner: Arc<Inner>,
    name: Arc<str>,
}

impl Client {
    /// Settings for a client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::new()
    }

    /// A client of one gateway (`http://host:port`, or `host:port`) with
    /// the default settings: the common local case, without a builder.
    pub fn new(gateway: &str) -> Result<Client, Error> {
        ClientBuilder::new().gateway(gateway).build()
    }

    pub(crate) fn from_builder(settings: ClientBuilder) -> Result<Client, Error> {
        let transport = Transport::new(&settings)?;
        Ok(Client {
            inner: Arc::new(Inner {
                transport,
                retry: settings.retry,
            }),
        })
    }

    /// The gateways, normalised (`scheme://host:port`), in failover order.
    pub fn gateways(&self) -> impl Iterator<Item = &str> {
        self.inner.transport.gateways()
    }

    /// The operations on bucket `name` (1 to 64 bytes of `[a-z0-9_-]`,
    /// checked here).
    pub fn bucket(&self, name: &str) -> Result<Bucket, Error> {
        key::check_bucket(name)?;
        Ok(Bucket {
            inner: self.inner.clone(),
            name: name.into(),
        })
    }

    /// Reads `key`: its value, its siblings, or nothing, with the context
    /// to write back. An absent or deleted key is an empty [`Read`], not an
    /// error.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Read, Error> {
        self.inner.get(None, key.as_ref(), &Options::new()).await
    }

    /// [`get`](Self::get) with a read quorum (`Options::r`).
    pub async fn get_with(&self, key: impl AsRef<[u8]>, options: &Options) -> Result<Read, Error> {
        self.inner.get(None, key.as_ref(), options).await
    }

    /// Writes `value`, replacing the versions `context` covers (`None`
    /// replaces nothing: a blind write, which leaves a sibling beside any
    /// value stored). Returns the new version's context.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        context: Option<&Context>,
    ) -> Result<Context, Error> {
        let value = value.into();
        self.inner
            .put(None, key.as_ref(), value, context, &Options::new())
            .await
    }

    /// [`put`](Self::put) with a write quorum, a TTL or a content type.
    pub async fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        context: Option<&Context>,
        options: &Options,
    ) -> Result<Context, Error> {
        let value = value.into();
        self.inner
            .put(None, key.as_ref(), value, context, options)
            .await
    }

    /// Deletes `key` by writing a tombstone over what `context` covers
    /// (without one, a value written concurrently survives as a sibling).
    /// Returns the tombstone's context.
    pub async fn delete(
        &self,
        key: impl AsRef<[u8]>,
        context: Option<&Context>,
    ) -> Result<Context, Error> {
        self.inner
            .delete(None, key.as_ref(), context, &Options::new())
            .await
    }

    /// [`delete`](Self::delete) with a write quorum.
    pub async fn delete_with(
        &self,
        key: impl AsRef<[u8]>,
        context: Option<&Context>,
        options: &Options,
    ) -> Result<Context, Error> {
        self.inner
            .delete(None, key.as_ref(), context, options)
            .await
    }

    /// Read-modify-write: reads `key`, gives `resolve` every live sibling
    /// (none when absent), writes what it returns with the read's context,
    /// so that it replaces every sibling it saw, and returns the new
    /// context.
    ///
    /// Retries the whole round (see [`RetryPolicy`]) on errors that
    /// [`Error::is_retryable`] calls transient. A write that failed that
    /// way may still have landed, and the next round then shows it among
    /// the siblings: `resolve` is called once per round and must give the
    /// right answer for whatever it is shown (merging, as a set union does,
    /// is right; adding one to a counter each call is not).
    pub async fn update<F, V>(&self, key: impl AsRef<[u8]>, resolve: F) -> Result<Context, Error>
    where
        F: FnMut(&[Sibling]) -> V,
        V: Into<Bytes>,
    {
        self.inner
            .update(None, key.as_ref(), &Options::new(), resolve)
            .await
    }

    /// [`update`](Self::update) with options for its reads and writes.
    pub async fn update_with<F, V>(
        &self,
        key: impl AsRef<[u8]>,
        options: &Options,
        resolve: F,
    ) -> Result<Context, Error>
    where
        F: FnMut(&[Sibling]) -> V,
        V: Into<Bytes>,
    {
        self.inner
            .update(None, key.as_ref(), options, resolve)
            .await
    }
}

impl Bucket {
    /// The bucket's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// [`Client::get`] in this bucket.
    pub async fn get(&self, key: impl AsRef<[u8]>) -> Result<Read, Error> {
        self.inner
            .get(Some(&self.name), key.as_ref(), &Options::new())
            .await
    }

    /// [`Client::get_with`] in this bucket.
    pub async fn get_with(&self, key: impl AsRef<[u8]>, options: &Options) -> Result<Read, Error> {
        self.inner
            .get(Some(&self.name), key.as_ref(), options)
            .await
    }

    /// [`Client::put`] in this bucket.
    pub async fn put(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        context: Option<&Context>,
    ) -> Result<Context, Error> {
        let value = value.into();
        self.inner
            .put(
                Some(&self.name),
                key.as_ref(),
                value,
                context,
                &Options::new(),
            )
            .await
    }

    /// [`Client::put_with`] in this bucket.
    pub async fn put_with(
        &self,
        key: impl AsRef<[u8]>,
        value: impl Into<Bytes>,
        context: Option<&Context>,
        options: &Options,
    ) -> Result<Context, Error> {
        let value = value.into();
        self.inner
            .put(Some(&self.name), key.as_ref(), value, context, options)
            .await
    }

    /// [`Client::delete`] in this bucket.
    pub async fn delete(
        &self,
        key: impl AsRef<[u8]>,
        context: Option<&Context>,
    ) -> Result<Context, Error> {
        self.inner
            .delete(Some(&self.name), key.as_ref(), context, &Options::new())
            .await
    }

    /// [`Client::delete_with`] in this bucket.
    pub async fn delete_with(
        &self,
        key: impl AsRef<[u8]>,
        context: Option<&Context>,
        options: &Options,
    ) -> Result<Context, Error> {
        self.inner
            .delete(Some(&self.name), key.as_ref(), context, options)
            .await
    }

    /// [`Client::update`] in this bucket.
    pub async fn update<F, V>(&self, key: impl AsRef<[u8]>, resolve: F) -> Result<Context, Error>
    where
        F: FnMut(&[Sibling]) -> V,
        V: Into<Bytes>,
    {
        self.inner
            .update(Some(&self.name), key.as_ref(), &Options::new(), resolve)
            .await
    }

    /// [`Client::update_with`] in this bucket.
    pub async fn update_with<F, V>(
        &self,
        key: impl AsRef<[u8]>,
        options: &Options,
        resolve: F,
    ) -> Result<Context, Error>
    where
        F: FnMut(&[Sibling]) -> V,
        V: Into<Bytes>,
    {
        self.inner
            .update(Some(&self.name), key.as_ref(), options, resolve)
            .await
    }
}

impl Inner {
    async fn get(
        &self,
        bucket: Option<&str>,
        key: &[u8],
        options: &Options,
    ) -> Result<Read, Error> {
        let path = key::key_path(bucket, key)? + &options.read_query();
        let answer = self
            .transport
            .send(&Call {
                method: Method::GET,
                path,
                context: None,
                content_type: None,
                body: Bytes::new(),
                idempotent: true,
            })
            .await?;
        match answer.status {
            200 => read::single(
                answer.context()?,
                answer.header(hyper::header::CONTENT_TYPE),
                answer.body.clone(),
            )
            .map_err(|m| answer.invalid(m)),
            300 => read::multiple(&answer.body).map_err(|m| answer.invalid(m)),
            404 => match answer.error() {
                Error::NotFound { context, .. } => Ok(read::absent(context)),
                other => Err(other),
            },
            _ => Err(answer.error()),
        }
    }

    async fn put(
        &self,
        bucket: Option<&str>,
        key: &[u8],
        value: Bytes,
        context: Option<&Context>,
        options: &Options,
    ) -> Result<Context, Error> {
        let path = key::key_path(bucket, key)? + &options.write_query(true);
        self.write(Call {
            method: Method::PUT,
            path,
            context,
            content_type: options.content_type_value(),
            body: value,
            idempotent: false,
        })
        .await
    }

    async fn delete(
        &self,
        bucket: Option<&str>,
        key: &[u8],
        context: Option<&Context>,
        options: &Options,
    ) -> Result<Context, Error> {
        let path = key::key_path(bucket, key)? + &options.write_query(false);
        self.write(Call {
            method: Method::DELETE,
            path,
            context,
            content_type: None,
            body: Bytes::new(),
            idempotent: false,
        })
        .await
    }

    /// A PUT or DELETE: 204 with the new version's context.
    async fn write(&self, call: Call<'_>) -> Result<Context, Error> {
        let answer = self.transport.send(&call).await?;
        match answer.status {
            200 | 204 => answer
                .context()?
                .ok_or_else(|| answer.invalid("a write answered without an X-Shoal-Context")),
            _ => Err(answer.error()),
        }
    }

    async fn update<F, V>(
        &self,
        bucket: Option<&str>,
        key: &[u8],
        options: &Options,
        mut resolve: F,
    ) -> Result<Context, Error>
    where
        F: FnMut(&[Sibling]) -> V,
        V: Into<Bytes>,
    {
        let started = Instant::now();
        let mut failed = 0u32;
        loop {
            let round = match self.get(bucket, key, options).await {
                Ok(read) => {
                    let value = resolve(read.siblings()).into();
                    self.put(bucket, key, value, read.context(), options).await
                }
                Err(e) => Err(e),
            };
            let error = match round {
                Ok(context) => return Ok(context),
                Err(e) => e,
            };
            failed += 1;
            if !error.is_retryable() || failed >= self.retry.attempts() {
                return Err(error);
            }
            let wait = self.retry.delay(failed, &error);
            if started.elapsed().saturating_add(wait) > self.retry.elapsed_limit() {
                return Err(error);
            }
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests;

/// The README's example, compiled with the doctests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeExample;
