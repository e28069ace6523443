//! Anti-entropy: replicas of a token range compare Merkle trees and swap the
//! keys where they differ, so that they converge after anything hinted
//! handoff does not cover (a node down past the hint TTL, a wiped disk, a
//! partition).
//!
//! One exchange is this node and one peer over every token range they both
//! replicate (adjacent ranges merged, so three nodes with N=3 compare the
//! whole ring at once). Per range the [`shoal_merkle::Diff`] state machine
//! asks the peer for hashes through [`Replica::merkle`](crate::rpc::Replica):
//! equal replicas stop after the first answer (the range hash). For the
//! differing segments it reports, both sides list `(key, digest)` pairs
//! ([`Replica::scan`](crate::rpc::Replica)), and every key whose digests
//! differ is synced both ways with `vclock` sync: the peer's state is merged
//! here, and the merge is sent back when the peer lacks it. Hints are not in
//! the trees; hinted handoff delivers them.
//!
//! A token bucket (`anti_entropy.max_keys_per_sec`, `max_bytes_per_sec`)
//! paces the traffic so that repair never starves client requests, and a
//! peer whose exchange failed is skipped for a growing number of rounds.
//! Periodic rounds are started only by the member with the smaller id of
//! each pair (the sync is symmetric, so one side suffices);
//! [`Replica::repair`](crate::rpc::Replica) runs every pair of its node now.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use shoal_merkle::{Diff, DiffOptions, DiffOutcome, Step, TokenRange};
use shoal_vclock::SiblingSet;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::env::Env;
use crate::membership::SharedMembership;
use crate::pool::Pool;
use crate::rpc::{ExchangeReport, RemoteError, RepairReport};
use crate::scan::{PagedScan, StalledCursor};
use crate::store::{digest_of, Store};

/// Deadline of one RPC of an exchange (a Merkle step, a listing page, a
/// `read_many` or a `merge_batch`). Each carries at most half a frame and
/// touches at most [`PAGE_KEYS`] keys on the peer (a listing page or a
/// durable batch write), which takes well under a second on a healthy
/// node; 10 s leaves room for a peer busy with client traffic and a paced
/// compaction while still bounding how long one stuck peer holds the
/// anti-entropy lock (a failed exchange only skips that peer for a while).
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Diff round trips per range: a 2^24-leaf tree of fan-out 16 needs 7 levels,
/// and a level takes one message per 4,096 hashes, so this is never reached
/// by an honest peer.
const MAX_ROUNDS: u32 = 1_024;
/// Keys per listing page and per sync batch.
const PAGE_KEYS: u32 = 2_000;
/// Differing segments listed per scan request.
const SEGMENTS_PER_SCAN: usize = 512;
/// Rounds a failing peer is skipped for, at most (doubling from 1).
const MAX_SKIP_ROUNDS: u32 = 16;

/// Paces anti-entropy traffic: a virtual clock that each batch of keys and
/// bytes pushes forward by its cost; a caller ahead of it sleeps. Up to one
/// second of unused budget may accumulate (a burst).
#[derive(Debug)]
pub(crate) struct RateLimiter {
    keys_per_sec: f64,
    bytes_per_sec: f64,
    next: tokio::sync::Mutex<Option<Instant>>,
}

impl RateLimiter {
    /// A limiter for the given rates (both at least 1).
    pub(crate) fn new(keys_per_sec: u64, bytes_per_sec: u64) -> Self {
        Self {
            keys_per_sec: keys_per_sec.max(1) as f64,
            bytes_per_sec: bytes_per_sec.max(1) as f64,
            next: tokio::sync::Mutex::new(None),
        }
    }

    /// Waits until `keys` and `bytes` fit the budget.
    pub(crate) async fn acquire(&self, keys: u64, bytes: u64) {
        let cost = Duration::from_secs_f64(
            (keys as f64 / self.keys_per_sec).max(bytes as f64 / self.bytes_per_sec),
        );
        let wake = {
            let mut next = self.next.lock().await;
            let now = Instant::now();
            let floor = now.checked_sub(Duration::from_secs(1)).unwrap_or(now);
            let start = next.map_or(floor, |n| n.max(floor));
            let until = start + cost;
            *next = Some(until);
            until
        };
        if wake > Instant::now() {
            tokio::time::sleep_until(wake).await;
        }
    }
}

/// Payload size of an RPC argument or answer, as bincode (tarpc's encoding)
/// writes it.
pub fn wire_size<T: Serialize>(value: &T) -> u64 {
    bincode::serialized_size(value).unwrap_or(0)
}

/// Anti-entropy for one node: the handles its exchanges use, the pacing
/// shared by all of them, and the lock that keeps two passes apart.
pub(crate) struct AntiEntropy {
    id: String,
    store: Arc<Store>,
    env: Env,
    membership: SharedMembership,
    pool: Arc<Pool>,
    /// Replicas per key (`replication.n`): which peers share which ranges.
    n: usize,
    /// Between periodic rounds (`anti_entropy.interval_ms`).
    interval: Duration,
    /// Between tombstone purges.
    purge_every: Duration,
    /// Half a frame: what one page of pushed states may carry.
    budget: usize,
    /// One anti-entropy pass at a time (periodic or the repair RPC), so that
    /// two never sync the same keys against each other.
    running: tokio::sync::Mutex<()>,
    /// Paces all anti-entropy traffic of this node.
    limiter: RateLimiter,
}

impl AntiEntropy {
    pub(crate) fn new(
        config: &crate::Config,
        store: Arc<Store>,
        env: Env,
        membership: SharedMembership,
        pool: Arc<Pool>,
    ) -> Self {
        Self {
            id: config.member.id.clone(),
            store,
            env,
            membership,
            pool,
            n: config.replication.n,
            interval: Duration::from_millis(config.anti_entropy.interval_ms),
            // A tombstone lives `grace` at least, so purging a few times per
            // grace period is plenty; bounded so that short test graces
            // still purge. No grace (the default): the safety-net purge never
            // runs; the tombstone GC (`crate::tombstones`) decides.
            purge_every: match config.tombstones.grace_secs {
                0 => Duration::MAX,
                grace => Duration::from_millis(grace.saturating_mul(250).clamp(1_000, 3_600_000)),
            },
            budget: config.max_frame_bytes() / 2,
            running: tokio::sync::Mutex::new(()),
            limiter: RateLimiter::new(
                config.anti_entropy.max_keys_per_sec,
                config.anti_entropy.max_bytes_per_sec,
            ),
        }
    }

    /// The peers this node shares ranges with under the current ring
    /// (joining members excluded: they are not replicas yet), each with the
    /// shared ranges merged into maximal runs, and the peer's address. Only
    /// live peers.
    fn plan(&self, initiator_only: bool) -> Vec<(String, String, Vec<TokenRange>)> {
        let (members, alive): (Vec<shoal_gossip::MemberInfo>, Vec<String>) = {
            let m = crate::membership::lock(&self.membership);
            let members = m.ring_members();
            let alive = members
                .iter()
                .filter(|i| i.status.is_up())
                .map(|i| i.id.as_str().to_string())
                .collect();
            (members, alive)
        };
        let view = crate::membership::ring_view(&members);
        let shared = view.shared_ranges(&self.id, self.n);
        shared
            .into_iter()
            .filter(|(peer, _)| alive.contains(peer))
            .filter(|(peer, _)| !initiator_only || self.id.as_str() < peer.as_str())
            .filter_map(|(peer, runs)| {
                let address = members
                    .iter()
                    .find(|m| m.id.as_str() == peer)
                    .map(|m| m.address.clone())?;
                Some((peer, address, runs))
            })
            .collect()
    }

    /// Runs anti-entropy every `anti_entropy.interval_ms` until `shutdown`,
    /// and purges expired tombstones now and then (they leave the tree with
    /// them).
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut last_purge = Instant::now();
        // peer -> (rounds left to skip, current skip)
        let mut skip: HashMap<String, (u32, u32)> = HashMap::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(self.interval) => {}
            }
            if last_purge.elapsed() >= self.purge_every {
                last_purge = Instant::now();
                let store = self.store.clone();
                let now = self.env.clock.now_millis();
                match self
                    .env
                    .spawn_blocking(move || store.purge_tombstones(now, usize::MAX))
                    .await
                {
                    Ok(Ok(n)) if n > 0 => tracing::info!(purged = n, "expired tombstones purged"),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "tombstone purge failed"),
                    Err(e) => tracing::warn!(error = %e, "tombstone purge task failed"),
                }
            }
            let _running = self.running.lock().await;
            for (peer, address, ranges) in self.plan(true) {
                if *shutdown.borrow() {
                    return;
                }
                if let Some((left, _)) = skip.get_mut(&peer) {
                    if *left > 0 {
                        *left -= 1;
                        continue;
                    }
                }
                let report = self.exchange(&peer, &address, &ranges).await;
                log(&report, self.store.counters());
                if report.error.is_some() {
                    let next = skip
                        .get(&peer)
                        .map_or(1, |(_, s)| (s * 2).min(MAX_SKIP_ROUNDS));
                    skip.insert(peer, (next, next));
                } else {
                    skip.remove(&peer);
                }
            }
        }
    }

    /// Anti-entropy with every live peer now, both directions (the repair
    /// RPC).
    pub(crate) async fn repair(&self) -> RepairReport {
        let started = Instant::now();
        let _running = self.running.lock().await;
        let mut exchanges = Vec::new();
        let plan = self.plan(false);
        let counters = self.store.counters();
        let _progress =
            counters.progress_start("repair", plan.iter().map(|(_, _, r)| r.len() as u64).sum());
        for (peer, address, ranges) in plan {
            let report = self.exchange(&peer, &address, &ranges).await;
            log(&report, counters);
            for _ in 1..ranges.len() {
                counters.progress_range(0, 0);
            }
            counters.progress_range(
                report.keys_pulled + report.keys_pushed,
                report.bytes_sent + report.bytes_received,
            );
            exchanges.push(report);
        }
        RepairReport {
            node: self.id.clone(),
            exchanges,
            elapsed_ms: started.elapsed().as_millis() as u64,
        }
    }

    /// Compares `ranges` with `peer` and syncs what differs.
    async fn exchange(&self, peer: &str, address: &str, ranges: &[TokenRange]) -> ExchangeReport {
        let started = Instant::now();
        let mut report = ExchangeReport {
            peer: peer.to_string(),
            ranges: ranges.len() as u64,
            ..ExchangeReport::default()
        };
        for range in ranges {
            if let Err(e) = self.exchange_range(address, *range, &mut report).await {
                report.error = Some(e.to_string());
                break;
            }
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        report
    }

    async fn exchange_range(
        &self,
        address: &str,
        range: TokenRange,
        report: &mut ExchangeReport,
    ) -> Result<(), ExchangeError> {
        let store = &self.store;
        let (shape, start) = store.with_tree(|t| {
            let shape = t.shape();
            (shape, Diff::new(t, range, DiffOptions::default()))
        });
        let (mut diff, mut request) = start?;
        report.leaves_compared += u64::from(shape.range_len(shape.leaf_range(range)?));
        let mut rounds = 0;
        let done = loop {
            rounds += 1;
            if rounds > MAX_ROUNDS {
                return Err(ExchangeError::TooManyRounds);
            }
            let sent = wire_size(&request);
            self.limiter.acquire(0, sent).await;
            report.bytes_sent += sent;
            let response = self
                .pool
                .call(address, CALL_TIMEOUT, |c, ctx| async move {
                    c.merkle(ctx, request).await
                })
                .await??;
            let received = wire_size(&response);
            report.bytes_received += received;
            report.bytes_merkle += sent + received;
            match store.with_tree(|t| diff.handle(t, response))? {
                Step::Send(next) => request = next,
                Step::Done(done) => break done,
            }
        };
        report.rounds += u64::from(done.rounds);
        report.hashes += done.hashes_received;
        let segments: Vec<TokenRange> = match done.outcome {
            DiffOutcome::Equal => return Ok(()),
            DiffOutcome::Segments(segments) => {
                for s in &segments {
                    report.leaves_differing += u64::from(shape.range_len(*s));
                }
                segments.into_iter().map(|s| shape.token_range(s)).collect()
            }
            DiffOutcome::FullListing => {
                report.full_listings += 1;
                report.leaves_differing += u64::from(shape.range_len(shape.leaf_range(range)?));
                vec![range]
            }
        };
        for chunk in segments.chunks(SEGMENTS_PER_SCAN) {
            self.sync_segments(address, chunk, report).await?;
        }
        Ok(())
    }

    /// Lists `(key, digest)` of `segments` on both sides and syncs every key
    /// whose digests differ.
    async fn sync_segments(
        &self,
        address: &str,
        segments: &[TokenRange],
        report: &mut ExchangeReport,
    ) -> Result<(), ExchangeError> {
        let local = self.list_local(segments).await?;
        let remote = self.list_remote(address, segments, report).await?;
        report.keys_listed += (local.len() + remote.len()) as u64;
        let differing: Vec<Vec<u8>> = local
            .keys()
            .chain(remote.keys())
            .filter(|k| local.get(*k) != remote.get(*k))
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        for batch in differing.chunks(PAGE_KEYS as usize) {
            self.sync_keys(address, batch, &remote, report).await?;
        }
        Ok(())
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, crate::store::StoreError> + Send + 'static,
    ) -> Result<T, ExchangeError> {
        let store = self.store.clone();
        self.env
            .spawn_blocking(move || f(&store))
            .await
            .map_err(|e| ExchangeError::Task(e.to_string()))?
            .map_err(ExchangeError::from)
    }

    async fn list_local(
        &self,
        segments: &[TokenRange],
    ) -> Result<BTreeMap<Vec<u8>, [u8; 32]>, ExchangeError> {
        let mut out = BTreeMap::new();
        let mut scan = PagedScan::new(segments, None, PAGE_KEYS, false);
        while let Some(request) = scan.next_request() {
            let page = self
                .blocking(move |s| {
                    s.scan_ranges(
                        &request.ranges,
                        request.cursor.as_ref(),
                        request.max_keys as usize,
                        usize::MAX,
                        request.values,
                    )
                })
                .await?;
            scan.advance(&page)?;
            out.extend(page.entries.into_iter().map(|e| (e.key, e.digest)));
        }
        Ok(out)
    }

    async fn list_remote(
        &self,
        address: &str,
        segments: &[TokenRange],
        report: &mut ExchangeReport,
    ) -> Result<BTreeMap<Vec<u8>, [u8; 32]>, ExchangeError> {
        let mut out = BTreeMap::new();
        let mut scan = PagedScan::new(segments, None, PAGE_KEYS, false);
        while let Some(request) = scan.next_request() {
            let sent = wire_size(&request);
            report.bytes_sent += sent;
            let page = self
                .pool
                .call(address, CALL_TIMEOUT, |c, ctx| async move {
                    c.scan(ctx, request).await
                })
                .await??;
            let received = wire_size(&page);
            report.bytes_received += received;
            report.bytes_listing += sent + received;
            self.limiter.acquire(0, sent + received).await;
            scan.advance(&page)?;
            out.extend(page.entries.into_iter().map(|e| (e.key, e.digest)));
        }
        Ok(out)
    }

    /// Pulls the peer's state of `keys` (those it holds), merges it here,
    /// and pushes the merged state to the peer wherever the peer's digest
    /// differs.
    async fn sync_keys(
        &self,
        address: &str,
        keys: &[Vec<u8>],
        remote: &BTreeMap<Vec<u8>, [u8; 32]>,
        report: &mut ExchangeReport,
    ) -> Result<(), ExchangeError> {
        let wanted: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| remote.contains_key(*k))
            .cloned()
            .collect();
        // Ordered, so that a deterministic simulation sees the same batches
        // on every run.
        let mut merged: BTreeMap<Vec<u8>, SiblingSet> = BTreeMap::new();
        // The peer may answer a prefix (its frame budget); ask for the rest.
        let mut rest: &[Vec<u8>] = &wanted;
        while !rest.is_empty() {
            let request = rest.to_vec();
            let sent = wire_size(&request);
            report.bytes_sent += sent;
            let states = self
                .pool
                .call(address, CALL_TIMEOUT, |c, ctx| async move {
                    c.read_many(ctx, request).await
                })
                .await??;
            if states.is_empty() || states.len() > rest.len() {
                return Err(ExchangeError::Remote(RemoteError::BadRequest {
                    message: format!(
                        "read_many answered {} states for {} keys",
                        states.len(),
                        rest.len()
                    ),
                }));
            }
            let received = wire_size(&states);
            report.bytes_received += received;
            self.limiter
                .acquire(states.len() as u64, sent + received)
                .await;
            let (asked, later) = rest.split_at(states.len());
            rest = later;
            let items: Vec<(Vec<u8>, SiblingSet)> = asked
                .iter()
                .cloned()
                .zip(states)
                .filter_map(|(k, s)| Some((k, s?)))
                .collect();
            let (states, changed) = self.merge_here(items, report).await?;
            report.keys_pulled += changed as u64;
            merged.extend(states);
        }
        let missing: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| !merged.contains_key(*k))
            .cloned()
            .collect();
        if !missing.is_empty() {
            let asked = missing.clone();
            let states = self.blocking(move |s| s.read_many(&asked)).await?;
            for (k, s) in missing.into_iter().zip(states) {
                if let Some(s) = s {
                    merged.insert(k, s);
                }
            }
        }
        let budget = self.budget;
        let mut push = Vec::new();
        for (key, state) in merged {
            let encoded = state.encode();
            if remote.get(&key) == Some(&digest_of(&encoded)) {
                continue;
            }
            // A state no frame can carry would close the connection and fail
            // every later range with this peer, round after round.
            if key.len() + encoded.len() > budget {
                skip(
                    report,
                    &key,
                    format!("{} bytes of state exceed a frame", encoded.len()),
                );
                continue;
            }
            push.push((key, state));
        }
        for batch in crate::rpc::batches_by_size(push, budget) {
            let sent = wire_size(&batch);
            self.limiter.acquire(batch.len() as u64, sent).await;
            report.bytes_sent += sent;
            let retry = batch.clone();
            match self
                .pool
                .call(address, CALL_TIMEOUT, |c, ctx| async move {
                    c.merge_batch(ctx, batch).await
                })
                .await?
            {
                Ok(changed) => report.keys_pushed += changed,
                // The peer refused the batch (a key over its limits, a state
                // it cannot take): send the keys one by one and skip only
                // those it refuses, so one key cannot stall every later range.
                Err(refused) if retry.len() > 1 => {
                    tracing::debug!(peer = %address, error = %refused, "batch refused; pushing key by key");
                    for item in retry {
                        let key = item.0.clone();
                        match self
                            .pool
                            .call(address, CALL_TIMEOUT, |c, ctx| async move {
                                c.merge_batch(ctx, vec![item]).await
                            })
                            .await?
                        {
                            Ok(changed) => report.keys_pushed += changed,
                            Err(e) => skip(report, &key, format!("peer refused it: {e}")),
                        }
                    }
                }
                Err(e) => skip(report, &retry[0].0, format!("peer refused it: {e}")),
            }
        }
        Ok(())
    }

    /// Merges the peer's states here: in one batch, or, if the batch fails
    /// on a key (a corrupt local copy, a state that cannot be merged), key by
    /// key, skipping only the keys that fail. Engine failures (disk) still
    /// stop the exchange. Returns each merged key with its state, and how
    /// many changed.
    async fn merge_here(
        &self,
        items: Vec<(Vec<u8>, SiblingSet)>,
        report: &mut ExchangeReport,
    ) -> Result<(Vec<(Vec<u8>, SiblingSet)>, usize), ExchangeError> {
        let batch = items.clone();
        match self.blocking(move |s| s.merge_many(&batch)).await {
            Ok((states, changed)) => {
                let keys = items.into_iter().map(|(k, _)| k);
                return Ok((keys.zip(states).collect(), changed));
            }
            Err(ExchangeError::Store(crate::store::StoreError::Engine(e))) => {
                return Err(ExchangeError::Store(crate::store::StoreError::Engine(e)))
            }
            Err(e) if items.len() == 1 => {
                skip(report, &items[0].0, format!("cannot merge it here: {e}"));
                return Ok((Vec::new(), 0));
            }
            Err(_) => {}
        }
        let (mut out, mut changed_total) = (Vec::new(), 0);
        for item in items {
            let key = item.0.clone();
            let one = vec![item];
            match self.blocking(move |s| s.merge_many(&one)).await {
                Ok((mut states, changed)) => {
                    changed_total += changed;
                    if let Some(state) = states.pop() {
                        out.push((key, state));
                    }
                }
                Err(ExchangeError::Store(crate::store::StoreError::Engine(e))) => {
                    return Err(ExchangeError::Store(crate::store::StoreError::Engine(e)))
                }
                Err(e) => skip(report, &key, format!("cannot merge it here: {e}")),
            }
        }
        Ok((out, changed_total))
    }
}

fn log(r: &ExchangeReport, counters: &crate::observe::NodeCounters) {
    let bytes = r.bytes_sent + r.bytes_received;
    counters.exchange_done(r.error.is_some(), r.keys_pulled + r.keys_pushed, bytes);
    match &r.error {
        Some(error) => tracing::warn!(peer = %r.peer, ranges = r.ranges,
            leaves_compared = r.leaves_compared, keys_repaired = r.keys_pulled + r.keys_pushed,
            bytes_moved = bytes, %error, "anti-entropy exchange failed"),
        None => tracing::info!(peer = %r.peer, ranges = r.ranges,
            leaves_compared = r.leaves_compared, leaves_differing = r.leaves_differing,
            keys_pulled = r.keys_pulled, keys_pushed = r.keys_pushed, keys_skipped = r.keys_skipped,
            keys_repaired = r.keys_pulled + r.keys_pushed, bytes_moved = bytes,
            rounds = r.rounds, elapsed_ms = r.elapsed_ms, "anti-entropy exchange"),
    }
}

/// Why an exchange stopped.
#[derive(Debug, thiserror::Error)]
enum ExchangeError {
    #[error("{0}")]
    Call(#[from] crate::pool::CallError),
    #[error("peer refused: {0}")]
    Remote(#[from] RemoteError),
    #[error("merkle diff: {0}")]
    Merkle(#[from] shoal_merkle::MerkleError),
    #[error("local store: {0}")]
    Store(#[from] crate::store::StoreError),
    #[error("local store task failed: {0}")]
    Task(String),
    #[error("diff did not finish in {MAX_ROUNDS} rounds")]
    TooManyRounds,
    #[error("listing: {0}")]
    Stalled(#[from] StalledCursor),
}

/// Counts and logs a key left out of this exchange; the next exchange tries
/// it again.
fn skip(report: &mut ExchangeReport, key: &[u8], why: String) {
    report.keys_skipped += 1;
    tracing::warn!(peer = %report.peer, key = %crate::keys::display(key), %why,
        "anti-entropy skipped a key");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rate_limiter_paces_after_a_one_second_burst() {
        let limiter = RateLimiter::new(1_000, 1 << 30);
        let t0 = Instant::now();
        // One second of budget accumulates: the first 1,000 keys go at once.
        limiter.acquire(1_000, 0).await;
        assert!(t0.elapsed() < Duration::from_millis(100));
        // The next 200 keys take 200 ms.
        limiter.acquire(100, 0).await;
        limiter.acquire(100, 0).await;
        let waited = t0.elapsed();
        assert!(waited >= Duration::from_millis(190), "{waited:?}");
        // Bytes pace too.
        let bytes = RateLimiter::new(1 << 30, 10_000);
        let t1 = Instant::now();
        bytes.acquire(0, 12_000).await;
        assert!(t1.elapsed() >= Duration::from_millis(190));
    }
}
