//! The gateway's side of the `Replica` tarpc service: gossip travels over it,
//! so a gateway serves it too, and refuses the data methods with
//! [`RemoteError::NotStorage`].

use shoal_gossip::Message;
use shoal_node::membership::{receive, SharedMembership, Uptime};
use shoal_node::rpc::{
    CoordinateRequest, KeyReport, NodeStatus, RemoteError, Replica, ReplicateRequest,
    PROTOCOL_VERSION,
};
use shoal_vclock::SiblingSet;

/// The RPC handler of a gateway (cheap to clone: one per connection).
#[derive(Clone)]
pub struct GatewayService {
    id: String,
    membership: SharedMembership,
    uptime: Uptime,
}

impl std::fmt::Debug for GatewayService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayService")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl GatewayService {
    /// A handler for the gateway `id` feeding gossip into `membership`.
    pub fn new(id: String, membership: SharedMembership, uptime: Uptime) -> Self {
        Self {
            id,
            membership,
            uptime,
        }
    }

    fn not_storage(&self) -> RemoteError {
        RemoteError::NotStorage {
            id: self.id.clone(),
        }
    }
}

impl Replica for GatewayService {
    async fn gc_check(
        self,
        _: tarpc::context::Context,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<shoal_node::rpc::GcState>, RemoteError> {
        // A gateway holds neither data nor hints: nothing for a GC to wait on.
        Ok(keys
            .iter()
            .map(|_| shoal_node::rpc::GcState {
                digest: None,
                hinted: false,
            })
            .collect())
    }

    async fn gc_purge(
        self,
        _: tarpc::context::Context,
        _entries: Vec<(Vec<u8>, [u8; 32])>,
    ) -> Result<u64, RemoteError> {
        Err(self.not_storage())
    }

    async fn coordinate(
        self,
        _: tarpc::context::Context,
        _request: CoordinateRequest,
    ) -> Result<SiblingSet, RemoteError> {
        Err(self.not_storage())
    }

    async fn coordinate_forward(
        self,
        _: tarpc::context::Context,
        _request: shoal_node::rpc::ForwardRequest,
    ) -> Result<shoal_node::rpc::Forwarded, RemoteError> {
        Err(self.not_storage())
    }

    async fn replicate(
        self,
        _: tarpc::context::Context,
        _request: ReplicateRequest,
    ) -> Result<(), RemoteError> {
        Err(self.not_storage())
    }

    async fn read(
        self,
        _: tarpc::context::Context,
        _key: Vec<u8>,
    ) -> Result<Option<SiblingSet>, RemoteError> {
        Err(self.not_storage())
    }

    async fn inspect(
        self,
        _: tarpc::context::Context,
        _key: Vec<u8>,
    ) -> Result<KeyReport, RemoteError> {
        Err(self.not_storage())
    }

    async fn gossip(
        self,
        _: tarpc::context::Context,
        from: String,
        message: Message,
    ) -> Result<Vec<Message>, RemoteError> {
        Ok(receive(&self.membership, self.uptime, &from, message))
    }

    async fn merkle(
        self,
        _: tarpc::context::Context,
        _request: shoal_node::rpc::MerkleRequest,
    ) -> Result<shoal_node::rpc::MerkleResponse, RemoteError> {
        Err(self.not_storage())
    }

    async fn scan(
        self,
        _: tarpc::context::Context,
        _request: shoal_node::rpc::ScanRequest,
    ) -> Result<shoal_node::rpc::ScanPage, RemoteError> {
        Err(self.not_storage())
    }

    async fn read_many(
        self,
        _: tarpc::context::Context,
        _keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<SiblingSet>>, RemoteError> {
        Err(self.not_storage())
    }

    async fn merge_batch(
        self,
        _: tarpc::context::Context,
        _entries: Vec<(Vec<u8>, SiblingSet)>,
    ) -> Result<u64, RemoteError> {
        Err(self.not_storage())
    }

    async fn repair(
        self,
        _: tarpc::context::Context,
    ) -> Result<shoal_node::rpc::RepairReport, RemoteError> {
        Err(self.not_storage())
    }

    async fn decommission(
        self,
        _: tarpc::context::Context,
        _force: bool,
    ) -> Result<shoal_node::rpc::HandoverReport, RemoteError> {
        Err(self.not_storage())
    }

    async fn bucket_props(
        self,
        _: tarpc::context::Context,
        _digest: [u8; 32],
    ) -> Result<Option<Vec<(String, shoal_node::rpc::VersionedProps)>>, RemoteError> {
        Err(self.not_storage())
    }

    async fn set_bucket_props(
        self,
        _: tarpc::context::Context,
        _records: Vec<(String, shoal_node::rpc::VersionedProps)>,
    ) -> Result<(), RemoteError> {
        Err(self.not_storage())
    }

    async fn list_keys(
        self,
        _: tarpc::context::Context,
        _request: shoal_node::rpc::ListRequest,
    ) -> Result<shoal_node::rpc::ListPage, RemoteError> {
        Err(self.not_storage())
    }

    async fn status(self, _: tarpc::context::Context) -> Result<NodeStatus, RemoteError> {
        let incarnation = crate::cluster::lock(&self.membership).local().incarnation;
        Ok(NodeStatus {
            id: self.id.clone(),
            protocol: PROTOCOL_VERSION,
            storage: false,
            incarnation,
            hints_held: 0,
            hints_by_owner: Vec::new(),
            // A gateway serves /metrics on its HTTP port.
            metrics_addr: None,
            anti_entropy: Default::default(),
            hints_delivered: 0,
            progress: None,
        })
    }
}
