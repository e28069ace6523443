//! The replica service: starts the store, gossip, hinted handoff and the RPC
//! server, and stops them in order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_gossip::{Message, Role};
use shoal_vclock::SiblingSet;
use tarpc::context::Context as RpcContext;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::anti_entropy::AntiEntropy;
use crate::config::Config;
use crate::env::Env;
use crate::handoff::Handoff;
use crate::handover::Handover;
use crate::membership::{self, SharedMembership, Uptime};
use crate::pool::Pool;
use crate::rpc::{
    CoordinateRequest, ForwardRequest, Forwarded, HandoverReport, KeyReport, ListPage, ListRequest,
    MerkleRequest, MerkleResponse, NodeStatus, RemoteError, RepairReport, Replica,
    ReplicateRequest, ScanPage, ScanRequest, StoredView, MAX_BATCH_KEYS, MAX_SCAN_KEYS,
    MAX_SCAN_RANGES, PROTOCOL_VERSION,
};
use crate::store::{Store, StoreError};

/// The largest counter a peer's clock may claim: 2^48 writes coordinated by
/// one actor epoch (nine years at a million writes a second).
pub const MAX_COUNTER: u64 = 1 << 48;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// `member.id` is empty.
    #[error("member.id must be set for a storage node")]
    MissingId,
    /// The data directory could not be opened.
    #[error("cannot open the data directory {path}: {source}")]
    Store {
        /// The directory.
        path: String,
        /// The cause.
        source: StoreError,
    },
    /// The data directory belongs to a node that was decommissioned: its
    /// ranges went to other nodes, and serving its stale copy would hide
    /// writes made since.
    #[error("{path} holds the data of a decommissioned node; delete it to start this node afresh (with member.join = true to stream its ranges)")]
    Decommissioned {
        /// The directory.
        path: String,
    },
    /// No cluster secret, the listen address taken, or an identity gossip
    /// refuses (id or address too long, ...).
    #[error(transparent)]
    Member(#[from] crate::member::MemberError),
    /// `metrics.listen` could not be served.
    #[error(transparent)]
    Metrics(#[from] crate::observe::MetricsError),
}

/// What the RPC handlers share: the request path's handles, and the two
/// components whose work an RPC starts (anti-entropy's repair, handover's
/// decommission). Handoff runs on its own and is not here.
pub(crate) struct Inner {
    config: Config,
    env: Env,
    id: String,
    store: Arc<Store>,
    membership: SharedMembership,
    uptime: Uptime,
    /// Set by a graceful stop or an abort; shared with handover, whose join
    /// gives up between ranges once it is set.
    shutting_down: Arc<AtomicBool>,
    /// Node-wide bound on data requests in flight (`rpc.max_in_flight`).
    in_flight: Arc<tokio::sync::Semaphore>,
    anti_entropy: Arc<AntiEntropy>,
    handover: Arc<Handover>,
    /// Connections to peers, for the replication of forwarded writes.
    pool: Arc<Pool>,
    /// Where `/metrics` is served, once bound.
    metrics_addr: std::sync::OnceLock<SocketAddr>,
}

/// A minted write: durable already, or applied with its fsync pending.
enum Minted {
    Durable(SiblingSet),
    Pending(crate::store::Written<SiblingSet>),
}

/// The RPC face of a node (cheap to clone: one per connection).
#[derive(Clone)]
pub struct NodeService(Arc<Inner>);

/// A running node.
pub struct NodeHandle {
    inner: Arc<Inner>,
    addr: SocketAddr,
    advertise: String,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for NodeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeHandle")
            .field("id", &self.inner.id)
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Starts a storage node from `config`, reaching the outside world through
/// `env`. Binds `member.listen` (port 0 picks one), opens `member.data_dir`,
/// and joins through `member.seeds`.
pub async fn start(config: Config, env: Env) -> Result<NodeHandle, NodeError> {
    if config.member.id.is_empty() {
        return Err(NodeError::MissingId);
    }
    // The secret and the port first: a node that could not serve must not
    // have opened (and locked) its store.
    let (transport, listener, addr) = crate::member::bind(&config, &env).await?;
    let id = config.member.id.clone();
    let dir = config.member.data_dir.clone();
    let store = {
        let (id, config, clock) = (id.clone(), config.clone(), env.clock.clone());
        let (fs, background) = (env.fs.clone(), env.storage_background());
        let open_dir = dir.clone();
        env.spawn_blocking(move || Store::open_with(&open_dir, &id, &config, clock, fs, background))
            .await
            .expect("store open task panicked")
            .map_err(|source| NodeError::Store {
                path: dir.display().to_string(),
                source,
            })?
    };

    let store_err = |source| NodeError::Store {
        path: dir.display().to_string(),
        source,
    };
    if crate::handover::was_decommissioned(&store).map_err(store_err)? {
        return Err(NodeError::Decommissioned {
            path: dir.display().to_string(),
        });
    }
    let joining = crate::handover::join_pending(&config, &store).map_err(store_err)?;
    let member = crate::member::Member::new(
        &config,
        &env,
        transport,
        addr,
        crate::member::Spec {
            role: Role::Storage,
            // A joining node announces itself with the joining flag: gateways
            // write to it but do not read from it until it clears the flag.
            weight: if joining {
                config.member.weight | crate::membership::JOINING_FLAG
            } else {
                config.member.weight
            },
            incarnation: store.incarnation(),
            connect_timeout: connect_timeout(&config),
        },
    )?;
    let (membership, pool, uptime) = (
        member.membership.clone(),
        member.pool.clone(),
        member.uptime,
    );
    let advertise = member.advertise.clone();
    let store = Arc::new(store);
    let shutting_down = Arc::new(AtomicBool::new(false));
    let anti_entropy = Arc::new(AntiEntropy::new(
        &config,
        store.clone(),
        env.clone(),
        membership.clone(),
        pool.clone(),
    ));
    let handover = Arc::new(Handover::new(
        &config,
        crate::handover::Handles {
            store: store.clone(),
            env: env.clone(),
            membership: membership.clone(),
            pool: pool.clone(),
            uptime,
            advertise: advertise.clone(),
            shutting_down: shutting_down.clone(),
        },
    ));
    let handoff = Handoff::new(
        &config,
        store.clone(),
        env.clone(),
        membership.clone(),
        pool.clone(),
    );
    let inner = Arc::new(Inner {
        config: config.clone(),
        env,
        id: id.clone(),
        store,
        membership,
        uptime,
        shutting_down,
        in_flight: Arc::new(tokio::sync::Semaphore::new(config.rpc.max_in_flight)),
        anti_entropy: anti_entropy.clone(),
        handover: handover.clone(),
        pool: pool.clone(),
        metrics_addr: std::sync::OnceLock::new(),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();

    if !config.metrics.listen.is_empty() {
        let sources = crate::observe::NodeSources {
            store: inner.store.clone(),
            membership: inner.membership.clone(),
            connections: member.connections.clone(),
            in_flight: inner.in_flight.clone(),
            max_in_flight: config.rpc.max_in_flight,
        };
        let render: Arc<dyn Fn() -> String + Send + Sync> =
            Arc::new(move || crate::observe::node_metrics(sources.store.counters(), &sources));
        let (bound, task) = crate::observe::serve_metrics(
            &config.metrics.listen,
            config.metrics.allow_remote,
            render,
            shutdown_rx.clone(),
        )
        .await?;
        let _ = inner.metrics_addr.set(bound);
        tracing::info!(%bound, "metrics served at /metrics");
        tasks.push(task);
    }
    let service = NodeService(inner.clone());
    let answers = handover.clone();
    let counters = inner.store.counters().clone();
    tasks.extend(member.run(
        listener,
        shutdown_rx.clone(),
        move |transport, connection| {
            let service = service.clone();
            let counters = counters.clone();
            crate::serve::serve_connection(
                answers.watch_answers(transport),
                move |ctx, request| {
                    let histogram = rpc_name(&request);
                    let started = std::time::Instant::now();
                    let served = tarpc::server::Serve::serve(service.serve(), ctx, request);
                    async move {
                        let answer = served.await;
                        counters.rpc.get(histogram).observe(started.elapsed());
                        answer
                    }
                },
                connection,
            )
        },
    ));
    if joining {
        let mut stop = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => {}
                result = handover.join() => {
                    if let Err(e) = result {
                        tracing::error!(error = %e, "join did not finish; restart the node to resume it");
                    }
                }
            }
        }));
    }
    if config.anti_entropy.enabled {
        tasks.push(tokio::spawn(anti_entropy.run(shutdown_rx.clone())));
    }
    {
        let store = inner.store.clone();
        let env = inner.env.clone();
        let apply: crate::props_sync::Apply = Arc::new(move |records| {
            let (store, env) = (store.clone(), env.clone());
            Box::pin(async move {
                match env
                    .spawn_blocking(move || store.merge_props(&records))
                    .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "pulled bucket props not stored"),
                    Err(e) => tracing::warn!(error = %e, "bucket props task failed"),
                }
            })
        });
        tasks.push(tokio::spawn(crate::props_sync::run(
            id.clone(),
            inner.store.props().clone(),
            apply,
            pool.clone(),
            inner.membership.clone(),
            shutdown_rx.clone(),
        )));
    }
    tasks.push(tokio::spawn(
        crate::tombstones::TombstoneGc {
            id: id.clone(),
            n: config.replication.n,
            store: inner.store.clone(),
            pool: pool.clone(),
            membership: inner.membership.clone(),
            env: inner.env.clone(),
            config: config.tombstones,
        }
        .run(shutdown_rx.clone()),
    ));
    tasks.push(tokio::spawn(crate::expiry::run(
        inner.store.clone(),
        inner.env.clone(),
        config.expiry,
        shutdown_rx.clone(),
    )));
    if config.handoff.enabled {
        tasks.push(tokio::spawn(handoff.run(shutdown_rx)));
    }
    tracing::info!(%id, %addr, %advertise, incarnation = inner.store.incarnation(), "node started");
    Ok(NodeHandle {
        inner,
        addr,
        advertise,
        shutdown,
        tasks,
    })
}

/// The label of a request's RPC: tarpc names it `Replica.<method>`.
fn rpc_name(request: &crate::rpc::ReplicaRequest) -> &'static str {
    use tarpc::RequestName;
    let name = request.name();
    let method = name.strip_prefix("Replica.").unwrap_or(name);
    crate::observe::RPC_NAMES
        .iter()
        .find(|n| **n == method)
        .copied()
        .unwrap_or("other")
}

/// How long dialing a peer, handshake included, may take: five gossip
/// rounds, and never under one second (rounds of at least 200 ms). A dial is
/// a TCP connect plus two 48-byte handshake messages, one round trip each,
/// so a reachable peer answers far sooner; the bound is what an
/// unreachable one costs each caller (a gossip round, a hint delivery, a
/// streaming attempt), so it stays within a few rounds, and the failure
/// detector (`gossip.failure_timeout_ms`) still decides whether the peer is
/// down.
fn connect_timeout(config: &Config) -> Duration {
    Duration::from_millis(config.gossip.interval_ms.max(200).saturating_mul(5))
}

pub use crate::membership::gossip_config;

impl NodeHandle {
    /// The bound RPC address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address other members dial.
    pub fn advertise(&self) -> &str {
        &self.advertise
    }

    /// The node's id.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    /// Where the node serves `/metrics` (`None` without `metrics.listen`).
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.inner.metrics_addr.get().copied()
    }

    /// A bucket's properties as this node holds them (tests watch a change
    /// arrive).
    pub fn bucket_props(&self, bucket: &str) -> crate::buckets::BucketProps {
        self.inner.store.props().get(bucket)
    }

    /// The node's current view of the membership.
    pub fn members(&self) -> Vec<shoal_gossip::MemberInfo> {
        self.inner
            .membership
            .lock()
            .expect("membership lock")
            .members()
    }

    /// Number of hints held for other nodes.
    pub fn hint_count(&self) -> u64 {
        self.inner.store.hint_count().unwrap_or(0)
    }

    /// What the join streamed, once it finished (`None` while joining, or
    /// when the node did not join).
    pub fn join_report(&self) -> Option<HandoverReport> {
        self.inner.handover.join_report()
    }

    /// Resolves when the node asks to be stopped (a decommission finished);
    /// the binary then shuts it down. Never resolves otherwise.
    pub async fn stop_requested(&self) {
        let mut rx = self.inner.handover.stop_requested();
        if rx.wait_for(|s| *s).await.is_err() {
            futures::future::pending::<()>().await;
        }
    }

    /// The local store (tests inspect it directly).
    pub fn store(&self) -> &Arc<Store> {
        &self.inner.store
    }

    /// Graceful stop: refuse new requests, stop the loops, let in-flight
    /// requests finish (bounded), flush and close the engine.
    ///
    /// The node does not announce `left`: a restart is expected, and leaving
    /// would move its ranges. Peers see it down through the failure detector
    /// and cover it with hints meanwhile; decommission is the way to leave.
    pub async fn shutdown(self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
        }
        let store = self.inner.store.clone();
        match self.inner.env.spawn_blocking(move || store.close()).await {
            Ok(Ok(())) => tracing::info!(id = %self.inner.id, "node stopped cleanly"),
            Ok(Err(e)) => tracing::error!(error = %e, "closing the store failed"),
            Err(e) => tracing::error!(error = %e, "closing the store panicked"),
        }
    }

    /// Stops every task at once without flushing: what a crash looks like to
    /// peers (tests; the data on disk is whatever the sync mode made durable).
    pub fn abort(self) {
        self.inner.shutting_down.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Refuses a batch over [`MAX_BATCH_KEYS`].
fn check_batch(len: usize) -> Result<(), RemoteError> {
    if len > MAX_BATCH_KEYS {
        return Err(RemoteError::BadRequest {
            message: format!("{len} keys in one batch, over the limit of {MAX_BATCH_KEYS}"),
        });
    }
    Ok(())
}

impl NodeService {
    /// A slot among the node's requests in flight, or `Overloaded` at once:
    /// past the bound, queueing would only add latency to every request and
    /// memory to the node, while the caller can ask another replica now.
    /// Gossip and status take no slot, so an overloaded node still shows as
    /// alive and answers its operator.
    fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, RemoteError> {
        self.0
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| RemoteError::Overloaded {
                id: self.0.id.clone(),
                max: self.0.config.rpc.max_in_flight,
            })
    }

    fn check_running(&self) -> Result<(), RemoteError> {
        if self.0.shutting_down.load(Ordering::SeqCst) {
            return Err(RemoteError::ShuttingDown {
                id: self.0.id.clone(),
            });
        }
        Ok(())
    }

    fn check_key(&self, key: &[u8]) -> Result<(), RemoteError> {
        if self.0.shutting_down.load(Ordering::SeqCst) {
            return Err(RemoteError::ShuttingDown {
                id: self.0.id.clone(),
            });
        }
        // Every key below the gateway is a wire key (bucket and user key);
        // the limit is the user key's, as the API states it.
        let (_, user) = crate::keys::split(key).map_err(|e| RemoteError::BadRequest {
            message: e.to_string(),
        })?;
        let max = self.0.config.limits.max_key_bytes;
        if user.len() > max {
            return Err(RemoteError::TooLarge {
                what: "key".into(),
                len: user.len(),
                max,
            });
        }
        Ok(())
    }

    fn check_set(&self, set: &SiblingSet) -> Result<(), RemoteError> {
        // A clock claiming more events of an actor than any replica mints
        // would cover every version that actor will ever write: merged here,
        // it erases the key's versions with no tombstone and makes the key
        // unwritable. Honest counters grow by one per write.
        let absurd = set
            .clock()
            .entries()
            .iter()
            .find(|e| e.counter > MAX_COUNTER);
        if let Some(e) = absurd {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "clock entry {}:{} exceeds the largest counter a replica mints (2^48)",
                    e.actor, e.counter
                ),
            });
        }
        let max = self.0.config.limits.max_value_bytes;
        for s in set.values() {
            let len = s.value().map_or(0, <[u8]>::len);
            if len > max {
                return Err(RemoteError::TooLarge {
                    what: "value".into(),
                    len,
                    max,
                });
            }
        }
        Ok(())
    }

    fn remote(&self, e: StoreError) -> RemoteError {
        match e {
            StoreError::Corrupt { .. } => {
                tracing::error!(error = %e, "corrupt data");
                RemoteError::Corrupt {
                    node: self.0.id.clone(),
                    message: e.to_string(),
                }
            }
            StoreError::Version(_)
            | StoreError::OwnerTooLong { .. }
            | StoreError::Merkle(_)
            | StoreError::BadCursor
            | StoreError::Encode(_) => RemoteError::BadRequest {
                message: e.to_string(),
            },
            StoreError::HintRefused { reason } => RemoteError::HintRefused {
                node: self.0.id.clone(),
                reason,
            },
            StoreError::Engine(_) => {
                tracing::error!(error = %e, "storage error");
                RemoteError::Storage {
                    node: self.0.id.clone(),
                    message: e.to_string(),
                }
            }
        }
    }

    /// Refuses a write to coordinate that no replica could accept.
    fn check_write(&self, request: &CoordinateRequest) -> Result<(), RemoteError> {
        self.check_key(&request.key)?;
        // The same bound as on replicated states: a context claiming more
        // events than a replica mints would be minted into this node's copy,
        // which every other replica then refuses, and the copies would
        // never agree again.
        let context = &request.context;
        if let Some((actor, n)) = context.entries().find(|(_, n)| *n > MAX_COUNTER) {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "context entry {actor}:{n} exceeds the largest counter a replica mints (2^48)"
                ),
            });
        }
        if context.counter_floor() > MAX_COUNTER {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "context floor {} exceeds the largest counter a replica mints (2^48)",
                    context.counter_floor()
                ),
            });
        }
        if let Some(bytes) = request.content_bytes() {
            let max = self.0.config.limits.max_value_bytes;
            if bytes > max {
                return Err(RemoteError::TooLarge {
                    what: "value".into(),
                    len: bytes,
                    max,
                });
            }
        }
        Ok(())
    }

    /// Mints the client's write under the key's stripe.
    ///
    /// Inline on the runtime, not on the blocking pool: the read-modify-write
    /// and the append are microseconds of CPU under the key's stripe, and the
    /// fsync is awaited after the stripe is released, so no thread parks per
    /// request (the pool hand-off and the group commit's wake-ups were half
    /// of a node's CPU, BENCHMARKS.md). While the engine is backlogged the
    /// append would wait for flushes (up to its write timeout), so then it
    /// runs on the blocking pool and comes back durable.
    async fn mint(&self, request: CoordinateRequest) -> Result<Minted, RemoteError> {
        let now = self.0.env.clock.now_millis();
        let begin = move |s: &Store| {
            let hint_for = request.hint_for.as_deref();
            if request.supersede {
                s.supersede_begin(&request.key, request.content, now, hint_for)
            } else {
                s.coordinate_begin(
                    &request.key,
                    &request.context,
                    request.content,
                    now,
                    hint_for,
                )
            }
        };
        if self.0.store.write_would_block() {
            return self
                .blocking(move |s| begin(s)?.wait())
                .await
                .map(Minted::Durable);
        }
        begin(&self.0.store)
            .map(Minted::Pending)
            .map_err(|e| self.remote(e))
    }

    /// Runs a store operation on the blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, RemoteError> {
        let store = self.0.store.clone();
        match self.0.env.spawn_blocking(move || f(&store)).await {
            Ok(r) => r.map_err(|e| self.remote(e)),
            Err(e) => {
                tracing::error!(error = %e, "store task panicked");
                Err(RemoteError::Storage {
                    node: self.0.id.clone(),
                    message: "internal error in the store task".into(),
                })
            }
        }
    }
}

impl Replica for NodeService {
    async fn coordinate(
        self,
        _: RpcContext,
        request: CoordinateRequest,
    ) -> Result<SiblingSet, RemoteError> {
        let _admitted = self.admit()?;
        self.check_write(&request)?;
        match self.mint(request).await? {
            Minted::Durable(set) => Ok(set),
            // Answered only once durable.
            Minted::Pending(written) => written.durable().await.map_err(|e| self.remote(e)),
        }
    }

    async fn coordinate_forward(
        self,
        _: RpcContext,
        request: ForwardRequest,
    ) -> Result<Forwarded, RemoteError> {
        let _admitted = self.admit()?;
        self.check_write(&request.write)?;
        let plan = crate::forward::Plan::from_request(&self.0.id, &request)?;
        let key = request.write.key.clone();
        let pool = self.0.pool.clone();
        let (siblings, verdict) = match self.mint(request.write).await? {
            Minted::Durable(siblings) => {
                let own = std::future::ready(Ok(()));
                let verdict =
                    crate::forward::replicate(pool, plan, key, siblings.clone(), own).await;
                (siblings, verdict)
            }
            Minted::Pending(written) => {
                // The replicas get the version while this node's own fsync
                // runs: the fsyncs overlap. Its durability is one more reply
                // to the op.
                let siblings = written.value().clone();
                let own = async move {
                    written
                        .durable()
                        .await
                        .map(|_| ())
                        .map_err(|e| format!("the coordinator's own commit failed: {e}"))
                };
                let verdict =
                    crate::forward::replicate(pool, plan, key, siblings.clone(), own).await;
                (siblings, verdict)
            }
        };
        Ok(Forwarded { siblings, verdict })
    }

    async fn replicate(self, _: RpcContext, request: ReplicateRequest) -> Result<(), RemoteError> {
        let _admitted = self.admit()?;
        self.check_key(&request.key)?;
        self.check_set(&request.siblings)?;
        if self.0.store.write_would_block() {
            // As in `coordinate`: back-pressure waits on the blocking pool.
            return self
                .blocking(move |s| match &request.hint_for {
                    Some(owner) => s.put_hint(owner, &request.key, &request.siblings),
                    None => s.merge(&request.key, &request.siblings),
                })
                .await
                .map(|_| ());
        }
        // Inline, as `coordinate`: append under the stripe, await the fsync.
        let store = &self.0.store;
        let written = match &request.hint_for {
            Some(owner) => store.put_hint_begin(owner, &request.key, &request.siblings),
            None => store.merge_begin(&request.key, &request.siblings),
        }
        .map_err(|e| self.remote(e))?;
        written.durable().await.map_err(|e| self.remote(e))?;
        Ok(())
    }

    async fn read(self, _: RpcContext, key: Vec<u8>) -> Result<Option<SiblingSet>, RemoteError> {
        let _admitted = self.admit()?;
        self.check_key(&key)?;
        // Inline, not on the blocking pool: a read is answered from the
        // memtable or page-cached tables in microseconds, and the hand-off to
        // a pool thread and back (two futex wake-ups) cost more than the read
        // itself: CPU per gateway GET fell from 157-185 us to 84-107 us in an
        // A/B run of `cargo xtask bench` (BENCHMARKS.md).
        self.0.store.read(&key).map_err(|e| self.remote(e))
    }

    async fn inspect(self, _: RpcContext, key: Vec<u8>) -> Result<KeyReport, RemoteError> {
        let _admitted = self.admit()?;
        self.check_key(&key)?;
        let node = self.0.id.clone();
        self.blocking(move |s| {
            Ok(KeyReport {
                node,
                local: s.read(&key)?.map(StoredView::new),
                hints: s
                    .hints_for_key(&key)?
                    .into_iter()
                    .map(|(owner, set)| (owner, StoredView::new(set)))
                    .collect(),
            })
        })
        .await
    }

    async fn gossip(
        self,
        _: RpcContext,
        from: String,
        message: Message,
    ) -> Result<Vec<Message>, RemoteError> {
        Ok(membership::receive(
            &self.0.membership,
            self.0.uptime,
            &from,
            message,
        ))
    }

    async fn merkle(
        self,
        _: RpcContext,
        request: MerkleRequest,
    ) -> Result<MerkleResponse, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        // Answering is pure CPU on the in-memory tree, bounded by the
        // message size limit; no blocking pool needed.
        self.0
            .store
            .with_tree(|t| t.answer(&request))
            .map_err(|e| RemoteError::BadRequest {
                message: format!("merkle request: {e}"),
            })
    }

    async fn scan(self, _: RpcContext, request: ScanRequest) -> Result<ScanPage, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        if request.ranges.len() > MAX_SCAN_RANGES {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "{} ranges in one scan, over the limit of {MAX_SCAN_RANGES}",
                    request.ranges.len()
                ),
            });
        }
        let max_keys = request.max_keys.clamp(1, MAX_SCAN_KEYS) as usize;
        // Half a frame of values per page, so a page always fits a frame.
        let max_bytes = self.0.config.max_frame_bytes() / 2;
        self.blocking(move |s| {
            s.scan_ranges(
                &request.ranges,
                request.cursor.as_ref(),
                max_keys,
                max_bytes,
                request.values,
            )
        })
        .await
    }

    async fn read_many(
        self,
        _: RpcContext,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<SiblingSet>>, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        check_batch(keys.len())?;
        for key in &keys {
            self.check_key(key)?;
        }
        let budget = self.0.config.max_frame_bytes() / 2;
        self.blocking(move |s| {
            let mut out = Vec::with_capacity(keys.len());
            let mut bytes = 0usize;
            for key in &keys {
                if bytes >= budget {
                    break;
                }
                let state = s.read(key)?;
                bytes += key.len() + state.as_ref().map_or(0, |set| set.encode().len());
                out.push(state);
            }
            Ok(out)
        })
        .await
    }

    async fn merge_batch(
        self,
        _: RpcContext,
        entries: Vec<(Vec<u8>, SiblingSet)>,
    ) -> Result<u64, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        check_batch(entries.len())?;
        for (key, set) in &entries {
            self.check_key(key)?;
            self.check_set(set)?;
        }
        self.blocking(move |s| s.merge_many(&entries).map(|(_, changed)| changed as u64))
            .await
    }

    async fn repair(self, _: RpcContext) -> Result<RepairReport, RemoteError> {
        self.check_running()?;
        Ok(self.0.anti_entropy.repair().await)
    }

    async fn decommission(self, _: RpcContext, force: bool) -> Result<HandoverReport, RemoteError> {
        self.check_running()?;
        self.0.handover.decommission(force).await
    }

    async fn bucket_props(
        self,
        _: RpcContext,
        digest: [u8; 32],
    ) -> Result<Option<Vec<(String, crate::buckets::VersionedProps)>>, RemoteError> {
        let table = self.0.store.props();
        Ok((table.digest() != digest).then(|| table.records()))
    }

    async fn set_bucket_props(
        self,
        _: RpcContext,
        records: Vec<(String, crate::buckets::VersionedProps)>,
    ) -> Result<(), RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        if records.len() > crate::buckets::MAX_BUCKETS_WITH_PROPS {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "{} props records, over the limit of {}",
                    records.len(),
                    crate::buckets::MAX_BUCKETS_WITH_PROPS
                ),
            });
        }
        for (bucket, record) in &records {
            crate::buckets::check(bucket, &record.props).map_err(|e| RemoteError::BadRequest {
                message: e.to_string(),
            })?;
        }
        self.blocking(move |s| s.merge_props(&records).map(|_| ()))
            .await
    }

    async fn list_keys(self, _: RpcContext, request: ListRequest) -> Result<ListPage, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        crate::keys::check_bucket(&request.bucket).map_err(|e| RemoteError::BadRequest {
            message: e.to_string(),
        })?;
        if let Some(after) = &request.after {
            self.check_key(&crate::keys::wire(&request.bucket, after))?;
        }
        let limit = request.limit.clamp(1, MAX_SCAN_KEYS) as usize;
        let max_bytes = self.0.config.max_frame_bytes() / 2;
        self.blocking(move |s| {
            s.list_bucket(
                &request.bucket,
                request.position,
                request.after.as_deref(),
                limit,
                max_bytes,
            )
        })
        .await
    }

    async fn gc_check(
        self,
        _: RpcContext,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<crate::rpc::GcState>, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        if keys.len() > crate::rpc::MAX_BATCH_KEYS {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "gc_check of {} keys, at most {}",
                    keys.len(),
                    crate::rpc::MAX_BATCH_KEYS
                ),
            });
        }
        for k in &keys {
            self.check_key(k)?;
        }
        self.blocking(move |s| {
            keys.iter()
                .map(|k| {
                    s.gc_state(k)
                        .map(|(digest, hinted)| crate::rpc::GcState { digest, hinted })
                })
                .collect()
        })
        .await
    }

    async fn gc_purge(
        self,
        _: RpcContext,
        entries: Vec<(Vec<u8>, [u8; 32])>,
    ) -> Result<u64, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        if entries.len() > crate::rpc::MAX_BATCH_KEYS {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "gc_purge of {} keys, at most {}",
                    entries.len(),
                    crate::rpc::MAX_BATCH_KEYS
                ),
            });
        }
        for (k, _) in &entries {
            self.check_key(k)?;
        }
        self.blocking(move |s| {
            let mut purged = 0;
            for (k, d) in &entries {
                if s.gc_purge(k, d)? {
                    purged += 1;
                }
            }
            Ok(purged)
        })
        .await
    }

    async fn status(self, _: RpcContext) -> Result<NodeStatus, RemoteError> {
        let store = &self.0.store;
        let hints_held = store.hint_count().map_err(|e| self.remote(e))?;
        let counters = store.counters();
        Ok(NodeStatus {
            id: self.0.id.clone(),
            protocol: PROTOCOL_VERSION,
            storage: true,
            incarnation: store.incarnation(),
            hints_held,
            hints_by_owner: store.hints_by_owner(),
            metrics_addr: self.0.metrics_addr.get().map(ToString::to_string),
            anti_entropy: counters.anti_entropy(),
            hints_delivered: counters
                .hints_delivered
                .load(std::sync::atomic::Ordering::Relaxed),
            progress: counters.progress(),
        })
    }
}

impl CoordinateRequest {
    fn content_bytes(&self) -> Option<usize> {
        match &self.content {
            shoal_vclock::Content::Value { bytes, .. } => Some(bytes.len()),
            shoal_vclock::Content::Tombstone | shoal_vclock::Content::Expired { .. } => None,
        }
    }
}
