//! The replica service: starts the store, gossip, hinted handoff and the RPC
//! server, and stops them in order.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_vclock::SiblingSet;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::anti_entropy::AntiEntropy;
use crate::config::Config;
use crate::env::Env;
use crate::handover::Handover;
use crate::membership::{SharedMembership, Uptime};
use crate::pool::Pool;
use crate::rpc::HandoverReport;
use crate::store::{Store, StoreError};

mod replica;
mod service;
mod startup;

pub use startup::start;

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
