//! Tombstone GC without a grace clock: a tombstone is purged once every
//! replica of its key is known to hold it and no member holds a hint for
//! the key, however long that takes; a replica that stays away keeps every
//! tombstone it may need.
//!
//! Each pass, a node looks at the tombstone-only keys it is the first
//! replica of (so one node decides per key) that it has seen, unchanged,
//! for at least `tombstones.settle_ms` (the longest a write, a read repair
//! or a stream may still be in flight with an older version). That age is
//! measured on this node's monotonic clock from when its GC first saw the
//! state, not from the tombstone's write time, which another node's wall
//! clock stamped: a skewed clock must not make a tombstone look settled
//! early. It runs only while
//! every storage member is alive and no join or leave is under way: a down
//! member may hold a hint, a moving range has replicas the check would miss.
//! It asks every storage member for each key's state digest and whether it
//! holds a hint for it (`gc_check`); a key whose N replicas all hold the very
//! same tombstones, with no hint anywhere and no other copy on any member
//! (a member outside the owners can keep one from before a ring change), is
//! purged on every member holding it (`gc_purge`, which removes the state
//! only if it is still that one: a write since the check keeps the key). A
//! member holding another copy is sent the tombstones first, so a later
//! pass finds it alike.
//!
//! Why nothing comes back: every copy of the key is the purged tombstones
//! (or newer), and nothing older is in flight, so there is no older version
//! left to resurrect. Why no later write is lost: a replica that removes a
//! key's state records the highest counter it minted for it (the mint
//! floor, durable in the same batch), and mints above it when the key is
//! written again, so no clock that still remembers the purged state (a
//! copy the GC did not know of) can cover the new write's dot.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::config::TombstoneConfig;
use crate::env::Env;
use crate::membership::SharedMembership;
use crate::pool::Pool;
use crate::store::Store;

/// Keys one pass looks at per page (and per RPC).
const PAGE: usize = 1000;
/// Pages one pass looks at, at most: a pass is bounded work.
const MAX_PAGES: usize = 100;
/// Bound on each GC RPC.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Candidates remembered between passes (with when each was first seen):
/// at most what one pass looks at.
const MAX_SEEN: usize = PAGE * MAX_PAGES;

/// When this node's GC first saw each candidate's state, by digest.
type Seen = HashMap<Vec<u8>, ([u8; 32], Instant)>;

/// The GC of one node.
pub(crate) struct TombstoneGc {
    pub(crate) id: String,
    pub(crate) n: usize,
    pub(crate) store: Arc<Store>,
    pub(crate) pool: Arc<Pool>,
    pub(crate) membership: SharedMembership,
    pub(crate) env: Env,
    pub(crate) config: TombstoneConfig,
}

/// Why a pass did nothing.
#[derive(Debug, PartialEq, Eq)]
enum Skip {
    MemberDown(String),
    InFlux,
}

impl TombstoneGc {
    /// Runs a pass every `tombstones.gc_interval_ms` until `shutdown`.
    pub(crate) async fn run(self, mut shutdown: watch::Receiver<bool>) {
        let every = Duration::from_millis(self.config.gc_interval_ms);
        let mut last_skip: Option<String> = None;
        let mut seen = Seen::new();
        loop {
            tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.pass(&mut seen).await {
                Ok(Ok(0)) => last_skip = None,
                Ok(Ok(purged)) => {
                    last_skip = None;
                    tracing::info!(purged, "tombstones purged: every replica held them");
                }
                Ok(Err(skip)) => {
                    // Said once per reason, not every pass.
                    let why = format!("{skip:?}");
                    if last_skip.as_deref() != Some(why.as_str()) {
                        tracing::info!(reason = %why, "tombstone GC waits");
                        last_skip = Some(why);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "tombstone GC pass failed; retried later"),
            }
        }
    }

    /// One pass: how many tombstoned keys were purged on this node.
    async fn pass(&self, seen: &mut Seen) -> Result<Result<u64, Skip>, String> {
        let (view, storage) = {
            let m = crate::membership::lock(&self.membership);
            let members = m.ring_members();
            let mut storage = BTreeMap::new();
            for info in &members {
                if info.role != shoal_gossip::Role::Storage
                    || info.status == shoal_gossip::Status::Left
                {
                    continue;
                }
                let id = info.id.as_str().to_string();
                if !m.is_alive(&id) && id != self.id {
                    return Ok(Err(Skip::MemberDown(id)));
                }
                storage.insert(id, info.address.clone());
            }
            (crate::membership::ring_view(&members), storage)
        };
        if view.in_flux() {
            return Ok(Err(Skip::InFlux));
        }
        let settle = Duration::from_millis(self.config.settle_ms);
        let now = Instant::now();
        let mut still = Seen::new();
        let mut purged = 0;
        let mut cursor: Option<Vec<u8>> = None;
        for _ in 0..MAX_PAGES {
            let (store, after) = (self.store.clone(), cursor.clone());
            let (page, next) = self
                .env
                .spawn_blocking(move || store.tombstone_candidates(after.as_deref(), PAGE))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            // Mine to decide (this node is the key's first replica), and
            // settled: seen unchanged for `settle` already.
            let mut mine: Vec<(Vec<u8>, [u8; 32], Vec<String>)> = Vec::new();
            for (key, digest) in page {
                let (current, _) = view.write_replicas_at(crate::keys::position(&key), self.n);
                if current.first() != Some(&self.id.as_str()) {
                    continue;
                }
                let since = match seen.get(&key) {
                    Some((d, at)) if *d == digest => *at,
                    _ => now,
                };
                if still.len() < MAX_SEEN {
                    still.insert(key.clone(), (digest, since));
                }
                if now.duration_since(since) >= settle {
                    let owners = current.into_iter().map(str::to_string).collect();
                    mine.push((key, digest, owners));
                }
            }
            if !mine.is_empty() {
                purged += self.decide(mine, &storage).await?;
            }
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        // Keys purged, rewritten or no longer this node's are forgotten.
        *seen = still;
        Ok(Ok(purged))
    }

    /// Checks `keys` with every storage member and purges those every
    /// owner holds alike with no hint anywhere; returns how many this node
    /// purged.
    async fn decide(
        &self,
        keys: Vec<(Vec<u8>, [u8; 32], Vec<String>)>,
        storage: &BTreeMap<String, String>,
    ) -> Result<u64, String> {
        let asked: Vec<Vec<u8>> = keys.iter().map(|(k, _, _)| k.clone()).collect();
        // Per member, per key: (digest, hinted). Ordered maps throughout, so
        // that a simulation replays the same RPCs in the same order.
        let mut answers: BTreeMap<&str, Vec<crate::rpc::GcState>> = BTreeMap::new();
        for (member, address) in storage {
            let states = if *member == self.id {
                let (store, ks) = (self.store.clone(), asked.clone());
                self.env
                    .spawn_blocking(move || {
                        ks.iter()
                            .map(|k| {
                                store
                                    .gc_state(k)
                                    .map(|(digest, hinted)| crate::rpc::GcState { digest, hinted })
                            })
                            .collect::<Result<Vec<_>, _>>()
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?
            } else {
                let ks = asked.clone();
                self.pool
                    .call(address, CALL_TIMEOUT, |c, ctx| async move {
                        c.gc_check(ctx, ks).await
                    })
                    .await
                    .map_err(|e| format!("gc_check {member}: {e}"))?
                    .map_err(|e| format!("gc_check {member}: {e}"))?
            };
            if states.len() != asked.len() {
                return Err(format!(
                    "gc_check {member}: answered {} of {} keys",
                    states.len(),
                    asked.len()
                ));
            }
            answers.insert(member.as_str(), states);
        }
        // Per member, what to purge there; and the members holding an older
        // copy outside the key's owners, to be sent the tombstones first.
        let mut plan: BTreeMap<&str, Vec<crate::store::Candidate>> = BTreeMap::new();
        let mut strays: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, (key, digest, owners)) in keys.iter().enumerate() {
            let hinted = answers.values().any(|states| states[i].hinted);
            let held_alike = owners.len() == self.n.min(storage.len())
                && owners.iter().all(|o| {
                    answers
                        .get(o.as_str())
                        .is_some_and(|states| states[i].digest == Some(*digest))
                });
            if !held_alike || hinted {
                continue;
            }
            // A member that is not an owner can still hold a copy: it owned
            // the range before a ring change (a leave that a crash undid, a
            // join), kept what it stored there, and anti-entropy no longer
            // visits it; the next ring change can make it an owner again and
            // bring its copy back (simulation seed 63: a deleted value came
            // back this way). So every copy anywhere must be these
            // tombstones before any is purged.
            let other: Vec<&str> = answers
                .iter()
                .filter(|(_, states)| states[i].digest.is_some_and(|d| d != *digest))
                .map(|(member, _)| *member)
                .collect();
            if !other.is_empty() {
                for member in other {
                    strays.entry(member).or_default().push(i);
                }
                continue;
            }
            for (member, states) in &answers {
                if states[i].digest == Some(*digest) {
                    plan.entry(member).or_default().push((key.clone(), *digest));
                }
            }
        }
        self.send_tombstones(&keys, strays, storage).await;
        let mut purged_here = 0;
        for (owner, entries) in plan {
            if owner == self.id {
                let store = self.store.clone();
                purged_here += self
                    .env
                    .spawn_blocking(move || {
                        let mut n = 0u64;
                        for (k, d) in &entries {
                            if store.gc_purge(k, d)? {
                                n += 1;
                            }
                        }
                        Ok::<_, crate::store::StoreError>(n)
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
            } else if let Some(address) = storage.get(owner) {
                // A replica that misses its purge keeps its tombstones; the
                // next pass finds the key with one copy left and, the others
                // gone, does nothing more with it (anti-entropy has nothing
                // to bring back: a tombstone), so an error is only logged.
                if let Err(e) = self
                    .pool
                    .call(address, CALL_TIMEOUT, |c, ctx| async move {
                        c.gc_purge(ctx, entries).await
                    })
                    .await
                {
                    tracing::debug!(%owner, error = %e, "gc_purge failed");
                }
            }
        }
        Ok(purged_here)
    }

    /// Merges this node's tombstones for the keys at `strays` into the
    /// members holding other copies of them, so that the next pass finds
    /// every copy alike (tombstones that cover the stray version replace
    /// it; a newer stray write keeps the key, as it should). Failures are
    /// only logged: the key is simply not purged yet.
    async fn send_tombstones(
        &self,
        keys: &[(Vec<u8>, [u8; 32], Vec<String>)],
        strays: BTreeMap<&str, Vec<usize>>,
        storage: &BTreeMap<String, String>,
    ) {
        for (member, indexes) in strays {
            let Some(address) = storage.get(member) else {
                continue;
            };
            for i in indexes {
                let key = keys[i].0.clone();
                let store = self.store.clone();
                let read_key = key.clone();
                let set = match self.env.spawn_blocking(move || store.read(&read_key)).await {
                    Ok(Ok(Some(set))) => set,
                    Ok(Ok(None)) => continue,
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "tombstone GC: local read failed");
                        continue;
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "tombstone GC: local read failed");
                        continue;
                    }
                };
                let request = crate::rpc::ReplicateRequest {
                    key,
                    siblings: set,
                    hint_for: None,
                };
                let sent = self
                    .pool
                    .call(address, CALL_TIMEOUT, |c, ctx| async move {
                        c.replicate(ctx, request).await
                    })
                    .await;
                match sent {
                    Ok(Ok(())) => {
                        tracing::debug!(%member, "tombstone GC: sent tombstones to a stray copy")
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(%member, error = %e, "tombstone GC: stray copy refused the tombstones")
                    }
                    Err(e) => {
                        tracing::debug!(%member, error = %e, "tombstone GC: stray copy unreachable")
                    }
                }
            }
        }
    }
}
