//! The `Replica` RPC handlers, kept apart from start-up and the request
//! checks: each handler is the node's answer to one RPC, and reading them
//! side by side shows that every one is admitted, checked and mapped the
//! same way.

use shoal_gossip::Message;
use shoal_vclock::SiblingSet;
use tarpc::context::Context as RpcContext;

use super::service::check_batch;
use super::{Minted, NodeService};
use crate::membership::{self};
use crate::rpc::{
    CoordinateRequest, ForwardRequest, Forwarded, HandoverReport, KeyReport, ListPage, ListRequest,
    MerkleRequest, MerkleResponse, NodeStatus, RemoteError, RepairReport, Replica,
    ReplicateRequest, ScanPage, ScanRequest, StoredView, MAX_SCAN_KEYS, MAX_SCAN_RANGES,
    PROTOCOL_VERSION,
};

impl Replica for NodeService {
    async fn coordinate(
        self,
        _: RpcContext,
        request: CoordinateRequest,
    ) -> Result<SiblingSet, RemoteError> {
        // Boxed: this handler's future is large (0.8-2.3 KiB) and the
        // serving future is the largest handler's size for every request,
        // reads included, moved several times on its way to its task.
        Box::pin(async move {
            let _admitted = self.admit()?;
            self.check_write(&request)?;
            match self.mint(request).await? {
                Minted::Durable(set) => Ok(set),
                // Answered only once durable.
                Minted::Pending(written) => written.durable().await.map_err(|e| self.remote(e)),
            }
        })
        .await
    }

    async fn coordinate_forward(
        self,
        _: RpcContext,
        request: ForwardRequest,
    ) -> Result<Forwarded, RemoteError> {
        // Boxed, as `coordinate`.
        Box::pin(async move {
            let _admitted = self.admit()?;
            self.check_write(&request.write)?;
            let plan = crate::forward::Plan::from_request(&self.0.id, &request)?;
            let key = request.write.key.clone();
            let pool = self.0.pool.clone();
            let (siblings, verdict) = match self.mint(request.write).await? {
                Minted::Durable(siblings) => {
                    let own = std::future::ready(Ok(()));
                    let verdict =
                        crate::forward::replicate(pool, plan, key, siblings.clone(), own).await;
                    (siblings, verdict)
                }
                Minted::Pending(written) => {
                    // The replicas get the version while this node's own fsync
                    // runs: the fsyncs overlap. Its durability is one more reply
                    // to the op.
                    let siblings = written.value().clone();
                    let own = async move {
                        written
                            .durable()
                            .await
                            .map(|_| ())
                            .map_err(|e| format!("the coordinator's own commit failed: {e}"))
                    };
                    let verdict =
                        crate::forward::replicate(pool, plan, key, siblings.clone(), own).await;
                    (siblings, verdict)
                }
            };
            Ok(Forwarded { siblings, verdict })
        })
        .await
    }

    async fn replicate(self, _: RpcContext, request: ReplicateRequest) -> Result<(), RemoteError> {
        // Boxed, as `coordinate`.
        Box::pin(async move {
            let _admitted = self.admit()?;
            self.check_key(&request.key)?;
            self.check_set(&request.siblings)?;
            if self.0.store.write_would_block() {
                // As in `coordinate`: back-pressure waits on the blocking pool.
                return self
                    .blocking(move |s| match &request.hint_for {
                        Some(owner) => s.put_hint(owner, &request.key, &request.siblings),
                        None => s.merge(&request.key, &request.siblings),
                    })
                    .await
                    .map(|_| ());
            }
            // Inline, as `coordinate`: append under the stripe, await the fsync.
            let store = &self.0.store;
            let written = match &request.hint_for {
                Some(owner) => store.put_hint_begin(owner, &request.key, &request.siblings),
                None => store.merge_begin(&request.key, &request.siblings),
            }
            .map_err(|e| self.remote(e))?;
            written.durable().await.map_err(|e| self.remote(e))?;
            Ok(())
        })
        .await
    }

    async fn read(self, _: RpcContext, key: Vec<u8>) -> Result<Option<SiblingSet>, RemoteError> {
        let _admitted = self.admit()?;
        self.check_key(&key)?;
        // Inline, not on the blocking pool: a read is answered from the
        // memtable or page-cached tables in microseconds, and the hand-off to
        // a pool thread and back (two futex wake-ups) cost more than the read
        // itself: CPU per gateway GET fell from 157-185 us to 84-107 us in an
        // A/B run of `cargo xtask bench` (BENCHMARKS.md).
        self.0.store.read(&key).map_err(|e| self.remote(e))
    }

    async fn inspect(self, _: RpcContext, key: Vec<u8>) -> Result<KeyReport, RemoteError> {
        let _admitted = self.admit()?;
        self.check_key(&key)?;
        let node = self.0.id.clone();
        self.blocking(move |s| {
            Ok(KeyReport {
                node,
                local: s.read(&key)?.map(StoredView::new),
                hints: s
                    .hints_for_key(&key)?
                    .into_iter()
                    .map(|(owner, set)| (owner, StoredView::new(set)))
                    .collect(),
            })
        })
        .await
    }

    async fn gossip(
        self,
        _: RpcContext,
        from: String,
        message: Message,
    ) -> Result<Vec<Message>, RemoteError> {
        Ok(membership::receive(
            &self.0.membership,
            self.0.uptime,
            &from,
            message,
        ))
    }

    async fn merkle(
        self,
        _: RpcContext,
        request: MerkleRequest,
    ) -> Result<MerkleResponse, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        // Answering is pure CPU on the in-memory tree, bounded by the
        // message size limit; no blocking pool needed.
        self.0
            .store
            .with_tree(|t| t.answer(&request))
            .map_err(|e| RemoteError::BadRequest {
                message: format!("merkle request: {e}"),
            })
    }

    async fn scan(self, _: RpcContext, request: ScanRequest) -> Result<ScanPage, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        if request.ranges.len() > MAX_SCAN_RANGES {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "{} ranges in one scan, over the limit of {MAX_SCAN_RANGES}",
                    request.ranges.len()
                ),
            });
        }
        let max_keys = request.max_keys.clamp(1, MAX_SCAN_KEYS) as usize;
        // Half a frame of values per page, so a page always fits a frame.
        let max_bytes = self.0.config.max_frame_bytes() / 2;
        self.blocking(move |s| {
            s.scan_ranges(
                &request.ranges,
                request.cursor.as_ref(),
                max_keys,
                max_bytes,
                request.values,
            )
        })
        .await
    }

    async fn read_many(
        self,
        _: RpcContext,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<Option<SiblingSet>>, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        check_batch(keys.len())?;
        for key in &keys {
            self.check_key(key)?;
        }
        let budget = self.0.config.max_frame_bytes() / 2;
        self.blocking(move |s| {
            let mut out = Vec::with_capacity(keys.len());
            let mut bytes = 0usize;
            for key in &keys {
                if bytes >= budget {
                    break;
                }
                let state = s.read(key)?;
                bytes += key.len() + state.as_ref().map_or(0, |set| set.encode().len());
                out.push(state);
            }
            Ok(out)
        })
        .await
    }

    async fn merge_batch(
        self,
        _: RpcContext,
        entries: Vec<(Vec<u8>, SiblingSet)>,
    ) -> Result<u64, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        check_batch(entries.len())?;
        for (key, set) in &entries {
            self.check_key(key)?;
            self.check_set(set)?;
        }
        self.blocking(move |s| s.merge_many(&entries).map(|(_, changed)| changed as u64))
            .await
    }

    // Boxed: every request's future is as large as the largest RPC's, and
    // these two rare admin RPCs were 7 KiB and 5.6 KiB (a write's is 2.3 KiB),
    // which each request then copied through every layer that moves it.
    async fn repair(self, _: RpcContext) -> Result<RepairReport, RemoteError> {
        self.check_running()?;
        Ok(Box::pin(self.0.anti_entropy.repair()).await)
    }

    async fn decommission(self, _: RpcContext, force: bool) -> Result<HandoverReport, RemoteError> {
        self.check_running()?;
        Box::pin(self.0.handover.decommission(force)).await
    }

    async fn bucket_props(
        self,
        _: RpcContext,
        digest: [u8; 32],
    ) -> Result<Option<Vec<(String, crate::buckets::VersionedProps)>>, RemoteError> {
        let table = self.0.store.props();
        Ok((table.digest() != digest).then(|| table.records()))
    }

    async fn set_bucket_props(
        self,
        _: RpcContext,
        records: Vec<(String, crate::buckets::VersionedProps)>,
    ) -> Result<(), RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        if records.len() > crate::buckets::MAX_BUCKETS_WITH_PROPS {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "{} props records, over the limit of {}",
                    records.len(),
                    crate::buckets::MAX_BUCKETS_WITH_PROPS
                ),
            });
        }
        for (bucket, record) in &records {
            crate::buckets::check(bucket, &record.props).map_err(|e| RemoteError::BadRequest {
                message: e.to_string(),
            })?;
        }
        self.blocking(move |s| s.merge_props(&records).map(|_| ()))
            .await
    }

    async fn list_keys(self, _: RpcContext, request: ListRequest) -> Result<ListPage, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        crate::keys::check_bucket(&request.bucket).map_err(|e| RemoteError::BadRequest {
            message: e.to_string(),
        })?;
        if let Some(after) = &request.after {
            self.check_key(&crate::keys::wire(&request.bucket, after))?;
        }
        let limit = request.limit.clamp(1, MAX_SCAN_KEYS) as usize;
        let max_bytes = self.0.config.max_frame_bytes() / 2;
        self.blocking(move |s| {
            s.list_bucket(
                &request.bucket,
                request.position,
                request.after.as_deref(),
                limit,
                max_bytes,
            )
        })
        .await
    }

    async fn gc_check(
        self,
        _: RpcContext,
        keys: Vec<Vec<u8>>,
    ) -> Result<Vec<crate::rpc::GcState>, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        if keys.len() > crate::rpc::MAX_BATCH_KEYS {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "gc_check of {} keys, at most {}",
                    keys.len(),
                    crate::rpc::MAX_BATCH_KEYS
                ),
            });
        }
        for k in &keys {
            self.check_key(k)?;
        }
        self.blocking(move |s| {
            keys.iter()
                .map(|k| {
                    s.gc_state(k)
                        .map(|(digest, hinted)| crate::rpc::GcState { digest, hinted })
                })
                .collect()
        })
        .await
    }

    async fn gc_purge(
        self,
        _: RpcContext,
        entries: Vec<(Vec<u8>, [u8; 32])>,
    ) -> Result<u64, RemoteError> {
        let _admitted = self.admit()?;
        self.check_running()?;
        if entries.len() > crate::rpc::MAX_BATCH_KEYS {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "gc_purge of {} keys, at most {}",
                    entries.len(),
                    crate::rpc::MAX_BATCH_KEYS
                ),
            });
        }
        for (k, _) in &entries {
            self.check_key(k)?;
        }
        self.blocking(move |s| {
            let mut purged = 0;
            for (k, d) in &entries {
                if s.gc_purge(k, d)? {
                    purged += 1;
                }
            }
            Ok(purged)
        })
        .await
    }

    async fn status(self, _: RpcContext) -> Result<NodeStatus, RemoteError> {
        let store = &self.0.store;
        let hints_held = store.hint_count().map_err(|e| self.remote(e))?;
        let counters = store.counters();
        Ok(NodeStatus {
            id: self.0.id.clone(),
            protocol: PROTOCOL_VERSION,
            storage: true,
            incarnation: store.incarnation(),
            hints_held,
            hints_by_owner: store.hints_by_owner(),
            metrics_addr: self.0.metrics_addr.get().map(ToString::to_string),
            anti_entropy: counters.anti_entropy(),
            hints_delivered: counters
                .hints_delivered
                .load(std::sync::atomic::Ordering::Relaxed),
            progress: counters.progress(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, F: FnOnce(A, B, C) -> Fut, Fut>(_: F) -> usize {
        std::mem::size_of::<Fut>()
    }

    #[test]
    fn the_serving_future_stays_small() {
        // With the write handlers inline it was 2,880 bytes.
        let serve =
            future_size(<crate::rpc::ServeReplica<NodeService> as tarpc::server::Serve>::serve);
        assert!(serve <= 1024, "the serving future is {serve} bytes");
    }
}
