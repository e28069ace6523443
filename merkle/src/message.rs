//! The messages two replicas exchange during a diff, and the answering side.

use serde::{Deserialize, Serialize};

use crate::shape::{LeafRange, NodeId, TreeShape};
use crate::tree::{Hash, MerkleTree};
use crate::MerkleError;

/// The most node hashes one message may ask for or carry: 4,096 hashes are 128 KiB,
/// big enough that a level of a 2^20-leaf tree with 1,000 differences fits in a few
/// messages, small enough that neither side ever buffers an unbounded answer.
/// Both sides enforce it: [`MerkleTree::answer`] refuses larger requests and
/// [`crate::Diff`] never sends them and refuses larger responses.
pub const MAX_HASHES_PER_MESSAGE: usize = 4096;

/// An upper bound on the bincode (1.x, default options) size of any valid
/// [`Request`] or [`Response`], for a transport's frame limit: a full response is
/// 4,096 hashes of 32 bytes plus fewer than 32 bytes of framing.
pub const MAX_MESSAGE_BYTES: usize = MAX_HASHES_PER_MESSAGE * 32 + 1024;

/// What the diffing side asks the answering side.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The asker's tree shape; node ids mean the same only between equal shapes.
    pub shape: TreeShape,
    /// Sequence number, echoed in the response so a late or stray answer is caught.
    pub round: u32,
    /// What is asked.
    pub query: Query,
}

/// The question in a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// The hash and entry count of a leaf range: the first and, for equal replicas,
    /// only exchange.
    RangeHash {
        /// The range both replicas hold.
        range: LeafRange,
    },
    /// The hashes of these nodes, in this order.
    Nodes {
        /// Nodes to hash.
        nodes: Vec<NodeId>,
    },
    /// The hashes of all children of these inner nodes, parent by parent, each
    /// parent's children in ring order. Cheaper than naming every child.
    Children {
        /// Inner nodes whose children are wanted.
        parents: Vec<NodeId>,
    },
}

/// The answering side's reply to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    /// The request's round.
    pub round: u32,
    /// The answer.
    pub answer: Answer,
}

/// The payload of a [`Response`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// Answer to [`Query::RangeHash`].
    RangeHash {
        /// Hash of the range.
        hash: Hash,
        /// Entries the answering side holds in the range; the diff uses it to decide
        /// whether a full listing would be cheaper than descending.
        count: u64,
    },
    /// Answer to [`Query::Nodes`] and [`Query::Children`], in the order asked.
    Hashes {
        /// The hashes.
        hashes: Vec<Hash>,
    },
}

impl Query {
    /// How many hashes the answer to this query carries, in `shape`, after checking
    /// that every node exists, every parent has children, and the total stays within
    /// [`MAX_HASHES_PER_MESSAGE`].
    pub(crate) fn answer_len(&self, shape: TreeShape) -> Result<usize, MerkleError> {
        let len = match self {
            Query::RangeHash { range } => {
                shape.check_leaf_range(*range)?;
                return Ok(0);
            }
            Query::Nodes { nodes } => {
                check_size(nodes.len())?;
                for node in nodes {
                    shape.check_node(*node)?;
                }
                nodes.len()
            }
            Query::Children { parents } => {
                check_size(parents.len())?;
                let mut len = 0usize;
                for parent in parents {
                    shape.check_node(*parent)?;
                    if parent.level == 0 {
                        return Err(MerkleError::LeafHasNoChildren { node: *parent });
                    }
                    len += shape.children_of(parent.level) as usize;
                }
                len
            }
        };
        if len == 0 {
            return Err(MerkleError::EmptyRequest);
        }
        check_size(len)?;
        Ok(len)
    }
}

fn check_size(hashes: usize) -> Result<(), MerkleError> {
    if hashes > MAX_HASHES_PER_MESSAGE {
        return Err(MerkleError::MessageTooLarge {
            hashes,
            max: MAX_HASHES_PER_MESSAGE,
        });
    }
    Ok(())
}

impl MerkleTree {
    /// Answers a peer's diff request from this tree. Pure: it reads the tree and
    /// nothing else, so the node can run it wherever it likes. Validates the request
    /// first (shape, node ids, size) and never panics on bad input.
    ///
    /// A tree with pending updates answers correctly but slower; call
    /// [`MerkleTree::flush`] before a diff round.
    pub fn answer(&self, request: &Request) -> Result<Response, MerkleError> {
        let shape = self.shape();
        if request.shape != shape {
            return Err(MerkleError::ShapeMismatch {
                local_leaf_bits: shape.leaf_bits(),
                local_fanout_bits: shape.fanout_bits(),
                remote_leaf_bits: request.shape.leaf_bits(),
                remote_fanout_bits: request.shape.fanout_bits(),
            });
        }
        let len = request.query.answer_len(shape)?;
        let answer = match &request.query {
            Query::RangeHash { range } => {
                let (hash, count) = self.leaf_range_summary(*range);
                Answer::RangeHash { hash, count }
            }
            Query::Nodes { nodes } => Answer::Hashes {
                hashes: nodes.iter().map(|node| self.node(*node).0).collect(),
            },
            Query::Children { parents } => {
                let mut hashes = Vec::with_capacity(len);
                for parent in parents {
                    let children = shape.children_of(parent.level);
                    let first = parent.index * children;
                    for index in first..first + children {
                        hashes.push(
                            self.node(NodeId {
                                level: parent.level - 1,
                                index,
                            })
                            .0,
                        );
                    }
                }
                Answer::Hashes { hashes }
            }
        };
        Ok(Response {
            round: request.round,
            answer,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> MerkleTree {
        MerkleTree::new(TreeShape::new(16, 4).unwrap())
    }

    fn request(query: Query) -> Request {
        Request {
            shape: TreeShape::new(16, 4).unwrap(),
            round: 1,
            query,
        }
    }

    #[track_caller]
    fn rejects(query: Query, expected: MerkleError) {
        assert_eq!(tree().answer(&request(query)), Err(expected));
    }

    #[test]
    fn rejects_malformed_requests() {
        let leaf = NodeId { level: 0, index: 3 };
        rejects(
            Query::Children {
                parents: vec![leaf],
            },
            MerkleError::LeafHasNoChildren { node: leaf },
        );
        let missing = NodeId { level: 9, index: 0 };
        rejects(
            Query::Nodes {
                nodes: vec![missing],
            },
            MerkleError::NoSuchNode {
                node: missing,
                levels: 5,
            },
        );
        let missing = NodeId {
            level: 1,
            index: 4096,
        };
        rejects(
            Query::Children {
                parents: vec![missing],
            },
            MerkleError::NoSuchNode {
                node: missing,
                levels: 5,
            },
        );
        rejects(Query::Nodes { nodes: vec![] }, MerkleError::EmptyRequest);
        rejects(
            Query::Nodes {
                nodes: vec![leaf; MAX_HASHES_PER_MESSAGE + 1],
            },
            MerkleError::MessageTooLarge {
                hashes: MAX_HASHES_PER_MESSAGE + 1,
                max: MAX_HASHES_PER_MESSAGE,
            },
        );
        // 257 parents of 16 children each is 4,112 hashes: over the limit.
        rejects(
            Query::Children {
                parents: vec![NodeId { level: 1, index: 0 }; 257],
            },
            MerkleError::MessageTooLarge {
                hashes: 257 * 16,
                max: MAX_HASHES_PER_MESSAGE,
            },
        );
        rejects(
            Query::RangeHash {
                range: LeafRange {
                    start: 0,
                    end: 1 << 16,
                },
            },
            MerkleError::LeafRangeOutOfBounds {
                start: 0,
                end: 1 << 16,
                leaves: 1 << 16,
            },
        );
    }

    #[test]
    fn rejects_other_shapes() {
        let mut req = request(Query::RangeHash {
            range: LeafRange { start: 0, end: 0 },
        });
        req.shape = TreeShape::new(20, 4).unwrap();
        assert_eq!(
            tree().answer(&req),
            Err(MerkleError::ShapeMismatch {
                local_leaf_bits: 16,
                local_fanout_bits: 4,
                remote_leaf_bits: 20,
                remote_fanout_bits: 4,
            })
        );
    }

    #[test]
    fn largest_response_fits_frame_bound() {
        let response = Response {
            round: u32::MAX,
            answer: Answer::Hashes {
                hashes: vec![[0xff; 32]; MAX_HASHES_PER_MESSAGE],
            },
        };
        let bytes = bincode::serialize(&response).unwrap();
        assert!(bytes.len() <= MAX_MESSAGE_BYTES, "{}", bytes.len());
        let request = Request {
            shape: TreeShape::new(24, 1).unwrap(),
            round: u32::MAX,
            query: Query::Nodes {
                nodes: vec![
                    NodeId {
                        level: 0,
                        index: u32::MAX
                    };
                    MAX_HASHES_PER_MESSAGE
                ],
            },
        };
        assert!(bincode::serialize(&request).unwrap().len() <= MAX_MESSAGE_BYTES);
    }
}
