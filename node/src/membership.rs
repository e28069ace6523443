//! Runs a [`shoal_gossip::Membership`] over the RPC service: the state machine
//! decides, this module carries its messages and its clock.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use shoal_gossip::{Membership, Message, Outgoing};
use tokio::sync::watch;

use crate::pool::Pool;

// The joining flag and the rings are pure topology; they live in the ring
// crate and are re-exported here, where gossip members are translated for it.
pub use shoal_ring::view::{split_weight, MemberList, RingView, JOINING_FLAG};

/// Where a member is dialed, and whether it may be asked now: what the
/// request paths (gateway, handoff, handover) need of each member. Each
/// decides "may be asked" its own way (alive, not suspected, up).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reachable {
    /// The address to dial.
    pub address: String,
    /// Whether to ask it now.
    pub up: bool,
}

/// Every member of `members` by id, with `up` deciding whether it may be
/// asked now.
pub fn reachable(
    members: &[shoal_gossip::MemberInfo],
    mut up: impl FnMut(&shoal_gossip::MemberInfo) -> bool,
) -> std::collections::HashMap<String, Reachable> {
    members
        .iter()
        .map(|m| {
            let reach = Reachable {
                address: m.address.clone(),
                up: up(m),
            };
            (m.id.as_str().to_string(), reach)
        })
        .collect()
}

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

/// Gossip's ring members ([`shoal_gossip::Membership::ring_members`]) as the
/// ring view takes them: storage members that have not left, the joining flag
/// read off the weight, `leaving` from the lifecycle, and the zone each
/// announced. Every ring builder in Shoal goes through this, so nodes and
/// gateways read the flag, and place keys across zones, alike.
pub fn view_members(members: &[shoal_gossip::MemberInfo]) -> Vec<shoal_ring::view::ViewMember> {
    members
        .iter()
        .filter(|m| m.role == shoal_gossip::Role::Storage && m.status != shoal_gossip::Status::Left)
        .map(|m| {
            let (weight, joining) = split_weight(m.weight);
            shoal_ring::view::ViewMember {
                id: m.id.as_str().to_string(),
                weight,
                zone: m.zone.clone(),
                joining,
                leaving: m.status == shoal_gossip::Status::Leaving,
            }
        })
        .collect()
}

/// The member lists of both rings, `(current, future)`: a cache key (rings
/// are pure functions of them).
pub fn member_lists(members: &[shoal_gossip::MemberInfo]) -> (MemberList, MemberList) {
    RingView::member_lists(&view_members(members))
}

/// Both rings of gossip's ring members. A ring that cannot be built is left
/// out and logged: the process keeps serving with what it has.
pub fn ring_view(members: &[shoal_gossip::MemberInfo]) -> RingView {
    let (view, error) =
        RingView::partial(&view_members(members), shoal_ring::RingConfig::default());
    if let Some(e) = error {
        tracing::error!(error = %e, "cannot build the ring from the membership");
    }
    view
}

/// Locks the shared membership, recovering from poisoning (the state machine
/// is updated by single calls, so a panic elsewhere leaves it consistent).
pub fn lock(membership: &SharedMembership) -> std::sync::MutexGuard<'_, Membership<StdRng>> {
    membership
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Gossip settings derived from a member's config (nodes and gateways
/// alike).
pub fn gossip_config(config: &crate::Config) -> shoal_gossip::Config {
    let interval = Duration::from_millis(config.gossip.interval_ms);
    let down = Duration::from_millis(config.gossip.failure_timeout_ms);
    shoal_gossip::Config {
        fanout: config.gossip.fanout,
        interval,
        detector: shoal_gossip::Detector::Timeout {
            suspect_after: down / 2,
            down_after: down,
        },
        // The joining flag rides in the weight; only the rest is checked
        // against the bound.
        weight_flags: JOINING_FLAG,
        max_weight: config.gossip.max_weight,
        ..shoal_gossip::Config::default()
    }
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

/// Deadline of one gossip hop: two rounds. A hop is one small message each
/// way, answered within a round trip by a live peer; an answer later than
/// that is stale anyway (the next round has sent fresher state). The loop
/// waits for every exchange of a round before it ticks again, so the bound
/// is also how long one silent peer can delay this member's next
/// heartbeats to the others (per hop, at most [`MAX_HOPS`] of them).
fn hop_timeout(interval: Duration) -> Duration {
    interval * 2
}

/// What the gossip loop watches besides gossip: peers alive by gossip whose
/// addresses cannot be dialed ([`crate::advertise::Reachability::watch_peers`]).
#[derive(Debug, Clone)]
pub struct Watch {
    /// Where the verdicts go.
    pub reach: Arc<crate::advertise::Reachability>,
    /// How long dials must keep failing to count.
    pub after: Duration,
}

/// Ticks the membership every `interval` and carries its messages until
/// `shutdown` turns true; after each round, compares who is alive with
/// whose dials fail.
pub async fn run(
    membership: SharedMembership,
    pool: Arc<Pool>,
    uptime: Uptime,
    self_addr: String,
    interval: Duration,
    watched: Watch,
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
        let rounds = outgoing.into_iter().map(|out| {
            exchange(
                &membership,
                &pool,
                uptime,
                &self_addr,
                out,
                hop_timeout(interval),
            )
        });
        futures::future::join_all(rounds).await;
        let alive: Vec<(String, String)> = {
            let m = lock(&membership);
            let me = m.local_id().as_str().to_string();
            m.members()
                .into_iter()
                .filter(|i| i.status == shoal_gossip::Status::Alive && i.id.as_str() != me)
                .map(|i| (i.id.as_str().to_string(), i.address))
                .collect()
        };
        watched.reach.watch_peers(
            alive.iter().map(|(id, a)| (id.as_str(), a.as_str())),
            &pool,
            watched.after,
        );
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
