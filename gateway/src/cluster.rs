//! The gateway's view of the cluster: gossip membership, the ring built from
//! it (cached, rebuilt only when the member set or weights change), and local
//! liveness hints from failed RPCs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_node::membership::{MemberList, Reachable, RingView, SharedMembership};
use tokio::time::Instant;

/// The member lists (current, future) the rings were built from, and the
/// rings.
type CachedRing = ((MemberList, MemberList), RingView);

/// Membership, ring cache and local suspicions.
pub struct Cluster {
    membership: SharedMembership,
    /// The members the cached ring was built from, sorted by id, and the ring.
    /// A std mutex: held only to compare and swap, never across an await.
    ring: Mutex<Option<CachedRing>>,
    /// Nodes whose last RPC failed at the transport level or timed out, with
    /// the instant until which they are treated as down by this gateway.
    suspects: Mutex<Suspects>,
    /// The last snapshot built and what it was built from: requests share it
    /// until gossip's change counter or the suspects move, or a suspicion in
    /// it expires. Building one is ~20 k instructions (a tenth of a GET's
    /// gateway cost) and nearly every request would build the same one.
    last: Mutex<Option<Cached>>,
    suspect_for: Duration,
    /// Smoothed RPC latency per node in microseconds, from every call this
    /// gateway made: it picks which owner coordinates a write.
    latency: Mutex<HashMap<String, f64>>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("suspect_for", &self.suspect_for)
            .finish_non_exhaustive()
    }
}

/// Local suspicions, and a counter moved by every change to them so that a
/// cached snapshot knows it is out of date.
#[derive(Debug, Default)]
struct Suspects {
    until: HashMap<String, Instant>,
    changes: u64,
}

/// A snapshot and the state it was derived from.
#[derive(Debug)]
struct Cached {
    membership_changes: u64,
    suspect_changes: u64,
    /// The earliest instant a suspicion it counted as down expires; from then
    /// on that node is live again and the snapshot is stale.
    stale_at: Option<Instant>,
    snapshot: Arc<Snapshot>,
}

/// What one request needs from the cluster view, taken under one lock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// The current ring, which reads use (none while no storage node is
    /// known), and while members join or leave the future one, which writes
    /// also go to.
    pub view: RingView,
    /// Storage members by id: address, and whether usable now.
    pub nodes: HashMap<String, Reachable>,
}

impl Snapshot {
    /// Each storage node's share of all stored replicas on the current ring
    /// (empty while there is none): what `/v1/cluster` and the stats show.
    pub fn replicated_shares(&self, n: usize) -> std::collections::BTreeMap<String, f64> {
        self.view
            .current()
            .map(|ring| {
                ring.ownership(n)
                    .into_iter()
                    .map(|(id, o)| (id, o.replicated))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether requests may go to `id` now (gossip says up and no recent
    /// local failure).
    pub fn is_live(&self, id: &str) -> bool {
        self.nodes.get(id).is_some_and(|r| r.up)
    }

    /// The RPC address of `id`.
    pub fn address(&self, id: &str) -> Option<&str> {
        self.nodes.get(id).map(|r| r.address.as_str())
    }

    /// Number of usable storage nodes.
    pub fn live_count(&self) -> usize {
        self.nodes.values().filter(|r| r.up).count()
    }
}

impl Cluster {
    /// A view over `membership`; a failed RPC makes a node count as down
    /// locally for `suspect_for`.
    pub fn new(membership: SharedMembership, suspect_for: Duration) -> Self {
        Self {
            membership,
            ring: Mutex::new(None),
            suspects: Mutex::new(Suspects::default()),
            last: Mutex::new(None),
            suspect_for,
            latency: Mutex::new(HashMap::new()),
        }
    }

    /// Folds one call's duration into `id`'s smoothed latency (an
    /// exponentially weighted mean, one eighth per sample, like TCP's SRTT).
    pub fn observe(&self, id: &str, took: Duration) {
        let sample = took.as_secs_f64() * 1e6;
        let mut l = lock(&self.latency);
        match l.get_mut(id) {
            Some(mean) => *mean += (sample - *mean) / 8.0,
            None => {
                l.insert(id.to_string(), sample);
            }
        }
    }

    /// `id`'s smoothed latency in microseconds; 0 before any call, so a node
    /// not yet measured is not avoided.
    pub fn latency_us(&self, id: &str) -> f64 {
        lock(&self.latency).get(id).copied().unwrap_or(0.0)
    }

    /// The shared gossip state.
    pub fn membership(&self) -> &SharedMembership {
        &self.membership
    }

    /// Records a transport failure or timeout talking to `id`.
    pub fn suspect(&self, id: &str) {
        let until = Instant::now() + self.suspect_for;
        let mut s = lock(&self.suspects);
        s.until.insert(id.to_string(), until);
        s.changes += 1;
    }

    /// Records a successful answer from `id`.
    pub fn clear(&self, id: &str) {
        let mut s = lock(&self.suspects);
        if !s.until.is_empty() && s.until.remove(id).is_some() {
            s.changes += 1;
        }
    }

    /// Ring, addresses and liveness for one request. Shared between requests
    /// only while nothing it was derived from has moved (gossip's
    /// [`changes`](shoal_gossip::Membership::changes), the suspects, the
    /// clock past a suspicion's end), so it is exactly as fresh as one built
    /// per request. (A snapshot shared for a fixed 50 ms instead let a
    /// preference list lag a finished join; a test saw it.)
    pub fn snapshot(&self) -> Arc<Snapshot> {
        let membership_changes = lock(&self.membership).changes();
        let suspect_changes = lock(&self.suspects).changes;
        {
            let last = lock(&self.last);
            if let Some(c) = last.as_ref() {
                if c.membership_changes == membership_changes
                    && c.suspect_changes == suspect_changes
                    && c.stale_at.is_none_or(|at| Instant::now() < at)
                {
                    return c.snapshot.clone();
                }
            }
        }
        let cached = self.build_snapshot();
        let snapshot = cached.snapshot.clone();
        *lock(&self.last) = Some(cached);
        snapshot
    }

    /// A fresh snapshot, labelled with the counters read before the state it
    /// was built from (each under the same lock as that state), so the label
    /// is never newer than the contents: a change that races the build moves
    /// a counter past the label and the next request builds again.
    fn build_snapshot(&self) -> Cached {
        let (membership_changes, ring_members, up) = {
            let m = lock(&self.membership);
            let up: Vec<String> = m
                .live_storage_members()
                .into_iter()
                .map(|i| i.id.as_str().to_string())
                .collect();
            (m.changes(), m.ring_members(), up)
        };
        let now = Instant::now();
        let (suspect_changes, suspected, stale_at) = {
            let s = lock(&self.suspects);
            let live: HashMap<String, Instant> = s
                .until
                .iter()
                .filter(|(_, until)| **until > now)
                .map(|(id, until)| (id.clone(), *until))
                .collect();
            let stale_at = live.values().min().copied();
            (s.changes, live, stale_at)
        };
        let nodes = shoal_node::membership::reachable(&ring_members, |i| {
            let id = i.id.as_str();
            up.iter().any(|u| u == id) && !suspected.contains_key(id)
        });
        Cached {
            membership_changes,
            suspect_changes,
            stale_at,
            snapshot: Arc::new(Snapshot {
                view: self.rings_for(&ring_members),
                nodes,
            }),
        }
    }

    /// The cached rings if the member lists did not change, else new ones.
    fn rings_for(&self, members: &[shoal_gossip::MemberInfo]) -> RingView {
        let lists = shoal_node::membership::member_lists(members);
        let mut cache = lock(&self.ring);
        if let Some((cached, rings)) = cache.as_ref() {
            if *cached == lists {
                return rings.clone();
            }
        }
        let view = shoal_node::membership::ring_view(members);
        if view.current().is_none() && !lists.0.is_empty() {
            // Gossip validates ids, so this means a weight the ring refuses
            // (logged by `ring_view`); keep routing with the old rings.
            return cache.as_ref().map(|(_, r)| r.clone()).unwrap_or_default();
        }
        tracing::info!(
            members = lists.0.len(),
            in_flux = view.in_flux(),
            "ring rebuilt"
        );
        *cache = Some((lists, view.clone()));
        view
    }
}

/// Locks a std mutex, recovering from poisoning: the guarded maps stay
/// consistent after any panic because every update is a single insert/remove.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use shoal_gossip::{Config, LocalMember, Membership, Role};

    fn cluster(suspect_for: Duration) -> (Cluster, SharedMembership) {
        let local = LocalMember {
            id: "node-1".into(),
            address: "127.0.0.1:7001".into(),
            role: Role::Storage,
            weight: 1,
            zone: "default".into(),
            incarnation: 1,
        };
        let m = Membership::new(
            Config::default(),
            local,
            Vec::new(),
            rand::rngs::StdRng::seed_from_u64(1),
            Duration::ZERO,
        )
        .expect("valid member");
        let shared: SharedMembership = Arc::new(Mutex::new(m));
        (Cluster::new(shared.clone(), suspect_for), shared)
    }

    #[tokio::test]
    async fn requests_share_a_snapshot_until_something_it_depends_on_moves() {
        let (c, membership) = cluster(Duration::from_millis(50));
        let first = c.snapshot();
        assert!(first.is_live("node-1"));
        assert!(Arc::ptr_eq(&first, &c.snapshot()), "nothing moved: shared");

        c.suspect("node-1");
        let suspected = c.snapshot();
        assert!(!suspected.is_live("node-1"), "a suspicion shows at once");
        assert!(Arc::ptr_eq(&suspected, &c.snapshot()));

        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(
            c.snapshot().is_live("node-1"),
            "an expired suspicion shows at once, with no other change"
        );

        c.suspect("node-1");
        assert!(!c.snapshot().is_live("node-1"));
        c.clear("node-1");
        assert!(
            c.snapshot().is_live("node-1"),
            "a cleared suspicion shows at once"
        );

        let before = c.snapshot();
        lock(&membership).set_weight(4);
        let after = c.snapshot();
        assert!(!Arc::ptr_eq(&before, &after), "a gossip change rebuilds");
        assert!(after.view.current().is_some(), "one storage member");
    }
}
