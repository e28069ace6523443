//! Range handover on membership changes: a joining node pulls the ranges it
//! gains from their current replicas, and a decommissioned node pushes the
//! ranges it loses to their new owners.
//!
//! Both follow the same sequence, which keeps every acknowledged write
//! readable (see [`shoal_ring::view`]):
//!
//! 1. announce the change in gossip (the joining flag in the weight, or the
//!    `leaving` lifecycle): from then on gateways send each write to the
//!    replicas of the current ring *and* of the future ring, with W
//!    acknowledgements needed in each, while reads stay on the current ring;
//! 2. wait a settle time (five gossip rounds plus the request timeout) so
//!    that every gateway has seen the announcement and every write planned
//!    before it has finished;
//! 3. stream the ranges whose replica set changes ([`shoal_ring::diff`]) in
//!    ordered, batched range scans; a write that lands behind the scan's
//!    cursor reached the new replicas through step 1;
//! 4. flip: clear the joining flag (reads move to the new ring, which now
//!    holds everything) or announce `left` and stop.
//!
//! A join records its per-range cursor in the store's metadata after every
//! batch, so a crash of the joining node resumes where it stopped, and a
//! crash of the source makes it continue from another replica at the same
//! cursor (the cursor is a position in the shared key layout).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_ring::{Member, RangeChange, RingConfig};
use shoal_vclock::SiblingSet;
use tokio::sync::watch;

use crate::answer_watch::AnswerWatch;
use tokio::time::Instant;

use crate::anti_entropy::wire_size;
use crate::env::Env;
use crate::membership::{SharedMembership, Uptime};
use crate::pool::Pool;
use crate::rpc::{HandoverReport, RemoteError};
use crate::scan::PagedScan;
use crate::store::{ScanCursor, Store};

/// Keys per streamed batch.
const BATCH_KEYS: u32 = 1_000;
/// Deadline of one streaming RPC: a `scan` page of up to [`BATCH_KEYS`]
/// states (up to half a frame, about 2.5 MiB with the default limits) read
/// off the source's disk, or a `merge_batch` of one such page written
/// durably on the target. That is the largest unit of work a node RPC
/// carries, and it runs while the cluster also serves clients, so it gets
/// three times anti-entropy's 10 s; past it the attempt counts as failed and
/// is retried (from the same cursor, possibly on another replica), so a
/// slow peer costs time, never data.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Attempts per range before a join or decommission gives up on it.
const MAX_ATTEMPTS: u32 = 60;
/// How long a joining node waits to hear of a current replica before it
/// concludes it is the first node (nothing to receive).
const FIND_PEERS_FOR: Duration = Duration::from_secs(30);

/// How long a finished decommission waits for its caller to hang up with
/// the reply before the node stops anyway. `shoal-admin` exits as soon as it
/// has the reply, so its connection ends within a round trip; a caller that
/// keeps its connection open (a pooled client) or hung up before the reply
/// would otherwise keep the node from ever stopping. A few seconds are far
/// more than a reply takes to arrive, and let a caller that retries after
/// its own timeout still pick up the report (a second call answers with it
/// at once) before the node is gone.
const ANSWER_LIMIT: Duration = Duration::from_secs(5);

use crate::store::meta::{join_progress, DECOMMISSIONED, JOINED};

/// Why a join or a decommission's streaming stopped.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The ring of the current members could not be built.
    #[error("cannot build the ring: {0}")]
    Ring(#[from] shoal_ring::RingError),
    /// This node's store failed.
    #[error("local store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A store task did not finish.
    #[error(transparent)]
    Task(#[from] crate::env::BlockingError),
    /// The node is stopping.
    #[error("shutting down")]
    ShuttingDown,
    /// No old replica of a gained range was up, attempt after attempt.
    #[error("no live replica of range {range:?} to stream from")]
    NoSource {
        /// The range.
        range: shoal_ring::TokenRange,
    },
    /// A source's scan pages did not advance their cursor (a faulty peer):
    /// asking it again would never end.
    #[error(transparent)]
    Stalled(#[from] crate::scan::StalledCursor),
    /// Streaming a gained range failed on every attempt.
    #[error(
        "streaming range {range:?} failed {MAX_ATTEMPTS} times, last from {source_id}: {last}"
    )]
    Pull {
        /// The range.
        range: shoal_ring::TokenRange,
        /// The replica asked last.
        source_id: String,
        /// Its last error.
        last: String,
    },
    /// A member gaining a range refused or missed every batch.
    #[error("{target} did not take a batch after {MAX_ATTEMPTS} attempts: {last}")]
    Push {
        /// The member.
        target: String,
        /// Its last error.
        last: String,
    },
}

/// How long to wait between announcing a change and streaming: long enough
/// for gossip to carry the announcement to every gateway (a few rounds) and
/// for every write planned under the old view to finish (the gateway's
/// request timeout).
pub(crate) fn settle(config: &crate::Config) -> Duration {
    Duration::from_millis(
        config
            .gossip
            .interval_ms
            .saturating_mul(5)
            .saturating_add(config.http.request_timeout_ms),
    )
}

/// The ranges `me` gains when it joins a ring of `current` members `(id,
/// weight)`, all of them and `me` (with `weight`) in the default zone
/// ([`shoal_ring::view::gained_ranges`] on the default ring config, which a
/// joining node calls itself with the zones gossip carries).
pub fn gained_ranges(
    current: &[(String, u32)],
    me: &str,
    weight: u32,
    n: usize,
) -> Result<Vec<RangeChange>, shoal_ring::RingError> {
    shoal_ring::view::gained_ranges(
        &in_default_zone(current),
        &Member::new(me, weight),
        n,
        RingConfig::default(),
    )
}

/// The ranges `me` loses when it leaves a ring of `current` members `(id,
/// weight)` in the default zone, with the members that gain each
/// ([`shoal_ring::view::lost_ranges`] on the default ring config).
pub fn lost_ranges(
    current: &[(String, u32)],
    me: &str,
    n: usize,
) -> Result<Vec<RangeChange>, shoal_ring::RingError> {
    shoal_ring::view::lost_ranges(&in_default_zone(current), me, n, RingConfig::default())
}

fn in_default_zone(members: &[(String, u32)]) -> Vec<Member> {
    members
        .iter()
        .map(|(id, w)| Member::new(id.clone(), *w))
        .collect()
}

/// How long a decommissioning node spends pushing its `left` announcement
/// to peers before it stops: five gossip rounds (of at least 100 ms). One
/// push is a gossip exchange of up to three hops (Syn, Ack, Ack2) with the
/// peers this round picks, each hop a round trip well within one interval,
/// so five leave room for a slow peer; the bound keeps a peer that does not
/// answer from holding the decommission's reply, and any peer that missed
/// the push learns of the leave by gossip from those that got it.
fn leave_timeout(config: &crate::Config) -> Duration {
    Duration::from_millis(config.gossip.interval_ms.max(100).saturating_mul(5))
}

/// Whether this node still has a join to finish (configured to join and no
/// completion marker in its store).
pub(crate) fn join_pending(
    config: &crate::Config,
    store: &crate::store::Store,
) -> Result<bool, crate::store::StoreError> {
    Ok(config.member.join && store.get_meta(JOINED)?.is_none())
}

/// Whether this store's node was decommissioned (it must not serve again).
/// A store that cannot say is an error, not "no marker": starting a stale
/// copy would hide writes made since.
pub(crate) fn was_decommissioned(
    store: &crate::store::Store,
) -> Result<bool, crate::store::StoreError> {
    Ok(store.get_meta(DECOMMISSIONED)?.is_some())
}

/// Every ring member by id: its address and whether it is up.
type Addresses = std::collections::HashMap<String, crate::membership::Reachable>;

/// Join streaming and decommission for one node: the handles they use, the
/// reports they leave, and the node's request to be stopped.
pub(crate) struct Handover {
    id: String,
    /// The weight this node serves with once joined (flag bits cleared).
    weight: u32,
    /// The zone it announces (`member.zone`).
    zone: String,
    /// Replicas per key (`replication.n`).
    n: usize,
    /// `gossip.interval_ms`: the pace of retries and of waiting for peers.
    gossip_interval: Duration,
    /// See [`settle`].
    settle: Duration,
    /// See [`leave_timeout`].
    leave_timeout: Duration,
    /// Half a frame: what one pushed page of states may carry.
    budget: usize,
    store: Arc<Store>,
    env: Env,
    membership: SharedMembership,
    pool: Arc<Pool>,
    uptime: Uptime,
    /// The address peers dial (announced with `left`).
    advertise: String,
    /// Set when the node stops: a join gives up between ranges.
    shutting_down: Arc<AtomicBool>,
    /// Held for the whole of a decommission; its report, once there is one.
    decommissioned: tokio::sync::Mutex<Option<HandoverReport>>,
    /// What the join streamed, once it finished.
    join_report: Mutex<Option<HandoverReport>>,
    /// Set when the node must stop on its own (after a decommission).
    stop_requested: Arc<watch::Sender<bool>>,
    /// Set once a successful decommission's reply was flushed to its
    /// connection and that connection ended (see [`AnswerWatch`]): the stop
    /// waits for it.
    answered: Arc<watch::Sender<bool>>,
}

/// Where a [`Handover`] gets its handles from (the node's start-up).
pub(crate) struct Handles {
    pub(crate) store: Arc<Store>,
    pub(crate) env: Env,
    pub(crate) membership: SharedMembership,
    pub(crate) pool: Arc<Pool>,
    pub(crate) uptime: Uptime,
    pub(crate) advertise: String,
    pub(crate) shutting_down: Arc<AtomicBool>,
}

impl Handover {
    pub(crate) fn new(config: &crate::Config, handles: Handles) -> Self {
        Self {
            id: config.member.id.clone(),
            weight: config.member.weight,
            zone: config.member.zone.clone(),
            n: config.replication.n,
            gossip_interval: Duration::from_millis(config.gossip.interval_ms),
            settle: settle(config),
            leave_timeout: leave_timeout(config),
            budget: config.max_frame_bytes() / 2,
            store: handles.store,
            env: handles.env,
            membership: handles.membership,
            pool: handles.pool,
            uptime: handles.uptime,
            advertise: handles.advertise,
            shutting_down: handles.shutting_down,
            decommissioned: tokio::sync::Mutex::new(None),
            join_report: Mutex::new(None),
            stop_requested: Arc::new(watch::channel(false).0),
            answered: Arc::new(watch::channel(false).0),
        }
    }

    /// What the join streamed, once it finished.
    pub(crate) fn join_report(&self) -> Option<HandoverReport> {
        self.join_report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Turns true when the node asks to be stopped (a decommission
    /// finished).
    pub(crate) fn stop_requested(&self) -> watch::Receiver<bool> {
        self.stop_requested.subscribe()
    }

    /// `transport`, reporting to this node's stop when a decommission's
    /// reply was flushed on it and the connection then ended.
    pub(crate) fn watch_answers<T>(&self, transport: T) -> AnswerWatch<T> {
        AnswerWatch::new(transport, self.answered.clone())
    }

    /// Non-joining storage members other than this one (id, weight, zone),
    /// and every member's address.
    fn current_members(&self) -> (crate::membership::MemberList, Addresses) {
        let members = crate::membership::lock(&self.membership).ring_members();
        let (current, _) = crate::membership::member_lists(&members);
        let current = current.into_iter().filter(|m| m.id != self.id).collect();
        let addresses = crate::membership::reachable(&members, |m| m.status.is_up());
        (current, addresses)
    }

    /// Runs a pending join: waits for peers and for the announcement to
    /// spread, streams every gained range, then clears the joining flag.
    /// Returns the report (also kept for [`Handover::join_report`]).
    pub(crate) async fn join(self: Arc<Self>) -> Result<HandoverReport, HandoverError> {
        let found_by = Instant::now() + FIND_PEERS_FOR;
        let current = loop {
            let (current, _) = self.current_members();
            if !current.is_empty() {
                break current;
            }
            if Instant::now() >= found_by {
                tracing::info!("no current replica found: this node starts the ring");
                break Vec::new();
            }
            tokio::time::sleep(self.gossip_interval).await;
        };
        let mut started = Instant::now();
        let mut report = HandoverReport {
            node: self.id.clone(),
            ..HandoverReport::default()
        };
        if !current.is_empty() {
            tokio::time::sleep(self.settle).await;
            // The report times the streaming, not the settle wait.
            started = Instant::now();
            // Members seen since the first look count too.
            let (current, _) = self.current_members();
            let me = Member::new(self.id.clone(), self.weight).in_zone(self.zone.clone());
            let changes =
                shoal_ring::view::gained_ranges(&current, &me, self.n, RingConfig::default())?;
            tracing::info!(
                ranges = changes.len(),
                "join: streaming the ranges this node gains"
            );
            let counters = self.store.counters().clone();
            let _progress = counters.progress_start("join", changes.len() as u64);
            for change in &changes {
                if self.shutting_down.load(Ordering::SeqCst) {
                    return Err(HandoverError::ShuttingDown);
                }
                let before = (report.keys, report.bytes);
                self.pull_range(change, &mut report).await?;
                report.ranges += 1;
                counters.progress_range(report.keys - before.0, report.bytes - before.1);
            }
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        let store = self.store.clone();
        self.env
            .spawn_blocking(move || store.put_meta(JOINED, b"1"))
            .await??;
        crate::membership::lock(&self.membership).set_weight(self.weight);
        let secs = (report.elapsed_ms as f64 / 1000.0).max(0.001);
        tracing::info!(
            ranges = report.ranges,
            keys = report.keys,
            bytes = report.bytes,
            elapsed_ms = report.elapsed_ms,
            keys_per_sec = (report.keys as f64 / secs) as u64,
            mb_per_sec = format!("{:.1}", report.bytes as f64 / secs / 1e6),
            "join complete: serving reads for the gained ranges"
        );
        *self
            .join_report
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(report.clone());
        Ok(report)
    }

    /// Streams one gained range from its old replicas, resuming from the
    /// cursor saved in the store.
    async fn pull_range(
        &self,
        change: &RangeChange,
        report: &mut HandoverReport,
    ) -> Result<(), HandoverError> {
        let key = join_progress(&change.range);
        let saved = {
            let store = self.store.clone();
            let key = key.clone();
            self.env
                .spawn_blocking(move || store.get_meta(&key))
                .await??
        };
        let start = match saved.as_deref() {
            Some(b"done") => return Ok(()),
            Some(after) if !after.is_empty() => Some(ScanCursor {
                range: 0,
                after: after.to_vec(),
            }),
            _ => None,
        };
        let mut attempts = 0;
        let mut source = 0usize;
        let mut scan = PagedScan::new(&[change.range], start, BATCH_KEYS, true);
        while let Some(request) = scan.next_request() {
            let page = loop {
                let (_, addresses) = self.current_members();
                let sources: Vec<(String, String)> = change
                    .old_replicas
                    .iter()
                    .filter(|id| **id != self.id)
                    .filter_map(|id| {
                        addresses
                            .get(id)
                            .filter(|r| r.up)
                            .map(|r| (id.clone(), r.address.clone()))
                    })
                    .collect();
                if sources.is_empty() {
                    attempts += 1;
                    if attempts > MAX_ATTEMPTS {
                        return Err(HandoverError::NoSource {
                            range: change.range,
                        });
                    }
                    tokio::time::sleep(self.gossip_interval * 5).await;
                    continue;
                }
                let (source_id, address) = &sources[source % sources.len()];
                let asked = request.clone();
                let page = self
                    .pool
                    .call(address, CALL_TIMEOUT, |c, ctx| async move {
                        c.scan(ctx, asked).await
                    })
                    .await;
                let error = match page {
                    Ok(Ok(page)) => break page,
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                attempts += 1;
                if attempts > MAX_ATTEMPTS {
                    return Err(HandoverError::Pull {
                        range: change.range,
                        source_id: source_id.clone(),
                        last: error,
                    });
                }
                tracing::warn!(source = %source_id, %error, "join: stream failed, trying the next replica");
                source += 1;
                tokio::time::sleep(self.gossip_interval).await;
            };
            scan.advance(&page)?;
            report.bytes += wire_size(&page);
            let items: Vec<(Vec<u8>, SiblingSet)> = page
                .entries
                .into_iter()
                .filter_map(|e| Some((e.key, e.siblings?)))
                .collect();
            report.keys += items.len() as u64;
            let progress = match &page.next {
                Some(c) => c.after.clone(),
                None => b"done".to_vec(),
            };
            let store = self.store.clone();
            let meta_key = key.clone();
            self.env
                .spawn_blocking(move || {
                    store.merge_many(&items)?;
                    store.put_meta(&meta_key, &progress)
                })
                .await??;
        }
        Ok(())
    }

    /// The decommission RPC: announce leaving, settle, push every lost range
    /// to the members that gain it, announce `left`, and stop the node.
    pub(crate) async fn decommission(&self, force: bool) -> Result<HandoverReport, RemoteError> {
        let mut done = self.decommissioned.lock().await;
        if let Some(report) = done.as_ref() {
            return Ok(report.clone());
        }
        let report = self.decommission_once(force).await?;
        *done = Some(report.clone());
        Ok(report)
    }

    async fn decommission_once(&self, force: bool) -> Result<HandoverReport, RemoteError> {
        let fail = |message: String| RemoteError::Membership {
            operation: "decommission".into(),
            node: self.id.clone(),
            message,
        };
        let current = {
            let mut m = crate::membership::lock(&self.membership);
            let n = self.n;
            let remaining = m
                .ring_members()
                .iter()
                .filter(|i| {
                    i.id.as_str() != self.id
                        && i.status == shoal_gossip::Status::Alive
                        && !crate::membership::split_weight(i.weight).1
                })
                .count();
            if remaining < n && !force {
                return Err(fail(format!(
                    "only {remaining} other live storage member(s) would remain, fewer than N = {n}: \
                     writes could no longer reach N replicas (force it to proceed anyway)"
                )));
            }
            m.start_leaving();
            crate::membership::member_lists(&m.ring_members()).0
        };
        if !current.iter().any(|m| m.id == self.id) {
            return Err(fail("this node is not on the ring (still joining?)".into()));
        }
        if current.len() <= 1 {
            return Err(fail(
                "the last node on the ring cannot hand its data to anyone".into(),
            ));
        }
        tracing::info!(
            "decommission: leaving; waiting for the cluster to route writes to the new owners"
        );
        tokio::time::sleep(self.settle).await;
        let started = Instant::now();
        let changes =
            shoal_ring::view::lost_ranges(&current, &self.id, self.n, RingConfig::default())
                .map_err(|e| fail(format!("cannot build the ring: {e}")))?;
        let mut report = HandoverReport {
            node: self.id.clone(),
            ..HandoverReport::default()
        };
        let counters = self.store.counters().clone();
        let _progress = counters.progress_start("decommission", changes.len() as u64);
        for change in &changes {
            let before = (report.keys, report.bytes);
            self.push_range(change, &mut report)
                .await
                .map_err(|e| fail(e.to_string()))?;
            report.ranges += 1;
            counters.progress_range(report.keys - before.0, report.bytes - before.1);
        }
        report.elapsed_ms = started.elapsed().as_millis() as u64;
        tracing::info!(
            ranges = report.ranges,
            keys = report.keys,
            bytes = report.bytes,
            elapsed_ms = report.elapsed_ms,
            "decommission: ranges handed over; leaving"
        );
        // Recorded before announcing `left`: a restart on this directory would
        // otherwise rejoin with a stale copy of ranges others now own.
        let store = self.store.clone();
        self.env
            .spawn_blocking(move || store.put_meta(DECOMMISSIONED, b"1"))
            .await
            .map_err(|e| fail(e.to_string()))?
            .map_err(|e| fail(e.to_string()))?;
        let hints = self.store.hint_count().unwrap_or(0);
        if hints > 0 {
            tracing::warn!(
                hints,
                "leaving with undelivered hints; anti-entropy repairs their owners"
            );
        }
        crate::membership::announce_leave(
            &self.membership,
            &self.pool,
            self.uptime,
            &self.advertise,
            self.leave_timeout,
        )
        .await;
        // Stop once this reply has been flushed and its connection has
        // ended (the caller hung up with it), or after a bound if that does
        // not happen (a caller that keeps its connection, or left before the
        // reply). `send_replace`: the request is kept even if nobody watches
        // for it yet.
        let (stop, mut answered) = (self.stop_requested.clone(), self.answered.subscribe());
        tokio::spawn(async move {
            if tokio::time::timeout(ANSWER_LIMIT, answered.wait_for(|a| *a))
                .await
                .is_err()
            {
                tracing::info!("decommission caller still connected (or gone before the reply); stopping anyway");
            }
            stop.send_replace(true);
        });
        Ok(report)
    }

    /// Sends one lost range to every member that gains it.
    async fn push_range(
        &self,
        change: &RangeChange,
        report: &mut HandoverReport,
    ) -> Result<(), HandoverError> {
        // A page of states must fit one merge_batch frame.
        let budget = self.budget;
        let mut scan = PagedScan::new(&[change.range], None, BATCH_KEYS, true);
        while let Some(request) = scan.next_request() {
            let store = self.store.clone();
            let page = self
                .env
                .spawn_blocking(move || {
                    store.scan_ranges(
                        &request.ranges,
                        request.cursor.as_ref(),
                        request.max_keys as usize,
                        budget,
                        request.values,
                    )
                })
                .await??;
            scan.advance(&page)?;
            let items: Vec<(Vec<u8>, SiblingSet)> = page
                .entries
                .into_iter()
                .filter_map(|e| Some((e.key, e.siblings?)))
                .collect();
            if !items.is_empty() {
                for target in &change.gained {
                    self.send_batch(target, &items, report).await?;
                }
                report.keys += items.len() as u64;
            }
        }
        Ok(())
    }

    async fn send_batch(
        &self,
        target: &str,
        items: &[(Vec<u8>, SiblingSet)],
        report: &mut HandoverReport,
    ) -> Result<(), HandoverError> {
        let mut last = String::new();
        for _ in 0..MAX_ATTEMPTS {
            let address = crate::membership::lock(&self.membership)
                .member(target)
                .filter(|m| m.status.is_up())
                .map(|m| m.address);
            let Some(address) = address else {
                last = format!("{target} is not up");
                tokio::time::sleep(self.gossip_interval * 5).await;
                continue;
            };
            let batch = items.to_vec();
            let size = wire_size(&batch);
            match self
                .pool
                .call(&address, CALL_TIMEOUT, |c, ctx| async move {
                    c.merge_batch(ctx, batch).await
                })
                .await
            {
                Ok(Ok(_)) => {
                    report.bytes += size;
                    return Ok(());
                }
                Ok(Err(e)) => last = e.to_string(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(self.gossip_interval).await;
        }
        Err(HandoverError::Push {
            target: target.to_string(),
            last,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str]) -> Vec<(String, u32)> {
        ids.iter().map(|id| (id.to_string(), 1)).collect()
    }

    #[test]
    fn a_joiner_gains_about_its_share_and_a_leaver_loses_what_it_held() {
        let current = members(&["a", "b", "c"]);
        let gained = gained_ranges(&current, "d", 1, 3).unwrap();
        let share: f64 = gained.iter().map(|c| c.range.fraction()).sum();
        // With N=3 of 4 nodes, d replicates about 3/4 of the ring.
        assert!((0.6..0.9).contains(&share), "{share}");
        assert!(gained
            .iter()
            .all(|c| c.new_replicas.iter().any(|r| r == "d")));

        let all = members(&["a", "b", "c", "d"]);
        let lost = lost_ranges(&all, "d", 3).unwrap();
        let lost_share: f64 = lost.iter().map(|c| c.range.fraction()).sum();
        assert!(
            (share - lost_share).abs() < 1e-9,
            "join and leave move the same ranges"
        );
        assert!(lost
            .iter()
            .all(|c| c.gained.len() == 1 && c.gained[0] != "d"));
        assert!(lost_ranges(&members(&["a"]), "a", 3).unwrap().is_empty());
    }
}
