//! The gateway's view of the cluster: gossip membership, the ring built from
//! it (cached, rebuilt only when the member set or weights change), and local
//! liveness hints from failed RPCs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_node::membership::SharedMembership;
use shoal_ring::{Member, Ring, RingConfig};
use tokio::time::Instant;

/// The member set (id, weight; sorted) a ring was built from, and the ring.
type CachedRing = (Vec<(String, u32)>, Arc<Ring>);

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
    /// The ring (`None` while no storage node is known).
    pub ring: Option<Arc<Ring>>,
    /// Storage members by id: (address, usable now).
    pub nodes: HashMap<String, (String, bool)>,
}

impl Snapshot {
    /// Whether requests may go to `id` now (gossip says up and no recent
    /// local failure).
    pub fn is_live(&self, id: &str) -> bool {
        self.nodes.get(id).is_some_and(|(_, live)| *live)
    }

    /// The RPC address of `id`.
    pub fn address(&self, id: &str) -> Option<&str> {
        self.nodes.get(id).map(|(addr, _)| addr.as_str())
    }

    /// Number of usable storage nodes.
    pub fn live_count(&self) -> usize {
        self.nodes.values().filter(|(_, live)| *live).count()
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
        }
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

    /// Ring, addresses and liveness for one request.
    pub fn snapshot(&self) -> Snapshot {
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
        let nodes: HashMap<String, (String, bool)> = ring_members
            .iter()
            .map(|i| {
                let id = i.id.as_str().to_string();
                let live = up.contains(&id) && !self.suspected(&id, now);
                (id, (i.address.clone(), live))
            })
            .collect();
        let mut key: Vec<(String, u32)> = ring_members
            .iter()
            .map(|i| (i.id.as_str().to_string(), i.weight))
            .collect();
        key.sort();
        let ring = self.ring_for(key);
        Snapshot { ring, nodes }
    }

    /// The cached ring if `members` did not change, else a new one.
    fn ring_for(&self, members: Vec<(String, u32)>) -> Option<Arc<Ring>> {
        if members.is_empty() {
            return None;
        }
        let mut cache = lock(&self.ring);
        if let Some((cached, ring)) = cache.as_ref() {
            if *cached == members {
                return Some(ring.clone());
            }
        }
        match Ring::new(
            members.iter().map(|(id, w)| Member::new(id.clone(), *w)),
            RingConfig::default(),
        ) {
            Ok(ring) => {
                let ring = Arc::new(ring);
                tracing::info!(members = members.len(), "ring rebuilt");
                *cache = Some((members, ring.clone()));
                Some(ring)
            }
            Err(e) => {
                // Gossip validates ids and weights, so this means a member
                // with a weight the ring refuses; keep routing with the old ring.
                tracing::error!(error = %e, "cannot build the ring from the membership");
                cache.as_ref().map(|(_, r)| r.clone())
            }
        }
    }
}

/// Locks a std mutex, recovering from poisoning: the guarded maps stay
/// consistent after any panic because every update is a single insert/remove.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
