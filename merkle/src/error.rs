//! The crate's one error type.

use crate::shape::NodeId;

/// Everything that can go wrong in `shoal-merkle`.
///
/// Each variant is bad input (a caller bug or a malformed or hostile message from a
/// peer), never an expected outcome: two trees that differ are a [`crate::DiffOutcome`],
/// not an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MerkleError {
    /// The requested number of leaf bits is outside what the tree supports.
    #[error(
        "leaf_bits = {leaf_bits} is outside {min}..={max}: ring tokens sit on a 2^16 grid, \
         so leaves must be at least that fine, and finer than 2^{max} leaves costs too much memory"
    )]
    LeafBitsOutOfRange {
        /// The rejected value.
        leaf_bits: u8,
        /// Smallest accepted value.
        min: u8,
        /// Largest accepted value.
        max: u8,
    },
    /// The requested fan-out is outside what the tree supports.
    #[error(
        "fanout_bits = {fanout_bits} is outside 1..={max}: fan-out must be 2, 4, ... up to 2^{max}"
    )]
    FanoutBitsOutOfRange {
        /// The rejected value.
        fanout_bits: u8,
        /// Largest accepted value.
        max: u8,
    },
    /// A position range does not start or end on a leaf boundary, so a leaf would
    /// be split between two ranges and could not be compared on its own.
    #[error(
        "position {position:#018x} is not on a leaf boundary (leaves are 2^{shift} positions wide)"
    )]
    UnalignedRange {
        /// The offending bound.
        position: u64,
        /// log2 of the leaf width in positions.
        shift: u8,
    },
    /// A leaf range names a leaf past the end of the tree.
    #[error("leaf range {start}..{end} does not fit a tree of {leaves} leaves")]
    LeafRangeOutOfBounds {
        /// Start leaf (inclusive).
        start: u32,
        /// End leaf (exclusive, may wrap).
        end: u32,
        /// Number of leaves in the tree.
        leaves: u32,
    },
    /// A node id names a level or index the tree does not have.
    #[error("node {node:?} does not exist in a tree with {levels} levels")]
    NoSuchNode {
        /// The rejected node.
        node: NodeId,
        /// Number of levels (leaves included).
        levels: u8,
    },
    /// A request asked for the children of a leaf, which has none.
    #[error("node {node:?} is a leaf and has no children to send")]
    LeafHasNoChildren {
        /// The rejected node.
        node: NodeId,
    },
    /// A removal or update named a key the leaf does not hold: its count would go
    /// below zero, so the caller's previous digest was wrong.
    #[error("leaf {leaf} holds no keys, so a key cannot be removed from it (wrong old digest?)")]
    LeafUnderflow {
        /// The leaf.
        leaf: u32,
    },
    /// The peer's tree is shaped differently; node ids would not mean the same thing.
    #[error(
        "tree shapes differ: ours has leaf_bits {local_leaf_bits} fanout_bits {local_fanout_bits}, \
         the peer's {remote_leaf_bits} and {remote_fanout_bits}"
    )]
    ShapeMismatch {
        /// Our leaf bits.
        local_leaf_bits: u8,
        /// Our fan-out bits.
        local_fanout_bits: u8,
        /// The peer's leaf bits.
        remote_leaf_bits: u8,
        /// The peer's fan-out bits.
        remote_fanout_bits: u8,
    },
    /// A message would carry more node hashes than [`crate::MAX_HASHES_PER_MESSAGE`].
    #[error("a message asks for or carries {hashes} node hashes, more than the limit of {max}")]
    MessageTooLarge {
        /// Hashes the message asks for or carries.
        hashes: usize,
        /// The limit.
        max: usize,
    },
    /// A request is empty: answering it would be a wasted round trip and means the
    /// sender's state machine is broken.
    #[error("the request names no nodes")]
    EmptyRequest,
    /// A response answers a different round than the one outstanding (late, duplicated
    /// or from another session).
    #[error("response for round {got} while round {expected} is outstanding")]
    WrongRound {
        /// Round we wait for.
        expected: u32,
        /// Round the response claims.
        got: u32,
    },
    /// A response is of a different kind than the request it answers.
    #[error("response kind does not match the request: expected {expected}")]
    WrongAnswerKind {
        /// What was expected.
        expected: &'static str,
    },
    /// A response carries a different number of hashes than were asked for.
    #[error("response carries {got} hashes but {expected} were asked for")]
    WrongHashCount {
        /// Hashes asked for.
        expected: usize,
        /// Hashes received.
        got: usize,
    },
    /// A response arrived after the diff had already finished.
    #[error("the diff is finished and expects no more responses")]
    DiffFinished,
    /// The diff was built from a different tree shape than the tree passed to it now.
    #[error("the diff was started on a tree of a different shape")]
    DiffTreeMismatch,
}
