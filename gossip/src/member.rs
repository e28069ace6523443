//! Who a member is and how it is seen: ids, roles, statuses.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest member id accepted, in bytes. Bounding ids bounds digest entries, which
/// is what lets a message of `Config::max_message_bytes` describe a known number
/// of members.
pub const MAX_ID_LEN: usize = 128;

/// Longest address accepted, in bytes (a DNS name plus port fits).
pub const MAX_ADDRESS_LEN: usize = 256;

/// Longest zone accepted, in bytes (a DNS label, or any cloud's availability
/// zone name, fits).
pub const MAX_ZONE_LEN: usize = 64;

/// A member's stable name, such as `"node-1"`.
///
/// Shared (`Arc<str>`) because every digest of every round repeats every id:
/// cloning must not allocate. On the wire it is a plain string.
#[derive(Clone)]
pub struct MemberId(Arc<str>);

impl MemberId {
    /// Builds an id; [`Membership::new`](crate::Membership::new) checks its length.
    pub fn new(id: impl Into<Arc<str>>) -> Self {
        Self(id.into())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl PartialEq for MemberId {
    fn eq(&self, other: &Self) -> bool {
        // Ids that travelled through this process usually share one allocation.
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Eq for MemberId {}

impl PartialOrd for MemberId {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for MemberId {
    fn cmp(&self, other: &Self) -> Ordering {
        if Arc::ptr_eq(&self.0, &other.0) {
            Ordering::Equal
        } else {
            self.0.cmp(&other.0)
        }
    }
}

impl Hash for MemberId {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // Must hash like `str` so that `Borrow<str>` lookups work.
        self.0.hash(state);
    }
}

impl Borrow<str> for MemberId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for MemberId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for MemberId {
    fn from(id: &str) -> Self {
        Self(id.into())
    }
}

impl From<String> for MemberId {
    fn from(id: String) -> Self {
        Self(id.into())
    }
}

impl Serialize for MemberId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MemberId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::from)
    }
}

/// What a member does in the cluster; only storage members own ring ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Holds data: a `shoal-node`.
    Storage,
    /// Routes client requests and holds no data: a `shoal-gateway`.
    Gateway,
}

/// Where the member itself says it is in its life; only the member writes this,
/// and it travels in gossip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// Serving.
    Active,
    /// Decommission in progress: still serving, handing its ranges away.
    Leaving,
    /// Gone for good (until it restarts with a higher incarnation).
    Left,
}

/// A member's status as one observer sees it: the lifecycle the member announced,
/// combined with the observer's own failure detector. This is what the HTTP API
/// shows, hence the lower-case names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Heartbeating normally.
    Alive,
    /// Heartbeat late but not yet past the down threshold; still used for requests.
    Suspect,
    /// Heartbeat silent past the detection period.
    Down,
    /// Announced a decommission and is still heartbeating.
    Leaving,
    /// Announced that it left.
    Left,
}

impl Status {
    /// Whether requests may be sent to the member: alive, suspect or leaving.
    /// A suspect member counts as up because suspicion is an early warning, not a
    /// verdict; routing away from it would turn jitter into load shifts.
    pub fn is_up(self) -> bool {
        matches!(self, Status::Alive | Status::Suspect | Status::Leaving)
    }
}

/// One member as seen by the local member: what [`Membership::members`]
/// returns and what the HTTP API lists.
///
/// [`Membership::members`]: crate::Membership::members
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Stable name.
    pub id: MemberId,
    /// Where to reach it; opaque to this crate.
    pub address: String,
    /// Storage or gateway.
    pub role: Role,
    /// Seen status.
    pub status: Status,
    /// Relative capacity; the ring gives it `vnodes x weight` tokens.
    pub weight: u32,
    /// Its failure domain (rack, availability zone); opaque to this crate.
    pub zone: String,
    /// Latest heartbeat known.
    pub heartbeat: u64,
    /// Process generation; rises on every restart.
    pub incarnation: u64,
}

/// Identity of the local member, given at construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalMember {
    /// Stable name, unique in the cluster, at most [`MAX_ID_LEN`] bytes.
    pub id: MemberId,
    /// Address other members send gossip to, at most [`MAX_ADDRESS_LEN`] bytes.
    pub address: String,
    /// Storage or gateway.
    pub role: Role,
    /// Relative capacity.
    pub weight: u32,
    /// Failure domain (rack, availability zone), 1..=[`MAX_ZONE_LEN`]
    /// bytes; opaque to this crate, which only carries it.
    pub zone: String,
    /// Must be higher than on any previous run of this member (the caller persists
    /// it, or uses wall-clock seconds at start); a restart with the same incarnation
    /// would be mistaken for stale gossip about the old process.
    pub incarnation: u64,
}
