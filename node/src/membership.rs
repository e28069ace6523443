//! Runs a [`shoal_gossip::Membership`] over the RPC service: the state machine
//! decides, this module carries its messages and its clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use shoal_gossip::{Membership, Message, Outgoing};
use tokio::sync::watch;

use crate::pool::Pool;

/// A member's gossip state, shared between the RPC handler and the loop.
pub type SharedMembership = Arc<Mutex<Membership<StdRng>>>;

/// Time for `Membership`: a monotonic duration since this process started
/// (tokio's clock, which a simulation controls).
#[derive(Clone, Copy, Debug)]
pub struct Uptime(tokio::time::Instant);

impl Uptime {
    /// Starts counting now.
    pub fn start() -> Self {
        Self(tokio::time::Instant::now())
    }

    /// Time since start.
    pub fn now(&self) -> Duration {
        self.0.elapsed()
    }
}

/// High bit of a storage member's gossiped weight: set while the member is
/// joining (receiving the ranges it gains), cleared once it has them. The
/// gossip crate treats the weight as opaque; every ring builder in Shoal goes
/// through [`RingView`], which reads the flag. Ring weights stay far below
/// it (`shoal_ring::MAX_WEIGHT`).
pub const JOINING_FLAG: u32 = 1 << 31;

/// A gossiped weight split into the ring weight and whether the member is
/// still joining.
pub fn split_weight(gossiped: u32) -> (u32, bool) {
    (gossiped & !JOINING_FLAG, gossiped & JOINING_FLAG != 0)
}

/// Storage members as a ring sees them: `(id, ring weight)`, sorted by id.
pub type MemberList = Vec<(String, u32)>;

/// The two rings of a membership in flux.
///
/// `current` is the ring reads use: every storage member that has not left,
/// leaving ones included (they still hold their data), joining ones excluded
/// (they do not have theirs yet). `future` is the ring once every pending
/// change is done: joining members in, leaving members out. A write goes to
/// the replicas of both and needs W acknowledgements in each, so whichever
/// ring a later read uses, it meets the write; when nothing is in flux the
/// two are the same ring.
#[derive(Debug, Clone, Default)]
pub struct RingView {
    /// What reads use.
    pub current: Option<shoal_ring::Ring>,
    /// What the ring becomes; `None` when it equals `current`.
    pub future: Option<shoal_ring::Ring>,
}

impl RingView {
    /// The member lists of both rings, `(id, ring weight)` sorted by id: a
    /// cache key (rings are pure functions of them).
    pub fn member_lists(members: &[shoal_gossip::MemberInfo]) -> (MemberList, MemberList) {
        let mut current = Vec::new();
        let mut future = Vec::new();
        for m in members {
            if m.role != shoal_gossip::Role::Storage || m.status == shoal_gossip::Status::Left {
                continue;
            }
            let (weight, joining) = split_weight(m.weight);
            let id = m.id.as_str().to_string();
            if !joining {
                current.push((id.clone(), weight));
            }
            if m.status != shoal_gossip::Status::Leaving {
                future.push((id, weight));
            }
        }
        current.sort();
        future.sort();
        (current, future)
    }

    /// Builds both rings from gossip's ring members
    /// ([`shoal_gossip::Membership::ring_members`]).
    pub fn of(members: &[shoal_gossip::MemberInfo]) -> Self {
        let (current, future) = Self::member_lists(members);
        let build = |list: &[(String, u32)]| -> Option<shoal_ring::Ring> {
            if list.is_empty() {
                return None;
            }
            shoal_ring::Ring::new(
                list.iter()
                    .map(|(id, w)| shoal_ring::Member::new(id.clone(), *w)),
                shoal_ring::RingConfig::default(),
            )
            .map_err(|e| tracing::error!(error = %e, "cannot build the ring from the membership"))
            .ok()
        };
        let future_ring = if future == current {
            None
        } else {
            build(&future)
        };
        Self {
            current: build(&current),
            future: future_ring,
        }
    }
}

/// Locks the shared membership, recovering from poisoning (the state machine
/// is updated by single calls, so a panic elsewhere leaves it consistent).
pub fn lock(membership: &SharedMembership) -> std::sync::MutexGuard<'_, Membership<StdRng>> {
    membership
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Hops of one exchange (Syn, Ack, Ack2): replies to replies are carried at
/// most this many times, so a misbehaving peer cannot loop us.
const MAX_HOPS: usize = 3;

/// Handles one incoming gossip message and returns the replies.
pub fn receive(
    membership: &SharedMembership,
    uptime: Uptime,
    from: &str,
    message: Message,
) -> Vec<Message> {
    let mut m = membership.lock().expect("membership lock");
    match m.receive(from, message, uptime.now()) {
        Ok(replies) => replies.into_iter().map(|o| o.message).collect(),
        Err(e) => {
            tracing::debug!(%from, error = %e, "rejected gossip message");
            Vec::new()
        }
    }
}

/// Sends `out` and feeds the replies back into the state machine, for at most
/// [`MAX_HOPS`] hops.
async fn exchange(
    membership: &SharedMembership,
    pool: &Pool,
    uptime: Uptime,
    self_addr: &str,
    out: Outgoing,
    timeout: Duration,
) {
    let mut pending = vec![out];
    for _ in 0..MAX_HOPS {
        let Some(out) = pending.pop() else { break };
        let to = out.to.clone();
        let from = self_addr.to_string();
        let result = pool
            .call(&to, timeout, |c, ctx| async move {
                c.gossip(ctx, from, out.message).await
            })
            .await;
        match result {
            Ok(Ok(replies)) => {
                let mut m = membership.lock().expect("membership lock");
                for reply in replies {
                    match m.receive(&to, reply, uptime.now()) {
                        Ok(next) => pending.extend(next),
                        Err(e) => tracing::debug!(peer = %to, error = %e, "bad gossip reply"),
                    }
                }
            }
            Ok(Err(e)) => tracing::debug!(peer = %to, error = %e, "gossip refused"),
            // Unreachable peers are the failure detector's business; the
            // missing heartbeats speak for themselves.
            Err(e) => tracing::trace!(peer = %to, error = %e, "gossip failed"),
        }
    }
}

/// Ticks the membership every `interval` and carries its messages until
/// `shutdown` turns true.
pub async fn run(
    membership: SharedMembership,
    pool: Arc<Pool>,
    uptime: Uptime,
    self_addr: String,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            _ = ticker.tick() => {}
        }
        let (outgoing, events) = {
            let mut m = membership.lock().expect("membership lock");
            (m.tick(uptime.now()), m.drain_events())
        };
        log_refusals(&events);
        // Rounds run concurrently so that one unreachable peer's connect
        // timeout does not delay heartbeats to the others.
        let rounds = outgoing
            .into_iter()
            .map(|out| exchange(&membership, &pool, uptime, &self_addr, out, interval * 2));
        futures::future::join_all(rounds).await;
    }
}

/// Logs the records gossip refused. The state machine reports each
/// (sender, reason) once, so a peer that keeps sending a forged or invalid
/// record costs one line, not one per round.
fn log_refusals(events: &[shoal_gossip::Event]) {
    for e in events {
        if let shoal_gossip::Event::Refused { from, id, reason } = e {
            tracing::warn!(%from, member = %id, ?reason, "gossip record refused");
        }
    }
}

/// Announces a graceful departure and pushes it to a few peers right away, so
/// that others stop routing here before the process exits (bounded by
/// `timeout`).
pub async fn announce_leave(
    membership: &SharedMembership,
    pool: &Pool,
    uptime: Uptime,
    self_addr: &str,
    timeout: Duration,
) {
    let outgoing = {
        let mut m = membership.lock().expect("membership lock");
        m.leave();
        m.tick(uptime.now())
    };
    let rounds = outgoing
        .into_iter()
        .map(|out| exchange(membership, pool, uptime, self_addr, out, timeout));
    let _ = tokio::time::timeout(timeout, futures::future::join_all(rounds)).await;
}
