//! The sans-IO diff: a state machine that finds the leaf segments where two
//! replicas' trees differ, asking the peer only for the hashes it needs.

use crate::message::{Answer, Query, Request, Response, MAX_HASHES_PER_MESSAGE};
use crate::shape::{LeafRange, NodeId, TokenRange, TreeShape};
use crate::tree::{Hash, MerkleTree};
use crate::MerkleError;

/// Bytes of one node hash on the wire.
const HASH_BYTES: f64 = 32.0;
/// Bytes to name one parent in a [`Query::Children`] request.
const PARENT_BYTES: f64 = 5.0;

/// Tuning for a [`Diff`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffOptions {
    /// Estimated bytes to list one `(key, digest)` entry when the caller exchanges
    /// the keys of a differing segment. The diff weighs descending one more level
    /// (hashes) against listing what it has found so far (entries) and against a
    /// full listing of the range, and this is the exchange rate between the two.
    pub entry_bytes: u32,
    /// Whether to weigh those costs at all. With `false` the diff always descends to
    /// single leaves and never reports [`DiffOutcome::FullListing`]: exact, for tests
    /// and for callers that want leaf-precise answers whatever they cost.
    pub adaptive: bool,
}

impl Default for DiffOptions {
    /// Adaptive, with 64 bytes per entry: a 32-byte digest, an 8-byte length prefix and a ~24-byte key.
    fn default() -> Self {
        Self {
            entry_bytes: 64,
            adaptive: true,
        }
    }
}

/// What a finished diff found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiffOutcome {
    /// The range hashes matched: both replicas hold the same entries in the range.
    Equal,
    /// The replicas differ inside these segments and nowhere else in the range;
    /// sorted in ring order from the range's start, disjoint, not adjacent. The
    /// caller exchanges the `(key, digest)` entries of these segments. A segment
    /// may span more than one leaf when descending further would have cost more
    /// hashes than listing its keys.
    Segments(Vec<LeafRange>),
    /// The difference is so large that exchanging hashes down to the leaves and then
    /// the keys in them would cost more than one side listing every entry of the
    /// range; the caller should do that instead.
    FullListing,
}

/// A finished diff's outcome and what it cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiffReport {
    /// What differs.
    pub outcome: DiffOutcome,
    /// Requests sent.
    pub rounds: u32,
    /// Node hashes received from the peer.
    pub hashes_received: u64,
}

/// What the caller does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Send this request to the peer and pass its response to [`Diff::handle`].
    Send(Request),
    /// The diff is over.
    Done(DiffReport),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Fetch the hashes of the pending nodes themselves (the range's cover).
    Nodes,
    /// Fetch the hashes of the pending nodes' children.
    Children,
}

/// The request in flight: which nodes its hashes belong to, in order.
#[derive(Debug, Clone)]
struct Outstanding {
    round: u32,
    kind: OutstandingKind,
}

#[derive(Debug, Clone)]
enum OutstandingKind {
    RangeHash,
    Hashes(Vec<NodeId>),
}

/// A response that matches the request in flight.
enum Accepted {
    RangeHash {
        hash: Hash,
        count: u64,
    },
    Hashes {
        nodes: Vec<NodeId>,
        hashes: Vec<Hash>,
    },
}

/// Validates a response against the request in flight, handing the request back
/// with the error if it does not match.
fn check(
    outstanding: Outstanding,
    response: Response,
) -> Result<Accepted, (Outstanding, MerkleError)> {
    if response.round != outstanding.round {
        let error = MerkleError::WrongRound {
            expected: outstanding.round,
            got: response.round,
        };
        return Err((outstanding, error));
    }
    let round = outstanding.round;
    match (outstanding.kind, response.answer) {
        (OutstandingKind::RangeHash, Answer::RangeHash { hash, count }) => {
            Ok(Accepted::RangeHash { hash, count })
        }
        (OutstandingKind::Hashes(nodes), Answer::Hashes { hashes })
            if hashes.len() == nodes.len() =>
        {
            Ok(Accepted::Hashes { nodes, hashes })
        }
        (OutstandingKind::Hashes(nodes), Answer::Hashes { hashes }) => {
            let error = MerkleError::WrongHashCount {
                expected: nodes.len(),
                got: hashes.len(),
            };
            Err((
                outstanding_with(round, OutstandingKind::Hashes(nodes)),
                error,
            ))
        }
        (kind @ OutstandingKind::RangeHash, Answer::Hashes { .. }) => Err((
            outstanding_with(round, kind),
            MerkleError::WrongAnswerKind {
                expected: "RangeHash",
            },
        )),
        (kind @ OutstandingKind::Hashes(_), Answer::RangeHash { .. }) => Err((
            outstanding_with(round, kind),
            MerkleError::WrongAnswerKind { expected: "Hashes" },
        )),
    }
}

fn outstanding_with(round: u32, kind: OutstandingKind) -> Outstanding {
    Outstanding { round, kind }
}

/// Finds the leaf segments of one token range where the local tree and a peer's
/// tree differ, without the peer's whole tree.
///
/// The protocol: compare the range hash (one exchange, which ends it when the
/// replicas agree); then compare the hashes of the nodes covering the range; then,
/// level by level, fetch the children of every differing node and keep those that
/// differ. Equal subtrees are never opened, so the hashes exchanged grow with the
/// difference, not with the data. Each message carries at most
/// [`MAX_HASHES_PER_MESSAGE`] hashes; a level that needs more takes several.
///
/// Before each level the diff compares three costs (using the local entry counts,
/// the peer's total, and an estimate of how many keys differ from how many nodes
/// differed): list the keys of the differing nodes now, descend one more level, or
/// give up on the tree and list the whole range ([`DiffOutcome::FullListing`]).
///
/// **Laws** (property-tested): the reported segments contain every leaf where the
/// two trees' leaf hashes differ, lie inside the range, and contain no leaf that is
/// equal on both sides unless they were coarsened on purpose (a segment wider than
/// one leaf); [`DiffOutcome::Equal`] is reported exactly when the range hashes
/// match.
///
/// The diff does not borrow the tree: each step takes it again, so the node can
/// keep writing between round trips. Writes made during a diff may or may not be
/// seen by it; the next diff sees them.
///
/// An error from [`Diff::handle`] (a malformed, stray or late response) leaves the
/// diff as it was, still waiting for the right response.
#[derive(Debug, Clone)]
pub struct Diff {
    shape: TreeShape,
    range: LeafRange,
    options: DiffOptions,
    next_round: u32,
    outstanding: Option<Outstanding>,
    local_total: u64,
    remote_total: u64,
    /// Nodes of the current pass still to request, and how.
    pending: Vec<NodeId>,
    cursor: usize,
    mode: Mode,
    /// Differing nodes found in the current pass.
    found: Vec<NodeId>,
    /// Per level in the current pass: (nodes compared, nodes differing).
    compared: Vec<(u64, u64)>,
    /// Differing leaves from earlier passes (final).
    leaves: Vec<NodeId>,
    rounds: u32,
    hashes_received: u64,
    finished: bool,
}

impl Diff {
    /// Starts a diff of `range` (aligned to leaves; ring tokens always are) and returns
    /// the first request to send.
    pub fn new(
        tree: &MerkleTree,
        range: TokenRange,
        options: DiffOptions,
    ) -> Result<(Self, Request), MerkleError> {
        let shape = tree.shape();
        let range = shape.leaf_range(range)?;
        let mut diff = Self {
            shape,
            range,
            options,
            next_round: 0,
            outstanding: None,
            local_total: 0,
            remote_total: 0,
            pending: Vec::new(),
            cursor: 0,
            mode: Mode::Nodes,
            found: Vec::new(),
            compared: vec![(0, 0); usize::from(shape.levels())],
            leaves: Vec::new(),
            rounds: 0,
            hashes_received: 0,
            finished: false,
        };
        let request = diff.send(Query::RangeHash { range }, OutstandingKind::RangeHash);
        Ok((diff, request))
    }

    /// The leaf range being compared.
    pub fn range(&self) -> LeafRange {
        self.range
    }

    fn send(&mut self, query: Query, kind: OutstandingKind) -> Request {
        let round = self.next_round;
        self.next_round = self.next_round.wrapping_add(1);
        self.rounds += 1;
        self.outstanding = Some(Outstanding { round, kind });
        Request {
            shape: self.shape,
            round,
            query,
        }
    }

    /// Takes the peer's response to the last request and says what to do next.
    pub fn handle(&mut self, tree: &MerkleTree, response: Response) -> Result<Step, MerkleError> {
        if self.finished {
            return Err(MerkleError::DiffFinished);
        }
        if tree.shape() != self.shape {
            return Err(MerkleError::DiffTreeMismatch);
        }
        let outstanding = self.outstanding.take().ok_or(MerkleError::DiffFinished)?;
        match check(outstanding, response) {
            Ok(Accepted::RangeHash { hash, count }) => Ok(self.accept_range(tree, hash, count)),
            Ok(Accepted::Hashes { nodes, hashes }) => Ok(self.accept_hashes(tree, nodes, hashes)),
            Err((outstanding, error)) => {
                // A bad response changes nothing: keep waiting for the right one.
                self.outstanding = Some(outstanding);
                Err(error)
            }
        }
    }

    fn accept_range(&mut self, tree: &MerkleTree, hash: Hash, count: u64) -> Step {
        let (local, local_count) = tree.leaf_range_summary(self.range);
        self.local_total = local_count;
        self.remote_total = count;
        if local == hash {
            return self.finish(DiffOutcome::Equal);
        }
        let cover = self.shape.cover(self.range);
        if let [only] = cover.as_slice() {
            // A one-node cover's hash is the range hash: it is known to differ.
            self.compared[usize::from(only.level)] = (1, 1);
            self.found = cover;
            self.end_pass(tree)
        } else {
            self.start_pass(cover, Mode::Nodes);
            Step::Send(self.next_request())
        }
    }

    fn accept_hashes(&mut self, tree: &MerkleTree, nodes: Vec<NodeId>, hashes: Vec<Hash>) -> Step {
        self.hashes_received += hashes.len() as u64;
        for (node, remote) in nodes.into_iter().zip(hashes) {
            let entry = &mut self.compared[usize::from(node.level)];
            entry.0 += 1;
            if tree.node(node).0 != remote {
                entry.1 += 1;
                self.found.push(node);
            }
        }
        if self.cursor < self.pending.len() {
            Step::Send(self.next_request())
        } else {
            self.end_pass(tree)
        }
    }

    fn start_pass(&mut self, nodes: Vec<NodeId>, mode: Mode) {
        self.pending = nodes;
        self.cursor = 0;
        self.mode = mode;
        self.found.clear();
        self.compared.iter_mut().for_each(|c| *c = (0, 0));
    }

    /// The next chunk of the current pass, within the message size limit.
    fn next_request(&mut self) -> Request {
        let start = self.cursor;
        let mut asked = Vec::new();
        let mut hashes = 0usize;
        while self.cursor < self.pending.len() {
            let node = self.pending[self.cursor];
            match self.mode {
                Mode::Nodes => {
                    if hashes + 1 > MAX_HASHES_PER_MESSAGE {
                        break;
                    }
                    hashes += 1;
                    asked.push(node);
                }
                Mode::Children => {
                    let children = self.shape.children_of(node.level);
                    if hashes + children as usize > MAX_HASHES_PER_MESSAGE {
                        break;
                    }
                    hashes += children as usize;
                    let first = node.index * children;
                    asked.extend((first..first + children).map(|index| NodeId {
                        level: node.level - 1,
                        index,
                    }));
                }
            }
            self.cursor += 1;
        }
        let chunk = self.pending[start..self.cursor].to_vec();
        let query = match self.mode {
            Mode::Nodes => Query::Nodes { nodes: chunk },
            Mode::Children => Query::Children { parents: chunk },
        };
        self.send(query, OutstandingKind::Hashes(asked))
    }

    /// All of a pass's answers are in: decide whether to stop, descend or give up.
    fn end_pass(&mut self, tree: &MerkleTree) -> Step {
        let found = std::mem::take(&mut self.found);
        let (leaves, inner): (Vec<NodeId>, Vec<NodeId>) =
            found.into_iter().partition(|n| n.level == 0);
        self.leaves.extend(leaves);
        if !self.options.adaptive && !inner.is_empty() {
            self.start_pass(inner, Mode::Children);
            return Step::Send(self.next_request());
        }
        let stop = self.listing_cost(tree, self.leaves.iter().chain(&inner));
        let full =
            self.local_total.max(self.remote_total) as f64 * f64::from(self.options.entry_bytes);
        let descend = if inner.is_empty() {
            f64::INFINITY
        } else {
            self.listing_cost(tree, self.leaves.iter()) + self.descend_cost(&inner)
        };
        if self.options.adaptive && full < stop && full < descend {
            return self.finish(DiffOutcome::FullListing);
        }
        if inner.is_empty() || stop <= descend {
            let mut nodes = std::mem::take(&mut self.leaves);
            nodes.extend(inner);
            let segments = self.segments(nodes);
            // Empty when the range hashes differed but no node did: the local tree
            // changed between rounds. The next diff starts over.
            return self.finish(DiffOutcome::Segments(segments));
        }
        self.start_pass(inner, Mode::Children);
        Step::Send(self.next_request())
    }

    /// Estimated bytes to list both sides' entries under `nodes`.
    fn listing_cost<'a>(&self, tree: &MerkleTree, nodes: impl Iterator<Item = &'a NodeId>) -> f64 {
        let range_leaves = f64::from(self.shape.range_len(self.range));
        let mut entries = 0.0;
        for node in nodes {
            let local = tree.node(*node).1 as f64;
            // The peer's entries under a node are estimated from its total, spread like
            // ours (or evenly if we have none): positions are uniform hashes.
            let remote = if self.local_total > 0 {
                local * self.remote_total as f64 / self.local_total as f64
            } else {
                self.remote_total as f64 * f64::from(self.shape.span(node.level)) / range_leaves
            };
            entries += local + remote;
        }
        entries * f64::from(self.options.entry_bytes)
    }

    /// Estimated bytes to descend from `inner` to the leaves and list the entries of
    /// the differing leaves, given how many keys the last pass suggests differ.
    fn descend_cost(&self, inner: &[NodeId]) -> f64 {
        // Differing keys: for each level, n nodes compared of which d differed is
        // what n * ln(n / (n - d)) uniformly placed differences would give; when all
        // differed, the coupon-collector count n * ln(n) is the least that would
        // typically do that. Never fewer than one per differing node.
        let mut keys: f64 = 0.0;
        for &(n, d) in &self.compared {
            if d == 0 {
                continue;
            }
            let (n, d) = (n as f64, d as f64);
            keys += if d < n {
                n * (n / (n - d)).ln()
            } else {
                d.max(n * n.ln())
            };
        }
        let keys_per_node = (keys / inner.len() as f64).max(1.0);
        let range_leaves = f64::from(self.shape.range_len(self.range));
        let entries_per_leaf = (self.local_total as f64 + self.remote_total as f64) / range_leaves;
        let entry_bytes = f64::from(self.options.entry_bytes);
        let mut total = 0.0;
        for node in inner {
            let span = f64::from(self.shape.span(node.level));
            let mut parents = 1.0;
            let mut cost = 0.0;
            for level in (0..node.level).rev() {
                let children = f64::from(self.shape.children_of(level + 1));
                cost += parents * (children * HASH_BYTES + PARENT_BYTES);
                let m = span / f64::from(self.shape.span(level));
                parents = (m * (1.0 - (-keys_per_node / m).exp())).clamp(1.0, m);
            }
            cost += (parents * entries_per_leaf + keys_per_node) * entry_bytes;
            total += cost;
        }
        total
    }

    /// Differing nodes as merged leaf segments in ring order from the range start.
    fn segments(&self, nodes: Vec<NodeId>) -> Vec<LeafRange> {
        let leaves = u64::from(self.shape.leaves());
        let offset = |leaf: u32| (u64::from(leaf) + leaves - u64::from(self.range.start)) % leaves;
        let mut spans: Vec<(u64, u64)> = nodes
            .into_iter()
            .map(|node| {
                let start = offset(node.index * self.shape.span(node.level));
                (start, start + u64::from(self.shape.span(node.level)))
            })
            .collect();
        spans.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::new();
        for (start, end) in spans {
            match merged.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => merged.push((start, end)),
            }
        }
        let base = u64::from(self.range.start);
        merged
            .into_iter()
            .map(|(start, end)| LeafRange {
                start: ((base + start) % leaves) as u32,
                end: ((base + end) % leaves) as u32,
            })
            .collect()
    }

    fn finish(&mut self, outcome: DiffOutcome) -> Step {
        self.finished = true;
        self.outstanding = None;
        Step::Done(DiffReport {
            outcome,
            rounds: self.rounds,
            hashes_received: self.hashes_received,
        })
    }
}
