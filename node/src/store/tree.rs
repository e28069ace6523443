//! The Merkle tree's upkeep, kept apart from the writes that call it: the
//! tree must always equal a rebuild from the data space, so the rebuild and
//! the incremental update live side by side and stay the same function of a
//! key's stored bytes.

use shoal_merkle::{MerkleTree, TreeShape};
use shoal_storage::Engine;
use shoal_vclock::SiblingSet;

use super::{digest_of, wire_of, Store, StoreError, BUCKET, DATA};
use crate::keys;

impl Store {
    /// Runs `f` on the Merkle tree (flushed first, so answers are O(1) per
    /// node). Keep `f` short: writes wait for it.
    pub fn with_tree<T>(&self, f: impl FnOnce(&MerkleTree) -> T) -> T {
        let mut tree = self.tree.lock().unwrap_or_else(|p| p.into_inner());
        tree.flush();
        f(&tree)
    }

    /// The tree rebuilt from what the engine holds now (tests compare it with
    /// the incrementally maintained one).
    pub fn rebuilt_tree(&self) -> Result<MerkleTree, StoreError> {
        let shape = self.with_tree(|t| t.shape());
        rebuild_tree(&self.engine, shape).map(|(tree, _)| tree)
    }

    pub(super) fn tree_update(&self, key: &[u8], old: Option<&[u8; 32]>, new: Option<&[u8; 32]>) {
        self.tree_update_at(keys::position(key), key, old, new);
    }

    /// [`Store::tree_update`] with the key's ring position already computed.
    pub(super) fn tree_update_at(
        &self,
        position: u64,
        key: &[u8],
        old: Option<&[u8; 32]>,
        new: Option<&[u8; 32]>,
    ) {
        let mut tree = self.tree.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = tree.update(position, key, old, new) {
            // Only a removal from an empty leaf fails, which would mean the
            // tree and the engine disagree; the next diff with a peer repairs
            // the data and the next restart rebuilds the tree.
            tracing::error!(error = %e, "merkle tree update refused");
        }
    }
}

/// The tree over every data key, and the earliest expiry instant of a
/// value whose bytes are still held (`u64::MAX`: none).
pub(super) fn rebuild_tree(
    engine: &Engine,
    shape: TreeShape,
) -> Result<(MerkleTree, u64), StoreError> {
    let mut entries = Vec::new();
    let mut due = u64::MAX;
    for space in [DATA, BUCKET] {
        for item in engine.scan([space].as_slice()..[space + 1].as_slice())? {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    // Serve what is intact: the keys past the damage are
                    // missing from the tree, so diffs with peers show them as
                    // differing and anti-entropy brings them back.
                    tracing::error!(error = %e, "merkle rebuild stopped at damaged data");
                    break;
                }
            };
            let Some(key) = wire_of(&k) else {
                continue;
            };
            if SiblingSet::may_expire(&v) {
                if let Some(at) = SiblingSet::decode(&v).ok().and_then(|s| s.next_expiry()) {
                    due = due.min(at);
                }
            }
            entries.push((keys::position(&key), key, digest_of(&v)));
        }
    }
    Ok((MerkleTree::rebuild(shape, entries), due))
}
