//! `shoal-gateway`: the client-facing coordinator of a Shoal cluster.
//!
//! A gateway serves the HTTP API of the README (`PUT`/`GET`/`DELETE
//! /v1/kv/{key}` with causal contexts and per-request `r`/`w`, cluster and
//! debug views, `/health`, a generated `/v1/openapi.json`) and routes each
//! request by the consistent-hash ring. It is a gossip member with role
//! `gateway`: it learns the storage nodes and their liveness from gossip,
//! builds the ring from them, and adds its own local liveness hints when an
//! RPC to a node fails or times out. It stores nothing and decides nothing
//! itself: `shoal_coordinator`'s `WriteOp` and `ReadOp` do. The first live
//! owner of a key coordinates each write (mints the version) and replicates
//! it to the other targets of the gateway's plan itself (fallbacks get a hint
//! for the owner they stand in for), answering after W acknowledgements: one
//! call per write from the gateway. Reads ask every replica, answer after
//! R, and repair stale replicas in the background.
//! Several gateways can run against the same nodes.
//!
//! Keys live in buckets: `/v1/buckets/{bucket}/keys/{key}` has every
//! semantics of `/v1/kv/{key}` (the bucket `default`), a context opens only
//! for the bucket and key it was read from, `GET /v1/buckets/{bucket}/keys`
//! lists a bucket's live keys in ring order a page at a time, and
//! `GET`/`PUT /v1/buckets/{bucket}/props` read and set a bucket's
//! `conflict` (`siblings` or `lww`: one winner per key, never a 300) and
//! `ttl_s`; a props change is stored on W nodes before the answer and
//! reaches every node and gateway within seconds. A write with `?ttl=S`
//! (or into a bucket with `ttl_s`) carries its expiry instant inside the
//! version, so every copy expires at once and none comes back.
//!
//! With `gateway.resp_listen` the gateway also speaks the Redis protocol
//! (RESP2, RESP3 after `HELLO 3`) on the bucket `default`: `GET`, `SET [EX|PX]`,
//! `MGET`, `MSET`, `DEL`, `EXISTS`, `EXPIRE`, `TTL` and the connection
//! commands clients send, plus `SHOAL.GET` / `SHOAL.PUT` for siblings and
//! contexts. Redis writes supersede every version their coordinator holds;
//! Redis reads answer the newest version.
//!
//! An operator sees the cluster through three routes: `GET /metrics`
//! (Prometheus text, needs `metrics` or `admin`: request counts by
//! operation and status, latency histograms, quorum failures, overload,
//! siblings per read, read repairs, sloppy writes, members up and their
//! phi), `GET /v1/cluster/stats` (the dashboard's JSON: members, ring
//! ranges, hints, anti-entropy, long work, the last minutes of requests)
//! and `GET /ui` (the dashboard itself, one page with nothing from
//! elsewhere). Storage nodes serve their own `/metrics` at
//! `metrics.listen`.
//!
//! Sockets and the wall clock come from a [`shoal_node::env::Env`] given at
//! construction, so the same code runs over real TCP or inside a simulation.
//!
//! Layout:
//! - [`listener`] — the HTTP listener: TLS, connection cap, header and idle
//!   timeouts.
//! - [`auth`] — client tokens and their permissions, the anonymous rule.
//! - [`seal`] — context tokens MACed by the cluster and bound to their key.
//! - [`http`] — routes, admission control, the cluster, bucket and debug
//!   handlers, the OpenAPI document; `kv` — the key handlers.
//! - [`ops`] — performs the coordinator's actions (write, read + read repair) and the inspection views.
//! - `buckets` — setting bucket props on every node, listing a bucket's keys.
//! - [`cluster`] — membership, the cached ring, local liveness hints.
//! - [`request`] — parsing keys, quorums and contexts (pure).
//! - [`encode`] — what responses carry: encoded keys, contexts, values, times.
//! - [`model`] — the JSON shapes.
//! - [`observe`] — request counting, `/metrics`, `/v1/cluster/stats`, `/ui`.
//! - [`resp`] — the Redis protocol: framing (bounded), commands, the listener.
//! - [`rpc`] — the gateway's side of the `Replica` service (gossip only).
//! - [`error`] — [`ApiError`] (HTTP answers) and [`GatewayError`] (start-up).
//!
//! ```no_run
//! use shoal_gateway::Gateway;
//! use shoal_node::{config::Config, env::Env};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_toml(r#"
//!     [member]
//!     id = "gateway-1"
//!     listen = "127.0.0.1:0"
//!     seeds = ["127.0.0.1:7001"]
//!     [http]
//!     listen = "127.0.0.1:0"
//! "#)?;
//! let gateway = Gateway::start(config, Env::real()).await?;
//! println!("HTTP API on http://{}", gateway.http_addr());
//! gateway.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod auth;
mod buckets;
pub mod cluster;
pub mod encode;
pub mod error;
pub mod http;
mod kv;
pub mod listener;
pub mod model;
pub mod observe;
pub mod ops;
pub mod request;
pub mod resp;
pub mod rpc;
pub mod seal;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::Role;
use shoal_node::config::Config;
use shoal_node::env::Env;
use shoal_node::membership::{announce_leave, SharedMembership, Uptime};
use shoal_node::pool::Pool;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use error::{ApiError, GatewayError};

/// The header carrying the causal context, in both directions.
pub const CONTEXT_HEADER: &str = "x-shoal-context";

/// How long a node whose RPC failed is treated as down by this gateway at
/// most (gossip usually says so sooner, or clears it).
const MAX_SUSPICION: Duration = Duration::from_secs(5);

/// Entry point: [`Gateway::start`].
#[derive(Debug)]
pub struct Gateway;

/// A running gateway.
pub struct GatewayHandle {
    id: String,
    http_addr: SocketAddr,
    rpc_addr: SocketAddr,
    advertise: String,
    membership: SharedMembership,
    pool: Arc<Pool>,
    uptime: Uptime,
    drain: Duration,
    resp_addr: Option<SocketAddr>,
    http_stop: watch::Sender<bool>,
    stop: watch::Sender<bool>,
    /// The client listeners (HTTP, and RESP when configured).
    client_tasks: Vec<JoinHandle<()>>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for GatewayHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayHandle")
            .field("id", &self.id)
            .field("http_addr", &self.http_addr)
            .field("rpc_addr", &self.rpc_addr)
            .finish_non_exhaustive()
    }
}

impl Gateway {
    /// Starts a gateway: binds `http.listen` and `member.listen` (port 0
    /// picks one) through `env`, joins gossip through `member.seeds`, and
    /// serves until [`GatewayHandle::shutdown`].
    pub async fn start(config: Config, env: Env) -> Result<GatewayHandle, GatewayError> {
        if config.member.id.is_empty() {
            return Err(GatewayError::MissingId);
        }
        let id = config.member.id.clone();
        // The secret and the RPC port first, as a node does.
        let (transport, rpc_listener, rpc_addr) = shoal_node::member::bind(&config, &env).await?;
        let http_listener = env
            .net
            .bind(config.http.listen.clone())
            .await
            .map_err(|source| GatewayError::Bind {
                what: "http",
                addr: config.http.listen.clone(),
                source,
            })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| GatewayError::Bind {
                what: "http",
                addr: config.http.listen.clone(),
                source,
            })?;
        let resp_listener =
            match config.gateway.resp_listen.as_str() {
                "" => None,
                addr => Some(env.net.bind(addr.to_string()).await.map_err(|source| {
                    GatewayError::Bind {
                        what: "resp",
                        addr: addr.to_string(),
                        source,
                    }
                })?),
            };
        let resp_addr = resp_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()
            .map_err(|source| GatewayError::Bind {
                what: "resp",
                addr: config.gateway.resp_listen.clone(),
                source,
            })?;
        // Who may use the HTTP port, and with what, before anything is served.
        let auth = Arc::new(auth::Auth::load(&config.security, http_addr)?);
        let tls = match (&config.gateway.tls.cert_file, &config.gateway.tls.key_file) {
            (Some(cert), Some(key)) => {
                Some(listener::tls_acceptor(cert, key).map_err(GatewayError::Tls)?)
            }
            _ => None,
        };
        let seal = seal::ContextSeal::new(
            &config
                .cluster_secret()
                .map_err(|e| GatewayError::Member(e.into()))?,
            config.limits.max_context_bytes,
        );
        let request_timeout = Duration::from_millis(config.http.request_timeout_ms);
        let member = shoal_node::member::Member::new(
            &config,
            &env,
            transport,
            rpc_addr,
            shoal_node::member::Spec {
                role: Role::Gateway,
                weight: 1,
                // A gateway keeps no state, so wall-clock milliseconds at
                // start serve as its ever-rising incarnation.
                incarnation: env.clock.now_millis().max(1),
                connect_timeout: request_timeout.min(Duration::from_secs(1)),
            },
        )?;
        let (membership, pool, uptime) = (
            member.membership.clone(),
            member.pool.clone(),
            member.uptime,
        );
        let advertise = member.advertise.clone();

        let suspicion = Duration::from_millis(config.gossip.failure_timeout_ms).min(MAX_SUSPICION);
        let cluster = Arc::new(cluster::Cluster::new(membership.clone(), suspicion));
        let props = Arc::new(shoal_node::buckets::PropsTable::new());
        let engine = Arc::new(ops::Dispatcher::new(
            cluster,
            pool.clone(),
            config.replication.n,
            request_timeout,
            props.clone(),
            env.clock.clone(),
        ));

        let (stop, stop_rx) = watch::channel(false);
        let (http_stop, http_stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        let service = rpc::GatewayService::new(id.clone(), membership.clone(), uptime);
        tasks.extend(
            member
                .run(rpc_listener, stop_rx, move |transport, connection| {
                    let service = service.clone();
                    shoal_node::serve::serve_connection(
                        transport,
                        move |ctx, request| {
                            tarpc::server::Serve::serve(
                                shoal_node::rpc::Replica::serve(service),
                                ctx,
                                request,
                            )
                        },
                        connection,
                    )
                })
                .await?,
        );

        let counters = engine.counters().clone();
        let counters_for_refusals = counters.clone();
        let state = http::AppState::new(
            engine,
            id.clone(),
            config.limits,
            config.replication,
            request_timeout,
            config.http.max_concurrent_requests,
            seal,
            auth.clone(),
            member.connections.clone(),
            member.reach.clone(),
        );
        tasks.push(tokio::spawn(auth.watch(stop.subscribe())));
        tasks.push(tokio::spawn(observe::sample_loop(
            counters,
            stop.subscribe(),
        )));
        {
            let table = props.clone();
            let apply: shoal_node::props_sync::Apply = Arc::new(move |records| {
                table.merge(&records);
                Box::pin(async {})
            });
            tasks.push(tokio::spawn(shoal_node::props_sync::run(
                id.clone(),
                props,
                apply,
                pool.clone(),
                membership.clone(),
                stop.subscribe(),
            )));
        }
        let mut client_tasks = Vec::new();
        if let Some(listener) = resp_listener {
            let bounds = resp::Bounds {
                max_connections: config.http.max_connections,
                idle_timeout: Duration::from_millis(config.gateway.resp_idle_timeout_ms),
            };
            client_tasks.push(tokio::spawn(resp::serve(
                listener,
                state.clone(),
                bounds,
                tls.clone(),
                http_stop_rx.clone(),
            )));
        }
        let app = http::router(state);
        let limits = listener::Limits {
            header_timeout: Duration::from_millis(config.http.header_timeout_ms),
            idle_timeout: Duration::from_millis(config.http.idle_timeout_ms),
            max_connections: config.http.max_connections,
        };
        client_tasks.push(tokio::spawn(listener::serve(
            http_listener,
            app,
            limits,
            tls,
            http_stop_rx,
            counters_for_refusals,
        )));
        tracing::info!(%id, %http_addr, ?resp_addr, %rpc_addr, %advertise, "gateway started");
        Ok(GatewayHandle {
            id,
            http_addr,
            rpc_addr,
            advertise,
            membership,
            pool,
            uptime,
            drain: request_timeout + Duration::from_secs(1),
            resp_addr,
            http_stop,
            stop,
            client_tasks,
            tasks,
        })
    }
}

impl GatewayHandle {
    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The bound Redis protocol address, when `gateway.resp_listen` is set.
    pub fn resp_addr(&self) -> Option<SocketAddr> {
        self.resp_addr
    }

    /// The bound RPC (gossip) address.
    pub fn rpc_addr(&self) -> SocketAddr {
        self.rpc_addr
    }

    /// The gateway's member id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The gateway's current view of the membership.
    pub fn members(&self) -> Vec<shoal_gossip::MemberInfo> {
        cluster::lock(&self.membership).members()
    }

    /// Graceful stop: stop accepting HTTP connections, let in-flight
    /// requests finish (bounded by the request timeout plus a second),
    /// announce the departure through gossip, then stop the RPC side.
    pub async fn shutdown(self) {
        let _ = self.http_stop.send(true);
        let until = tokio::time::Instant::now() + self.drain;
        for mut task in self.client_tasks {
            if tokio::time::timeout_at(until, &mut task).await.is_err() {
                tracing::warn!("in-flight client requests did not finish in time; dropping them");
                task.abort();
            }
        }
        announce_leave(
            &self.membership,
            &self.pool,
            self.uptime,
            &self.advertise,
            Duration::from_secs(1),
        )
        .await;
        let _ = self.stop.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), task).await;
        }
        tracing::info!(id = %self.id, "gateway stopped");
    }
}
