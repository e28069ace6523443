//! Geometry: how leaves tile the 64-bit ring, how nodes group leaves, and how a
//! token range maps onto whole nodes.

use serde::{Deserialize, Serialize};

pub use shoal_ring::TokenRange;

use crate::MerkleError;

/// Smallest supported `leaf_bits`: ring tokens are multiples of 2^48 (the top 16 bits
/// of a position, `shoal_ring::TOKEN_GRID_BITS`), so with at least 2^16 leaves every
/// token falls on a leaf boundary and every leaf belongs to exactly one token range.
pub const MIN_LEAF_BITS: u8 = 16;

/// Largest supported `leaf_bits`. A leaf costs 40 bytes whether it holds keys or not,
/// so 2^24 leaves is already 640 MiB per tree; nothing finer is useful.
pub const MAX_LEAF_BITS: u8 = 24;

/// Largest supported `fanout_bits` (fan-out 256). Wider nodes make every descent
/// step send 256 hashes per differing node, which only costs bytes.
pub const MAX_FANOUT_BITS: u8 = 8;

/// The shape of a tree: how many leaves and how many children per inner node.
///
/// Two replicas can only compare trees of the same shape, so the shape travels in
/// every request and is checked on receipt.
///
/// The default, 2^20 leaves and fan-out 16, comes from the `exchange` example and
/// the `tree` bench on 1,000,000 keys (figures in the crate's report; total bytes
/// to find and list the differences for 10 / 1,000 / 100,000 differing keys):
/// - 2^16 leaves hold ~15 keys each, so every differing key drags ~15 keys from
///   each side into the listing: 30 KiB / 2.2 MiB / over the full listing (it falls
///   back). 2^20 leaves hold ~1 key: 22 KiB / 1.2 MiB / 89% of the full listing,
///   for 40 MiB of leaves. Finer leaves do not help (the diff stops above them when
///   listing is cheaper) and 2^24 would cost 640 MiB.
/// - Fan-out 4 sends ~35% fewer bytes (13 KiB / 0.8 MiB / 73%) but needs 11 round
///   trips instead of 6, and it makes every write dearer: recomputing the dirty
///   ancestors of 1,000 scattered writes costs ~3 µs per key against ~2 µs for
///   fan-out 16 (SHA-256 calls per path: fewer levels win). Fan-out 256 sends 7x
///   the bytes. Anti-entropy runs now and then while every write pays for the
///   hashes, so fan-out 16 is the better default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TreeShape {
    leaf_bits: u8,
    fanout_bits: u8,
}

impl Default for TreeShape {
    fn default() -> Self {
        Self {
            leaf_bits: 20,
            fanout_bits: 4,
        }
    }
}

impl TreeShape {
    /// Validates a shape: 2^`leaf_bits` leaves, 2^`fanout_bits` children per inner node
    /// (the root may have fewer when `fanout_bits` does not divide `leaf_bits`).
    pub fn new(leaf_bits: u8, fanout_bits: u8) -> Result<Self, MerkleError> {
        if !(MIN_LEAF_BITS..=MAX_LEAF_BITS).contains(&leaf_bits) {
            return Err(MerkleError::LeafBitsOutOfRange {
                leaf_bits,
                min: MIN_LEAF_BITS,
                max: MAX_LEAF_BITS,
            });
        }
        if !(1..=MAX_FANOUT_BITS).contains(&fanout_bits) {
            return Err(MerkleError::FanoutBitsOutOfRange {
                fanout_bits,
                max: MAX_FANOUT_BITS,
            });
        }
        Ok(Self {
            leaf_bits,
            fanout_bits,
        })
    }

    /// log2 of the number of leaves.
    pub fn leaf_bits(self) -> u8 {
        self.leaf_bits
    }

    /// log2 of the number of children of an inner node.
    pub fn fanout_bits(self) -> u8 {
        self.fanout_bits
    }

    /// Number of leaves.
    pub fn leaves(self) -> u32 {
        1 << self.leaf_bits
    }

    /// Number of levels including the leaves (level 0) and the root (the top level).
    pub fn levels(self) -> u8 {
        self.leaf_bits.div_ceil(self.fanout_bits) + 1
    }

    /// The root's level.
    pub fn top(self) -> u8 {
        self.levels() - 1
    }

    /// log2 of the number of leaves under one node of `level`.
    pub(crate) fn span_bits(self, level: u8) -> u8 {
        (u32::from(level) * u32::from(self.fanout_bits)).min(u32::from(self.leaf_bits)) as u8
    }

    /// Number of leaves under one node of `level`.
    pub fn span(self, level: u8) -> u32 {
        1 << self.span_bits(level)
    }

    /// Number of nodes on `level`.
    pub fn nodes_at(self, level: u8) -> u32 {
        1 << (self.leaf_bits - self.span_bits(level))
    }

    /// Number of children of a node of `level` (0 for leaves; the root may have fewer
    /// than the fan-out).
    pub fn children_of(self, level: u8) -> u32 {
        if level == 0 {
            0
        } else {
            1 << (self.span_bits(level) - self.span_bits(level - 1))
        }
    }

    /// The leaf that holds `position`: its top `leaf_bits` bits.
    pub fn leaf_of(self, position: u64) -> u32 {
        (position >> (64 - u32::from(self.leaf_bits))) as u32
    }

    /// The first position of `leaf`.
    pub fn leaf_start(self, leaf: u32) -> u64 {
        u64::from(leaf) << (64 - u32::from(self.leaf_bits))
    }

    /// Checks that `node` exists in this shape.
    pub fn check_node(self, node: NodeId) -> Result<(), MerkleError> {
        if node.level > self.top() || node.index >= self.nodes_at(node.level) {
            return Err(MerkleError::NoSuchNode {
                node,
                levels: self.levels(),
            });
        }
        Ok(())
    }

    /// Maps a ring token range onto leaves, rejecting bounds that are not on a leaf
    /// boundary (with `leaf_bits >= 16` every ring token is).
    pub fn leaf_range(self, range: TokenRange) -> Result<LeafRange, MerkleError> {
        let shift = 64 - self.leaf_bits;
        for position in [range.start, range.end] {
            if position & ((1u64 << shift) - 1) != 0 {
                return Err(MerkleError::UnalignedRange { position, shift });
            }
        }
        Ok(LeafRange {
            start: self.leaf_of(range.start),
            end: self.leaf_of(range.end),
        })
    }

    /// Maps a leaf range back to ring positions.
    pub fn token_range(self, range: LeafRange) -> TokenRange {
        TokenRange {
            start: self.leaf_start(range.start),
            end: self.leaf_start(range.end),
        }
    }

    /// Checks that `range` names leaves of this shape.
    pub fn check_leaf_range(self, range: LeafRange) -> Result<(), MerkleError> {
        if range.start >= self.leaves() || range.end >= self.leaves() {
            return Err(MerkleError::LeafRangeOutOfBounds {
                start: range.start,
                end: range.end,
                leaves: self.leaves(),
            });
        }
        Ok(())
    }

    /// Number of leaves in `range`.
    pub fn range_len(self, range: LeafRange) -> u32 {
        if range.start < range.end {
            range.end - range.start
        } else {
            // Wrapping or full: `start == end` is the whole ring.
            self.leaves() - range.start + range.end
        }
    }

    /// The fewest whole nodes that exactly tile `range`, in ring order from its start.
    ///
    /// Both replicas compute the same cover from the same range, so a range hash built
    /// from it means the same on both sides. At most `2 * (fanout - 1)` nodes per level
    /// per contiguous piece, so the cover stays small.
    pub fn cover(self, range: LeafRange) -> Vec<NodeId> {
        let mut nodes = Vec::new();
        if range.start == range.end {
            nodes.push(NodeId {
                level: self.top(),
                index: 0,
            });
            return nodes;
        }
        let leaves = self.leaves();
        let pieces: [(u32, u32); 2] = if range.start < range.end {
            [(range.start, range.end), (0, 0)]
        } else {
            [(range.start, leaves), (0, range.end)]
        };
        for (start, end) in pieces {
            let mut at = start;
            while at < end {
                let mut level = self.top();
                loop {
                    let span = self.span(level);
                    if at % span == 0 && u64::from(at) + u64::from(span) <= u64::from(end) {
                        nodes.push(NodeId {
                            level,
                            index: at / span,
                        });
                        at += span;
                        break;
                    }
                    // Level 0 (span 1) always fits, so this never goes below zero.
                    level -= 1;
                }
            }
        }
        nodes
    }

    /// The leaves under `node`.
    pub fn leaves_of(self, node: NodeId) -> LeafRange {
        let span = self.span(node.level);
        let start = node.index * span;
        let end = (u64::from(start) + u64::from(span)) % u64::from(self.leaves());
        LeafRange {
            start,
            end: end as u32,
        }
    }
}

/// A half-open range `[start, end)` of leaf indices, with the same wrapping
/// convention as [`TokenRange`]. Differing segments are reported in this form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeafRange {
    /// First leaf in the range.
    pub start: u32,
    /// First leaf after the range.
    pub end: u32,
}

impl LeafRange {
    /// Whether `leaf` lies in the range.
    pub fn contains(self, leaf: u32) -> bool {
        if self.start < self.end {
            self.start <= leaf && leaf < self.end
        } else {
            leaf >= self.start || leaf < self.end
        }
    }
}

/// A node of the tree: `level` 0 is the leaves, the top level is the root; `index`
/// counts nodes on that level from position zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NodeId {
    /// Height above the leaves.
    pub level: u8,
    /// Position on the level.
    pub index: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(leaf_bits: u8, fanout_bits: u8) -> TreeShape {
        TreeShape::new(leaf_bits, fanout_bits).unwrap()
    }

    #[test]
    fn rejects_bad_shapes() {
        assert!(matches!(
            TreeShape::new(15, 4),
            Err(MerkleError::LeafBitsOutOfRange { leaf_bits: 15, .. })
        ));
        assert!(matches!(
            TreeShape::new(25, 4),
            Err(MerkleError::LeafBitsOutOfRange { .. })
        ));
        assert!(matches!(
            TreeShape::new(16, 0),
            Err(MerkleError::FanoutBitsOutOfRange { .. })
        ));
        assert!(matches!(
            TreeShape::new(16, 9),
            Err(MerkleError::FanoutBitsOutOfRange { .. })
        ));
    }

    #[test]
    fn levels_and_uneven_root() {
        // (leaf_bits, fanout_bits, levels, root children)
        for (lb, fb, levels, root_children) in [
            (16, 4, 5, 16),
            (20, 4, 6, 16),
            (20, 3, 8, 4),
            (16, 1, 17, 2),
            (24, 8, 4, 256),
            (17, 8, 4, 2),
        ] {
            let s = shape(lb, fb);
            assert_eq!(s.levels(), levels, "{lb}/{fb}");
            assert_eq!(s.nodes_at(s.top()), 1, "{lb}/{fb}");
            assert_eq!(s.children_of(s.top()), root_children, "{lb}/{fb}");
            assert_eq!(s.span(s.top()), s.leaves());
        }
    }

    #[test]
    fn token_ranges_map_to_leaves() {
        let s = shape(16, 4);
        let r = TokenRange {
            start: 3 << 48,
            end: 7 << 48,
        };
        assert_eq!(s.leaf_range(r), Ok(LeafRange { start: 3, end: 7 }));
        assert_eq!(s.token_range(LeafRange { start: 3, end: 7 }), r);
        assert_eq!(
            s.leaf_range(TokenRange {
                start: (3 << 48) + 1,
                end: 0
            }),
            Err(MerkleError::UnalignedRange {
                position: (3 << 48) + 1,
                shift: 48
            })
        );
        // Every ring token (multiple of 2^48) is aligned for every supported shape.
        let s = shape(24, 4);
        assert!(s
            .leaf_range(TokenRange {
                start: 0xffff << 48,
                end: 1 << 48
            })
            .is_ok());
    }

    #[test]
    fn cover_tiles_range_exactly() {
        let s = shape(16, 4);
        for (start, end) in [
            (0, 0),
            (0, 16),
            (1, 17),
            (65535, 1),
            (100, 40000),
            (40000, 100),
            (5, 6),
        ] {
            let r = LeafRange { start, end };
            let cover = s.cover(r);
            let mut at = start;
            let mut total = 0u64;
            for n in &cover {
                let l = s.leaves_of(*n);
                assert_eq!(l.start, at, "cover of {r:?} is contiguous");
                at = l.end;
                total += u64::from(s.span(n.level));
            }
            assert_eq!(at, end);
            assert_eq!(total, u64::from(s.range_len(r)));
            assert!(cover.len() <= 2 * 2 * 15 * 4 + 1);
        }
        assert_eq!(s.cover(LeafRange { start: 0, end: 0 }).len(), 1);
        assert_eq!(
            s.cover(LeafRange {
                start: 0,
                end: 4096
            })
            .len(),
            1
        );
    }

    #[test]
    fn token_range_contains_wraps() {
        let r = TokenRange { start: 10, end: 5 };
        assert!(r.contains(11) && r.contains(0) && r.contains(4));
        assert!(!r.contains(5) && !r.contains(9));
        assert!(TokenRange::FULL.contains(12345));
    }

    #[test]
    fn token_range_encodes_as_two_u64s() {
        // The node ships ranges in RPCs; a change of encoding would break a
        // rolling upgrade.
        let r = TokenRange {
            start: 1,
            end: 0x0102_0304_0506_0708,
        };
        let mut expected = 1u64.to_le_bytes().to_vec();
        expected.extend_from_slice(&0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(bincode::serialize(&r).unwrap(), expected);
        assert_eq!(bincode::deserialize::<TokenRange>(&expected).unwrap(), r);
    }
}
