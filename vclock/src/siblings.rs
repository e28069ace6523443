//! Per-key sibling sets: dotted version vectors in the shape of Riak 2.x's
//! `dvvset` (Preguiça, Baquero et al.), with one explicit dot per sibling.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::codec::{as_bytes, put_bytes, put_varint, Reader};
use crate::{Context, Error, VectorClock};

/// Format byte of [`SiblingSet::encode`]: kind 3, version 1.
const SIBLINGS_FORMAT_V1: u8 = 0x31;
/// The same layout, holding values with a TTL (kinds 2 and 3).
pub(crate) const SIBLINGS_FORMAT_EXPIRY: u8 = 0x32;
/// Domain separation for [`SiblingSet::digest`].
const DIGEST_DOMAIN: &[u8] = b"shoal-vclock/sibling-set/v1\0";

/// The identity of one write: the coordinating replica and the counter it
/// minted for it. Each replica mints strictly increasing counters per key, so
/// a dot names exactly one write, and "has the reader seen this write?" is
/// one comparison against a version vector.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    /// The replica that coordinated the write.
    pub actor: String,
    /// The counter that replica minted for it (≥ 1).
    pub counter: u64,
}

impl Dot {
    /// A dot; mostly useful in tests and when rebuilding debug output.
    pub fn new(actor: impl Into<String>, counter: u64) -> Self {
        Dot {
            actor: actor.into(),
            counter,
        }
    }
}

impl fmt::Display for Dot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.actor, self.counter)
    }
}

/// What a write stored: a value, or a delete.
///
/// A delete is a version like any other (a tombstone), so it supersedes what
/// its context saw and no more, and it travels through sync, read repair and
/// anti-entropy until the node purges it after the grace period.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Content {
    /// A client delete.
    Tombstone,
    /// A client value with the content type it was written with.
    Value {
        /// The value bytes, opaque to Shoal.
        bytes: Vec<u8>,
        /// The MIME type the client gave (`Content-Type`), echoed on reads.
        content_type: String,
        /// When the value stops being visible (ms since the Unix epoch), for
        /// a write with a TTL. Part of the version itself, so every path
        /// that copies the version (replication, hints, read repair,
        /// anti-entropy, handover) carries the same instant, and no copy
        /// can outlive another by being moved.
        expires_at: Option<u64>,
    },
    /// What is left of an expired value once a replica has purged its bytes:
    /// its expiry instant and the digest of what it held (see
    /// [`SiblingSet::stored_digest`]). It reads as absent, like the value it
    /// replaces, and wins over that value when the two meet (declared last,
    /// so it orders above every other content), so a purge on one replica
    /// and not on another converges to the purge in any order.
    Expired {
        /// The instant the value expired (ms since the Unix epoch).
        expires_at: u64,
        /// `SHA-256(len(content_type) ‖ content_type ‖ bytes)` of the value.
        digest: [u8; 32],
    },
}

impl Content {
    /// A value with its content type.
    pub fn value(bytes: impl Into<Vec<u8>>, content_type: impl Into<String>) -> Self {
        Content::Value {
            bytes: bytes.into(),
            content_type: content_type.into(),
            expires_at: None,
        }
    }

    /// A value that is visible until `expires_at` (ms since the Unix epoch)
    /// and absent from then on.
    pub fn expiring(
        bytes: impl Into<Vec<u8>>,
        content_type: impl Into<String>,
        expires_at: u64,
    ) -> Self {
        Content::Value {
            bytes: bytes.into(),
            content_type: content_type.into(),
            expires_at: Some(expires_at),
        }
    }

    /// True for a delete.
    pub fn is_tombstone(&self) -> bool {
        matches!(self, Content::Tombstone)
    }

    /// The expiry instant of a value written with a TTL.
    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Content::Value { expires_at, .. } => *expires_at,
            Content::Expired { expires_at, .. } => Some(*expires_at),
            Content::Tombstone => None,
        }
    }

    /// True for a value whose expiry instant is at or before `now` (ms
    /// since the Unix epoch). The rule is the same on every node, so two
    /// readers disagree about a version only by their clocks' skew.
    pub fn is_expired(&self, now: u64) -> bool {
        match self {
            // Purged: expired for good, whatever this reader's clock says.
            Content::Expired { .. } => true,
            _ => self.expires_at().is_some_and(|at| at <= now),
        }
    }
}

/// One concurrent version of a key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Sibling {
    /// Which write this is.
    pub dot: Dot,
    /// What the write stored.
    pub content: Content,
    /// When the coordinator accepted the write (its clock, ms since the Unix
    /// epoch). Metadata only: causality never looks at it, so skewed clocks
    /// cannot lose writes.
    pub write_time: u64,
}

impl Sibling {
    /// The value bytes, or `None` for a tombstone.
    pub fn value(&self) -> Option<&[u8]> {
        match &self.content {
            Content::Value { bytes, .. } => Some(bytes),
            Content::Tombstone | Content::Expired { .. } => None,
        }
    }

    /// The content type, or `None` for a tombstone.
    pub fn content_type(&self) -> Option<&str> {
        match &self.content {
            Content::Value { content_type, .. } => Some(content_type),
            Content::Tombstone | Content::Expired { .. } => None,
        }
    }

    /// True for a delete.
    pub fn is_tombstone(&self) -> bool {
        self.content.is_tombstone()
    }

    /// A value a reader at `now` (ms since the Unix epoch) sees: neither a
    /// tombstone nor expired.
    pub fn is_live(&self, now: u64) -> bool {
        !self.is_tombstone() && !self.content.is_expired(now)
    }
}

/// Everything a replica keeps for one key: the concurrent versions (siblings)
/// and the causal clock that says which writes it has seen.
///
/// # Model
///
/// A write is identified by its [`Dot`]. The clock covers every dot this
/// state has seen, stored or already superseded; every stored sibling's dot is
/// covered by the clock (checked by [`SiblingSet::decode`]). This is the
/// "dotted causal container" of the DVV papers; Riak's `dvvset` is the same
/// thing with implicit, contiguous dots, which we make explicit so that the
/// counter floor of [`SiblingSet::prune`] may skip counters.
///
/// - [`update`](SiblingSet::update), on the coordinating replica: drop the
///   siblings the client's context covers, fold the context into the clock,
///   mint the next dot of this replica, store the new sibling.
/// - [`sync`](SiblingSet::sync), anywhere: keep a sibling if both sides
///   have it, or if the other side has never seen its dot; join the clocks.
///
/// A sibling therefore disappears only when a state that has seen its dot
/// lacks it, which happens only when a write whose context covered it
/// replaced it: no acknowledged write is lost, and siblings never outnumber
/// the writes that were really concurrent (no sibling explosion).
///
/// # Laws
///
/// Proven by the property tests of this module, over states built by random
/// updates, syncs and prunes:
/// - `sync` is commutative: `a.sync(&b) == b.sync(&a)`
/// - associative: `a.sync(&b).sync(&c) == a.sync(&b.sync(&c))`
/// - idempotent: `a.sync(&a) == a`
/// - `update` with `s.context()` leaves exactly one sibling, the new one;
/// - `update` with [`Context::empty`] keeps every sibling and adds one.
///
/// # Precondition for coordinators
///
/// Dots must be unique: the replica passed as `actor` to `update` must
/// coordinate from a state that has seen every dot it ever minted for the
/// key (its own stored copy, or a context read after it). A node that lost its
/// copy (disk loss, or the key was purged or handed off and comes back) and
/// mints again under the same actor id would reuse counters, and other
/// replicas would drop the new write as already seen. Use a fresh actor id
/// (for example `node-1#2`, an epoch bumped on data loss) in that case.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SiblingSet {
    clock: VectorClock,
    /// Highest counter of any clock entry pruned from this state's history.
    floor: u64,
    /// Sorted by dot, unique, each covered by `clock`.
    siblings: Vec<Sibling>,
}

/// A sibling set's causal information in a readable, serializable form, for
/// the gateway's debug endpoint.
///
/// A DVV set shares one clock among its siblings; what tells siblings apart
/// is each one's dot, so that is what the per-sibling view carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CausalView {
    /// Actor → counter: every write this state has seen.
    pub clock: BTreeMap<String, u64>,
    /// Highest counter pruned away (0 when nothing was pruned).
    pub counter_floor: u64,
    /// One entry per sibling, in dot order.
    pub siblings: Vec<SiblingView>,
}

/// One sibling in a [`CausalView`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SiblingView {
    /// The write's identity.
    pub dot: Dot,
    /// When the coordinator accepted it (ms since the Unix epoch).
    pub write_time: u64,
    /// True for a delete.
    pub tombstone: bool,
    /// The content type, absent for a tombstone.
    pub content_type: Option<String>,
    /// Value size in bytes (0 for a tombstone).
    pub size: usize,
}

impl SiblingSet {
    /// The state of a key nobody has written.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty state whose writes mint counters above `floor`: for a
    /// replica that removed a key's state (a tombstone GC) and so no longer
    /// knows which counters it minted for it. Minting from 1 again could
    /// reuse a dot that another copy's clock still covers, and that copy
    /// would then drop the new write as already seen.
    pub fn minting_above(floor: u64) -> Self {
        SiblingSet {
            floor,
            ..Self::default()
        }
    }

    /// The siblings, sorted by dot. Empty only for a key never written.
    pub fn values(&self) -> &[Sibling] {
        &self.siblings
    }

    /// Number of siblings.
    pub fn len(&self) -> usize {
        self.siblings.len()
    }

    /// True for a key never written (an update always leaves a sibling).
    pub fn is_empty(&self) -> bool {
        self.siblings.is_empty()
    }

    /// The causal clock: every write this state has seen. Its timestamps say
    /// when each actor's counter last moved here.
    pub fn clock(&self) -> &VectorClock {
        &self.clock
    }

    /// The highest counter ever pruned from this state's history; new dots
    /// are minted above it.
    pub fn counter_floor(&self) -> u64 {
        self.floor
    }

    /// The token a client gets with a read and sends back with its next write
    /// so that the write supersedes exactly what it read.
    pub fn context(&self) -> Context {
        Context::from_parts(
            self.clock
                .entries()
                .iter()
                .map(|e| (e.actor.clone(), e.counter))
                .collect(),
            self.floor,
        )
    }

    /// True when there is at least one sibling and every sibling is a
    /// tombstone: the key reads as deleted, and once
    /// [`latest_write_time`](SiblingSet::latest_write_time) is older than the
    /// grace period the node may purge it.
    pub fn is_tombstone_only(&self) -> bool {
        !self.siblings.is_empty() && self.siblings.iter().all(Sibling::is_tombstone)
    }

    /// The latest write time among the siblings (`None` when empty).
    pub fn latest_write_time(&self) -> Option<u64> {
        self.siblings.iter().map(|s| s.write_time).max()
    }

    /// Applies a client write, on the replica that coordinates it.
    ///
    /// `context` is what the client read (empty for a blind write), `actor`
    /// this replica's id, `now` its clock in ms since the Unix epoch (used
    /// only as metadata and for pruning). Siblings whose dots the context
    /// covers are superseded; all others stay as concurrent siblings. Returns
    /// the new write's dot.
    ///
    /// The state is unchanged on error, which only happens when a (forged or
    /// corrupt) context drives a counter to `u64::MAX`.
    pub fn update(
        &mut self,
        context: &Context,
        actor: &str,
        content: Content,
        now: u64,
    ) -> Result<Dot, Error> {
        let base = self
            .clock
            .get(actor)
            .max(context.get(actor))
            .max(self.floor)
            .max(context.counter_floor());
        let counter = base.checked_add(1).ok_or(Error::CounterOverflow {
            actor: actor.to_owned(),
            counter: base,
        })?;
        self.siblings.retain(|s| !context.covers(&s.dot));
        self.clock.observe_all(context.entries(), now);
        self.floor = self.floor.max(context.counter_floor());
        self.clock.observe(actor, counter, now);
        let dot = Dot::new(actor, counter);
        // The new dot is above every stored dot of `actor`, so it goes right
        // after the last sibling that sorts at or before it.
        let at = self.siblings.partition_point(|s| s.dot < dot);
        self.siblings.insert(
            at,
            Sibling {
                dot: dot.clone(),
                content,
                write_time: now,
            },
        );
        Ok(dot)
    }

    /// Merges two replicas' states of the same key: replication, read repair,
    /// anti-entropy and hinted handoff all use this. See the type's laws.
    ///
    /// A sibling survives if both sides hold it, or if the other side has
    /// never seen its dot; a sibling one side has seen and dropped was
    /// superseded there. Should two states ever disagree on a dot's content
    /// (only if dot uniqueness was broken), the larger `(write_time, content)`
    /// wins so that the laws still hold.
    pub fn sync(&self, other: &SiblingSet) -> SiblingSet {
        let mut out = Vec::with_capacity(self.siblings.len().max(other.siblings.len()));
        let mut a = self.siblings.iter().peekable();
        let mut b = other.siblings.iter().peekable();
        loop {
            let ord = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.dot.cmp(&y.dot),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            match ord {
                Ordering::Less => {
                    if let Some(x) = a.next().filter(|x| !covers(&other.clock, &x.dot)) {
                        out.push(x.clone());
                    }
                }
                Ordering::Greater => {
                    if let Some(y) = b.next().filter(|y| !covers(&self.clock, &y.dot)) {
                        out.push(y.clone());
                    }
                }
                Ordering::Equal => {
                    if let (Some(x), Some(y)) = (a.next(), b.next()) {
                        let kx = (x.write_time, &x.content);
                        let ky = (y.write_time, &y.content);
                        out.push(if kx >= ky { x.clone() } else { y.clone() });
                    }
                }
            }
        }
        SiblingSet {
            clock: self.clock.merged(&other.clock),
            floor: self.floor.max(other.floor),
            siblings: out,
        }
    }

    /// Both states' causal knowledge joined, holding only `winner` (one of
    /// their siblings, so the joined clock covers it): the last-writer-wins
    /// merge of [`crate::Policy`].
    pub(crate) fn joined_with(&self, other: &SiblingSet, winner: Option<Sibling>) -> SiblingSet {
        SiblingSet {
            clock: self.clock.merged(&other.clock),
            floor: self.floor.max(other.floor),
            siblings: winner.into_iter().collect(),
        }
    }

    pub(crate) fn empty_values(&mut self) {
        for s in &mut self.siblings {
            if let Content::Value {
                bytes,
                content_type,
                ..
            } = &mut s.content
            {
                bytes.clear();
                content_type.clear();
            }
        }
    }

    /// In-place [`sync`](SiblingSet::sync): `*self = self.sync(other)`.
    pub fn merge(&mut self, other: &SiblingSet) {
        *self = self.sync(other);
    }

    /// Bounds the causal clock to `max_entries` entries by forgetting the
    /// oldest (by timestamp) entries that no sibling's dot needs. Returns how
    /// many entries were dropped; the clock can stay longer than
    /// `max_entries` when every remaining entry backs a sibling.
    ///
    /// The trade-off, as with Riak's vclock pruning: the state forgets that it
    /// has seen the pruned actors' writes, so a stale replica's copy of a
    /// write superseded long ago can come back as a sibling on the next sync
    /// (a false sibling), and contexts read from the pruned state supersede a
    /// little less. It never loses a write: pruning only removes knowledge,
    /// and the highest pruned counter is kept as a floor under every counter
    /// minted later, so a pruned actor that coordinates again cannot reuse a
    /// dot. Entries live actors write are the youngest and are pruned last.
    ///
    /// It costs one sort of the clock's entries, so the node can prune right
    /// after a write that carried a huge (hostile) context.
    pub fn prune(&mut self, max_entries: usize) -> usize {
        let entries = self.clock.entries();
        if entries.len() <= max_entries {
            return 0;
        }
        // Siblings are sorted by dot, so by actor, like the clock entries:
        // one forward scan marks the entries that back a sibling.
        let mut backs_sibling = vec![false; entries.len()];
        let mut idx = 0;
        for s in &self.siblings {
            while idx < entries.len() && entries[idx].actor < s.dot.actor {
                idx += 1;
            }
            if entries.get(idx).is_some_and(|e| e.actor == s.dot.actor) {
                backs_sibling[idx] = true;
            }
        }
        let mut by_age: Vec<usize> = (0..entries.len()).filter(|&i| !backs_sibling[i]).collect();
        by_age.sort_unstable_by(|&x, &y| {
            let (a, b) = (&entries[x], &entries[y]);
            (a.timestamp, &a.actor).cmp(&(b.timestamp, &b.actor))
        });
        by_age.truncate(entries.len() - max_entries);
        let mut victim = vec![false; entries.len()];
        for &i in &by_age {
            victim[i] = true;
            self.floor = self.floor.max(entries[i].counter);
        }
        self.clock.remove_marked(&victim);
        by_age.len()
    }

    /// SHA-256 of the canonical encoding: equal states have equal digests,
    /// and any difference in causal information, values or metadata changes
    /// it. Independent of the order merges happened in, because the state
    /// itself is (see the laws). The Merkle anti-entropy layer hashes it with
    /// the key as the key's version digest.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(DIGEST_DOMAIN);
        h.update(self.encode());
        h.finalize().into()
    }

    /// A readable form of the causal information, for debug endpoints.
    pub fn causal_view(&self) -> CausalView {
        CausalView {
            clock: self
                .clock
                .entries()
                .iter()
                .map(|e| (e.actor.clone(), e.counter))
                .collect(),
            counter_floor: self.floor,
            siblings: self
                .siblings
                .iter()
                .map(|s| SiblingView {
                    dot: s.dot.clone(),
                    write_time: s.write_time,
                    tombstone: s.is_tombstone(),
                    content_type: s.content_type().map(str::to_owned),
                    size: s.value().map_or(0, <[u8]>::len),
                })
                .collect(),
        }
    }

    /// Compact binary form, as the node stores it:
    ///
    /// ```text
    /// 0x31                                   format byte (kind 3, version 1)
    /// floor                                  varint
    /// n, n × (actor, counter, timestamp)     the clock, sorted by actor
    /// m, m × sibling                         sorted by dot
    /// sibling = actor index into the clock, counter, write time (varints),
    ///           0x00 (tombstone) | 0x01 content_type value (length-prefixed)
    ///           | 0x02 content_type value expires_at (a value with a TTL)
    ///           | 0x03 expires_at digest[32] (an expired value, purged)
    /// ```
    ///
    /// A set holding either of the last two kinds starts with `0x32`
    /// instead of `0x31`: sets written before TTLs existed stay byte for
    /// byte what they were, and [`SiblingSet::stored_digest`] knows from the
    /// first byte which digest a set has.
    ///
    /// Naming a dot's actor by its index in the clock keeps node ids out of
    /// every sibling.
    pub fn encode(&self) -> Vec<u8> {
        let size: usize = self
            .siblings
            .iter()
            .map(|s| 8 + s.value().map_or(0, <[u8]>::len) + s.content_type().map_or(0, str::len))
            .sum();
        let mut out = Vec::with_capacity(4 + self.clock.len() * 16 + size);
        out.push(if self.has_expiry() {
            SIBLINGS_FORMAT_EXPIRY
        } else {
            SIBLINGS_FORMAT_V1
        });
        put_varint(&mut out, self.floor);
        put_varint(&mut out, self.clock.len() as u64);
        for e in self.clock.entries() {
            put_bytes(&mut out, e.actor.as_bytes());
            put_varint(&mut out, e.counter);
            put_varint(&mut out, e.timestamp);
        }
        put_varint(&mut out, self.siblings.len() as u64);
        let entries = self.clock.entries();
        let mut idx = 0;
        for s in &self.siblings {
            // Siblings and entries are both sorted by actor, and every dot's
            // actor has an entry, so one forward scan finds each index.
            while idx < entries.len() && entries[idx].actor < s.dot.actor {
                idx += 1;
            }
            put_varint(&mut out, idx as u64);
            put_varint(&mut out, s.dot.counter);
            put_varint(&mut out, s.write_time);
            match &s.content {
                Content::Tombstone => out.push(0),
                Content::Expired { expires_at, digest } => {
                    out.push(3);
                    put_varint(&mut out, *expires_at);
                    out.extend_from_slice(digest);
                }
                Content::Value {
                    bytes,
                    content_type,
                    expires_at,
                } => {
                    out.push(if expires_at.is_some() { 2 } else { 1 });
                    put_bytes(&mut out, content_type.as_bytes());
                    put_bytes(&mut out, bytes);
                    if let Some(at) = expires_at {
                        put_varint(&mut out, *at);
                    }
                }
            }
        }
        out
    }

    /// Parses [`SiblingSet::encode`] output, checking every invariant (sorted
    /// actors and dots, non-zero counters, dots covered by the clock). Garbage
    /// is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<SiblingSet, Error> {
        let mut r = Reader::new(bytes, "sibling set");
        let expiry_format = bytes.first() == Some(&SIBLINGS_FORMAT_EXPIRY);
        if expiry_format {
            r.format(SIBLINGS_FORMAT_EXPIRY)?;
        } else {
            r.format(SIBLINGS_FORMAT_V1)?;
        }
        let floor = r.varint()?;
        let n = r.count(3)?;
        let mut entries: Vec<crate::ClockEntry> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.pos();
            let actor = r.string()?;
            if entries.last().is_some_and(|p| p.actor >= actor) {
                return Err(r.malformed(at, "clock actors are not strictly ascending"));
            }
            let at = r.pos();
            let counter = r.varint()?;
            if counter == 0 {
                return Err(r.malformed(at, "clock counter is 0"));
            }
            let timestamp = r.varint()?;
            entries.push(crate::ClockEntry {
                actor,
                counter,
                timestamp,
            });
        }
        let m = r.count(4)?;
        let mut siblings: Vec<Sibling> = Vec::with_capacity(m);
        let mut last: Option<(usize, u64)> = None;
        for _ in 0..m {
            let at = r.pos();
            let idx = usize::try_from(r.varint()?)
                .ok()
                .filter(|&i| i < entries.len())
                .ok_or_else(|| r.malformed(at, "sibling names an actor not in the clock"))?;
            let counter = r.varint()?;
            if counter == 0 || counter > entries[idx].counter {
                return Err(r.malformed(at, "sibling dot is not covered by the clock"));
            }
            if last.is_some_and(|l| l >= (idx, counter)) {
                return Err(r.malformed(at, "sibling dots are not strictly ascending"));
            }
            last = Some((idx, counter));
            let write_time = r.varint()?;
            let at = r.pos();
            let content = match r.u8()? {
                0 => Content::Tombstone,
                kind @ (1 | 2) => {
                    let content_type = r.string()?;
                    let bytes = r.bytes()?.to_vec();
                    let expires_at = if kind == 2 { Some(r.varint()?) } else { None };
                    Content::Value {
                        bytes,
                        content_type,
                        expires_at,
                    }
                }
                3 => {
                    let expires_at = r.varint()?;
                    let mut digest = [0u8; 32];
                    for b in &mut digest {
                        *b = r.u8()?;
                    }
                    Content::Expired { expires_at, digest }
                }
                _ => return Err(r.malformed(at, "unknown sibling kind")),
            };
            siblings.push(Sibling {
                dot: Dot::new(entries[idx].actor.clone(), counter),
                content,
                write_time,
            });
        }
        // `encode` picks the format byte from the siblings' kinds; any other
        // pairing is not canonical (and `stored_digest` reads the kind of
        // digest from that byte).
        if siblings.iter().any(|s| s.content.expires_at().is_some()) != expiry_format {
            return Err(r.malformed(0, "format byte does not match the siblings' kinds"));
        }
        r.finish()?;
        let clock = VectorClock::from_entries(entries).map_err(|_| Error::Malformed {
            what: "sibling set",
            offset: 0,
            reason: "invalid clock",
        })?;
        Ok(SiblingSet {
            clock,
            floor,
            siblings,
        })
    }
}

mod expiry;
#[cfg(test)]
mod tests;

fn covers(clock: &VectorClock, dot: &Dot) -> bool {
    clock.get(&dot.actor) >= dot.counter
}

/// Serialized as its binary encoding (the node ships sets over RPC), so
/// deserializing validates the invariants.
impl Serialize for SiblingSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for SiblingSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        as_bytes::deserialize(d, SiblingSet::decode)
    }
}
