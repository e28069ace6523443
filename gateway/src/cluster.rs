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
    suspects: Mutex<HashMap<String, Instant>>,
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
            suspects: Mutex::new(HashMap::new()),
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
        lock(&self.suspects).insert(id.to_string(), until);
    }

    /// Records a successful answer from `id`.
    pub fn clear(&self, id: &str) {
        let mut s = lock(&self.suspects);
        if !s.is_empty() {
            s.remove(id);
        }
    }

    fn suspected(&self, id: &str, now: Instant) -> bool {
        lock(&self.suspects)
            .get(id)
            .is_some_and(|until| *until > now)
    }

    /// Ring, addresses and liveness for one request, built for it: a
    /// snapshot shared between requests for even 50 ms let a preference list
    /// lag a finished join (a test saw it), so it is rebuilt each time.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::new(self.build_snapshot())
    }

    fn build_snapshot(&self) -> Snapshot {
        let (ring_members, up): (Vec<shoal_gossip::MemberInfo>, Vec<String>) = {
            let m = lock(&self.membership);
            let up = m
                .live_storage_members()
                .into_iter()
                .map(|i| i.id.as_str().to_string())
                .collect();
            (m.ring_members(), up)
        };
        let now = Instant::now();
        let nodes = shoal_node::membership::reachable(&ring_members, |i| {
            let id = i.id.as_str();
            up.iter().any(|u| u == id) && !self.suspected(id, now)
        });
        Snapshot {
            view: self.rings_for(&ring_members),
            nodes,
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
