//! The tree: per-leaf additive accumulators and lazily recomputed inner hashes.

use std::fmt;

use sha2::{Digest as _, Sha256};

use crate::shape::{LeafRange, NodeId, TokenRange, TreeShape};
use crate::MerkleError;

/// A SHA-256 node hash.
pub type Hash = [u8; 32];

/// A version digest: the caller's 32-byte summary of a key's version (for Shoal, a
/// hash of the vector clocks of its siblings, tombstones included). Two replicas hold
/// the same version of a key exactly when they hold the same digest.
pub type Digest = [u8; 32];

/// The hash of a subtree (or leaf) that holds no keys. Being all zeros lets empty
/// parts of the ring cost nothing to hash, and a non-empty subtree hashes to it only
/// with probability 2^-256.
pub const EMPTY_HASH: Hash = [0; 32];

/// Domain-separation tags, so that an entry, a leaf, an inner node and a range can
/// never be confused with one another even if their bytes happened to line up.
const TAG_ENTRY: u8 = 0;
const TAG_LEAF: u8 = 1;
const TAG_INNER: u8 = 2;
const TAG_RANGE: u8 = 3;

/// One leaf's accumulator: the number of entries and the sum modulo 2^256 of their
/// entry hashes (as four little-endian 64-bit limbs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Leaf {
    sum: [u64; 4],
    count: u64,
}

/// An inner level: cached hashes and key counts, plus which of them are stale.
#[derive(Debug, Clone)]
struct Level {
    hashes: Vec<Hash>,
    counts: Vec<u64>,
    dirty: Vec<bool>,
    /// The dirty nodes, so that `flush` visits only them.
    dirty_list: Vec<u32>,
}

/// A Merkle tree over 2^`leaf_bits` equal segments of the 64-bit ring.
///
/// **Leaves.** A key at ring position `p` belongs to leaf `p >> (64 - leaf_bits)`.
/// A leaf keeps the number of its entries and the sum modulo 2^256 of
/// `SHA-256(0 || key || digest)` over them; its hash is
/// `SHA-256(1 || count || sum)`, or [`EMPTY_HASH`] when it holds nothing. Adding and
/// subtracting make one insert, update or removal O(1) whatever the leaf holds, and
/// the tree never stores keys: 1,000,000 keys cost nothing beyond the fixed 40 bytes
/// per leaf.
///
/// **Why entries cannot cancel.** An XOR of per-entry hashes cancels whenever an
/// entry appears twice, and an XOR of content-only hashes hides a key that differs
/// only in version; that once made a store's repair see nothing missing (ferrosa
/// PR 339). Here each entry hash covers the key *and* its digest, a sum modulo
/// 2^256 is never changed by adding a non-zero value (`x + h == x` forces
/// `h == 0`, probability 2^-256), adding the same entry twice gives `2h`, not zero,
/// and the count separates multisets of different sizes. Two different leaf
/// contents collide only if two multisets of SHA-256 outputs have the same size
/// and sum, which for contents no one chose adversarially is a 2^-256 event.
///
/// **Inner nodes** hash their children in order: `SHA-256(2 || child hashes)`
/// (for parents of leaves, the children's 40-byte `count || sum` in place of their
/// hashes, which saves one SHA-256 call per leaf), or [`EMPTY_HASH`] when every
/// child is empty. They are recomputed lazily: an update
/// marks its ancestors dirty (stopping at the first one already dirty, so O(1)
/// amortized), [`MerkleTree::flush`] recomputes dirty nodes bottom-up, and reads
/// between the two recompute what they need on the fly, so a read is never stale.
///
/// **Laws** (checked by the property tests): the root depends only on the multiset
/// of `(position, key, digest)` entries, not on the order of updates; an update
/// followed by its inverse restores the tree; a tree built incrementally equals
/// [`MerkleTree::rebuild`] on the same entries.
#[derive(Clone)]
pub struct MerkleTree {
    shape: TreeShape,
    leaves: Vec<Leaf>,
    /// `levels[l - 1]` is level `l`; the last one holds only the root.
    levels: Vec<Level>,
    keys: u64,
}

impl PartialEq for MerkleTree {
    /// Trees are equal when they have the same shape and every leaf holds the same
    /// count and sum: the hashes follow from those, and dirtiness is a cache detail.
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.leaves == other.leaves
    }
}

impl Eq for MerkleTree {}

impl fmt::Debug for MerkleTree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The leaves run into the millions; a summary is what a reader wants.
        f.debug_struct("MerkleTree")
            .field("shape", &self.shape)
            .field("keys", &self.keys)
            .field("root", &hex(&self.root_hash()))
            .finish()
    }
}

fn hex(hash: &Hash) -> String {
    hash.iter().map(|b| format!("{b:02x}")).collect()
}

/// The accumulator term of one entry: `SHA-256(0 || key || digest)` as limbs. The
/// digest has a fixed length, so `key || digest` splits one way only.
fn entry_term(key: &[u8], digest: &Digest) -> [u64; 4] {
    let mut hasher = Sha256::new();
    hasher.update([TAG_ENTRY]);
    hasher.update(key);
    hasher.update(digest);
    let bytes: [u8; 32] = hasher.finalize().into();
    let mut limbs = [0u64; 4];
    for (limb, chunk) in limbs.iter_mut().zip(bytes.chunks_exact(8)) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        *limb = u64::from_le_bytes(word);
    }
    limbs
}

fn add256(a: &mut [u64; 4], b: &[u64; 4]) {
    let mut carry = false;
    for (x, y) in a.iter_mut().zip(b) {
        let (s1, c1) = x.overflowing_add(*y);
        let (s2, c2) = s1.overflowing_add(u64::from(carry));
        *x = s2;
        carry = c1 || c2;
    }
}

fn sub256(a: &mut [u64; 4], b: &[u64; 4]) {
    let mut borrow = false;
    for (x, y) in a.iter_mut().zip(b) {
        let (d1, b1) = x.overflowing_sub(*y);
        let (d2, b2) = d1.overflowing_sub(u64::from(borrow));
        *x = d2;
        borrow = b1 || b2;
    }
}

/// Bytes of a leaf accumulator as hashed: count then sum, big-endian.
const LEAF_BYTES: usize = 40;

impl Leaf {
    fn bytes(&self) -> [u8; LEAF_BYTES] {
        let mut bytes = [0u8; LEAF_BYTES];
        bytes[..8].copy_from_slice(&self.count.to_be_bytes());
        for (chunk, limb) in bytes[8..].chunks_exact_mut(8).zip(self.sum.iter().rev()) {
            chunk.copy_from_slice(&limb.to_be_bytes());
        }
        bytes
    }

    fn hash(&self) -> Hash {
        if self.count == 0 && self.sum == [0; 4] {
            return EMPTY_HASH;
        }
        // A count of zero with a non-zero sum means a caller removed with the wrong
        // digest; hashing it (rather than calling it empty) lets a diff expose it.
        let mut hasher = Sha256::new();
        hasher.update([TAG_LEAF]);
        hasher.update(self.bytes());
        hasher.finalize().into()
    }
}

/// `SHA-256(TAG_INNER || children)` that starts hashing only at the first non-empty
/// child and yields [`EMPTY_HASH`] when every child was empty.
#[derive(Default)]
struct LazyHasher {
    hasher: Option<Sha256>,
    /// Zero bytes owed for empty children seen before the first non-empty one.
    zeros_before: usize,
}

impl LazyHasher {
    fn empty(&mut self, len: usize) {
        match &mut self.hasher {
            Some(hasher) => hasher.update(&[0u8; LEAF_BYTES][..len]),
            None => self.zeros_before += len,
        }
    }

    fn update(&mut self, bytes: &[u8]) {
        let zeros_before = self.zeros_before;
        let hasher = self.hasher.get_or_insert_with(|| {
            let mut hasher = Sha256::new();
            hasher.update([TAG_INNER]);
            let zeros = [0u8; 256];
            let mut owed = zeros_before;
            while owed > 0 {
                let n = owed.min(zeros.len());
                hasher.update(&zeros[..n]);
                owed -= n;
            }
            hasher
        });
        hasher.update(bytes);
    }

    fn finish(self) -> Hash {
        match self.hasher {
            Some(hasher) => hasher.finalize().into(),
            None => EMPTY_HASH,
        }
    }
}

impl MerkleTree {
    /// An empty tree of the given shape.
    pub fn new(shape: TreeShape) -> Self {
        let levels = (1..=shape.top())
            .map(|level| {
                let n = shape.nodes_at(level) as usize;
                Level {
                    hashes: vec![EMPTY_HASH; n],
                    counts: vec![0; n],
                    dirty: vec![false; n],
                    dirty_list: Vec::new(),
                }
            })
            .collect();
        Self {
            shape,
            leaves: vec![Leaf::default(); shape.leaves() as usize],
            levels,
            keys: 0,
        }
    }

    /// Builds a tree from every `(position, key, digest)` a node holds, for start-up.
    /// Equal (`==`, same root) to the tree that inserting the same entries one by one
    /// in any order would give.
    pub fn rebuild<K, I>(shape: TreeShape, entries: I) -> Self
    where
        K: AsRef<[u8]>,
        I: IntoIterator<Item = (u64, K, Digest)>,
    {
        let mut tree = Self::new(shape);
        for (position, key, digest) in entries {
            let leaf = &mut tree.leaves[shape.leaf_of(position) as usize];
            add256(&mut leaf.sum, &entry_term(key.as_ref(), &digest));
            leaf.count += 1;
            tree.keys += 1;
        }
        // Every inner node is computed once, bottom-up, from clean children.
        for level in 1..=shape.top() {
            for index in 0..shape.nodes_at(level) {
                let (hash, count) = tree.compute_inner(level, index);
                let stored = &mut tree.levels[usize::from(level) - 1];
                stored.hashes[index as usize] = hash;
                stored.counts[index as usize] = count;
            }
        }
        tree
    }

    /// The tree's shape.
    pub fn shape(&self) -> TreeShape {
        self.shape
    }

    /// Number of entries in the tree.
    pub fn len(&self) -> u64 {
        self.keys
    }

    /// Whether the tree holds no entries.
    pub fn is_empty(&self) -> bool {
        self.keys == 0
    }

    /// Records that the key at `position` went from version `old` to version `new`
    /// (`None` meaning absent). The caller reads before it writes, so it knows `old`;
    /// the tree does not store keys and cannot look it up.
    ///
    /// Fails with [`MerkleError::LeafUnderflow`] (and changes nothing) when `old` is
    /// given but the leaf holds no entries; an `old` digest that is wrong in any other
    /// way cannot be detected here and leaves the leaf differing from its replicas,
    /// which the next diff reports.
    pub fn update(
        &mut self,
        position: u64,
        key: &[u8],
        old: Option<&Digest>,
        new: Option<&Digest>,
    ) -> Result<(), MerkleError> {
        if old == new {
            return Ok(());
        }
        let index = self.shape.leaf_of(position);
        let leaf = &mut self.leaves[index as usize];
        if let Some(old) = old {
            if leaf.count == 0 {
                return Err(MerkleError::LeafUnderflow { leaf: index });
            }
            sub256(&mut leaf.sum, &entry_term(key, old));
            leaf.count -= 1;
            self.keys -= 1;
        }
        if let Some(new) = new {
            add256(&mut leaf.sum, &entry_term(key, new));
            leaf.count += 1;
            self.keys += 1;
        }
        self.mark_dirty(index);
        Ok(())
    }

    /// Records a key that was absent.
    pub fn insert(
        &mut self,
        position: u64,
        key: &[u8],
        digest: &Digest,
    ) -> Result<(), MerkleError> {
        self.update(position, key, None, Some(digest))
    }

    /// Records that a key with version `digest` is gone (purged, or moved to another
    /// node's range); a delete that writes a tombstone is an [`MerkleTree::update`].
    pub fn remove(
        &mut self,
        position: u64,
        key: &[u8],
        digest: &Digest,
    ) -> Result<(), MerkleError> {
        self.update(position, key, Some(digest), None)
    }

    fn mark_dirty(&mut self, leaf: u32) {
        for level in 1..=self.shape.top() {
            let index = leaf >> self.shape.span_bits(level);
            let stored = &mut self.levels[usize::from(level) - 1];
            if stored.dirty[index as usize] {
                // Invariant: every ancestor of a dirty node is dirty.
                break;
            }
            stored.dirty[index as usize] = true;
            stored.dirty_list.push(index);
        }
    }

    /// Recomputes every stale inner node, bottom-up, so that later reads are O(1).
    /// Reads are correct without it, only slower; call it before answering a diff.
    pub fn flush(&mut self) {
        for level in 1..=self.shape.top() {
            let dirty = std::mem::take(&mut self.levels[usize::from(level) - 1].dirty_list);
            for &index in &dirty {
                let (hash, count) = self.compute_inner(level, index);
                let stored = &mut self.levels[usize::from(level) - 1];
                stored.hashes[index as usize] = hash;
                stored.counts[index as usize] = count;
                stored.dirty[index as usize] = false;
            }
            // Keep the allocation for the next round of updates.
            let mut dirty = dirty;
            dirty.clear();
            self.levels[usize::from(level) - 1].dirty_list = dirty;
        }
    }

    /// Hash and key count of an inner node from its children.
    fn compute_inner(&self, level: u8, index: u32) -> (Hash, u64) {
        let children = self.shape.children_of(level);
        let first = index * children;
        // Hashing starts at the first non-empty child, so empty stretches of the ring
        // (most of a sparse tree) cost no SHA-256 work at all.
        let mut hasher = LazyHasher::default();
        let mut count = 0;
        if level == 1 {
            // A parent of leaves hashes their 40-byte accumulators rather than their
            // hashes: that binds exactly the same content (a leaf hash is a function
            // of its accumulator) for 40 bytes of input instead of one SHA-256 call
            // per leaf, which more than halves the cost of a flush.
            for leaf in &self.leaves[first as usize..(first + children) as usize] {
                count += leaf.count;
                if leaf.count == 0 && leaf.sum == [0; 4] {
                    hasher.empty(LEAF_BYTES);
                } else {
                    hasher.update(&leaf.bytes());
                }
            }
        } else {
            for child in first..first + children {
                let (hash, n) = self.node(NodeId {
                    level: level - 1,
                    index: child,
                });
                count += n;
                if hash == EMPTY_HASH {
                    hasher.empty(EMPTY_HASH.len());
                } else {
                    hasher.update(&hash);
                }
            }
        }
        (hasher.finish(), count)
    }

    /// Hash and key count of a node that is known to exist.
    pub(crate) fn node(&self, node: NodeId) -> (Hash, u64) {
        if node.level == 0 {
            let leaf = &self.leaves[node.index as usize];
            return (leaf.hash(), leaf.count);
        }
        let stored = &self.levels[usize::from(node.level) - 1];
        let i = node.index as usize;
        if stored.dirty[i] {
            self.compute_inner(node.level, node.index)
        } else {
            (stored.hashes[i], stored.counts[i])
        }
    }

    /// The hash of one node.
    pub fn node_hash(&self, node: NodeId) -> Result<Hash, MerkleError> {
        self.shape.check_node(node)?;
        Ok(self.node(node).0)
    }

    /// The number of entries under one node.
    pub fn node_len(&self, node: NodeId) -> Result<u64, MerkleError> {
        self.shape.check_node(node)?;
        Ok(self.node(node).1)
    }

    /// The root hash: equal on two trees exactly when they hold the same entries
    /// (up to hash collisions).
    pub fn root_hash(&self) -> Hash {
        self.node(NodeId {
            level: self.shape.top(),
            index: 0,
        })
        .0
    }

    /// The hash of a token range, which two replicas sharing that range compare.
    /// Fails if the range is not on leaf boundaries.
    pub fn range_hash(&self, range: TokenRange) -> Result<Hash, MerkleError> {
        let range = self.shape.leaf_range(range)?;
        Ok(self.leaf_range_summary(range).0)
    }

    /// The number of entries in a token range.
    pub fn range_len(&self, range: TokenRange) -> Result<u64, MerkleError> {
        let range = self.shape.leaf_range(range)?;
        Ok(self.leaf_range_summary(range).1)
    }

    /// Hash and count of a valid leaf range. A range covered by one node has that
    /// node's hash (so the full ring's hash is the root hash); otherwise it is
    /// `SHA-256(3 || start || end || cover hashes)`, the cover being
    /// [`TreeShape::cover`], which both sides compute alike.
    pub(crate) fn leaf_range_summary(&self, range: LeafRange) -> (Hash, u64) {
        let cover = self.shape.cover(range);
        if let [only] = cover.as_slice() {
            return self.node(*only);
        }
        let mut hasher = Sha256::new();
        hasher.update([TAG_RANGE]);
        hasher.update(range.start.to_be_bytes());
        hasher.update(range.end.to_be_bytes());
        let mut count = 0;
        for node in cover {
            let (hash, n) = self.node(node);
            hasher.update(hash);
            count += n;
        }
        (hasher.finalize().into(), count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(i: u64) -> u64 {
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[test]
    fn carries_and_borrows_across_limbs() {
        let mut a = [u64::MAX, u64::MAX, 0, 0];
        add256(&mut a, &[1, 0, 0, 0]);
        assert_eq!(a, [0, 0, 1, 0]);
        sub256(&mut a, &[1, 0, 0, 0]);
        assert_eq!(a, [u64::MAX, u64::MAX, 0, 0]);
        let mut z = [0; 4];
        sub256(&mut z, &[1, 0, 0, 0]);
        assert_eq!(z, [u64::MAX; 4]);
        add256(&mut z, &[1, 0, 0, 0]);
        assert_eq!(z, [0; 4]);
    }

    #[test]
    fn empty_tree_has_empty_root() {
        let tree = MerkleTree::new(TreeShape::new(16, 4).unwrap());
        assert_eq!(tree.root_hash(), EMPTY_HASH);
        assert!(tree.is_empty());
    }

    #[test]
    fn same_entry_twice_does_not_cancel() {
        let shape = TreeShape::new(16, 4).unwrap();
        let mut tree = MerkleTree::new(shape);
        tree.insert(pos(1), b"k", &[7; 32]).unwrap();
        tree.insert(pos(1), b"k", &[7; 32]).unwrap();
        assert_ne!(tree.root_hash(), EMPTY_HASH);
        assert_ne!(tree, MerkleTree::new(shape));
    }

    #[test]
    fn version_change_changes_root() {
        let shape = TreeShape::new(16, 4).unwrap();
        let mut a = MerkleTree::new(shape);
        a.insert(pos(1), b"k", &[1; 32]).unwrap();
        let before = a.root_hash();
        a.update(pos(1), b"k", Some(&[1; 32]), Some(&[2; 32]))
            .unwrap();
        assert_ne!(a.root_hash(), before);
        a.update(pos(1), b"k", Some(&[2; 32]), Some(&[1; 32]))
            .unwrap();
        assert_eq!(a.root_hash(), before);
    }

    #[test]
    fn lazy_reads_match_flushed_reads() {
        let shape = TreeShape::new(16, 4).unwrap();
        let mut tree = MerkleTree::new(shape);
        for i in 0..1000u64 {
            tree.insert(pos(i), &i.to_be_bytes(), &[i as u8; 32])
                .unwrap();
        }
        let lazy = tree.root_hash();
        tree.flush();
        assert_eq!(tree.root_hash(), lazy);
        let rebuilt = MerkleTree::rebuild(
            shape,
            (0..1000u64).map(|i| (pos(i), i.to_be_bytes(), [i as u8; 32])),
        );
        assert_eq!(rebuilt.root_hash(), lazy);
        assert_eq!(rebuilt, tree);
    }

    #[test]
    fn removing_from_empty_leaf_is_an_error_and_changes_nothing() {
        let shape = TreeShape::new(16, 4).unwrap();
        let mut tree = MerkleTree::new(shape);
        assert_eq!(
            tree.remove(pos(3), b"k", &[1; 32]),
            Err(MerkleError::LeafUnderflow {
                leaf: shape.leaf_of(pos(3))
            })
        );
        assert_eq!(tree, MerkleTree::new(shape));
        assert_eq!(tree.len(), 0);
    }

    #[test]
    fn wrong_old_digest_leaves_visible_difference() {
        let shape = TreeShape::new(16, 4).unwrap();
        let mut tree = MerkleTree::new(shape);
        tree.insert(pos(3), b"k", &[1; 32]).unwrap();
        tree.remove(pos(3), b"k", &[2; 32]).unwrap();
        assert_ne!(tree.root_hash(), EMPTY_HASH);
    }

    #[test]
    fn range_hash_sees_only_its_range() {
        let shape = TreeShape::new(16, 4).unwrap();
        let mut tree = MerkleTree::new(shape);
        let range = TokenRange {
            start: 0xfff0 << 48,
            end: 0x0010 << 48,
        };
        let before = tree.range_hash(range).unwrap();
        tree.insert(0x8000 << 48, b"outside", &[1; 32]).unwrap();
        assert_eq!(tree.range_hash(range).unwrap(), before);
        tree.insert(0xfff8 << 48, b"inside", &[1; 32]).unwrap();
        assert_ne!(tree.range_hash(range).unwrap(), before);
        assert_eq!(tree.range_len(range).unwrap(), 1);
        assert_eq!(tree.range_hash(TokenRange::FULL).unwrap(), tree.root_hash());
    }
}
