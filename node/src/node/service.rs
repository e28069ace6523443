//! What every RPC handler does before and around the store, kept apart from
//! the handlers: admission, the bounds a peer's request must meet, the
//! mapping of store errors to remote ones and the inline-or-blocking choice
//! of a write are one policy, applied the same way by every handler.

use std::sync::atomic::Ordering;

use shoal_vclock::SiblingSet;

use super::{Minted, NodeService, MAX_COUNTER};
use crate::rpc::{CoordinateRequest, RemoteError, MAX_BATCH_KEYS};
use crate::store::{Store, StoreError};

/// Refuses a batch over [`MAX_BATCH_KEYS`].
pub(super) fn check_batch(len: usize) -> Result<(), RemoteError> {
    if len > MAX_BATCH_KEYS {
        return Err(RemoteError::BadRequest {
            message: format!("{len} keys in one batch, over the limit of {MAX_BATCH_KEYS}"),
        });
    }
    Ok(())
}

impl NodeService {
    /// A slot among the node's requests in flight, or `Overloaded` at once:
    /// past the bound, queueing would only add latency to every request and
    /// memory to the node, while the caller can ask another replica now.
    /// Gossip and status take no slot, so an overloaded node still shows as
    /// alive and answers its operator.
    pub(super) fn admit(&self) -> Result<tokio::sync::OwnedSemaphorePermit, RemoteError> {
        self.0
            .in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| RemoteError::Overloaded {
                id: self.0.id.clone(),
                max: self.0.config.rpc.max_in_flight,
            })
    }

    pub(super) fn check_running(&self) -> Result<(), RemoteError> {
        if self.0.shutting_down.load(Ordering::SeqCst) {
            return Err(RemoteError::ShuttingDown {
                id: self.0.id.clone(),
            });
        }
        Ok(())
    }

    pub(super) fn check_key(&self, key: &[u8]) -> Result<(), RemoteError> {
        if self.0.shutting_down.load(Ordering::SeqCst) {
            return Err(RemoteError::ShuttingDown {
                id: self.0.id.clone(),
            });
        }
        // Every key below the gateway is a wire key (bucket and user key);
        // the limit is the user key's, as the API states it.
        let (_, user) = crate::keys::split(key).map_err(|e| RemoteError::BadRequest {
            message: e.to_string(),
        })?;
        let max = self.0.config.limits.max_key_bytes;
        if user.len() > max {
            return Err(RemoteError::TooLarge {
                what: "key".into(),
                len: user.len(),
                max,
            });
        }
        Ok(())
    }

    pub(super) fn check_set(&self, set: &SiblingSet) -> Result<(), RemoteError> {
        // A clock claiming more events of an actor than any replica mints
        // would cover every version that actor will ever write: merged here,
        // it erases the key's versions with no tombstone and makes the key
        // unwritable. Honest counters grow by one per write.
        let absurd = set
            .clock()
            .entries()
            .iter()
            .find(|e| e.counter > MAX_COUNTER);
        if let Some(e) = absurd {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "clock entry {}:{} exceeds the largest counter a replica mints (2^48)",
                    e.actor, e.counter
                ),
            });
        }
        let max = self.0.config.limits.max_value_bytes;
        for s in set.values() {
            let len = s.value().map_or(0, <[u8]>::len);
            if len > max {
                return Err(RemoteError::TooLarge {
                    what: "value".into(),
                    len,
                    max,
                });
            }
        }
        Ok(())
    }

    pub(super) fn remote(&self, e: StoreError) -> RemoteError {
        match e {
            StoreError::Corrupt { .. } => {
                tracing::error!(error = %e, "corrupt data");
                RemoteError::Corrupt {
                    node: self.0.id.clone(),
                    message: e.to_string(),
                }
            }
            StoreError::Version(_)
            | StoreError::OwnerTooLong { .. }
            | StoreError::Merkle(_)
            | StoreError::BadCursor
            | StoreError::Encode(_) => RemoteError::BadRequest {
                message: e.to_string(),
            },
            StoreError::HintRefused { reason } => RemoteError::HintRefused {
                node: self.0.id.clone(),
                reason,
            },
            StoreError::Engine(_) => {
                tracing::error!(error = %e, "storage error");
                RemoteError::Storage {
                    node: self.0.id.clone(),
                    message: e.to_string(),
                }
            }
        }
    }

    /// Refuses a write to coordinate that no replica could accept.
    pub(super) fn check_write(&self, request: &CoordinateRequest) -> Result<(), RemoteError> {
        self.check_key(&request.key)?;
        // The same bound as on replicated states: a context claiming more
        // events than a replica mints would be minted into this node's copy,
        // which every other replica then refuses, and the copies would
        // never agree again.
        let context = &request.context;
        if let Some((actor, n)) = context.entries().find(|(_, n)| *n > MAX_COUNTER) {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "context entry {actor}:{n} exceeds the largest counter a replica mints (2^48)"
                ),
            });
        }
        if context.counter_floor() > MAX_COUNTER {
            return Err(RemoteError::BadRequest {
                message: format!(
                    "context floor {} exceeds the largest counter a replica mints (2^48)",
                    context.counter_floor()
                ),
            });
        }
        if let Some(bytes) = request.content_bytes() {
            let max = self.0.config.limits.max_value_bytes;
            if bytes > max {
                return Err(RemoteError::TooLarge {
                    what: "value".into(),
                    len: bytes,
                    max,
                });
            }
        }
        Ok(())
    }

    /// Mints the client's write under the key's stripe.
    ///
    /// Inline on the runtime, not on the blocking pool: the read-modify-write
    /// and the append are microseconds of CPU under the key's stripe, and the
    /// fsync is awaited after the stripe is released, so no thread parks per
    /// request (the pool hand-off and the group commit's wake-ups were half
    /// of a node's CPU, BENCHMARKS.md). While the engine is backlogged the
    /// append would wait for flushes (up to its write timeout), so then it
    /// runs on the blocking pool and comes back durable.
    pub(super) async fn mint(&self, request: CoordinateRequest) -> Result<Minted, RemoteError> {
        let now = self.0.env.clock.now_millis();
        let begin = move |s: &Store| {
            let hint_for = request.hint_for.as_deref();
            if request.supersede {
                s.supersede_begin(&request.key, request.content, now, hint_for)
            } else {
                s.coordinate_begin(
                    &request.key,
                    &request.context,
                    request.content,
                    now,
                    hint_for,
                )
            }
        };
        if self.0.store.write_would_block() {
            return self
                .blocking(move |s| begin(s)?.wait())
                .await
                .map(Minted::Durable);
        }
        begin(&self.0.store)
            .map(Minted::Pending)
            .map_err(|e| self.remote(e))
    }

    /// Runs a store operation on the blocking pool.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, RemoteError> {
        let store = self.0.store.clone();
        match self.0.env.spawn_blocking(move || f(&store)).await {
            Ok(r) => r.map_err(|e| self.remote(e)),
            Err(e) => {
                tracing::error!(error = %e, "store task panicked");
                Err(RemoteError::Storage {
                    node: self.0.id.clone(),
                    message: "internal error in the store task".into(),
                })
            }
        }
    }
}

impl CoordinateRequest {
    fn content_bytes(&self) -> Option<usize> {
        match &self.content {
            shoal_vclock::Content::Value { bytes, .. } => Some(bytes.len()),
            shoal_vclock::Content::Tombstone | shoal_vclock::Content::Expired { .. } => None,
        }
    }
}
