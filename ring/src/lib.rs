//! `shoal-ring`: consistent hashing for Shoal, usable on its own.
//!
//! A [`Ring`] is built from a set of storage members, each with a weight and a
//! zone. Every member owns `vnodes_per_weight x weight` tokens on a 64-bit ring;
//! a key sits at [`key_position`] (the first 8 bytes of SHA-256 of the key,
//! big-endian) and is replicated on the first `n` distinct members found walking
//! clockwise from it, in as many distinct zones as possible (its *preference
//! list*; see [Zones](#zones)). Walking further gives the fallbacks that a sloppy
//! quorum uses when owners are down.
//!
//! The ring is a pure function of the member set: every node and gateway that sees
//! the same members computes the same ring, whatever order it learnt them in. There
//! is no I/O and no async here; callers own membership and decide when to rebuild.
//!
//! ```
//! use shoal_ring::{Member, Ring, RingConfig};
//!
//! let ring = Ring::new(
//!     [Member::new("node-1", 1), Member::new("node-2", 1), Member::new("node-3", 2)],
//!     RingConfig::default(),
//! )?;
//! let owners = ring.preference_list(b"user:42", 3);
//! assert_eq!(owners.len(), 3);
//!
//! // Everything past the first n members of the walk is a fallback.
//! let walk: Vec<&str> = ring.walk(shoal_ring::key_position(b"user:42")).collect();
//! assert_eq!(&walk[..3], &owners[..]);
//!
//! // What moves when node-4 joins: only ranges that node-4 gains.
//! let bigger = Ring::new(
//!     [Member::new("node-1", 1), Member::new("node-2", 1), Member::new("node-3", 2),
//!      Member::new("node-4", 1)],
//!     RingConfig::default(),
//! )?;
//! for change in shoal_ring::diff(&ring, &bigger, 3) {
//!     assert_eq!(change.gained, vec!["node-4".to_string()]);
//! }
//! # Ok::<(), shoal_ring::RingError>(())
//! ```
//!
//! # Tokens sit on a grid (why)
//!
//! Anti-entropy (`shoal-merkle`) keeps Merkle trees whose leaves are fixed
//! segments of the hash space, and two replicas compare the subtree of a range
//! they both replicate. That only works if no leaf straddles two ranges, so every
//! token is quantized to a multiple of `2^(64 - TOKEN_GRID_BITS)`: with
//! [`TOKEN_GRID_BITS`] = 16 the ring has 65,536 possible token positions, and any
//! Merkle tree with at least 2^16 leaves has every leaf inside exactly one range.
//!
//! Two tokens may land on the same grid position. They are both kept, ordered by
//! their full 64-bit hash and then by member id (a deterministic tie-break); the
//! first one owns the range ending there, the others own an empty range but still
//! take part in the clockwise walk. Keeping them (rather than dropping or
//! re-hashing the loser) is what makes a join insert tokens without displacing
//! any, so that a join moves ranges only to the new member and a leave only away
//! from the leaving one.
//!
//! # Ranges
//!
//! A key at position `p` is owned by the first token whose position is strictly
//! greater than `p` (wrapping past `u64::MAX` to the smallest token), so each
//! token owns the half-open range `[previous token, token)`. Half-open ranges that
//! start on a grid line are exactly unions of Merkle leaves.
//!
//! # Default token count (why 256)
//!
//! More tokens per member balance load better but multiply the ranges that
//! anti-entropy must compare (Cassandra went from 256 to 16 tokens per node with a
//! smarter allocator for that reason). Tokens here are independent hashes, so a
//! member's share varies like `1/sqrt(tokens)`. `cargo run -p shoal-ring --release
//! --example balance` measures it (BENCHMARKS.md has the table): at 10 members,
//! the most loaded member's replicated share (n = 3) is 1.37x the mean with 16
//! tokens, 1.09-1.19x with 32-128 (1.14x worst over random id sets at 128), and
//! 1.08x with 256 (1.06x on average over random id sets), where a join also
//! moves within 0.3% of the optimal 1/(m+1). 256 is the smallest count that keeps
//! the 1.10 bound with margin; its price is at most 256 x n ranges per node for
//! anti-entropy, each compared by one root hash when replicas agree.
//!
//! # Zones
//!
//! Every member has a zone ([`DEFAULT_ZONE`] unless [`Member::in_zone`] names
//! one): a rack or availability zone, whatever fails together. The walk from a
//! position returns, first, the first member of each zone met clockwise, in the
//! order met; then every other member, clockwise (Cassandra's
//! `NetworkTopologyStrategy` walk over racks: skip a member whose zone already
//! has a replica while some zone has none, then fill from the skipped ones in
//! walk order). So the `n` owners of a key lie in `n` distinct zones when the
//! ring has at least `n` zones, and in all of them otherwise; with one zone the
//! walk is the plain clockwise walk, so a ring whose members name no zone
//! places every key where it always did. Tokens do not depend on zones.
//!
//! A join still moves ranges only to the joiner, and a leave only away from
//! the leaver (property-tested, with zones): the walk is "first of each zone,
//! then the rest in order", and inserting one member into a clockwise order
//! changes either which member is first of its zone (it becomes it) or the
//! rest (it joins it), never anyone else's place relative to the cut at `n`.
//!
//! With `n` equal to the zone count every zone holds exactly one replica of
//! every key, split among its members exactly as a ring of that zone alone
//! would split primaries (`n = 1`), so the balance within a zone is that of a
//! primary, without the averaging over `n` ranges that replicas get on a
//! single-zone ring: with 256 tokens the most loaded member of a zone holds
//! 1.06-1.10x its zone's mean for zones of 2 to 10 members (1.12-1.18x in the
//! worst of 20 random id sets), 1.17x for zones of 33 (`balance -- zones`,
//! BENCHMARKS.md). A zone's share does not follow its size: a lone member in
//! one of three zones holds a replica of every key. Give zones equal capacity.
//!
//! # Layout
//!
//! - this file: [`Ring`], [`Member`], [`RingConfig`], [`key_position`], walking
//!   (zone-aware) and ownership;
//! - [`diff`](mod@diff): which ranges change replicas between two rings;
//! - [`view`]: the current and future ring of a membership in flux (joins and
//!   leaves), where writes go, which ranges replicas share, what a join or leave
//!   moves.

mod diff;
mod error;
pub mod view;

pub use diff::{diff, RangeChange};
pub use error::RingError;

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

/// Bits of a position that a token keeps: tokens are multiples of
/// `2^(64 - TOKEN_GRID_BITS)`. Merkle trees need at least this many leaf bits.
pub const TOKEN_GRID_BITS: u32 = 16;

/// Default tokens per unit of weight; see the crate docs for how it was chosen.
pub const DEFAULT_VNODES_PER_WEIGHT: u32 = 256;

/// Upper bound on a member's weight: it keeps a typo (`weight = 100000`) from
/// allocating millions of tokens.
pub const MAX_WEIGHT: u32 = 1_000;

/// The position of a key on the ring: the first 8 bytes of SHA-256(key),
/// big-endian. Every node, gateway and Merkle tree must agree on it.
pub fn key_position(key: &[u8]) -> u64 {
    let digest = Sha256::digest(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The grid position at or below `position` (what a token is quantized to).
pub fn grid_floor(position: u64) -> u64 {
    position & !(u64::MAX >> TOKEN_GRID_BITS)
}

/// The zone of a member that names none: with every member in it, placement
/// is the plain clockwise walk.
pub const DEFAULT_ZONE: &str = "default";

/// A storage member as the ring sees it: an id, a relative capacity and a
/// zone (failure domain).
///
/// Ordered by id first (ids are unique on a ring), so a sorted member list is
/// sorted by id.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Member {
    /// Stable, unique id (e.g. `node-1`). Tokens derive from it, so renaming a
    /// node moves its data.
    pub id: String,
    /// Relative capacity: a member of weight 2 owns twice the tokens of weight 1.
    pub weight: u32,
    /// Failure domain (rack, availability zone): the `n` replicas of a key lie
    /// in `n` distinct zones when the ring has that many. Any string; tokens do
    /// not depend on it.
    pub zone: String,
}

impl Member {
    /// A member with the given id and weight, in [`DEFAULT_ZONE`].
    pub fn new(id: impl Into<String>, weight: u32) -> Self {
        Self {
            id: id.into(),
            weight,
            zone: DEFAULT_ZONE.to_string(),
        }
    }

    /// The same member, in `zone`.
    pub fn in_zone(mut self, zone: impl Into<String>) -> Self {
        self.zone = zone.into();
        self
    }
}

/// Ring parameters that every participant must share.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Tokens per unit of weight.
    pub vnodes_per_weight: u32,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            vnodes_per_weight: DEFAULT_VNODES_PER_WEIGHT,
        }
    }
}

/// A half-open token range `[start, end)` on the ring. `start >= end` means the
/// range wraps past `u64::MAX`; `start == end` is the whole ring (one token).
///
/// `shoal-merkle` re-exports this type rather than keeping its own, so that a
/// range the ring hands out is the range a Merkle tree compares, with nothing
/// to convert (and one serialized form: two `u64`s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct TokenRange {
    /// First position in the range.
    pub start: u64,
    /// First position after the range.
    pub end: u64,
}

impl TokenRange {
    /// The whole ring.
    pub const FULL: TokenRange = TokenRange { start: 0, end: 0 };

    /// Whether `position` falls in the range.
    pub fn contains(&self, position: u64) -> bool {
        if self.start < self.end {
            self.start <= position && position < self.end
        } else {
            // Wrapping (or whole-ring when start == end).
            position >= self.start || position < self.end
        }
    }

    /// The number of positions in the range, as a fraction of the ring.
    pub fn fraction(&self) -> f64 {
        let width = self.end.wrapping_sub(self.start);
        if width == 0 {
            1.0
        } else {
            width as f64 / 2f64.powi(64)
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Token {
    position: u64,
    /// Full hash, the first tie-break between tokens on the same grid position.
    hash: u64,
    member: u32,
}

/// A consistent-hash ring: a pure function of its member set and config.
#[derive(Clone, Debug)]
pub struct Ring {
    config: RingConfig,
    /// Sorted by id, so member indices are canonical.
    members: Vec<Member>,
    /// Each member's zone, as an index into the sorted distinct zone names.
    zone_of: Vec<u32>,
    /// Number of distinct zones.
    zones: usize,
    /// Sorted by (position, hash, member id).
    tokens: Vec<Token>,
}

impl Ring {
    /// Builds the ring of `members`.
    ///
    /// Errors on an empty member set, a zero or excessive weight, an empty id,
    /// duplicate ids, or a zero token count: each would give a ring that cannot
    /// place keys, or places them differently on different nodes.
    pub fn new(
        members: impl IntoIterator<Item = Member>,
        config: RingConfig,
    ) -> Result<Self, RingError> {
        if config.vnodes_per_weight == 0 {
            return Err(RingError::ZeroVnodes);
        }
        let mut members: Vec<Member> = members.into_iter().collect();
        if members.is_empty() {
            return Err(RingError::Empty);
        }
        members.sort_by(|a, b| a.id.cmp(&b.id));
        for pair in members.windows(2) {
            if pair[0].id == pair[1].id {
                return Err(RingError::DuplicateMember {
                    id: pair[0].id.clone(),
                });
            }
        }
        let mut total_tokens = 0usize;
        for m in &members {
            if m.id.is_empty() {
                return Err(RingError::EmptyId);
            }
            if m.weight == 0 || m.weight > MAX_WEIGHT {
                return Err(RingError::BadWeight {
                    id: m.id.clone(),
                    weight: m.weight,
                    max: MAX_WEIGHT,
                });
            }
            total_tokens += config.vnodes_per_weight as usize * m.weight as usize;
        }
        let mut tokens = Vec::with_capacity(total_tokens);
        for (index, m) in members.iter().enumerate() {
            let count = config.vnodes_per_weight * m.weight;
            for vnode in 0..count {
                let hash = token_hash(&m.id, vnode);
                tokens.push(Token {
                    position: grid_floor(hash),
                    hash,
                    member: index as u32,
                });
            }
        }
        // Members are sorted by id, so comparing indices compares ids.
        tokens.sort_by_key(|t| (t.position, t.hash, t.member));
        let mut names: Vec<&str> = members.iter().map(|m| m.zone.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        let zone_of = members
            .iter()
            .map(|m| {
                names
                    .binary_search(&m.zone.as_str())
                    .expect("every zone is listed") as u32
            })
            .collect();
        let zones = names.len();
        Ok(Self {
            config,
            members,
            zone_of,
            zones,
            tokens,
        })
    }

    /// The members, sorted by id.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// The config the ring was built with.
    pub fn config(&self) -> RingConfig {
        self.config
    }

    /// Number of tokens on the ring.
    pub fn token_count(&self) -> usize {
        self.tokens.len()
    }

    /// Number of distinct zones among the members.
    pub fn zone_count(&self) -> usize {
        self.zones
    }

    /// The zone of member `id`, if it is on the ring.
    pub fn zone_of(&self, id: &str) -> Option<&str> {
        self.members
            .binary_search_by(|m| m.id.as_str().cmp(id))
            .ok()
            .map(|i| self.members[i].zone.as_str())
    }

    /// The first `n` members of [`Ring::walk`] from the key's position: `n`
    /// distinct members (fewer when the ring has fewer) in `min(n, zones)`
    /// distinct zones.
    pub fn preference_list(&self, key: &[u8], n: usize) -> Vec<&str> {
        self.preference_list_at(key_position(key), n)
    }

    /// [`Ring::preference_list`] for a position rather than a key.
    pub fn preference_list_at(&self, position: u64, n: usize) -> Vec<&str> {
        self.walk(position).take(n).collect()
    }

    /// Every member once, from `position`: the first `n` are the preference
    /// list, the rest are fallbacks in the order sloppy quorum should try them.
    ///
    /// The order is zone-aware (see "Zones" in the crate docs): first the
    /// first member of each zone met clockwise, in the order met; then every
    /// other member, clockwise. With a single zone that is the plain
    /// clockwise order of distinct members.
    pub fn walk(&self, position: u64) -> Walk<'_> {
        let start = self.first_token_after(position);
        Walk {
            ring: self,
            start,
            next: start,
            steps: 0,
            seen: vec![0u64; self.members.len().div_ceil(64)],
            found: 0,
            // With one zone the first phase would end at the first token.
            zones_seen: if self.zones > 1 {
                vec![0u64; self.zones.div_ceil(64)]
            } else {
                Vec::new()
            },
            zones_found: if self.zones > 1 { 0 } else { self.zones },
        }
    }

    /// Index of the first token strictly after `position`, wrapping to 0.
    fn first_token_after(&self, position: u64) -> usize {
        let i = self.tokens.partition_point(|t| t.position <= position);
        if i == self.tokens.len() {
            0
        } else {
            i
        }
    }

    /// The distinct token positions with the range that ends at each, in ring
    /// order. Ranges are non-empty and together cover the ring exactly once.
    pub fn ranges(&self) -> Vec<TokenRange> {
        let mut positions: Vec<u64> = self.tokens.iter().map(|t| t.position).collect();
        positions.dedup();
        ranges_between(&positions)
    }

    /// The first `n` distinct members that replicate `range` (a range of
    /// [`Ring::ranges`] or any part of one).
    pub fn replicas_of(&self, range: &TokenRange, n: usize) -> Vec<&str> {
        self.preference_list_at(range.start, n)
    }

    /// Each member's share of the key space, as the primary owner and counting
    /// all `n` replicas (a member holding a third of all replicas has
    /// `replicated == 1/3`, whatever `n`). Shares of all members sum to 1.
    pub fn ownership(&self, n: usize) -> BTreeMap<String, Ownership> {
        let mut out: BTreeMap<String, Ownership> = self
            .members
            .iter()
            .map(|m| (m.id.clone(), Ownership::default()))
            .collect();
        let copies = n.min(self.members.len()).max(1) as f64;
        for range in self.ranges() {
            let fraction = range.fraction();
            for (rank, id) in self.replicas_of(&range, n).into_iter().enumerate() {
                let entry = out.get_mut(id).expect("replica is a member");
                if rank == 0 {
                    entry.primary += fraction;
                }
                entry.replicated += fraction / copies;
            }
        }
        out
    }

    fn member_id(&self, index: u32) -> &str {
        &self.members[index as usize].id
    }
}

/// A member's share of the key space; see [`Ring::ownership`].
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Ownership {
    /// Fraction of the ring for which the member is first in the preference list.
    pub primary: f64,
    /// Fraction of all stored replicas that the member holds.
    pub replicated: f64,
}

/// Iterator over distinct members from a position; see [`Ring::walk`].
///
/// Two phases, each at most one lap of the ring: while some zone has no
/// member returned yet, only a member of such a zone is returned; once every
/// zone has one, the walk starts again from the key and returns every member
/// not returned yet.
#[derive(Clone, Debug)]
pub struct Walk<'a> {
    ring: &'a Ring,
    /// Index of the first token after the position.
    start: usize,
    next: usize,
    /// Tokens visited in the current phase.
    steps: usize,
    /// Bitset of member indices already returned.
    seen: Vec<u64>,
    found: usize,
    /// Bitset of zone indices with a member returned (first phase only).
    zones_seen: Vec<u64>,
    /// Zones with a member returned; the first phase lasts while it is
    /// below the ring's zone count.
    zones_found: usize,
}

impl Walk<'_> {
    /// The next token's member, advancing; `None` after one lap.
    fn step(&mut self) -> Option<u32> {
        let tokens = &self.ring.tokens;
        if self.steps == tokens.len() {
            return None;
        }
        let member = tokens[self.next].member;
        self.next = if self.next + 1 == tokens.len() {
            0
        } else {
            self.next + 1
        };
        self.steps += 1;
        Some(member)
    }

    fn seen(&self, member: u32) -> bool {
        self.seen[member as usize / 64] & (1 << (member % 64)) != 0
    }

    fn take(&mut self, member: u32) -> u32 {
        self.seen[member as usize / 64] |= 1 << (member % 64);
        self.found += 1;
        member
    }

    /// First phase: the next member of a zone not represented yet.
    fn next_new_zone(&mut self) -> Option<u32> {
        while let Some(member) = self.step() {
            let zone = self.ring.zone_of[member as usize];
            let (word, bit) = (zone as usize / 64, zone % 64);
            if self.zones_seen[word] & (1 << bit) == 0 {
                self.zones_seen[word] |= 1 << bit;
                self.zones_found += 1;
                return Some(self.take(member));
            }
        }
        None
    }
}

impl<'a> Iterator for Walk<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.found == self.ring.members.len() {
            return None;
        }
        if self.zones_found < self.ring.zones {
            let member = self.next_new_zone();
            if member.is_none() || self.zones_found == self.ring.zones {
                // Every zone has its member (a lap always finds them all):
                // the second phase walks again from the key.
                self.zones_found = self.ring.zones;
                self.next = self.start;
                self.steps = 0;
            }
            if let Some(member) = member {
                return Some(self.ring.member_id(member));
            }
        }
        while let Some(member) = self.step() {
            if !self.seen(member) {
                return Some(self.ring.member_id(self.take(member)));
            }
        }
        None
    }
}

/// Ranges `[previous, p)` ending at each of `positions` (sorted, distinct).
fn ranges_between(positions: &[u64]) -> Vec<TokenRange> {
    match positions {
        [] => Vec::new(),
        [only] => vec![TokenRange {
            start: *only,
            end: *only,
        }],
        _ => {
            let mut out = Vec::with_capacity(positions.len());
            let mut previous = *positions.last().expect("non-empty");
            for &p in positions {
                out.push(TokenRange {
                    start: previous,
                    end: p,
                });
                previous = p;
            }
            out
        }
    }
}

/// The raw (unquantized) hash of a member's `vnode`-th token.
fn token_hash(id: &str, vnode: u32) -> u64 {
    let mut h = Sha256::new();
    h.update(id.as_bytes());
    // A separator so that ("node-1", 0) and ("node-", ...) cannot collide.
    h.update([0u8]);
    h.update(vnode.to_be_bytes());
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(members: &[(&str, u32)]) -> Result<Ring, RingError> {
        Ring::new(
            members.iter().map(|(id, w)| Member::new(*id, *w)),
            RingConfig::default(),
        )
    }

    #[track_caller]
    fn check_err(members: &[(&str, u32)], expected: RingError) {
        assert_eq!(ring(members).unwrap_err(), expected);
    }

    #[test]
    fn rejects_bad_member_sets() {
        check_err(&[], RingError::Empty);
        check_err(
            &[("a", 0)],
            RingError::BadWeight {
                id: "a".into(),
                weight: 0,
                max: MAX_WEIGHT,
            },
        );
        check_err(
            &[("a", MAX_WEIGHT + 1)],
            RingError::BadWeight {
                id: "a".into(),
                weight: MAX_WEIGHT + 1,
                max: MAX_WEIGHT,
            },
        );
        check_err(
            &[("a", 1), ("b", 1), ("a", 2)],
            RingError::DuplicateMember { id: "a".into() },
        );
        check_err(&[("", 1)], RingError::EmptyId);
        assert_eq!(
            Ring::new(
                [Member::new("a", 1)],
                RingConfig {
                    vnodes_per_weight: 0
                }
            )
            .unwrap_err(),
            RingError::ZeroVnodes
        );
    }

    #[track_caller]
    fn check_preflist(members: &[(&str, u32)], n: usize, expected_len: usize) {
        let r = ring(members).unwrap();
        for key in [&b""[..], b"a", b"user:42", &[0xff; 40]] {
            let list = r.preference_list(key, n);
            assert_eq!(list.len(), expected_len, "key {key:?}");
            let mut dedup = list.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(dedup.len(), list.len(), "duplicates in {list:?}");
        }
    }

    #[test]
    fn preference_list_sizes() {
        check_preflist(&[("a", 1)], 3, 1);
        check_preflist(&[("a", 1)], 1, 1);
        check_preflist(&[("a", 1), ("b", 1)], 3, 2);
        check_preflist(&[("a", 1), ("b", 1), ("c", 1)], 3, 3);
        check_preflist(&[("a", 1), ("b", 1), ("c", 1), ("d", 5)], 3, 3);
        check_preflist(&[("a", 1), ("b", 1), ("c", 1)], 0, 0);
        check_preflist(&[("a", 1), ("b", 1), ("c", 1)], 10, 3);
    }

    #[test]
    fn one_member_owns_everything() {
        let r = ring(&[("solo", 1)]).unwrap();
        let own = r.ownership(3);
        assert!((own["solo"].primary - 1.0).abs() < 1e-9);
        assert!((own["solo"].replicated - 1.0).abs() < 1e-9);
        let total: f64 = r.ranges().iter().map(TokenRange::fraction).sum();
        assert!((total - 1.0).abs() < 1e-9);
    }

    #[test]
    fn key_position_is_sha256_prefix() {
        // SHA-256("") = e3b0c442 98fc1c14 ...
        assert_eq!(key_position(b""), 0xe3b0_c442_98fc_1c14);
    }

    #[test]
    fn ranges_are_grid_aligned_and_cover_the_ring() {
        let r = ring(&[("a", 1), ("b", 2), ("c", 1)]).unwrap();
        let ranges = r.ranges();
        let total: f64 = ranges.iter().map(TokenRange::fraction).sum();
        assert!((total - 1.0).abs() < 1e-9);
        for range in &ranges {
            assert_eq!(grid_floor(range.start), range.start);
            assert_eq!(grid_floor(range.end), range.end);
            // Every key in the range has the same preference list.
            let list = r.replicas_of(range, 3);
            assert_eq!(r.preference_list_at(range.end.wrapping_sub(1), 3), list);
        }
    }

    #[test]
    fn weight_scales_ownership() {
        let r = ring(&[("a", 1), ("b", 1), ("heavy", 2)]).unwrap();
        let own = r.ownership(1);
        let ratio = own["heavy"].primary / ((own["a"].primary + own["b"].primary) / 2.0);
        assert!((1.5..2.6).contains(&ratio), "ratio {ratio}");
    }

    /// Distinct members in token order from the first token after
    /// `position`: the placement before zones, written out plainly.
    fn naive_walk(r: &Ring, position: u64) -> Vec<&str> {
        let start = r.first_token_after(position);
        let mut out: Vec<&str> = Vec::new();
        for i in 0..r.tokens.len() {
            let id = r.member_id(r.tokens[(start + i) % r.tokens.len()].member);
            if !out.contains(&id) {
                out.push(id);
            }
        }
        out
    }

    #[test]
    fn a_single_zone_walks_in_plain_token_order() {
        for zone in [DEFAULT_ZONE, "eu-west-1a"] {
            let r = Ring::new(
                (1..=7).map(|i| Member::new(format!("node-{i}"), 1 + i % 3).in_zone(zone)),
                RingConfig {
                    vnodes_per_weight: 16,
                },
            )
            .unwrap();
            let mut positions = vec![0, 1 << 63, u64::MAX];
            positions.extend(r.ranges().iter().map(|range| range.start));
            for p in positions {
                assert_eq!(r.walk(p).collect::<Vec<_>>(), naive_walk(&r, p), "{p}");
            }
        }
    }

    #[test]
    fn zones_take_the_first_member_of_each_zone_first() {
        let r = Ring::new(
            (1..=6).map(|i| Member::new(format!("node-{i}"), 1).in_zone(["a", "b"][i % 2])),
            RingConfig::default(),
        )
        .unwrap();
        for p in [0, 1 << 62, 1 << 63, u64::MAX] {
            let plain = naive_walk(&r, p);
            let walk: Vec<&str> = r.walk(p).collect();
            let first_of = |zone: &str| {
                *plain
                    .iter()
                    .find(|m| r.zone_of(m) == Some(zone))
                    .expect("both zones have members")
            };
            let (a, b) = (first_of("a"), first_of("b"));
            let mut head = [a, b];
            head.sort_by_key(|m| plain.iter().position(|x| x == m));
            assert_eq!(&walk[..2], &head[..], "{p}");
            let rest: Vec<&str> = plain
                .iter()
                .copied()
                .filter(|m| !head.contains(m))
                .collect();
            assert_eq!(&walk[2..], &rest[..], "{p}");
        }
    }

    #[test]
    fn token_range_contains_wraps() {
        let wrap = TokenRange {
            start: u64::MAX - 10,
            end: 5,
        };
        assert!(wrap.contains(u64::MAX));
        assert!(wrap.contains(0));
        assert!(!wrap.contains(5));
        assert!(!wrap.contains(100));
        let whole = TokenRange { start: 7, end: 7 };
        assert!(whole.contains(0) && whole.contains(7) && whole.contains(u64::MAX));
    }
}
