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
            _ = shutdown.wait_for(|s| *s) => break,
            _ = ticker.tick() => {}
        }
        let outgoing = membership
            .lock()
            .expect("membership lock")
            .tick(uptime.now());
        // Rounds run concurrently so that one unreachable peer's connect
        // timeout does not delay heartbeats to the others.
        let rounds = outgoing
            .into_iter()
            .map(|out| exchange(&membership, &pool, uptime, &self_addr, out, interval * 2));
        futures::future::join_all(rounds).await;
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
