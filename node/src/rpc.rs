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

/// Version of this service's wire types; bumped on incompatible changes.
pub const PROTOCOL_VERSION: u32 = 1;

/// A replica, as seen by a caller.
#[tarpc::service]
pub trait Replica {
    /// Coordinates a client write: under the key's lock, read the local
    /// siblings, apply `update` with a fresh counter of this node, store the
    /// result durably, and return it for replication to the other targets.
    async fn coordinate(request: CoordinateRequest) -> Result<SiblingSet, RemoteError>;

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
}
