//! Hinted handoff: a node holding hints for owners that were down hands
//! them over once gossip shows the owner alive again, deleting each only
//! after the owner acknowledged it; hints for a member that left go to the
//! key's current replicas instead.
//!
//! [`Planner`] decides, without I/O, which hints are past their TTL, which
//! owners are due, where their hints go and how long a failing owner waits;
//! [`Handoff`] carries its decisions out against the store and the pool.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::env::Env;
use crate::membership::SharedMembership;
use crate::pool::Pool;
use crate::rpc::ReplicateRequest;
use crate::store::{Hint, Store};

/// Hints read per owner and delivery pass, so one pass holds bounded memory.
const HINT_BATCH: usize = 1_000;
/// Longest wait between delivery attempts to an owner that keeps failing.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// Deadline of one hint's `replicate` call. A replicate is one durable write
/// on the owner (a group-committed fsync, milliseconds), the same work as a
/// client write's replication, so it gets what the gateway gives a client
/// request by default (`http.request_timeout_ms`, 2 s): an owner that cannot
/// take it in that time is not really serving, and a failed delivery only
/// backs that owner off and leaves the hint in place. The bound keeps one
/// sick owner from holding a delivery pass (and every other owner's hints
/// behind it) for long.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Hints sent to one owner at once.
const DELIVERY_CONCURRENCY: usize = 16;

/// Where a batch of hints goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HintDestination {
    /// To their owner, at this address.
    Owner(String),
    /// The owner left: to each key's current replicas.
    Owners,
}

/// What gossip says of a hint's owner, as the planner needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OwnerState {
    /// Not a member any more (decommissioned, or forgotten after its leave),
    /// or a member whose status is `left`.
    Gone,
    /// A member that is not alive now.
    Down,
    /// Alive, at this address.
    Alive(String),
}

/// The pure part of handoff: TTL, per-owner backoff and target choice.
#[derive(Debug)]
pub(crate) struct Planner {
    /// The first retry delay after a failure (`handoff.retry_interval_ms`).
    interval: Duration,
    /// How long a hint is kept, counted from its receipt here.
    ttl_ms: u64,
    /// The largest batch a pass reads per owner; delivering a full one means
    /// more are waiting.
    batch: usize,
    /// owner -> (next attempt, current backoff)
    backoff: HashMap<String, (Instant, Duration)>,
}

/// The hints of one pass, sorted out by [`Planner::sort`].
#[derive(Debug, Default)]
pub(crate) struct Sorted {
    /// Past the TTL: to drop (anti-entropy repairs what they carried).
    pub(crate) expired: Vec<Hint>,
    /// The rest by owner, ordered, so that delivery order does not depend on
    /// a random hasher (a deterministic simulation replays it exactly).
    pub(crate) by_owner: BTreeMap<String, Vec<Hint>>,
}

impl Planner {
    pub(crate) fn new(interval: Duration, ttl_ms: u64, batch: usize) -> Self {
        Self {
            interval,
            ttl_ms,
            batch,
            backoff: HashMap::new(),
        }
    }

    /// Splits a pass's hints into the expired ones and the rest by owner.
    /// A hint's age runs from when this node took it, on its own clock
    /// (`now_ms`): the siblings' write times are the sender's clock, which
    /// may be far off (or lie), and would expire a hint at once or never.
    pub(crate) fn sort(&self, hints: Vec<Hint>, now_ms: u64) -> Sorted {
        let mut sorted = Sorted::default();
        for hint in hints {
            if now_ms.saturating_sub(hint.received_ms) > self.ttl_ms {
                sorted.expired.push(hint);
            } else {
                sorted
                    .by_owner
                    .entry(hint.owner.clone())
                    .or_default()
                    .push(hint);
            }
        }
        sorted
    }

    /// Whether `owner`'s backoff lets it be tried at `now`.
    pub(crate) fn due(&self, owner: &str, now: Instant) -> bool {
        self.backoff.get(owner).is_none_or(|(next, _)| *next <= now)
    }

    /// Where `owner`'s hints go, or `None` to keep them for now (the owner
    /// is down). An owner that left will never take them: whoever owns the
    /// keys now does, as Riak hands a fallback's data to the partition's
    /// current owner.
    pub(crate) fn destination(state: OwnerState) -> Option<HintDestination> {
        match state {
            OwnerState::Gone => Some(HintDestination::Owners),
            OwnerState::Down => None,
            OwnerState::Alive(address) => Some(HintDestination::Owner(address)),
        }
    }

    /// Records how a delivery to `owner` went, finished at `now`. A failure
    /// doubles the owner's wait (from `interval`, up to [`MAX_BACKOFF`]) and
    /// returns it; a success clears it. `Ok(true)`: a full batch went
    /// through, so the next pass should start at once (a backlog drains at
    /// delivery speed, not one batch per interval).
    pub(crate) fn record(
        &mut self,
        owner: &str,
        delivered: usize,
        failed: bool,
        now: Instant,
    ) -> Result<bool, Duration> {
        if failed {
            let delay = self
                .backoff
                .get(owner)
                .map_or(self.interval, |(_, d)| (*d * 2).min(MAX_BACKOFF));
            self.backoff.insert(owner.to_string(), (now + delay, delay));
            Err(delay)
        } else {
            self.backoff.remove(owner);
            Ok(delivered == self.batch)
        }
    }
}

/// Hinted handoff for one node: what the loop needs of the node and nothing
/// more.
pub(crate) struct Handoff {
    id: String,
    store: Arc<Store>,
    env: Env,
    membership: SharedMembership,
    pool: Arc<Pool>,
    /// Replicas per key (`replication.n`), for hints whose owner left.
    n: usize,
    interval: Duration,
    ttl_ms: u64,
}

impl Handoff {
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
            interval: Duration::from_millis(config.handoff.retry_interval_ms),
            ttl_ms: config.handoff.hint_ttl_secs.saturating_mul(1000),
        }
    }

    /// Delivers held hints to their owners once gossip shows them alive,
    /// deleting each only after the owner acknowledged it; backs off per
    /// owner on failure; drops hints held longer than the TTL (anti-entropy
    /// repairs what they carried).
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let mut planner = Planner::new(self.interval, self.ttl_ms, HINT_BATCH);
        // After a pass that moved a full batch for some owner, the next pass
        // starts at once.
        let mut backlog = false;
        loop {
            if !backlog {
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(self.interval) => {}
                }
            } else if *shutdown.borrow() {
                return;
            }
            backlog = false;
            let store = self.store.clone();
            let hints = match self
                .env
                .spawn_blocking(move || store.hints_per_owner(HINT_BATCH))
                .await
            {
                Ok(Ok(h)) => h,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read hints");
                    continue;
                }
                Err(_) => continue,
            };
            let now_ms = self.env.clock.now_millis();
            let now = Instant::now();
            let sorted = planner.sort(hints, now_ms);
            for hint in sorted.expired {
                tracing::warn!(owner = %hint.owner, key = ?String::from_utf8_lossy(&hint.key),
                    age_ms = now_ms.saturating_sub(hint.received_ms),
                    "dropping hint past its TTL; anti-entropy repairs the owner");
                let store = self.store.clone();
                let _ = self
                    .env
                    .spawn_blocking(move || store.drop_hint(&hint.owner, &hint.key))
                    .await;
                self.store
                    .counters()
                    .hints_expired
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            for (owner, hints) in sorted.by_owner {
                if !planner.due(&owner, now) {
                    continue;
                }
                let Some(destination) = Planner::destination(self.owner_state(&owner)) else {
                    continue;
                };
                let (delivered, failed) = match destination {
                    HintDestination::Owner(address) => self.deliver(&owner, &address, hints).await,
                    HintDestination::Owners => self.retarget(&owner, hints).await,
                };
                self.store
                    .counters()
                    .hints_delivered
                    .fetch_add(delivered as u64, std::sync::atomic::Ordering::Relaxed);
                match planner.record(&owner, delivered, failed, Instant::now()) {
                    Err(retry_in) => {
                        tracing::debug!(%owner, delivered, ?retry_in, "hint delivery failed");
                    }
                    Ok(full) => {
                        backlog |= full;
                        if delivered > 0 {
                            tracing::info!(%owner, delivered, "hints handed off");
                        }
                    }
                }
            }
        }
    }

    fn owner_state(&self, owner: &str) -> OwnerState {
        let m = crate::membership::lock(&self.membership);
        match m.member(owner) {
            None => OwnerState::Gone,
            Some(i) if i.status == shoal_gossip::Status::Left => OwnerState::Gone,
            Some(_) if !m.is_alive(owner) => OwnerState::Down,
            Some(i) => OwnerState::Alive(i.address),
        }
    }

    /// Hands hints held for `owner`, a member that left, to every replica
    /// their key has now (both rings while membership is in flux; this node
    /// merges its own share locally). A hint is deleted once all of them
    /// took it; otherwise it is retried. Returns how many were delivered and
    /// whether any failed.
    async fn retarget(&self, owner: &str, hints: Vec<Hint>) -> (usize, bool) {
        let (view, addresses) = {
            let m = crate::membership::lock(&self.membership);
            let members = m.ring_members();
            let addresses = crate::membership::reachable(&members, |i| m.is_alive(i.id.as_str()));
            (crate::membership::ring_view(&members), addresses)
        };
        let (mut delivered, mut failed) = (0, false);
        for hint in hints {
            let (current, pending) =
                view.write_replicas_at(crate::keys::position(&hint.key), self.n);
            let targets: Vec<String> = current
                .into_iter()
                .chain(pending)
                .map(str::to_string)
                .collect();
            let mut all = !targets.is_empty();
            for t in &targets {
                let ok = if *t == self.id {
                    let (store, key, siblings) =
                        (self.store.clone(), hint.key.clone(), hint.siblings.clone());
                    matches!(
                        self.env
                            .spawn_blocking(move || store.merge(&key, &siblings))
                            .await,
                        Ok(Ok(_))
                    )
                } else {
                    match addresses.get(t) {
                        Some(crate::membership::Reachable { address, up: true }) => {
                            self.replicate(address, &hint).await
                        }
                        _ => false,
                    }
                };
                all &= ok;
            }
            if !all {
                failed = true;
                continue;
            }
            self.forget_delivered(owner, hint).await;
            delivered += 1;
        }
        if delivered > 0 {
            tracing::info!(%owner, delivered, "hints for a member that left handed to the keys' current replicas");
        }
        (delivered, failed)
    }

    /// Sends one hint's state to `address` as a plain replicate; whether it
    /// was taken.
    async fn replicate(&self, address: &str, hint: &Hint) -> bool {
        let request = ReplicateRequest {
            key: hint.key.clone(),
            siblings: hint.siblings.clone(),
            hint_for: None,
        };
        matches!(
            self.pool
                .call(address, DELIVERY_TIMEOUT, |c, ctx| async move {
                    c.replicate(ctx, request).await
                })
                .await,
            Ok(Ok(()))
        )
    }

    /// Deletes a delivered hint, unless it changed meanwhile (a newer write
    /// for the same owner arrived while it was in flight: that one still has
    /// to go).
    async fn forget_delivered(&self, owner: &str, hint: Hint) {
        let store = self.store.clone();
        let owner = owner.to_string();
        let _ = self
            .env
            .spawn_blocking(move || {
                store.delete_hint_if_unchanged(&owner, &hint.key, &hint.siblings)
            })
            .await;
    }

    /// Sends `hints` to `owner` with bounded concurrency; returns how many
    /// were delivered and whether any failed.
    async fn deliver(&self, owner: &str, address: &str, hints: Vec<Hint>) -> (usize, bool) {
        use futures::StreamExt;
        let results: Vec<bool> = futures::stream::iter(hints)
            .map(|hint| async move {
                if self.replicate(address, &hint).await {
                    self.forget_delivered(owner, hint).await;
                    true
                } else {
                    false
                }
            })
            .buffer_unordered(DELIVERY_CONCURRENCY)
            .collect()
            .await;
        let delivered = results.iter().filter(|ok| **ok).count();
        (delivered, delivered < results.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_vclock::SiblingSet;

    fn hint(owner: &str, key: &str, received_ms: u64) -> Hint {
        Hint {
            owner: owner.into(),
            key: key.as_bytes().to_vec(),
            siblings: SiblingSet::default(),
            received_ms,
        }
    }

    fn keys(hints: &[Hint]) -> Vec<String> {
        hints
            .iter()
            .map(|h| format!("{}/{}", h.owner, String::from_utf8_lossy(&h.key)))
            .collect()
    }

    #[test]
    fn sort_drops_what_is_past_the_ttl_on_this_nodes_clock() {
        let planner = Planner::new(Duration::from_millis(100), 1_000, 10);
        // (received, now) -> expired?
        let cases = [
            (5_000, 6_000, false), // exactly the TTL: kept
            (5_000, 6_001, true),  // one ms past it
            (5_000, 5_000, false),
            (9_000, 5_000, false), // received "in the future" (clock stepped back): kept
            (0, u64::MAX, true),
        ];
        for (received, now, expired) in cases {
            let sorted = planner.sort(vec![hint("b", "k", received)], now);
            assert_eq!(
                (sorted.expired.len(), sorted.by_owner.len()),
                if expired { (1, 0) } else { (0, 1) },
                "received {received}, now {now}"
            );
        }
    }

    #[test]
    fn sort_groups_by_owner_in_order_and_keeps_key_order() {
        let planner = Planner::new(Duration::from_millis(100), 1_000, 10);
        let sorted = planner.sort(
            vec![
                hint("c", "1", 900),
                hint("a", "2", 900),
                hint("c", "0", 0),
                hint("a", "1", 900),
                hint("b", "9", 900),
            ],
            1_500,
        );
        assert_eq!(keys(&sorted.expired), ["c/0"]);
        let owners: Vec<_> = sorted.by_owner.keys().cloned().collect();
        assert_eq!(owners, ["a", "b", "c"]);
        assert_eq!(keys(&sorted.by_owner["a"]), ["a/2", "a/1"]);
    }

    #[test]
    fn destination_follows_what_gossip_says_of_the_owner() {
        let cases = [
            (OwnerState::Gone, Some(HintDestination::Owners)),
            (OwnerState::Down, None),
            (
                OwnerState::Alive("10.0.0.2:7000".into()),
                Some(HintDestination::Owner("10.0.0.2:7000".into())),
            ),
        ];
        for (state, expected) in cases {
            assert_eq!(Planner::destination(state.clone()), expected, "{state:?}");
        }
    }

    #[test]
    fn backoff_doubles_per_owner_up_to_the_cap_and_clears_on_success() {
        let interval = Duration::from_secs(4);
        let mut planner = Planner::new(interval, 1_000, 10);
        let t0 = Instant::now();
        assert!(planner.due("b", t0), "never tried: due");
        // (failed, expected delay) in sequence for owner b.
        let steps = [
            (true, Some(4)),
            (true, Some(8)),
            (true, Some(16)),
            (true, Some(30)),
            (true, Some(30)),
            (false, None),
            (true, Some(4)),
        ];
        for (i, (failed, delay)) in steps.into_iter().enumerate() {
            let outcome = planner.record("b", 0, failed, t0);
            match delay {
                Some(secs) => {
                    assert_eq!(outcome, Err(Duration::from_secs(secs)), "step {i}");
                    let wait = Duration::from_secs(secs);
                    assert!(!planner.due("b", t0 + wait - Duration::from_millis(1)));
                    assert!(planner.due("b", t0 + wait));
                }
                None => {
                    assert_eq!(outcome, Ok(false), "step {i}");
                    assert!(planner.due("b", t0));
                }
            }
            assert!(planner.due("c", t0), "another owner is not held back");
        }
    }

    #[test]
    fn a_full_batch_asks_for_the_next_pass_at_once() {
        let mut planner = Planner::new(Duration::from_secs(1), 1_000, 3);
        let now = Instant::now();
        assert_eq!(planner.record("b", 3, false, now), Ok(true));
        assert_eq!(planner.record("b", 2, false, now), Ok(false));
        assert_eq!(planner.record("b", 0, false, now), Ok(false));
        assert!(
            planner.record("b", 3, true, now).is_err(),
            "a failed full batch is a failure"
        );
    }
}
