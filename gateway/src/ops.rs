//! The quorum operations behind the HTTP handlers: writes (coordinate, then
//! replicate), reads (fan out, reconcile, read-repair), and the read-only
//! views (preference list, per-replica inspection).
//!
//! Planning, counting and merging are `shoal_coordinator`'s; this module owns
//! the RPCs, deadlines and background tasks.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use shoal_coordinator::{plan, reconcile, Plan, Progress, QuorumFailure, Reconciled, Tally};
use shoal_node::pool::Pool;
use shoal_node::rpc::{CoordinateRequest, KeyReport, RemoteError, ReplicaClient, ReplicateRequest};
use shoal_ring::key_position;
use shoal_vclock::{Content, Context, SiblingSet};
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::cluster::{Cluster, Snapshot};
use crate::error::{ApiError, Operation};
use crate::model::{PreflistBody, ReplicaBody, ReplicaSibling};

/// How many targets a write tries as its coordinator before giving up: each
/// attempt that times out may still have stored a version, so retrying
/// without bound could multiply siblings.
pub const MAX_COORDINATOR_ATTEMPTS: usize = 3;

/// Most nodes `/v1/debug/replicas` asks (owners first, then the walk, where
/// hints live).
const MAX_INSPECTED: usize = 16;

/// Why one RPC to one replica did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Failure {
    /// No answer before the request's deadline.
    #[error("no answer in time")]
    Timeout,
    /// Connect or transport failure.
    #[error("unreachable: {0}")]
    Transport(String),
    /// The replica answered with an error.
    #[error("{0}")]
    Remote(RemoteError),
    /// The member is not in the current membership.
    #[error("address unknown")]
    Unknown,
}

/// A replica to send a write to, and the owner it stands in for.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Job {
    node: String,
    hint_for: Option<String>,
}

impl Job {
    /// The quorum slot this job fills: the owner it is for.
    fn slot(&self) -> String {
        self.hint_for.clone().unwrap_or_else(|| self.node.clone())
    }
}

/// The quorum engine of one gateway.
#[derive(Debug)]
pub struct Dispatcher {
    cluster: Arc<Cluster>,
    pool: Arc<Pool>,
    n: usize,
    /// Budget of background work (read repair) started after an answer.
    background_timeout: Duration,
}

impl Dispatcher {
    /// An engine routing by `cluster`, calling through `pool`, with `n`
    /// replicas per key.
    pub fn new(
        cluster: Arc<Cluster>,
        pool: Arc<Pool>,
        n: usize,
        background_timeout: Duration,
    ) -> Self {
        Self {
            cluster,
            pool,
            n,
            background_timeout,
        }
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
    async fn call<T, F, Fut>(
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
                } else {
                    Err(Failure::Transport(e.to_string()))
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

    /// Moves the fastest owner to the front of `jobs` when the first one has
    /// become much slower than it (twice its smoothed latency plus 2 ms).
    ///
    /// The coordinator is on every write's critical path (the others can only
    /// be sent its version), so one slow replica would otherwise set the
    /// latency of every key it is the first owner of. Any owner may
    /// coordinate: the dots it mints are its own. The margin keeps the ring
    /// order, and with it a stable coordinator per key, while replicas are
    /// about equally fast.
    fn prefer_fast_coordinator(&self, jobs: &mut VecDeque<Job>) {
        let owners = jobs.iter().take_while(|j| j.hint_for.is_none()).count();
        if owners < 2 {
            return;
        }
        let latency = |j: &Job| self.cluster.latency_us(&j.node);
        let first = latency(&jobs[0]);
        let (best, best_us) = (1..owners)
            .map(|i| (i, latency(&jobs[i])))
            .fold((0, first), |a, b| if b.1 < a.1 { b } else { a });
        if best != 0 && first > 2.0 * best_us + 2_000.0 {
            if let Some(job) = jobs.remove(best) {
                jobs.push_front(job);
            }
        }
    }

    /// The plan for `key` and the live non-targets after it on the ring
    /// (spares that replace targets failing mid-request).
    fn plan(&self, snap: &Snapshot, key: &[u8]) -> Option<(Plan, VecDeque<String>)> {
        self.plan_with(snap, key, &[])
    }

    /// The plan of a write, and how many acknowledgements it needs beyond
    /// `w`. While members join or leave, the key's replicas under the future
    /// ring that are not replicas under the current one (`pending`) are
    /// added after the current owners, and the write needs `w + pending`
    /// acknowledgements: with both replica sets of size N, that many answers
    /// among their union include at least `w` from each set, so a read on
    /// either ring (before or after the change completes) meets the write.
    fn write_plan(&self, snap: &Snapshot, key: &[u8]) -> Option<(Plan, VecDeque<String>, usize)> {
        snap.view.current()?;
        let (_, pending) = snap.view.write_replicas(key, self.n);
        let (plan, spares) = self.plan_with(snap, key, &pending)?;
        Some((plan, spares, pending.len()))
    }

    fn plan_with<'s>(
        &self,
        snap: &'s Snapshot,
        key: &[u8],
        pending: &[&'s str],
    ) -> Option<(Plan, VecDeque<String>)> {
        let ring = snap.view.current()?;
        let position = key_position(key);
        let mut walk: Vec<&str> = ring.walk(position).collect();
        if !pending.is_empty() {
            // Current owners, then the pending ones, then the fallbacks.
            let owners: Vec<&str> = walk.iter().copied().take(self.n).collect();
            let rest: Vec<&str> = walk
                .iter()
                .copied()
                .skip(self.n)
                .filter(|m| !pending.contains(m))
                .collect();
            walk = owners
                .into_iter()
                .chain(pending.iter().copied())
                .chain(rest)
                .collect();
        }
        let p = plan(
            walk.iter().copied(),
            self.n + pending.len(),
            |m| snap.is_live(m),
            true,
        );
        let spares = walk
            .iter()
            .filter(|m| {
                snap.is_live(m)
                    && !p.owners.iter().any(|o| o == *m)
                    && !p.targets.iter().any(|t| t.node == **m)
            })
            .map(|m| m.to_string())
            .collect();
        Some((p, spares))
    }

    /// A client write: the first target coordinates (mints the version), the
    /// others receive the result; answers once `w` replicas stored it.
    /// Replication to the rest goes on in the background.
    pub async fn write(
        self: &Arc<Self>,
        key: Vec<u8>,
        context: Context,
        content: Content,
        w: usize,
        deadline: Instant,
    ) -> Result<SiblingSet, ApiError> {
        let snap = self.cluster.snapshot();
        let Some((plan, mut spares, pending)) = self.write_plan(&snap, &key) else {
            return Err(no_nodes(Operation::Write, w));
        };
        let mut tally: Tally<()> = Tally::new(w + pending, plan.owners.len());
        for owner in &plan.uncovered {
            tally.fail(owner.clone(), "down, and no live node to stand in");
        }
        let mut jobs: VecDeque<Job> = plan
            .targets
            .iter()
            .map(|t| Job {
                node: t.node.clone(),
                hint_for: t.hint_for.clone(),
            })
            .collect();

        self.prefer_fast_coordinator(&mut jobs);
        let mut coordinated = None;
        for _ in 0..MAX_COORDINATOR_ATTEMPTS {
            let Some(job) = jobs.pop_front() else { break };
            let request = CoordinateRequest {
                key: key.clone(),
                context: context.clone(),
                content: content.clone(),
                hint_for: job.hint_for.clone(),
            };
            // A coordinator that hangs must leave time for the next one (and
            // for replication), so only the last candidate gets the whole
            // remaining budget.
            let now = Instant::now();
            let attempt_deadline = if jobs.is_empty() {
                deadline
            } else {
                now + deadline.saturating_duration_since(now) / 2
            };
            let result = self
                .call(&snap, &job.node, attempt_deadline, |c, ctx| async move {
                    c.coordinate(ctx, request).await
                })
                .await;
            match result {
                Ok(set) => {
                    tally.succeed(job.slot(), ());
                    coordinated = Some(set);
                    break;
                }
                Err(failure) => {
                    if let Failure::Remote(e) = &failure {
                        if let Some(refused) = client_error(e) {
                            return Err(refused);
                        }
                    }
                    tracing::debug!(node = %job.node, %failure, "coordinator failed; trying the next target");
                    match spares.pop_front() {
                        Some(spare) => jobs.push_back(Job {
                            node: spare,
                            hint_for: Some(job.slot()),
                        }),
                        None => {
                            tally.fail(job.slot(), failure.to_string());
                        }
                    }
                    if Instant::now() >= deadline {
                        break;
                    }
                }
            }
        }
        let Some(set) = coordinated else {
            return Err(ApiError::QuorumFailed {
                operation: Operation::Write,
                failure: tally.failure(),
            });
        };
        let (done_tx, done_rx) = oneshot::channel();
        let engine = self.clone();
        let replicated = set.clone();
        tokio::spawn(async move {
            engine
                .replicate_all(
                    snap, key, replicated, jobs, spares, tally, deadline, done_tx,
                )
                .await;
        });
        match done_rx.await {
            Ok(Progress::Reached) => Ok(set),
            Ok(Progress::Failed(failure)) => Err(ApiError::QuorumFailed {
                operation: Operation::Write,
                failure,
            }),
            Ok(Progress::Pending) | Err(_) => Err(ApiError::Internal {
                message: "the replication task ended without a verdict".into(),
            }),
        }
    }

    /// Sends `set` to every job in parallel, replacing failed targets by
    /// spares (with a hint for the slot's owner); reports the quorum verdict
    /// on `done` as soon as it is known, then finishes the rest.
    #[allow(clippy::too_many_arguments)]
    async fn replicate_all(
        self: Arc<Self>,
        snap: Snapshot,
        key: Vec<u8>,
        set: SiblingSet,
        jobs: VecDeque<Job>,
        mut spares: VecDeque<String>,
        mut tally: Tally<()>,
        deadline: Instant,
        done: oneshot::Sender<Progress>,
    ) {
        let mut done = Some(done);
        let report = |tally: &Tally<()>, done: &mut Option<oneshot::Sender<Progress>>| {
            let progress = tally.progress();
            if progress != Progress::Pending {
                if let Some(tx) = done.take() {
                    let _ = tx.send(progress);
                }
            }
        };
        report(&tally, &mut done);
        let send = |job: Job| {
            let request = ReplicateRequest {
                key: key.clone(),
                siblings: set.clone(),
                hint_for: job.hint_for.clone(),
            };
            let engine = &self;
            let snap = &snap;
            async move {
                let result = engine
                    .call(snap, &job.node, deadline, |c, ctx| async move {
                        c.replicate(ctx, request).await
                    })
                    .await;
                (job, result)
            }
        };
        let mut in_flight: FuturesUnordered<_> = jobs.into_iter().map(send).collect();
        let expiry = tokio::time::sleep_until(deadline);
        tokio::pin!(expiry);
        loop {
            let next = tokio::select! {
                biased;
                next = in_flight.next() => next,
                _ = &mut expiry => break,
            };
            let Some((job, result)) = next else { break };
            match result {
                Ok(()) => {
                    tally.succeed(job.slot(), ());
                }
                Err(failure) => {
                    tracing::debug!(node = %job.node, %failure, "replication failed");
                    match spares.pop_front() {
                        Some(spare) => in_flight.push(send(Job {
                            node: spare,
                            hint_for: Some(job.slot()),
                        })),
                        None => {
                            tally.fail(job.slot(), failure.to_string());
                        }
                    }
                }
            }
            report(&tally, &mut done);
        }
        if let Some(tx) = done.take() {
            let _ = tx.send(Progress::Failed(tally.failure()));
        }
    }

    /// A client read: asks every target, answers with the reconciliation of
    /// the first `r` answers, and read-repairs stale replicas in the
    /// background once the rest answered (or the deadline passed).
    pub async fn read(
        self: &Arc<Self>,
        key: Vec<u8>,
        r: usize,
        deadline: Instant,
    ) -> Result<Reconciled, ApiError> {
        let snap = self.cluster.snapshot();
        let Some((plan, _)) = self.plan(&snap, &key) else {
            return Err(no_nodes(Operation::Read, r));
        };
        let mut tally: Tally<Option<SiblingSet>> = Tally::new(r, plan.owners.len());
        for owner in &plan.uncovered {
            tally.fail(owner.clone(), "down, and no live node to stand in");
        }
        let (done_tx, done_rx) = oneshot::channel();
        let engine = self.clone();
        tokio::spawn(async move {
            engine
                .read_all(snap, key, plan, tally, deadline, done_tx)
                .await;
        });
        match done_rx.await {
            Ok(Ok(answers)) => Ok(reconcile(&answers)),
            Ok(Err(failure)) => Err(ApiError::QuorumFailed {
                operation: Operation::Read,
                failure,
            }),
            Err(_) => Err(ApiError::Internal {
                message: "the read task ended without a verdict".into(),
            }),
        }
    }

    async fn read_all(
        self: Arc<Self>,
        snap: Snapshot,
        key: Vec<u8>,
        plan: Plan,
        mut tally: Tally<Option<SiblingSet>>,
        deadline: Instant,
        done: oneshot::Sender<Result<BTreeMap<String, Option<SiblingSet>>, QuorumFailure>>,
    ) {
        let mut done = Some(done);
        let report = |tally: &Tally<Option<SiblingSet>>, done: &mut Option<oneshot::Sender<_>>| {
            let verdict = match tally.progress() {
                Progress::Pending => return,
                Progress::Reached => Ok(tally.answers().clone()),
                Progress::Failed(f) => Err(f),
            };
            if let Some(tx) = done.take() {
                let _ = tx.send(verdict);
            }
        };
        report(&tally, &mut done);
        let mut in_flight: FuturesUnordered<_> = plan
            .targets
            .iter()
            .map(|t| {
                let (snap, key, node) = (&snap, key.clone(), t.node.clone());
                let engine = &self;
                async move {
                    let result = engine
                        .call(snap, &node, deadline, |c, ctx| async move {
                            c.read(ctx, key).await
                        })
                        .await;
                    (node, result)
                }
            })
            .collect();
        let expiry = tokio::time::sleep_until(deadline);
        tokio::pin!(expiry);
        loop {
            let next = tokio::select! {
                biased;
                next = in_flight.next() => next,
                _ = &mut expiry => break,
            };
            let Some((node, result)) = next else { break };
            match result {
                Ok(answer) => {
                    tally.succeed(node, answer);
                }
                Err(failure) => {
                    tracing::debug!(%node, %failure, "read failed");
                    tally.fail(node, failure.to_string());
                }
            }
            report(&tally, &mut done);
        }
        drop(in_flight);
        if let Some(tx) = done.take() {
            let _ = tx.send(Err(tally.failure()));
        }
        // Read repair: everything that answered, against the merge of all.
        let answers = tally.into_answers();
        let reconciled = reconcile(&answers);
        let Some(merged) = reconciled.merged else {
            return;
        };
        let repair_deadline = Instant::now() + self.background_timeout;
        let repairs = reconciled.stale.into_iter().map(|node| {
            let hint_for = plan
                .targets
                .iter()
                .find(|t| t.node == node)
                .and_then(|t| t.hint_for.clone());
            let request = ReplicateRequest {
                key: key.clone(),
                siblings: merged.clone(),
                hint_for,
            };
            let (engine, snap) = (&self, &snap);
            async move {
                let result = engine
                    .call(snap, &node, repair_deadline, |c, ctx| async move {
                        c.replicate(ctx, request).await
                    })
                    .await;
                match result {
                    Ok(()) => tracing::debug!(%node, "read repair applied"),
                    Err(failure) => tracing::debug!(%node, %failure, "read repair failed"),
                }
            }
        });
        futures::future::join_all(repairs).await;
    }

    /// The key's token, owners and the fallbacks in use now.
    pub fn preflist(&self, key: &[u8]) -> PreflistBody {
        let snap = self.cluster.snapshot();
        let (owners, fallbacks, targets) = match self.plan(&snap, key) {
            Some((p, _)) => (
                p.owners.clone(),
                p.fallbacks().map(|t| t.node.clone()).collect(),
                p.targets.iter().map(|t| t.node.clone()).collect(),
            ),
            None => (Vec::new(), Vec::new(), Vec::new()),
        };
        PreflistBody {
            key: String::from_utf8_lossy(key).into_owned(),
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

/// The quorum failure when no storage node is known at all.
fn no_nodes(operation: Operation, needed: usize) -> ApiError {
    ApiError::QuorumFailed {
        operation,
        failure: QuorumFailure {
            succeeded: 0,
            needed,
            failed: 0,
            unknown: 0,
            total: 0,
        },
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
        let j = Job {
            node: "d".into(),
            hint_for: Some("b".into()),
        };
        assert_eq!(j.slot(), "b");
    }
}
