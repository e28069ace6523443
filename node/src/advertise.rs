//! Whether members can be dialed where they say they are.
//!
//! A member announces one address (`member.advertise`) and every peer dials
//! it; nothing else checks it. A wrong one (a typo, another host's address,
//! a port forwarded to another member) does not stop the member from
//! gossiping, since it dials out over its own connections, so peers see it
//! alive while their every call to it fails or lands on someone else. Two
//! checks make that loud, at the two places it can be seen:
//!
//! - at start, the member dials its own advertised address over the real
//!   transport (the cluster-secret handshake, then the `status` RPC) and
//!   compares the answering member's id and incarnation with its own: no
//!   answer, or another member's, is the error ([`verify_self`]);
//! - while running, each member watches its dials to the others: a member
//!   that gossip calls alive (its heartbeats are fresh) but whose address has
//!   refused every dial for a whole failure timeout is named once in an error
//!   and counted ([`Reachability::watch_peers`]), and named again only after
//!   it was dialed, left, or went down in between.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::config::AdvertiseCheck;
use crate::pool::Pool;

/// Deadline of the self-check's `status` call, once connected: a local
/// round trip answered from memory.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

/// Pause between self-check attempts while the address reaches nothing.
const RETRY_EVERY: Duration = Duration::from_millis(500);

/// How often a member in `warn` mode dials itself again after a failed
/// check, so that the metric clears once the address works (a name
/// published late, a NAT rule added).
const RECHECK_EVERY: Duration = Duration::from_secs(30);

/// What dialing this member's own advertised address found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SelfCheck {
    /// Not dialed (yet, or `member.advertise_check = "off"`).
    Unchecked,
    /// The address reached this member.
    Reachable,
    /// Nothing there completed the handshake and answered `status`: the
    /// last attempt's error.
    Unreachable(String),
    /// A member of this cluster answered, but not this one.
    OtherMember {
        /// Its id.
        id: String,
        /// Its incarnation (a restart of this same id would differ here).
        incarnation: u64,
    },
}

impl SelfCheck {
    /// `1` reached itself, `0` did not, `-1` not checked: the gauge.
    pub fn gauge(&self) -> f64 {
        match self {
            SelfCheck::Unchecked => -1.0,
            SelfCheck::Reachable => 1.0,
            SelfCheck::Unreachable(_) | SelfCheck::OtherMember { .. } => 0.0,
        }
    }

    /// What went wrong, for a log line or a status field (`None` when
    /// nothing did or nothing is known).
    pub fn problem(&self) -> Option<String> {
        match self {
            SelfCheck::Unchecked | SelfCheck::Reachable => None,
            SelfCheck::Unreachable(e) => Some(format!("reaches nothing: {e}")),
            SelfCheck::OtherMember { id, incarnation } => Some(format!(
                "reaches a different member: {id} (incarnation {incarnation})"
            )),
        }
    }
}

/// A peer that gossip calls alive but whose address refuses every dial.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Undialable {
    /// The address it announces.
    pub address: String,
    /// The last dial's error.
    pub error: String,
}

/// This member's view of who can be dialed: itself at its advertised
/// address, and its peers at theirs. Shared by the check, the gossip loop
/// and whoever reports (metrics, `/v1/cluster`).
#[derive(Debug)]
pub struct Reachability {
    own: Mutex<SelfCheck>,
    peers: Mutex<BTreeMap<String, Undialable>>,
    /// Times a peer turned alive-but-undialable.
    undialable_total: AtomicU64,
}

impl Default for Reachability {
    fn default() -> Self {
        Self {
            own: Mutex::new(SelfCheck::Unchecked),
            peers: Mutex::default(),
            undialable_total: AtomicU64::new(0),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Reachability {
    /// What the last self-check found.
    pub fn own(&self) -> SelfCheck {
        lock(&self.own).clone()
    }

    /// The peers alive by gossip whose addresses cannot be dialed now.
    pub fn undialable(&self) -> BTreeMap<String, Undialable> {
        lock(&self.peers).clone()
    }

    /// How many times a peer became alive-but-undialable.
    pub fn undialable_total(&self) -> u64 {
        self.undialable_total.load(Ordering::Relaxed)
    }

    fn set_own(&self, check: SelfCheck) -> SelfCheck {
        std::mem::replace(&mut *lock(&self.own), check)
    }

    /// Compares gossip's alive peers (id, address) with the pool's record of
    /// failing dials: a peer whose address has failed every dial for at
    /// least `after` (and at least twice) while gossip keeps it alive is
    /// logged and counted once, until that changes. A crashed peer does not
    /// qualify: its heartbeats stop, and gossip suspects it well within one
    /// failure timeout.
    pub fn watch_peers<'a>(
        &self,
        alive: impl IntoIterator<Item = (&'a str, &'a str)>,
        pool: &Pool,
        after: Duration,
    ) {
        let now = Instant::now();
        let mut peers = lock(&self.peers);
        let mut seen = Vec::new();
        for (id, address) in alive {
            seen.push(id);
            let failing = pool
                .dial_failures(address)
                .filter(|f| f.count >= 2 && now.duration_since(f.since) >= after);
            match (peers.get(id), failing) {
                (Some(known), Some(_)) if known.address == address => {}
                (_, Some(f)) => {
                    tracing::error!(
                        member = %id,
                        %address,
                        error = %f.last_error,
                        "member {id} is alive by gossip but its advertised address {address} \
                         cannot be dialed: {}; check member.advertise on {id}",
                        f.last_error
                    );
                    self.undialable_total.fetch_add(1, Ordering::Relaxed);
                    peers.insert(
                        id.to_string(),
                        Undialable {
                            address: address.to_string(),
                            error: f.last_error,
                        },
                    );
                }
                (Some(_), None) => {
                    tracing::info!(member = %id, %address, "member {id} can be dialed at {address} again");
                    peers.remove(id);
                }
                (None, None) => {}
            }
        }
        // Down, left or gone: no longer "alive but undialable"; if it comes
        // back alive and still undialable, that is a new state, logged anew.
        peers.retain(|id, _| seen.contains(&id.as_str()));
    }
}

/// Who this member is, as its `status` RPC answers.
#[derive(Clone, Debug)]
pub struct Identity {
    /// `member.id`.
    pub id: String,
    /// This start's incarnation.
    pub incarnation: u64,
}

/// One dial of `advertise` over `pool`: the handshake, then `status`.
async fn dial_self(pool: &Pool, advertise: &str, me: &Identity) -> SelfCheck {
    let answer = pool
        .call(advertise, STATUS_TIMEOUT, |c, ctx| async move {
            c.status(ctx).await
        })
        .await;
    // No connection to itself stays pooled (nor one to whoever answered).
    pool.invalidate(advertise);
    match answer {
        Ok(Ok(s)) if s.id == me.id && s.incarnation == me.incarnation => SelfCheck::Reachable,
        Ok(Ok(s)) => SelfCheck::OtherMember {
            id: s.id,
            incarnation: s.incarnation,
        },
        Ok(Err(e)) => SelfCheck::Unreachable(format!("the member there refused status: {e}")),
        Err(e) => SelfCheck::Unreachable(e.to_string()),
    }
}

/// Dials `advertise` until it reaches this member, another member answers,
/// or `bound` has passed; records and returns what it found, logging a
/// failure as an error that names `member.advertise`.
pub async fn verify_self(
    pool: &Pool,
    advertise: &str,
    me: &Identity,
    bound: Duration,
    reach: &Reachability,
) -> SelfCheck {
    let until = Instant::now() + bound;
    let found = loop {
        let found = dial_self(pool, advertise, me).await;
        let now = Instant::now();
        match found {
            SelfCheck::Unreachable(_) if now < until => {
                tokio::time::sleep(RETRY_EVERY.min(until - now)).await;
            }
            found => break found,
        }
    };
    let was = reach.set_own(found.clone());
    let changed = std::mem::discriminant(&was) != std::mem::discriminant(&found);
    match found.problem() {
        // `warn` checks again while it fails: one error per change, not
        // one per attempt.
        Some(_) if !changed => tracing::debug!(%advertise, "member.advertise still fails"),
        Some(problem) => tracing::error!(
            %advertise,
            "member.advertise {advertise} {problem}; peers dial this member there, so set \
             member.advertise to the address they reach it at"
        ),
        None if changed && was != SelfCheck::Unchecked => {
            tracing::info!(%advertise, "member.advertise {advertise} reaches this member now");
        }
        None => tracing::debug!(%advertise, "member.advertise reaches this member"),
    }
    found
}

/// The self-check as `member.advertise_check` asks: `Refuse` checks now and
/// returns what failed; `Warn` checks in the background (and again every
/// [`RECHECK_EVERY`] while it fails, until `stop`), never failing start;
/// `Off` does nothing.
pub async fn check_at_start(
    mode: AdvertiseCheck,
    pool: std::sync::Arc<Pool>,
    advertise: String,
    me: Identity,
    bound: Duration,
    reach: std::sync::Arc<Reachability>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<Option<tokio::task::JoinHandle<()>>, SelfCheck> {
    match mode {
        AdvertiseCheck::Off => Ok(None),
        AdvertiseCheck::Refuse => match verify_self(&pool, &advertise, &me, bound, &reach).await {
            SelfCheck::Reachable => Ok(None),
            failed => Err(failed),
        },
        AdvertiseCheck::Warn => Ok(Some(tokio::spawn(async move {
            loop {
                let found = tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return,
                    found = verify_self(&pool, &advertise, &me, bound, &reach) => found,
                };
                if found == SelfCheck::Reachable {
                    return;
                }
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(RECHECK_EVERY) => {}
                }
            }
        }))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gauge_and_the_problem_of_each_outcome() {
        let other = SelfCheck::OtherMember {
            id: "node-2".into(),
            incarnation: 7,
        };
        for (check, gauge, problem) in [
            (SelfCheck::Unchecked, -1.0, None),
            (SelfCheck::Reachable, 1.0, None),
            (
                SelfCheck::Unreachable("refused".into()),
                0.0,
                Some("reaches nothing: refused"),
            ),
            (
                other,
                0.0,
                Some("reaches a different member: node-2 (incarnation 7)"),
            ),
        ] {
            assert_eq!(check.gauge(), gauge, "{check:?}");
            assert_eq!(check.problem().as_deref(), problem, "{check:?}");
        }
    }
}
