//! What a node counts about itself, how `/metrics` on `metrics.listen`
//! shows it, and the small HTTP server that serves it.
//!
//! Counters live in one [`NodeCounters`] that every component of a node
//! adds to; gauges (hints pending, sstables, members up) are read from the
//! live state at scrape time. The server answers `GET /metrics` and nothing
//! else: it carries no data, so it needs no token, and it refuses to start
//! on a non-loopback address unless `metrics.allow_remote = true` (the
//! series name members and ring owners, which an operator may not want
//! public).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::metrics::{Exposition, HistogramSet, LATENCY_BOUNDS};

/// The replica service's method names, the label values of
/// `shoal_node_rpc_duration_seconds{rpc}`.
pub const RPC_NAMES: &[&str] = &[
    "coordinate",
    "coordinate_forward",
    "replicate",
    "read",
    "inspect",
    "gossip",
    "status",
    "merkle",
    "scan",
    "read_many",
    "merge_batch",
    "repair",
    "gc_check",
    "gc_purge",
    "decommission",
    "bucket_props",
    "set_bucket_props",
    "list_keys",
];

/// Connections of one RPC listener, counted by its accept loop (nodes and
/// gateways both serve RPC).
#[derive(Debug, Default)]
pub struct ConnStats {
    /// Open now (handshake done or in progress).
    pub open: AtomicU64,
    /// Closed at accept because `rpc.max_connections` were open.
    pub refused_full: AtomicU64,
    /// Dropped because the handshake failed (no or another cluster secret,
    /// a timeout, garbage).
    pub handshake_failures: AtomicU64,
}

impl ConnStats {
    /// The three as metric families.
    pub fn expose(&self, out: &mut Exposition<'_, '_>) -> std::fmt::Result {
        out.gauge(
            "shoal_rpc_connections_open",
            "RPC connections open on this member's port",
            self.open.load(Ordering::Relaxed) as f64,
        )?;
        out.counter(
            "shoal_rpc_connections_refused",
            "RPC connections closed at accept because rpc.max_connections were open",
            self.refused_full.load(Ordering::Relaxed),
        )?;
        out.counter(
            "shoal_rpc_handshake_failures",
            "RPC connections dropped because the handshake failed (wrong or no cluster secret, timeout)",
            self.handshake_failures.load(Ordering::Relaxed),
        )
    }
}

/// Long work in progress on a node: a join's streaming, a decommission's
/// push, or a repair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// `join`, `decommission` or `repair`.
    pub kind: String,
    /// Ranges finished.
    pub ranges_done: u64,
    /// Ranges to do.
    pub ranges_total: u64,
    /// Keys moved so far.
    pub keys: u64,
    /// Bytes moved so far.
    pub bytes: u64,
    /// Milliseconds since the work started.
    pub elapsed_ms: u64,
}

/// Anti-entropy as counted on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AntiEntropyStats {
    /// Exchanges finished (with or without differences).
    pub exchanges: u64,
    /// Exchanges that stopped on an error.
    pub failed: u64,
    /// Keys pulled or pushed.
    pub keys_repaired: u64,
    /// Milliseconds since the last finished exchange (`None`: none yet).
    pub last_exchange_age_ms: Option<u64>,
}

/// Every counter of one node.
#[derive(Debug)]
pub struct NodeCounters {
    /// Time spent serving each RPC.
    pub rpc: HistogramSet,
    /// Hints handed to their owners (or, for an owner that left, to the
    /// key's current replicas).
    pub hints_delivered: AtomicU64,
    /// Hints dropped past `handoff.hint_ttl_secs`.
    pub hints_expired: AtomicU64,
    /// Anti-entropy exchanges finished.
    pub ae_exchanges: AtomicU64,
    /// Anti-entropy exchanges that failed.
    pub ae_failed: AtomicU64,
    /// Keys anti-entropy pulled or pushed.
    pub ae_keys_repaired: AtomicU64,
    /// Bytes anti-entropy exchanges moved (Merkle messages and states).
    pub ae_bytes: AtomicU64,
    /// Tombstones purged.
    pub tombstones_purged: AtomicU64,
    /// Keys whose expired values compaction shrank to their remains.
    pub expired_purged: AtomicU64,
    /// Bytes those shrinks saved.
    pub expired_bytes_reclaimed: AtomicU64,
    /// When the last exchange finished, by [`std::time::Instant`] since
    /// `origin` (ms + 1; 0 = never).
    ae_last_ms: AtomicU64,
    origin: std::time::Instant,
    progress: Mutex<Option<(Progress, std::time::Instant)>>,
}

impl Default for NodeCounters {
    fn default() -> Self {
        NodeCounters {
            rpc: HistogramSet::new(RPC_NAMES, LATENCY_BOUNDS),
            hints_delivered: AtomicU64::new(0),
            hints_expired: AtomicU64::new(0),
            ae_exchanges: AtomicU64::new(0),
            ae_failed: AtomicU64::new(0),
            ae_keys_repaired: AtomicU64::new(0),
            ae_bytes: AtomicU64::new(0),
            tombstones_purged: AtomicU64::new(0),
            expired_purged: AtomicU64::new(0),
            expired_bytes_reclaimed: AtomicU64::new(0),
            ae_last_ms: AtomicU64::new(0),
            origin: std::time::Instant::now(),
            progress: Mutex::new(None),
        }
    }
}

impl NodeCounters {
    /// One anti-entropy exchange finished (`failed` if it stopped on an
    /// error), having repaired `keys` and moved `bytes`.
    pub fn exchange_done(&self, failed: bool, keys: u64, bytes: u64) {
        if failed {
            self.ae_failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ae_exchanges.fetch_add(1, Ordering::Relaxed);
            let now = self.origin.elapsed().as_millis() as u64 + 1;
            self.ae_last_ms.store(now, Ordering::Relaxed);
        }
        self.ae_keys_repaired.fetch_add(keys, Ordering::Relaxed);
        self.ae_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Anti-entropy so far.
    pub fn anti_entropy(&self) -> AntiEntropyStats {
        let last = self.ae_last_ms.load(Ordering::Relaxed);
        AntiEntropyStats {
            exchanges: self.ae_exchanges.load(Ordering::Relaxed),
            failed: self.ae_failed.load(Ordering::Relaxed),
            keys_repaired: self.ae_keys_repaired.load(Ordering::Relaxed),
            last_exchange_age_ms: (last > 0)
                .then(|| (self.origin.elapsed().as_millis() as u64).saturating_sub(last - 1)),
        }
    }

    /// Long work started: `ranges_total` ranges of `kind`. It shows until
    /// the guard is dropped, however the work ends (done, failed, stopped).
    #[must_use = "the progress ends when the guard is dropped"]
    pub fn progress_start(&self, kind: &str, ranges_total: u64) -> ProgressGuard<'_> {
        let p = Progress {
            kind: kind.to_string(),
            ranges_done: 0,
            ranges_total,
            keys: 0,
            bytes: 0,
            elapsed_ms: 0,
        };
        *self.progress.lock().expect("progress lock") = Some((p, std::time::Instant::now()));
        ProgressGuard(self)
    }

    /// One more range finished, with the keys and bytes it moved.
    pub fn progress_range(&self, keys: u64, bytes: u64) {
        if let Some((p, _)) = self.progress.lock().expect("progress lock").as_mut() {
            p.ranges_done += 1;
            p.keys += keys;
            p.bytes += bytes;
        }
    }

    /// The long work running now, if any.
    pub fn progress(&self) -> Option<Progress> {
        self.progress
            .lock()
            .expect("progress lock")
            .as_ref()
            .map(|(p, started)| Progress {
                elapsed_ms: started.elapsed().as_millis() as u64,
                ..p.clone()
            })
    }
}

/// Ends the progress [`NodeCounters::progress_start`] began, when dropped.
#[derive(Debug)]
pub struct ProgressGuard<'a>(&'a NodeCounters);

impl Drop for ProgressGuard<'_> {
    fn drop(&mut self) {
        *self.0.progress.lock().expect("progress lock") = None;
    }
}

/// What a node's scrape reads besides its counters.
pub struct NodeSources {
    /// The store (hints, engine stats, fsync times).
    pub store: Arc<crate::store::Store>,
    /// The membership (member up, phi).
    pub membership: crate::membership::SharedMembership,
    /// RPC connections.
    pub connections: Arc<ConnStats>,
    /// Whether this member and its peers can be dialed where they say.
    pub reach: Arc<crate::advertise::Reachability>,
    /// RPCs in flight on the node (`rpc.max_in_flight` minus permits left).
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// `rpc.max_in_flight`.
    pub max_in_flight: usize,
}

/// Every member's liveness as this member sees it: `(id, up, phi, heartbeat
/// age)`. The gateway's `/metrics` and dashboard use it too.
pub fn liveness(
    membership: &crate::membership::SharedMembership,
) -> Vec<(String, bool, Option<f64>, Option<Duration>)> {
    let m = crate::membership::lock(membership);
    m.members()
        .into_iter()
        .map(|info| {
            let id = info.id.as_str().to_string();
            let health = m.health(&id);
            (
                id,
                info.status.is_up(),
                health.map(|h| h.phi),
                health.map(|h| h.silence),
            )
        })
        .collect()
}

/// The gossip families, and whether members can be dialed where they say
/// they are ([`crate::advertise`]), for any member.
pub fn expose_gossip(
    out: &mut Exposition<'_, '_>,
    membership: &crate::membership::SharedMembership,
    reach: &crate::advertise::Reachability,
) -> std::fmt::Result {
    let members = liveness(membership);
    let undialable = reach.undialable();
    out.gauge(
        "shoal_member_advertise_reachable",
        "1 if dialing this member's own member.advertise reached itself, 0 if it reached nothing \
         or another member, -1 if not checked",
        reach.own().gauge(),
    )?;
    out.gauges(
        "shoal_member_undialable",
        "1 if gossip says the member is alive but this member's dials to its advertised address \
         have failed for a failure timeout",
        members.iter().map(|(id, _, _, _)| {
            let down = undialable.contains_key(id);
            (vec![("member", id.as_str())], if down { 1.0 } else { 0.0 })
        }),
    )?;
    out.counter(
        "shoal_member_undialable_events",
        "Times a member alive by gossip was found undialable at its advertised address",
        reach.undialable_total(),
    )?;
    out.gauges(
        "shoal_gossip_member_up",
        "1 if this member sees the member alive, suspect or leaving, else 0",
        members
            .iter()
            .map(|(id, up, _, _)| (vec![("member", id.as_str())], if *up { 1.0 } else { 0.0 })),
    )?;
    out.gauges(
        "shoal_gossip_phi",
        "The phi-accrual suspicion of each member (0 for this member itself)",
        members
            .iter()
            .map(|(id, _, phi, _)| (vec![("member", id.as_str())], phi.unwrap_or(0.0))),
    )
}

/// The node's `/metrics` text.
pub fn node_metrics(counters: &NodeCounters, sources: &NodeSources) -> String {
    let rpc = counters.rpc.snapshots();
    let hints: BTreeMap<String, u64> = sources.store.hints_by_owner().into_iter().collect();
    let stats = sources.store.engine_stats();
    let fsync = sources.store.fsync_times();
    let ae = counters.anti_entropy();
    let delivered = counters.hints_delivered.load(Ordering::Relaxed);
    let expired = counters.hints_expired.load(Ordering::Relaxed);
    let ae_bytes = counters.ae_bytes.load(Ordering::Relaxed);
    let purged = counters.tombstones_purged.load(Ordering::Relaxed);
    let expired_purged = counters.expired_purged.load(Ordering::Relaxed);
    let reclaimed = counters.expired_bytes_reclaimed.load(Ordering::Relaxed);
    let progress = counters.progress();
    let in_flight = sources
        .max_in_flight
        .saturating_sub(sources.in_flight.available_permits());
    let membership = sources.membership.clone();
    let connections = sources.connections.clone();
    let reach = sources.reach.clone();
    crate::metrics::render(move |out| {
        out.histograms(
            "shoal_node_rpc_duration_seconds",
            "Time this node took to serve each RPC",
            rpc.iter()
                .map(|(name, h)| (vec![("rpc", name.as_str())], h.clone())),
        )?;
        out.gauge(
            "shoal_node_rpcs_in_flight",
            "Data RPCs being served now (bounded by rpc.max_in_flight)",
            in_flight as f64,
        )?;
        out.gauges(
            "shoal_hints_pending",
            "Hints this node holds, per owner they are for",
            hints
                .iter()
                .map(|(owner, n)| (vec![("owner", owner.as_str())], *n as f64)),
        )?;
        out.counter(
            "shoal_hints_delivered",
            "Hints handed to their owner or, for an owner that left, to the key's replicas",
            delivered,
        )?;
        out.counter(
            "shoal_hints_expired",
            "Hints dropped past handoff.hint_ttl_secs (anti-entropy repairs what they carried)",
            expired,
        )?;
        out.counter(
            "shoal_anti_entropy_exchanges",
            "Anti-entropy exchanges finished",
            ae.exchanges,
        )?;
        out.counter(
            "shoal_anti_entropy_failures",
            "Anti-entropy exchanges that stopped on an error",
            ae.failed,
        )?;
        out.counter(
            "shoal_anti_entropy_keys_repaired",
            "Keys anti-entropy pulled from or pushed to a peer",
            ae.keys_repaired,
        )?;
        out.counter(
            "shoal_anti_entropy_bytes",
            "Bytes anti-entropy exchanges moved (Merkle messages and states)",
            ae_bytes,
        )?;
        out.gauge(
            "shoal_anti_entropy_last_exchange_age_seconds",
            "Seconds since the last finished anti-entropy exchange (-1: none yet)",
            ae.last_exchange_age_ms
                .map_or(-1.0, |ms| ms as f64 / 1000.0),
        )?;
        out.counter(
            "shoal_tombstones_purged",
            "Tombstones purged from this node's data",
            purged,
        )?;
        out.counter(
            "shoal_expired_purged",
            "Keys whose expired values compaction shrank to their remains",
            expired_purged,
        )?;
        out.counter(
            "shoal_expired_bytes_reclaimed",
            "Bytes of stored state those shrinks saved",
            reclaimed,
        )?;
        out.histogram(
            "shoal_storage_fsync_duration_seconds",
            "Time of each commit log fsync",
            &fsync,
        )?;
        out.gauge(
            "shoal_storage_sstables",
            "Live sstables",
            stats.tables as f64,
        )?;
        out.gauge(
            "shoal_storage_sstable_bytes",
            "Bytes of live sstables",
            stats.table_bytes as f64,
        )?;
        out.gauge(
            "shoal_storage_memtable_bytes",
            "Approximate bytes in the active memtable",
            stats.memtable_bytes as f64,
        )?;
        out.gauge(
            "shoal_storage_immutable_memtables",
            "Frozen memtables waiting to be flushed (the flush backlog)",
            stats.immutable_memtables as f64,
        )?;
        out.gauge(
            "shoal_storage_compaction_backlog",
            "Sstables beyond one: what a full compaction would merge away",
            stats.tables.saturating_sub(1) as f64,
        )?;
        out.counter(
            "shoal_storage_flushes",
            "Memtable flushes since start",
            stats.flushes,
        )?;
        out.counter(
            "shoal_storage_compactions",
            "Compactions since start",
            stats.compactions,
        )?;
        out.counter(
            "shoal_storage_commit_syncs",
            "Group commit fsyncs since start",
            stats.commit_syncs,
        )?;
        out.counter(
            "shoal_storage_written_bytes",
            "Key and value bytes written by callers since start",
            stats.user_bytes_written,
        )?;
        out.gauge(
            "shoal_progress_ranges_done",
            "Ranges finished by the join, decommission or repair in progress (-1: none)",
            progress.as_ref().map_or(-1.0, |p| p.ranges_done as f64),
        )?;
        out.gauge(
            "shoal_progress_ranges",
            "Ranges of the join, decommission or repair in progress (-1: none)",
            progress.as_ref().map_or(-1.0, |p| p.ranges_total as f64),
        )?;
        out.gauge(
            "shoal_progress_keys_moved",
            "Keys moved by the long work in progress",
            progress.as_ref().map_or(0.0, |p| p.keys as f64),
        )?;
        out.gauge(
            "shoal_progress_bytes_moved",
            "Bytes moved by the long work in progress",
            progress.as_ref().map_or(0.0, |p| p.bytes as f64),
        )?;
        connections.expose(out)?;
        expose_gossip(out, &membership, &reach)
    })
}

/// Why the metrics listener did not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address does not parse or could not be bound.
    #[error("metrics.listen = {addr:?}: {reason}")]
    Listen {
        /// The configured address.
        addr: String,
        /// Why.
        reason: String,
    },
    /// A non-loopback address without `metrics.allow_remote`.
    #[error("metrics.listen = {0} is not a loopback address; set metrics.allow_remote = true to mean it")]
    Remote(String),
}

/// Requests served at once by the metrics listener: a scrape is one
/// request every few seconds, so a handful is plenty and a flood cannot
/// hold more.
const MAX_METRICS_CONNECTIONS: usize = 16;

/// How long a scraper may take to send its request head.
const METRICS_HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds `addr` for `/metrics` (checking the loopback rule) and serves
/// `render()` there until `shutdown`. Returns the bound address.
pub async fn serve_metrics(
    addr: &str,
    allow_remote: bool,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(SocketAddr, tokio::task::JoinHandle<()>), MetricsError> {
    let parsed: SocketAddr = addr.parse().map_err(|e| MetricsError::Listen {
        addr: addr.into(),
        reason: format!("{e}"),
    })?;
    if !parsed.ip().is_loopback() && !allow_remote {
        return Err(MetricsError::Remote(addr.into()));
    }
    let listener =
        tokio::net::TcpListener::bind(parsed)
            .await
            .map_err(|e| MetricsError::Listen {
                addr: addr.into(),
                reason: e.to_string(),
            })?;
    let local = listener.local_addr().map_err(|e| MetricsError::Listen {
        addr: addr.into(),
        reason: e.to_string(),
    })?;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    let task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                a = listener.accept() => a,
            };
            let Ok((stream, _)) = accepted else {
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                drop(stream);
                continue;
            };
            let render = render.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let service = hyper::service::service_fn(move |req| {
                    let render = render.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&req, &*render)) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(METRICS_HEADER_TIMEOUT)
                    .keep_alive(false)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                // A scrape is answered in well under a second; a connection
                // that holds its slot longer is dropped.
                let _ = tokio::time::timeout(Duration::from_secs(30), conn).await;
            });
        }
    });
    Ok((local, task))
}

fn answer(
    req: &hyper::Request<hyper::body::Incoming>,
    render: &(dyn Fn() -> String + Send + Sync),
) -> hyper::Response<String> {
    let (status, content_type, body) =
        if req.method() == hyper::Method::GET && req.uri().path() == "/metrics" {
            (200, crate::metrics::CONTENT_TYPE, render())
        } else {
            (
                404,
                "application/json",
                r#"{"error":"not_found","message":"this port serves GET /metrics only"}"#.into(),
            )
        };
    hyper::Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(body)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_counts_ranges_and_ends() {
        let c = NodeCounters::default();
        assert_eq!(c.progress(), None);
        let guard = c.progress_start("join", 4);
        c.progress_range(10, 1000);
        c.progress_range(5, 500);
        let p = c.progress().unwrap();
        assert_eq!(
            (
                p.kind.as_str(),
                p.ranges_done,
                p.ranges_total,
                p.keys,
                p.bytes
            ),
            ("join", 2, 4, 15, 1500)
        );
        drop(guard);
        assert_eq!(c.progress(), None);
    }

    #[test]
    fn a_failed_exchange_does_not_count_as_the_last_one() {
        let c = NodeCounters::default();
        assert_eq!(c.anti_entropy().last_exchange_age_ms, None);
        c.exchange_done(true, 0, 10);
        assert_eq!(c.anti_entropy().last_exchange_age_ms, None);
        c.exchange_done(false, 3, 10);
        let ae = c.anti_entropy();
        assert_eq!((ae.exchanges, ae.failed, ae.keys_repaired), (1, 1, 3));
        assert!(ae.last_exchange_age_ms.is_some());
    }

    #[tokio::test]
    async fn the_listener_refuses_a_public_address_without_allow_remote() {
        let (_tx, rx) = watch::channel(false);
        let render: Arc<dyn Fn() -> String + Send + Sync> = Arc::new(String::new);
        let err = serve_metrics("0.0.0.0:0", false, render, rx)
            .await
            .unwrap_err();
        assert!(matches!(err, MetricsError::Remote(_)), "{err}");
    }
}
