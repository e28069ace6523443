//! The quorum operations behind the HTTP handlers: writes (coordinate, then
//! replicate), reads (fan out, reconcile, read-repair), and the read-only
//! views (preference list, per-replica inspection).
//!
//! Every decision (targets, coordinator attempts, spares, when to answer,
//! what to repair) is `shoal_coordinator`'s [`WriteOp`] and [`ReadOp`]; this
//! module only performs the actions they return (RPCs, timers) and feeds the
//! replies back.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use shoal_coordinator::replicas::read_plan;
use shoal_coordinator::{
    Fanout, Forwarding, QuorumFailure, ReadAction, ReadOp, Reconciled, WriteAction, WriteOp,
};
use shoal_node::buckets::PropsTable;
use shoal_node::keys::position as key_position;
use shoal_node::pool::Pool;
use shoal_node::rpc::{
    CoordinateRequest, ForwardRequest, ForwardTarget, KeyReport, RemoteError, ReplicaClient,
    ReplicateRequest, MAX_FORWARD_BUDGET_MS, MAX_FORWARD_TARGETS,
};
use shoal_vclock::{Content, Context, SiblingSet};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cluster::{Cluster, Snapshot};
use crate::error::{ApiError, Operation};
use crate::model::{PreflistBody, ReplicaBody, ReplicaSibling};

/// Most nodes `/v1/debug/replicas` asks (owners first, then the walk, where
/// hints live).
const MAX_INSPECTED: usize = 16;

/// Why one RPC to one replica did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// No answer before the request's deadline.
    #[error("no answer in time")]
    Timeout,
    /// The connection broke after the request went out: the replica may
    /// have acted on it.
    #[error("connection lost: {0}")]
    Transport(String),
    /// No connection could be made: the request never reached the replica.
    #[error("unreachable: {0}")]
    Unreachable(String),
    /// The replica answered with an error.
    #[error("{0}")]
    Remote(RemoteError),
    /// The member is not in the current membership.
    #[error("address unknown")]
    Unknown,
}

impl Failure {
    /// Whether the replica may have acted on the request although no answer
    /// said so: the request went out and then nothing, or a broken
    /// connection, came back.
    pub fn may_have_applied(&self) -> bool {
        matches!(self, Failure::Timeout | Failure::Transport(_))
    }
}

/// Runs `drive` in the caller's task until it sends its verdict on `done`,
/// then hands whatever it still has to do (replication past W) to a task of
/// its own; `None` if it ended without a verdict. A driver task per write,
/// awaited through the channel, cost a spawn, a wake-up of an idle worker and
/// a hand-back; a forwarded write usually finishes with its verdict and
/// spawns nothing. If the caller is dropped before the verdict (the client went
/// away), the work is dropped with it: nothing was acknowledged, and RPCs
/// already sent run to their end on the replicas.
async fn until_verdict<T>(
    drive: impl Future<Output = ()> + Send + 'static,
    mut done: oneshot::Receiver<T>,
) -> Option<T>
where
    T: Send + 'static,
{
    let mut drive = Box::pin(drive);
    let early = tokio::select! {
        biased;
        verdict = &mut done => Some(verdict),
        () = &mut drive => None,
    };
    match early {
        Some(verdict) => {
            tokio::spawn(drive);
            verdict.ok()
        }
        None => done.try_recv().ok(),
    }
}

/// The quorum engine of one gateway.
#[derive(Debug)]
pub struct Dispatcher {
    cluster: Arc<Cluster>,
    pool: Arc<Pool>,
    n: usize,
    /// How many replicas a read asks up front: all of them. Asking R first
    /// (`Fanout::Quorum`) lost acknowledged writes in 1 of 200 simulated
    /// seeds (seed 178 of `cargo xtask sim --seeds 200`: `sync = never`, a
    /// decommission, then a crash of the node that took the leaving node's
    /// copy): read repair of every replica is part of how the cluster keeps
    /// W copies alive under faults, and replicas a read never asks are
    /// repaired only by anti-entropy, later. R-first needs digest reads of
    /// the others (so that stale replicas are still found) before it can be
    /// the default.
    fanout: Fanout,
    /// Budget of background work (read repair) started after an answer.
    background_timeout: Duration,
    /// Every bucket's props: reads reconcile under the key's policy.
    props: Arc<PropsTable>,
    /// What `/metrics` and the dashboard show.
    counters: Arc<crate::observe::GatewayCounters>,
    /// The gateway's wall clock: the instant TTLs count from and expiry is
    /// judged by (the simulation skews it).
    clock: WallClock,
}

/// The clock, for `Dispatcher`'s `Debug`.
struct WallClock(Arc<dyn shoal_node::env::Clock>);

impl std::fmt::Debug for WallClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WallClock")
    }
}

/// The engine's view of member health: gossip and local suspicion from the
/// snapshot, latency from every call this gateway made.
struct Health<'a>(&'a Snapshot, &'a Cluster);

impl shoal_coordinator::Health for Health<'_> {
    fn is_live(&self, node: &str) -> bool {
        self.0.is_live(node)
    }
    fn latency_us(&self, node: &str) -> f64 {
        self.1.latency_us(node)
    }
}

impl Dispatcher {
    /// An engine routing by `cluster`, calling through `pool`, with `n`
    /// replicas per key.
    pub fn new(
        cluster: Arc<Cluster>,
        pool: Arc<Pool>,
        n: usize,
        background_timeout: Duration,
        props: Arc<PropsTable>,
        clock: Arc<dyn shoal_node::env::Clock>,
    ) -> Self {
        Self {
            cluster,
            pool,
            n,
            fanout: Fanout::All,
            background_timeout,
            props,
            counters: Arc::default(),
            clock: WallClock(clock),
        }
    }

    /// Now on the gateway's clock, ms since the Unix epoch: what a TTL is
    /// added to and what a version's expiry is compared with.
    pub fn now_ms(&self) -> u64 {
        self.clock.0.now_millis()
    }

    /// The gateway's counters.
    pub fn counters(&self) -> &Arc<crate::observe::GatewayCounters> {
        &self.counters
    }

    /// Every bucket's props as this gateway knows them.
    pub fn props(&self) -> &Arc<PropsTable> {
        &self.props
    }

    /// The cluster view.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// Replicas per key.
    pub fn n(&self) -> usize {
        self.n
    }

    /// One RPC to `node` bounded by `deadline`; updates local liveness hints.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        snap: &Snapshot,
        node: &str,
        deadline: Instant,
        f: F,
    ) -> Result<T, Failure>
    where
        F: FnOnce(ReplicaClient, tarpc::context::Context) -> Fut,
        Fut: Future<Output = Result<Result<T, RemoteError>, tarpc::client::RpcError>>,
    {
        let Some(addr) = snap.address(node) else {
            return Err(Failure::Unknown);
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(Failure::Timeout);
        }
        let started = Instant::now();
        let answer = tokio::time::timeout(remaining, self.pool.call(addr, remaining, f)).await;
        self.cluster.observe(node, started.elapsed());
        match answer {
            Err(_) => {
                self.cluster.suspect(node);
                Err(Failure::Timeout)
            }
            Ok(Err(e)) => {
                self.cluster.suspect(node);
                if e.is_timeout() {
                    Err(Failure::Timeout)
                } else if e.may_have_arrived() {
                    Err(Failure::Transport(e.to_string()))
                } else {
                    Err(Failure::Unreachable(e.to_string()))
                }
            }
            Ok(Ok(Err(e))) => {
                if matches!(e, RemoteError::ShuttingDown { .. }) {
                    self.cluster.suspect(node);
                }
                Err(Failure::Remote(e))
            }
            Ok(Ok(Ok(v))) => {
                self.cluster.clear(node);
                Ok(v)
            }
        }
    }

    /// A client write, as [`WriteOp`] decides it: the coordinator mints the
    /// version, the others are sent the result; answers once W replicas
    /// stored it. Replication to the rest goes on in the background.
    ///
    /// With `supersede`, the coordinator replaces every version it holds
    /// whatever `context` covers (a last-writer-wins write, for clients that
    /// carry no context).
    #[allow(clippy::too_many_arguments)]
    pub async fn write(
        self: &Arc<Self>,
        key: Vec<u8>,
        context: Context,
        supersede: bool,
        content: Content,
        w: usize,
        deadline: Instant,
    ) -> Result<SiblingSet, ApiError> {
        let snap = self.cluster.snapshot();
        let op = WriteOp::new(
            &snap.view,
            key_position(&key),
            self.n,
            w,
            &Health(&snap, &self.cluster),
        );
        let (done_tx, done_rx) = oneshot::channel();
        let drive = self.clone().drive_write(
            op,
            snap,
            key,
            (context, supersede),
            content,
            deadline,
            done_tx,
        );
        until_verdict(drive, done_rx).await.unwrap_or_else(|| {
            Err(ApiError::Internal {
                message: "the write ended without a verdict".into(),
            })
        })
    }

    /// Performs `op`'s actions until it is finished or the deadline passes;
    /// the verdict goes to `done` as soon as the op gives it.
    #[allow(clippy::too_many_arguments)]
    async fn drive_write(
        self: Arc<Self>,
        mut op: WriteOp,
        snap: Arc<Snapshot>,
        key: Vec<u8>,
        (context, supersede): (Context, bool),
        content: Content,
        deadline: Instant,
        done: oneshot::Sender<Result<SiblingSet, ApiError>>,
    ) {
        let mut done = Some(done);
        let mut stored: Option<SiblingSet> = None;
        let mut sloppy = false;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        let mut actions: VecDeque<WriteAction> = op.start(remaining()).into();
        let mut coordinating = FuturesUnordered::new();
        let mut replicating = FuturesUnordered::new();
        let expiry = tokio::time::sleep_until(deadline);
        tokio::pin!(expiry);
        let (engine, snap, key) = (&*self, &snap, &key);
        loop {
            while let Some(action) = actions.pop_front() {
                match action {
                    WriteAction::Coordinate { target, budget } => {
                        sloppy |= target.hint_for.is_some();
                        let request = ForwardRequest {
                            write: CoordinateRequest {
                                key: key.clone(),
                                context: context.clone(),
                                content: content.clone(),
                                hint_for: target.hint_for,
                                supersede,
                            },
                            ..forward_plan(snap, op.forwarding(), budget)
                        };
                        sloppy |= request.replicas.iter().any(|t| t.hint_for.is_some());
                        let node = target.node;
                        let until = Instant::now() + budget;
                        coordinating.push(async move {
                            let result = engine
                                .call(snap, &node, until, |c, ctx| async move {
                                    c.coordinate_forward(ctx, request).await
                                })
                                .await;
                            (node, result)
                        });
                    }
                    WriteAction::Replicate { target } => {
                        sloppy |= target.hint_for.is_some();
                        let Some(set) = stored.clone() else {
                            continue;
                        };
                        let request = ReplicateRequest {
                            key: key.clone(),
                            siblings: set,
                            hint_for: target.hint_for,
                        };
                        let node = target.node;
                        replicating.push(async move {
                            let result = engine
                                .call(snap, &node, deadline, |c, ctx| async move {
                                    c.replicate(ctx, request).await
                                })
                                .await;
                            (node, result)
                        });
                    }
                    WriteAction::Verdict(verdict) => {
                        let answer = match verdict {
                            Ok(()) => stored.clone().ok_or_else(|| ApiError::Internal {
                                message: "a write reached its quorum without a version".into(),
                            }),
                            Err(failure) => Err(ApiError::QuorumFailed {
                                operation: Operation::Write,
                                failure,
                            }),
                        };
                        if let Some(tx) = done.take() {
                            let _ = tx.send(answer);
                        }
                    }
                }
            }
            if op.finished() {
                if sloppy {
                    self.counters.sloppy_writes.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            tokio::select! {
                biased;
                Some((node, result)) = coordinating.next(), if !coordinating.is_empty() => {
                    let result = match result {
                        Ok(forwarded) => {
                            stored = Some(forwarded.siblings);
                            Ok(forwarded.verdict.map_err(|c| QuorumFailure {
                                succeeded: c.succeeded as usize,
                                needed: c.needed as usize,
                                failed: c.failed as usize,
                                unknown: c.unknown as usize,
                                total: c.total as usize,
                            }))
                        }
                        // The client's fault (bad context, value too large):
                        // any other coordinator would refuse it alike.
                        Err(Failure::Remote(e)) if client_error(&e).is_some() => {
                            if let Some(tx) = done.take() {
                                let _ = tx.send(Err(client_error(&e).unwrap_or_else(|| {
                                    ApiError::bad_request(e.to_string())
                                })));
                            }
                            return;
                        }
                        // It may have stored a version of this write: another
                        // coordinator would mint a second one (see
                        // `WriteOp::coordinate_unknown`).
                        Err(failure) if failure.may_have_applied() => {
                            tracing::debug!(%node, %failure, "coordinator did not answer");
                            actions.extend(op.coordinate_unknown(&node, failure.to_string()));
                            continue;
                        }
                        Err(failure) => {
                            tracing::debug!(%node, %failure, "coordinator failed");
                            Err(failure.to_string())
                        }
                    };
                    actions.extend(op.forwarded_reply(&node, result, remaining()));
                }
                Some((node, result)) = replicating.next(), if !replicating.is_empty() => {
                    let result = result.map_err(|failure| {
                        tracing::debug!(%node, %failure, "replication failed");
                        failure.to_string()
                    });
                    actions.extend(op.replicated(&node, result));
                }
                _ = &mut expiry => actions.extend(op.expire()),
            }
        }
    }

    /// A client read, as [`ReadOp`] decides it with this gateway's fanout:
    /// answers with the reconciliation of the first R answers and
    /// read-repairs stale replicas afterwards.
    pub async fn read(
        self: &Arc<Self>,
        key: Vec<u8>,
        r: usize,
        deadline: Instant,
    ) -> Result<Reconciled, ApiError> {
        let snap = self.cluster.snapshot();
        let op = ReadOp::new(
            &snap.view,
            key_position(&key),
            self.n,
            r,
            self.fanout,
            &Health(&snap, &self.cluster),
        )
        .with_policy(self.props.policy(&key));
        // Driven in a task of its own, unlike a write: each replica's
        // answer wakes the driver, and in the caller's task every wake-up
        // polls down through hyper's and axum's layers again (+6 k
        // instructions per read measured with two answers awaited, against
        // -2 k per write, whose one forwarded answer is awaited either way).
        let (done_tx, done_rx) = oneshot::channel();
        let engine = self.clone();
        tokio::spawn(async move {
            engine.drive_read(op, snap, key, deadline, done_tx).await;
        });
        let answer = done_rx.await.unwrap_or_else(|_| {
            Err(ApiError::Internal {
                message: "the read task ended without a verdict".into(),
            })
        });
        if let Ok(Reconciled {
            merged: Some(set), ..
        }) = &answer
        {
            self.counters.read_siblings.observe_value(set.len() as f64);
        }
        answer
    }

    async fn drive_read(
        self: Arc<Self>,
        mut op: ReadOp,
        snap: Arc<Snapshot>,
        key: Vec<u8>,
        deadline: Instant,
        done: oneshot::Sender<Result<Reconciled, ApiError>>,
    ) {
        let mut done = Some(done);
        let mut actions: VecDeque<ReadAction> = op.start().into();
        let mut reads = FuturesUnordered::new();
        let mut repairs = Vec::new();
        let expiry = tokio::time::sleep_until(deadline);
        tokio::pin!(expiry);
        let timer = tokio::time::sleep_until(deadline);
        tokio::pin!(timer);
        let mut armed = false;
        let (engine, snap, key) = (&*self, &snap, &key);
        loop {
            while let Some(action) = actions.pop_front() {
                match action {
                    ReadAction::Read { node } => {
                        let key = key.clone();
                        reads.push(async move {
                            let result = engine
                                .call(snap, &node, deadline, |c, ctx| async move {
                                    c.read(ctx, key).await
                                })
                                .await;
                            (node, result)
                        });
                    }
                    ReadAction::Timer { after } => {
                        timer.as_mut().reset(Instant::now() + after);
                        armed = true;
                    }
                    ReadAction::Verdict(verdict) => {
                        let answer = verdict.map_err(|failure| ApiError::QuorumFailed {
                            operation: Operation::Read,
                            failure,
                        });
                        if let Some(tx) = done.take() {
                            let _ = tx.send(answer);
                        }
                    }
                    ReadAction::Repair { target, set } => repairs.push((target, set)),
                }
            }
            if op.finished() {
                break;
            }
            tokio::select! {
                biased;
                Some((node, result)) = reads.next(), if !reads.is_empty() => {
                    let result = result.map_err(|failure| {
                        tracing::debug!(%node, %failure, "read failed");
                        failure.to_string()
                    });
                    actions.extend(op.answered(&node, result));
                }
                _ = &mut timer, if armed => {
                    armed = false;
                    actions.extend(op.speculate());
                }
                _ = &mut expiry => actions.extend(op.expire()),
            }
        }
        drop(reads);
        let repair_deadline = Instant::now() + self.background_timeout;
        let repairs = repairs.into_iter().map(|(target, set)| {
            let request = ReplicateRequest {
                key: key.clone(),
                siblings: set,
                hint_for: target.hint_for,
            };
            let node = target.node;
            async move {
                let result = engine
                    .call(snap, &node, repair_deadline, |c, ctx| async move {
                        c.replicate(ctx, request).await
                    })
                    .await;
                match result {
                    Ok(()) => {
                        engine.counters.read_repairs.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(%node, "read repair applied");
                    }
                    Err(failure) => tracing::debug!(%node, %failure, "read repair failed"),
                }
            }
        });
        futures::future::join_all(repairs).await;
    }

    /// The key's token, owners and the fallbacks in use now.
    pub fn preflist(&self, key: &[u8]) -> PreflistBody {
        let snap = self.cluster.snapshot();
        let p = read_plan(
            &snap.view,
            key_position(key),
            self.n,
            &Health(&snap, &self.cluster),
        );
        let (owners, fallbacks, targets) = (
            p.owners.clone(),
            p.fallbacks().map(|t| t.node.clone()).collect(),
            p.targets.iter().map(|t| t.node.clone()).collect(),
        );
        PreflistBody {
            key: shoal_node::keys::display(key),
            token: key_position(key),
            owners,
            fallbacks,
            targets,
        }
    }

    /// What each owner (and each node holding a hint or a stray copy) stores
    /// for `key`. Read-only: never repairs.
    pub async fn inspect(&self, key: &[u8], deadline: Instant) -> Vec<ReplicaBody> {
        let snap = self.cluster.snapshot();
        let Some(ring) = snap.view.current() else {
            return Vec::new();
        };
        let walk: Vec<String> = ring
            .walk(key_position(key))
            .take(MAX_INSPECTED)
            .map(str::to_string)
            .collect();
        let asks = walk.iter().map(|node| {
            let (snap, key) = (&snap, key.to_vec());
            async move {
                self.call(snap, node, deadline, |c, ctx| async move {
                    c.inspect(ctx, key).await
                })
                .await
            }
        });
        let reports: Vec<Result<KeyReport, Failure>> = futures::future::join_all(asks).await;
        let mut rows = Vec::new();
        for (rank, (node, report)) in walk.iter().zip(reports).enumerate() {
            let owner = rank < self.n;
            match report {
                Ok(report) => {
                    if owner || report.local.is_some() {
                        rows.push(ReplicaBody {
                            node: node.clone(),
                            role: if owner { "owner" } else { "fallback" }.into(),
                            reachable: true,
                            siblings: report
                                .local
                                .as_ref()
                                .map(|v| ReplicaSibling::all(&v.siblings)),
                            clock: report.local.as_ref().map(|v| v.causal.clock.clone()),
                            hint_for: None,
                            error: None,
                        });
                    }
                    for (hint_for, view) in &report.hints {
                        rows.push(ReplicaBody {
                            node: node.clone(),
                            role: "hint".into(),
                            reachable: true,
                            siblings: Some(ReplicaSibling::all(&view.siblings)),
                            clock: Some(view.causal.clock.clone()),
                            hint_for: Some(hint_for.clone()),
                            error: None,
                        });
                    }
                }
                Err(failure) if owner => rows.push(ReplicaBody {
                    node: node.clone(),
                    role: "owner".into(),
                    reachable: false,
                    siblings: None,
                    clock: None,
                    hint_for: None,
                    error: Some(failure.to_string()),
                }),
                Err(_) => {}
            }
        }
        rows
    }
}

/// The share of a coordinate attempt's budget the coordinator may spend on
/// replication before it answers: the rest carries its answer back before
/// this gateway gives up on the attempt.
const FORWARD_SHARE: f64 = 0.8;

/// The replication half of a forwarded write, from the op's plan and the
/// addresses this gateway routes by (the write itself is filled in by the
/// caller).
fn forward_plan(
    snap: &Snapshot,
    forwarding: Option<Forwarding>,
    budget: Duration,
) -> ForwardRequest {
    let f = forwarding.unwrap_or(Forwarding {
        replicas: Vec::new(),
        spares: Vec::new(),
        needed: 1,
        owners: 1,
        failed: Vec::new(),
    });
    let target = |node: String, hint_for: Option<String>| ForwardTarget {
        address: snap.address(&node).unwrap_or_default().to_string(),
        node,
        hint_for,
    };
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    let room = MAX_FORWARD_TARGETS.saturating_sub(f.replicas.len());
    ForwardRequest {
        write: CoordinateRequest {
            key: Vec::new(),
            context: Context::empty(),
            content: Content::Tombstone,
            hint_for: None,
            supersede: false,
        },
        replicas: f
            .replicas
            .into_iter()
            .map(|t| target(t.node, t.hint_for))
            .collect(),
        spares: f
            .spares
            .into_iter()
            .take(room)
            .map(|s| target(s, None))
            .collect(),
        needed: n(f.needed.max(1)),
        owners: n(f.owners.max(f.needed).max(1)),
        failed: f.failed,
        budget_ms: u64::try_from(budget.mul_f64(FORWARD_SHARE).as_millis())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_FORWARD_BUDGET_MS),
    }
}

/// Maps a replica's refusal that is the client's fault to its HTTP error.
fn client_error(e: &RemoteError) -> Option<ApiError> {
    match e {
        RemoteError::TooLarge { what, len, max } if what == "key" => Some(ApiError::KeyTooLong {
            len: *len,
            max: *max,
        }),
        RemoteError::TooLarge { max, .. } => Some(ApiError::ValueTooLarge { max: *max }),
        RemoteError::BadRequest { message } => Some(ApiError::bad_request(message.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_errors_map_to_client_errors() {
        let e = client_error(&RemoteError::TooLarge {
            what: "key".into(),
            len: 9,
            max: 4,
        });
        assert_eq!(e.map(|e| e.code()), Some("key_too_long"));
        let e = client_error(&RemoteError::TooLarge {
            what: "value".into(),
            len: 9,
            max: 4,
        });
        assert_eq!(e.map(|e| e.code()), Some("value_too_large"));
        let e = client_error(&RemoteError::BadRequest {
            message: "empty".into(),
        });
        assert_eq!(e.map(|e| e.code()), Some("bad_request"));
        assert!(client_error(&RemoteError::ShuttingDown { id: "a".into() }).is_none());
    }
}
