//! `shoal-merkle`: the Merkle trees behind Shoal's anti-entropy. A node keeps one
//! [`MerkleTree`] over the whole 64-bit ring, updates it on every write, and
//! periodically compares each token range it shares with another replica using a
//! [`Diff`], which finds the differing leaf segments while exchanging a number of
//! hashes that grows with the difference, not with the data. The crate does no I/O:
//! the diff hands back [`Request`]s to send and takes [`Response`]s, which the peer
//! computes with the pure [`MerkleTree::answer`].
//!
//! Leaves are 2^`leaf_bits` equal segments of the ring (leaf = top bits of a key's
//! ring position), so with `leaf_bits >= 16` every ring token range is a whole number
//! of leaves. A leaf's hash is built from a count and a sum modulo 2^256 of per-entry
//! SHA-256 hashes of `(key, version digest)`, so one write costs O(1) at the leaf and
//! two entries can never cancel (see [`MerkleTree`]); inner nodes hash their children
//! in order and are recomputed lazily.
//!
//! ```
//! use shoal_merkle::{
//!     Diff, DiffOptions, DiffOutcome, LeafRange, MerkleTree, Step, TokenRange, TreeShape,
//! };
//!
//! # fn main() -> Result<(), shoal_merkle::MerkleError> {
//! let shape = TreeShape::default();
//! let mut ours = MerkleTree::new(shape);
//! let mut theirs = MerkleTree::new(shape);
//! // The caller supplies each key's ring position (top 8 bytes of SHA-256(key)).
//! for (position, key) in [(1u64 << 60, b"apple"), (3 << 60, b"melon")] {
//!     ours.insert(position, key, &[1; 32])?;
//!     theirs.insert(position, key, &[1; 32])?;
//! }
//! // A write reaches only us: the caller read the old digest before writing.
//! ours.update(3 << 60, b"melon", Some(&[1; 32]), Some(&[2; 32]))?;
//! ours.flush();
//! theirs.flush();
//!
//! // The range [2^63, 2^48) wraps around zero; ring tokens are always leaf-aligned.
//! let range = TokenRange { start: 1 << 63, end: 1 << 48 };
//! assert_eq!(ours.range_hash(range)?, theirs.range_hash(range)?);
//!
//! // Compare the whole ring. Each request would cross the network; here the peer
//! // answers in-process. With two keys, the default (adaptive) diff would rightly
//! // answer `FullListing`; `adaptive: false` descends to single leaves regardless.
//! let options = DiffOptions { adaptive: false, ..DiffOptions::default() };
//! let (mut diff, mut request) = Diff::new(&ours, TokenRange::FULL, options)?;
//! let report = loop {
//!     let response = theirs.answer(&request)?;
//!     match diff.handle(&ours, response)? {
//!         Step::Send(next) => request = next,
//!         Step::Done(report) => break report,
//!     }
//! };
//! let DiffOutcome::Segments(segments) = report.outcome else { unreachable!("not adaptive") };
//! // One segment: melon's leaf. The caller now swaps the keys in it with the peer.
//! let melon_leaf = shape.leaf_of(3 << 60);
//! assert_eq!(segments, [LeafRange { start: melon_leaf, end: melon_leaf + 1 }]);
//! # Ok(())
//! # }
//! ```
//!
//! Modules:
//! - `shape`: [`TreeShape`] (leaf and fan-out bits, default chosen by measurement),
//!   [`TokenRange`] (`shoal_ring`'s, re-exported), [`LeafRange`], [`NodeId`], and how a range maps to whole nodes.
//! - `tree`: [`MerkleTree`], incremental updates, lazy hashing, rebuild, range hashes.
//! - `message`: the wire messages ([`Request`], [`Response`]), their size limit and
//!   [`MerkleTree::answer`].
//! - `diff`: the [`Diff`] state machine.
//! - `error`: [`MerkleError`].
//!
//! `cargo run -p shoal-merkle --release --example exchange` prints the bytes a diff
//! exchanges on 1,000,000 keys; `cargo bench -p shoal-merkle` times updates and rebuilds.

mod diff;
mod error;
mod message;
mod shape;
mod tree;

pub use diff::{Diff, DiffOptions, DiffOutcome, DiffReport, Step};
pub use error::MerkleError;
pub use message::{Answer, Query, Request, Response, MAX_HASHES_PER_MESSAGE, MAX_MESSAGE_BYTES};
pub use shape::{
    LeafRange, NodeId, TokenRange, TreeShape, MAX_FANOUT_BITS, MAX_LEAF_BITS, MIN_LEAF_BITS,
};
pub use tree::{Digest, Hash, MerkleTree, EMPTY_HASH};
