//! The tarpc service that nodes serve and gateways (and other nodes) call.
//!
//! It is defined once, here, and shared: `shoal-gateway` depends on this crate
//! for the client. Every member serves it, gateways included, because gossip
//! travels over it; a gateway answers the data methods with
//! [`RemoteError::NotStorage`].
//!
//! Frames are length-delimited with a hard cap ([`crate::Config::max_frame_bytes`]):
//! an oversized or garbage length prefix closes that one connection, and a
//! frame that does not decode into these types is rejected by the transport;
//! the node goes on serving everyone else.

use serde::{Deserialize, Serialize};
use shoal_gossip::Message;
use shoal_vclock::{CausalView, Content, Context, SiblingSet};

pub use crate::buckets::VersionedProps;
pub use crate::store::{ListEntry, ListPage, ScanCursor, ScanEntry, ScanPage};
/// The Merkle diff messages, re-exported so other implementers of the
/// service need not depend on `shoal-merkle` themselves.
pub use shoal_merkle::{Request as MerkleRequest, Response as MerkleResponse};

/// Version of this service's wire types; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// A replica, as seen by a caller.
#[tarpc::service]
pub trait Replica {
    /// Coordinates a client write: under the key's lock, read the local
    /// siblings, apply `update` with a fresh counter of this node, store the
    /// result durably, and return it for replication to the other targets.
    async fn coordinate(request: CoordinateRequest) -> Result<SiblingSet, RemoteError>;

    /// [`Replica::coordinate`], then replicates the new version to the rest
    /// of the write's targets itself, in parallel with its own commit, and
    /// answers with the quorum's verdict: the router makes one call per
    /// write instead of one per replica, and the coordinator's fsync overlaps
    /// the replicas'.
    async fn coordinate_forward(request: ForwardRequest) -> Result<Forwarded, RemoteError>;

    /// Merges (`vclock` sync) a sibling set into local state, durably. With
    /// `hint_for`, the set is kept in the hint space for that owner instead.
    async fn replicate(request: ReplicateRequest) -> Result<(), RemoteError>;

    /// The local sibling set of a key (`None` if this node has nothing).
    async fn read(key: Vec<u8>) -> Result<Option<SiblingSet>, RemoteError>;

    /// What this node stores for a key, hints included, without repairing.
    async fn inspect(key: Vec<u8>) -> Result<KeyReport, RemoteError>;

    /// One gossip message from the member at `from`; returns the replies.
    async fn gossip(from: String, message: Message) -> Result<Vec<Message>, RemoteError>;

    /// This member's identity and counters.
    async fn status() -> Result<NodeStatus, RemoteError>;

    /// Anti-entropy: answers one step of a peer's Merkle diff
    /// ([`shoal_merkle::Diff`]) from this node's tree, which covers every data
    /// key it holds (hints excluded). The asker drives the diff; this side is
    /// stateless, so a diff survives any number of lost or retried calls.
    async fn merkle(request: MerkleRequest) -> Result<MerkleResponse, RemoteError>;

    /// One page of the data keys in `ranges`, in ring order: digests only
    /// (anti-entropy compares them) or with their states (range streaming for
    /// a join). Resume by passing the returned cursor back; the scan holds no
    /// server state, so either side may crash and the other resume.
    async fn scan(request: ScanRequest) -> Result<ScanPage, RemoteError>;

    /// The local states of several keys (`None` where absent), in order.
    /// The answer may be a prefix of the keys asked: it stops once the states
    /// reach half a frame, so that it always fits one; ask again for the rest.
    async fn read_many(keys: Vec<Vec<u8>>) -> Result<Vec<Option<SiblingSet>>, RemoteError>;

    /// Merges (`vclock` sync) several states into local data in one durable
    /// batch: what anti-entropy pushes and decommission streams. Returns how
    /// many keys changed. Callers keep a batch under half a frame
    /// ([`batches_by_size`]).
    async fn merge_batch(entries: Vec<(Vec<u8>, SiblingSet)>) -> Result<u64, RemoteError>;

    /// Runs anti-entropy now with every live peer this node shares ranges
    /// with, both directions, and reports what moved (what `nodetool repair`
    /// is to Cassandra; `cargo xtask cluster repair NODE` calls it).
    async fn repair() -> Result<RepairReport, RemoteError>;

    /// Decommissions this node: announce `leaving`, wait for the cluster to
    /// route writes to the new owners as well, stream every range this node
    /// replicates to its new owners, announce `left`, then stop the node.
    /// Answers once the ranges are handed over, before the stop.
    ///
    /// Refused when fewer than N live storage members would remain (writes
    /// at W could then fail for good), unless `force`. A second call while
    /// one runs starts nothing: it waits for the running one and answers
    /// its report, so an operator's retry after a timeout is safe.
    async fn decommission(force: bool) -> Result<HandoverReport, RemoteError>;

    /// Every bucket's props record this node holds, or `None` when
    /// `digest` is already its table's ([`crate::buckets::PropsTable::digest`]):
    /// the once-a-second pull that spreads props changes.
    async fn bucket_props(
        digest: [u8; 32],
    ) -> Result<Option<Vec<(String, VersionedProps)>>, RemoteError>;

    /// Takes the props records newer than this node's, durably, before
    /// answering; a gateway counts the answer as one copy of the change.
    async fn set_bucket_props(records: Vec<(String, VersionedProps)>) -> Result<(), RemoteError>;

    /// One page of a bucket's keys this node stores, in ring order, each
    /// with its state's skeleton (values emptied), tombstones included so
    /// that the lister can merge replicas' answers.
    async fn list_keys(request: ListRequest) -> Result<ListPage, RemoteError>;

    /// Tombstone GC, the check: for each key (at most [`MAX_BATCH_KEYS`]),
    /// the digest of this member's state and whether it holds a hint for it.
    async fn gc_check(keys: Vec<Vec<u8>>) -> Result<Vec<GcState>, RemoteError>;

    /// Tombstone GC, the purge: removes each key whose state still has the
    /// digest given (at most [`MAX_BATCH_KEYS`]); returns how many it removed.
    async fn gc_purge(entries: Vec<(Vec<u8>, [u8; 32])>) -> Result<u64, RemoteError>;
}

/// One key as a tombstone GC check sees it on one member.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GcState {
    /// The digest of the member's state (`None`: it holds none).
    pub digest: Option<[u8; 32]>,
    /// Whether the member holds a hint for the key (for any owner).
    pub hinted: bool,
}

/// Where a listing resumes: after `(position, key)` in ring order, or from
/// `position` itself when `after` is `None`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListRequest {
    /// The bucket.
    pub bucket: String,
    /// Ring position to start at.
    pub position: u64,
    /// The last key already listed at `position`, if any.
    pub after: Option<Vec<u8>>,
    /// Most entries wanted (capped at [`MAX_SCAN_KEYS`]).
    pub limit: u32,
}

/// Largest page a [`Replica::scan`] returns, whatever the caller asks.
pub const MAX_SCAN_KEYS: u32 = 10_000;
/// Most ranges one [`Replica::scan`] may name.
pub const MAX_SCAN_RANGES: usize = 4_096;
/// Most keys one [`Replica::read_many`] or [`Replica::merge_batch`] may carry.
pub const MAX_BATCH_KEYS: usize = 10_000;

/// Splits `items` into batches of at most [`MAX_BATCH_KEYS`] keys and about
/// `max_bytes` of encoded state each (a single larger state goes alone), so
/// that every [`Replica::merge_batch`] request fits a frame.
pub fn batches_by_size(
    items: Vec<(Vec<u8>, SiblingSet)>,
    max_bytes: usize,
) -> Vec<Vec<(Vec<u8>, SiblingSet)>> {
    let mut out = Vec::new();
    let mut batch = Vec::new();
    let mut bytes = 0usize;
    for (key, set) in items {
        let size = key.len() + set.encode().len() + 16;
        if !batch.is_empty() && (bytes + size > max_bytes || batch.len() >= MAX_BATCH_KEYS) {
            out.push(std::mem::take(&mut batch));
            bytes = 0;
        }
        bytes += size;
        batch.push((key, set));
    }
    if !batch.is_empty() {
        out.push(batch);
    }
    out
}

/// What [`Replica::scan`] reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanRequest {
    /// Token ranges, on the ring's grid (up to [`MAX_SCAN_RANGES`]).
    pub ranges: Vec<shoal_merkle::TokenRange>,
    /// Where the previous page stopped.
    pub cursor: Option<ScanCursor>,
    /// Keys per page (capped at [`MAX_SCAN_KEYS`]).
    pub max_keys: u32,
    /// Whether to return the states, not only their digests.
    pub values: bool,
}

/// What one anti-entropy exchange with one peer did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExchangeReport {
    /// The peer.
    pub peer: String,
    /// Token ranges compared (adjacent shared ranges merged into one).
    pub ranges: u64,
    /// Merkle leaves those ranges span.
    pub leaves_compared: u64,
    /// Diff round trips.
    pub rounds: u64,
    /// Node hashes received.
    pub hashes: u64,
    /// Leaves found differing (segments may span several).
    pub leaves_differing: u64,
    /// Ranges where a full listing was cheaper than descending.
    pub full_listings: u64,
    /// Keys whose digests were listed from both sides.
    pub keys_listed: u64,
    /// Keys this node took from the peer (its state changed).
    pub keys_pulled: u64,
    /// Keys this node sent to the peer (the peer's state changed).
    pub keys_pushed: u64,
    /// Keys left out because one side could not take them (over a limit,
    /// not mergeable, refused); each is logged, and tried again next time.
    pub keys_skipped: u64,
    /// Payload bytes sent to the peer (bincode, as on the wire).
    pub bytes_sent: u64,
    /// Payload bytes received from the peer.
    pub bytes_received: u64,
    /// Of all bytes (both ways), those of Merkle diff messages.
    pub bytes_merkle: u64,
    /// Of all bytes (both ways), those of `(key, digest)` listings; the rest
    /// carried the states of differing keys.
    pub bytes_listing: u64,
    /// Wall time of the exchange.
    pub elapsed_ms: u64,
    /// Why the exchange stopped early, if it did.
    pub error: Option<String>,
}

/// What [`Replica::repair`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairReport {
    /// The node that ran it.
    pub node: String,
    /// One exchange per peer.
    pub exchanges: Vec<ExchangeReport>,
    /// Wall time.
    pub elapsed_ms: u64,
}

/// What a range handover (join streaming or decommission) moved.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoverReport {
    /// The node that joined or left.
    pub node: String,
    /// Ranges moved.
    pub ranges: u64,
    /// Keys moved (sent or received).
    pub keys: u64,
    /// Payload bytes moved.
    pub bytes: u64,
    /// Wall time of the streaming.
    pub elapsed_ms: u64,
}

/// A client write to coordinate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoordinateRequest {
    /// The key.
    pub key: Vec<u8>,
    /// What the client had read (empty for a blind write).
    pub context: Context,
    /// The value or a tombstone.
    pub content: Content,
    /// The owner this write is for, when the receiver stands in for it as
    /// coordinator (every owner that could coordinate is down): the new
    /// version is also kept as a hint for that owner.
    pub hint_for: Option<String>,
    /// Supersede every version the coordinator holds, whatever `context`
    /// says: a last-writer-wins write in any bucket (the Redis protocol's
    /// `SET` and `DEL`, whose clients never carry a context). Versions only
    /// other replicas hold stay as siblings, and readers that want one value
    /// take the newest.
    pub supersede: bool,
}

/// Most targets plus spares one forwarded write may name: N is at most a
/// few, and the walk of spares is cut at this length.
pub const MAX_FORWARD_TARGETS: usize = 64;

/// Longest a coordinator works on a forwarded write before answering with
/// the verdict it has.
pub const MAX_FORWARD_BUDGET_MS: u64 = 60_000;

/// A write the receiver coordinates and replicates; see
/// [`Replica::coordinate_forward`]. The plan is the router's
/// (`shoal_coordinator::Forwarding`), with the addresses it routes by.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardRequest {
    /// The write itself.
    pub write: CoordinateRequest,
    /// The other targets, in the plan's order.
    pub replicas: Vec<ForwardTarget>,
    /// Live members after them, to replace a target that fails (with a
    /// hint for its slot).
    pub spares: Vec<ForwardTarget>,
    /// Acknowledgements needed, the coordinator's own included.
    pub needed: u32,
    /// The key's owners (the quorum's denominator).
    pub owners: u32,
    /// Slots that already failed before this coordinator was asked.
    pub failed: Vec<String>,
    /// How long the coordinator may work before answering, in milliseconds
    /// (at most [`MAX_FORWARD_BUDGET_MS`]).
    pub budget_ms: u64,
}

/// One member a forwarded write goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardTarget {
    /// Member id.
    pub node: String,
    /// Its RPC address, as the router knows it.
    pub address: String,
    /// The owner it stands in for, if a fallback.
    pub hint_for: Option<String>,
}

/// The answer to a forwarded write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forwarded {
    /// The version the coordinator minted (stored locally, whatever the
    /// verdict).
    pub siblings: SiblingSet,
    /// `Ok` once `needed` replicas (the coordinator included) stored it
    /// durably, else the counts when that became impossible or the budget
    /// ran out.
    pub verdict: Result<(), QuorumCounts>,
}

/// Why a forwarded write missed its quorum (`shoal_coordinator::QuorumFailure`
/// on the wire).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuorumCounts {
    /// Replicas that stored it.
    pub succeeded: u32,
    /// Replicas required.
    pub needed: u32,
    /// Replicas that refused or could not be reached.
    pub failed: u32,
    /// Replicas that had not answered in time.
    pub unknown: u32,
    /// Replicas in the denominator.
    pub total: u32,
}

/// A sibling set to merge into a replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicateRequest {
    /// The key.
    pub key: Vec<u8>,
    /// The state to merge.
    pub siblings: SiblingSet,
    /// The owner this write is for, when the receiver stands in for it.
    pub hint_for: Option<String>,
}

/// What one node stores for a key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyReport {
    /// The node's id.
    pub node: String,
    /// Its own copy.
    pub local: Option<StoredView>,
    /// Hints it holds for the key, by intended owner.
    pub hints: Vec<(String, StoredView)>,
}

/// A stored sibling set with its readable causal information.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredView {
    /// The sibling set itself (values included).
    pub siblings: SiblingSet,
    /// Its clock and dots in readable form.
    pub causal: CausalView,
}

impl StoredView {
    /// Wraps a stored set.
    pub fn new(siblings: SiblingSet) -> Self {
        let causal = siblings.causal_view();
        Self { siblings, causal }
    }
}

/// A member's identity and counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Member id.
    pub id: String,
    /// [`PROTOCOL_VERSION`] of the answering process.
    pub protocol: u32,
    /// Whether it stores data.
    pub storage: bool,
    /// Its incarnation (rises on every restart).
    pub incarnation: u64,
    /// Hints it holds for other nodes.
    pub hints_held: u64,
    /// The same, per owner.
    pub hints_by_owner: Vec<(String, u64)>,
    /// Where it serves `/metrics` (`None`: nowhere).
    pub metrics_addr: Option<String>,
    /// Its anti-entropy so far.
    pub anti_entropy: crate::observe::AntiEntropyStats,
    /// Hints it handed off since start.
    pub hints_delivered: u64,
    /// The join, decommission or repair it is running, if any.
    pub progress: Option<crate::observe::Progress>,
}

/// Why a replica refused or failed a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RemoteError {
    /// The member is a gateway and holds no data.
    #[error("member {id} is not a storage node")]
    NotStorage {
        /// Who answered.
        id: String,
    },
    /// Key or value over the configured limit.
    #[error("{what} is {len} bytes, over the limit of {max}")]
    TooLarge {
        /// `"key"` or `"value"`.
        what: String,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The request is malformed (empty key, ...).
    #[error("bad request: {message}")]
    BadRequest {
        /// What is wrong.
        message: String,
    },
    /// The storage engine failed (disk full, read-only, I/O error).
    #[error("storage error on {node}: {message}")]
    Storage {
        /// Which node.
        node: String,
        /// The engine's error.
        message: String,
    },
    /// Stored data for the key failed its checksum or did not decode.
    #[error("corrupt data on {node}: {message}")]
    Corrupt {
        /// Which node.
        node: String,
        /// What was found.
        message: String,
    },
    /// The node is shutting down and takes no new work.
    #[error("member {id} is shutting down")]
    ShuttingDown {
        /// Who answered.
        id: String,
    },
    /// The node has `rpc.max_in_flight` requests in flight already; the
    /// caller should try another replica or answer 503.
    #[error("member {id} is overloaded ({max} requests in flight)")]
    Overloaded {
        /// Who answered.
        id: String,
        /// Its bound.
        max: usize,
    },
    /// This node takes no new hint: hinted handoff is off here, or its hint
    /// quotas are reached. The caller sends the write to another fallback.
    #[error("{node} refused a hint: {reason}")]
    HintRefused {
        /// Who answered.
        node: String,
        /// Which limit.
        reason: String,
    },
    /// A repair or decommission could not be carried out (no peer to stream
    /// to, a peer refused, already leaving).
    #[error("{operation} on {node} failed: {message}")]
    Membership {
        /// `repair` or `decommission`.
        operation: String,
        /// Which node.
        node: String,
        /// Why.
        message: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_stay_under_the_byte_budget_unless_one_state_is_larger() {
        let set = |len: usize| {
            let mut s = SiblingSet::new();
            s.update(
                &Context::empty(),
                "a#1",
                Content::value(vec![0; len], "x"),
                1,
            )
            .unwrap();
            s
        };
        let items: Vec<(Vec<u8>, SiblingSet)> = (0..10u8)
            .map(|i| (vec![i], set(100)))
            .chain(std::iter::once((vec![99], set(5_000))))
            .collect();
        let batches = batches_by_size(items, 400);
        assert_eq!(batches.iter().map(Vec::len).sum::<usize>(), 11);
        for b in &batches {
            let bytes: usize = b.iter().map(|(k, s)| k.len() + s.encode().len() + 16).sum();
            assert!(bytes <= 400 || b.len() == 1, "{bytes}");
        }
        assert_eq!(
            batches.last().unwrap().len(),
            1,
            "the large state goes alone"
        );
        assert!(batches_by_size(Vec::new(), 400).is_empty());
    }
}
