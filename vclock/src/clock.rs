//! Plain vector clocks: `[actor, counter, timestamp]` entries.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::codec::{put_bytes, put_varint, Reader};
use crate::Error;

/// Format byte of [`VectorClock::encode`]: kind 1, version 1.
const CLOCK_FORMAT_V1: u8 = 0x11;

/// How two clocks (or the versions they stamp) relate causally.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Causality {
    /// The left clock happened before the right one: the right one has seen
    /// everything the left one has, and more.
    Before,
    /// The left clock happened after the right one.
    After,
    /// Both clocks have seen exactly the same events.
    Equal,
    /// Each clock has seen an event the other has not: the versions are
    /// siblings and neither may silently replace the other.
    Concurrent,
}

impl fmt::Display for Causality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Causality::Before => "before",
            Causality::After => "after",
            Causality::Equal => "equal",
            Causality::Concurrent => "concurrent",
        })
    }
}

/// One actor's entry in a [`VectorClock`].
///
/// The timestamp (milliseconds since the Unix epoch, from the caller's clock)
/// is not causal information: it only tells [`VectorClock::prune`] which
/// entries are the oldest, as Riak's `vclock` does.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClockEntry {
    /// The replica that counts these events (a node id such as `"node-1"`).
    pub actor: String,
    /// How many events of `actor` this clock has seen; never 0.
    pub counter: u64,
    /// When `counter` last advanced, in the caller's milliseconds.
    pub timestamp: u64,
}

/// A vector clock: for each actor, how many of its events have been seen.
///
/// Entries are kept sorted by actor with no duplicates and no zero counters,
/// so equal clocks are equal values, encode to equal bytes and compare with
/// `==`. Comparison ignores timestamps.
///
/// `merge` is the least upper bound, and obeys the laws of a join
/// semilattice (proven by the property tests in this module):
/// - commutative: `a ⊔ b == b ⊔ a`
/// - associative: `(a ⊔ b) ⊔ c == a ⊔ (b ⊔ c)`
/// - idempotent: `a ⊔ a == a`
///
/// and `a ⊔ b` descends both `a` and `b`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "Vec<ClockEntry>", into = "Vec<ClockEntry>")]
pub struct VectorClock {
    entries: Vec<ClockEntry>,
}

impl TryFrom<Vec<ClockEntry>> for VectorClock {
    type Error = Error;

    fn try_from(entries: Vec<ClockEntry>) -> Result<Self, Error> {
        VectorClock::from_entries(entries)
    }
}

impl From<VectorClock> for Vec<ClockEntry> {
    fn from(c: VectorClock) -> Self {
        c.entries
    }
}

impl VectorClock {
    /// The clock that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builds a clock from entries in any order. Refuses duplicates and zero
    /// counters rather than guessing which entry was meant.
    pub fn from_entries(mut entries: Vec<ClockEntry>) -> Result<Self, Error> {
        entries.sort_by(|a, b| a.actor.cmp(&b.actor));
        for w in entries.windows(2) {
            if w[0].actor == w[1].actor {
                return Err(Error::InvalidClock {
                    actor: w[0].actor.clone(),
                    reason: "actor appears twice",
                });
            }
        }
        if let Some(e) = entries.iter().find(|e| e.counter == 0) {
            return Err(Error::InvalidClock {
                actor: e.actor.clone(),
                reason: "counter is 0 (an absent entry means 0)",
            });
        }
        Ok(VectorClock { entries })
    }

    /// The entries, sorted by actor.
    pub fn entries(&self) -> &[ClockEntry] {
        &self.entries
    }

    /// Number of actors with an entry.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True for the clock that has seen nothing.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn find(&self, actor: &str) -> Result<usize, usize> {
        self.entries
            .binary_search_by(|e| e.actor.as_str().cmp(actor))
    }

    /// The entry of `actor`, if it has one.
    pub fn entry(&self, actor: &str) -> Option<&ClockEntry> {
        self.find(actor).ok().map(|i| &self.entries[i])
    }

    /// How many events of `actor` this clock has seen (0 when it has no entry).
    pub fn get(&self, actor: &str) -> u64 {
        self.entry(actor).map_or(0, |e| e.counter)
    }

    /// Records a new event of `actor` at time `now`: bumps its counter, or
    /// creates the entry with 1. Returns the new counter.
    ///
    /// Only the replica named `actor` should call this, and only on a clock
    /// that holds every event it ever counted: a counter minted twice lets two
    /// different versions claim the same event.
    pub fn increment(&mut self, actor: &str, now: u64) -> Result<u64, Error> {
        match self.find(actor) {
            Ok(i) => {
                let e = &mut self.entries[i];
                e.counter = e.counter.checked_add(1).ok_or(Error::CounterOverflow {
                    actor: actor.to_owned(),
                    counter: e.counter,
                })?;
                e.timestamp = now;
                Ok(e.counter)
            }
            Err(i) => {
                self.entries.insert(
                    i,
                    ClockEntry {
                        actor: actor.to_owned(),
                        counter: 1,
                        timestamp: now,
                    },
                );
                Ok(1)
            }
        }
    }

    /// Raises `actor`'s counter to at least `counter`, stamping `now` when it
    /// moves. Used when a causal context teaches a replica about events it has
    /// not stored itself.
    pub(crate) fn observe(&mut self, actor: &str, counter: u64, now: u64) {
        if counter == 0 {
            return;
        }
        match self.find(actor) {
            Ok(i) => {
                let e = &mut self.entries[i];
                if counter > e.counter {
                    e.counter = counter;
                    e.timestamp = e.timestamp.max(now);
                }
            }
            Err(i) => self.entries.insert(
                i,
                ClockEntry {
                    actor: actor.to_owned(),
                    counter,
                    timestamp: now,
                },
            ),
        }
    }

    /// [`observe`](VectorClock::observe) for a whole version vector at once:
    /// `observed` must be sorted by actor with no duplicates (a [`Context`]'s
    /// entries are). One merge of two sorted lists, so a context of k actors
    /// costs O(n + k) rather than a sorted insert per entry, which made a
    /// hostile 60,000-actor context take seconds.
    ///
    /// [`Context`]: crate::Context
    pub(crate) fn observe_all<'a>(
        &mut self,
        observed: impl IntoIterator<Item = (&'a str, u64)>,
        now: u64,
    ) {
        let mut observed = observed.into_iter().filter(|&(_, n)| n > 0).peekable();
        if observed.peek().is_none() {
            return;
        }
        let mine = std::mem::take(&mut self.entries);
        let mut out = Vec::with_capacity(mine.len() + observed.size_hint().0);
        let mut a = mine.into_iter().peekable();
        let mut last: Option<&str> = None;
        loop {
            let ord = match (a.peek(), observed.peek()) {
                (Some(x), Some(&(y, _))) => x.actor.as_str().cmp(y),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            match ord {
                Ordering::Less => out.extend(a.next()),
                Ordering::Greater => {
                    if let Some((actor, counter)) = observed.next() {
                        debug_assert!(last < Some(actor), "observe_all needs sorted input");
                        last = Some(actor);
                        out.push(ClockEntry {
                            actor: actor.to_owned(),
                            counter,
                            timestamp: now,
                        });
                    }
                }
                Ordering::Equal => {
                    if let (Some(mut e), Some((actor, counter))) = (a.next(), observed.next()) {
                        debug_assert!(last < Some(actor), "observe_all needs sorted input");
                        last = Some(actor);
                        if counter > e.counter {
                            e.counter = counter;
                            e.timestamp = e.timestamp.max(now);
                        }
                        out.push(e);
                    }
                }
            }
        }
        self.entries = out;
    }

    /// Drops the entries whose index is marked in `marked` (one flag per
    /// entry, in entry order); removal keeps the order sorted.
    pub(crate) fn remove_marked(&mut self, marked: &[bool]) {
        debug_assert_eq!(marked.len(), self.entries.len());
        let mut flags = marked.iter();
        // `retain` visits every element once, in order.
        self.entries
            .retain(|_| !flags.next().copied().unwrap_or(false));
    }

    /// How `self` relates to `other`; timestamps play no part.
    pub fn compare(&self, other: &VectorClock) -> Causality {
        // Walk both sorted lists once, noting whether either side is ahead.
        let (mut self_ahead, mut other_ahead) = (false, false);
        let (mut i, mut j) = (0, 0);
        while i < self.entries.len() || j < other.entries.len() {
            let ord = match (self.entries.get(i), other.entries.get(j)) {
                (Some(a), Some(b)) => a.actor.cmp(&b.actor),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match ord {
                Ordering::Less => {
                    self_ahead = true;
                    i += 1;
                }
                Ordering::Greater => {
                    other_ahead = true;
                    j += 1;
                }
                Ordering::Equal => {
                    match self.entries[i].counter.cmp(&other.entries[j].counter) {
                        Ordering::Greater => self_ahead = true,
                        Ordering::Less => other_ahead = true,
                        Ordering::Equal => {}
                    }
                    i += 1;
                    j += 1;
                }
            }
        }
        match (self_ahead, other_ahead) {
            (false, false) => Causality::Equal,
            (true, false) => Causality::After,
            (false, true) => Causality::Before,
            (true, true) => Causality::Concurrent,
        }
    }

    /// True when `self` has seen every event `other` has (equal clocks
    /// descend each other).
    pub fn descends(&self, other: &VectorClock) -> bool {
        matches!(self.compare(other), Causality::After | Causality::Equal)
    }

    /// Replaces `self` with the least upper bound of `self` and `other`. Per
    /// actor the larger counter wins with its timestamp; on equal counters the
    /// later timestamp wins, so the result does not depend on argument order.
    pub fn merge(&mut self, other: &VectorClock) {
        if other.entries.is_empty() {
            return;
        }
        let mine = std::mem::take(&mut self.entries);
        let mut out = Vec::with_capacity(mine.len().max(other.entries.len()));
        let mut a = mine.into_iter().peekable();
        let mut b = other.entries.iter().peekable();
        loop {
            let ord = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) => x.actor.cmp(&y.actor),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => break,
            };
            match ord {
                Ordering::Less => out.extend(a.next()),
                Ordering::Greater => out.extend(b.next().cloned()),
                Ordering::Equal => {
                    let (Some(mut x), Some(y)) = (a.next(), b.next()) else {
                        break;
                    };
                    if (y.counter, y.timestamp) > (x.counter, x.timestamp) {
                        x.counter = y.counter;
                        x.timestamp = y.timestamp;
                    }
                    out.push(x);
                }
            }
        }
        self.entries = out;
    }

    /// The least upper bound of `self` and `other`, as a new clock.
    pub fn merged(&self, other: &VectorClock) -> VectorClock {
        let mut c = self.clone();
        c.merge(other);
        c
    }

    /// Keeps at most `max_entries` entries, dropping the oldest by timestamp
    /// (ties broken by actor, so every replica prunes alike). Returns the
    /// dropped entries.
    ///
    /// The trade-off, as in Riak: a pruned clock has forgotten events, so a
    /// version it used to descend may now look concurrent (a false sibling),
    /// and if a pruned actor counts again from this clock it restarts below
    /// its old counter. [`crate::SiblingSet::prune`] guards against the
    /// second with a counter floor; plain clocks leave that to the caller.
    pub fn prune(&mut self, max_entries: usize) -> Vec<ClockEntry> {
        if self.entries.len() <= max_entries {
            return Vec::new();
        }
        let mut by_age: Vec<usize> = (0..self.entries.len()).collect();
        by_age.sort_by(|&x, &y| {
            let (a, b) = (&self.entries[x], &self.entries[y]);
            (a.timestamp, &a.actor).cmp(&(b.timestamp, &b.actor))
        });
        let mut drop = vec![false; self.entries.len()];
        for &i in &by_age[..self.entries.len() - max_entries] {
            drop[i] = true;
        }
        let mut removed = Vec::new();
        let mut kept = Vec::with_capacity(max_entries);
        for (e, d) in std::mem::take(&mut self.entries).into_iter().zip(drop) {
            if d {
                removed.push(e);
            } else {
                kept.push(e);
            }
        }
        self.entries = kept;
        removed
    }

    /// Compact binary form: a format byte (`0x11`), then a varint count and
    /// per entry the actor (length-prefixed UTF-8), counter and timestamp as
    /// varints, sorted by actor.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(2 + self.entries.len() * 16);
        out.push(CLOCK_FORMAT_V1);
        put_varint(&mut out, self.entries.len() as u64);
        for e in &self.entries {
            put_bytes(&mut out, e.actor.as_bytes());
            put_varint(&mut out, e.counter);
            put_varint(&mut out, e.timestamp);
        }
        out
    }

    /// Parses [`VectorClock::encode`] output; anything else is an error.
    pub fn decode(bytes: &[u8]) -> Result<VectorClock, Error> {
        let mut r = Reader::new(bytes, "vector clock");
        r.format(CLOCK_FORMAT_V1)?;
        let n = r.count(3)?;
        let mut entries: Vec<ClockEntry> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.pos();
            let actor = r.string()?;
            if entries.last().is_some_and(|p| p.actor >= actor) {
                return Err(r.malformed(at, "actors are not strictly ascending"));
            }
            let at = r.pos();
            let counter = r.varint()?;
            if counter == 0 {
                return Err(r.malformed(at, "counter is 0"));
            }
            let timestamp = r.varint()?;
            entries.push(ClockEntry {
                actor,
                counter,
                timestamp,
            });
        }
        r.finish()?;
        Ok(VectorClock { entries })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `"a:2 b:1"` → clock; timestamps equal the counter.
    pub(crate) fn vc(s: &str) -> VectorClock {
        let entries = s
            .split_whitespace()
            .map(|p| {
                let (a, n) = p.split_once(':').unwrap();
                let n: u64 = n.parse().unwrap();
                ClockEntry {
                    actor: a.to_owned(),
                    counter: n,
                    timestamp: n,
                }
            })
            .collect();
        VectorClock::from_entries(entries).unwrap()
    }

    #[track_caller]
    fn check(a: &str, b: &str, expect: Causality) {
        let (x, y) = (vc(a), vc(b));
        assert_eq!(x.compare(&y), expect, "{a} vs {b}");
        let mirror = match expect {
            Causality::Before => Causality::After,
            Causality::After => Causality::Before,
            c => c,
        };
        assert_eq!(y.compare(&x), mirror, "{b} vs {a}");
        assert_eq!(
            x.descends(&y),
            matches!(expect, Causality::After | Causality::Equal)
        );
    }

    #[test]
    fn compare_table() {
        use Causality::*;
        check("", "", Equal);
        check("a:1", "a:1", Equal);
        check("a:1 b:2", "b:2 a:1", Equal);
        check("", "a:1", Before);
        check("a:1", "a:2", Before);
        check("a:1", "a:1 b:1", Before);
        check("a:1 b:1", "a:2 b:1", Before);
        check("a:2 c:1", "a:2 b:5 c:1", Before);
        check("a:3", "a:2", After);
        check("a:1 b:1 c:1", "b:1", After);
        check("a:1", "b:1", Concurrent);
        check("a:2 b:1", "a:1 b:2", Concurrent);
        check("a:1 c:1", "b:1 c:1", Concurrent);
        check("a:1 b:3", "a:2 b:3 c:1", Before);
        check("z:1", "a:9", Concurrent);
    }

    #[test]
    fn increment_bumps_or_creates() {
        let mut c = VectorClock::new();
        assert_eq!(c.increment("b", 10), Ok(1));
        assert_eq!(c.increment("a", 11), Ok(1));
        assert_eq!(c.increment("b", 12), Ok(2));
        assert_eq!(c.get("b"), 2);
        assert_eq!(c.get("nobody"), 0);
        assert_eq!(c.entry("b").map(|e| e.timestamp), Some(12));
        assert_eq!(
            c.entries()
                .iter()
                .map(|e| e.actor.as_str())
                .collect::<Vec<_>>(),
            ["a", "b"]
        );
    }

    #[test]
    fn increment_refuses_to_wrap() {
        let mut c = VectorClock::from_entries(vec![ClockEntry {
            actor: "a".into(),
            counter: u64::MAX,
            timestamp: 0,
        }])
        .unwrap();
        assert_eq!(
            c.increment("a", 1),
            Err(Error::CounterOverflow {
                actor: "a".into(),
                counter: u64::MAX
            })
        );
        assert_eq!(c.get("a"), u64::MAX);
    }

    #[test]
    fn from_entries_refuses_duplicates_and_zero() {
        let e = |a: &str, n| ClockEntry {
            actor: a.into(),
            counter: n,
            timestamp: 0,
        };
        assert!(matches!(
            VectorClock::from_entries(vec![e("a", 1), e("a", 2)]),
            Err(Error::InvalidClock { .. })
        ));
        assert!(matches!(
            VectorClock::from_entries(vec![e("a", 0)]),
            Err(Error::InvalidClock { .. })
        ));
    }

    #[test]
    fn merge_takes_larger_counter_with_its_timestamp() {
        let a = vc("a:3 b:1");
        let mut b = vc("b:4 c:2");
        b.merge(&a);
        assert_eq!(b, vc("a:3 b:4 c:2"));
    }

    #[test]
    fn prune_drops_oldest() {
        let mut c = VectorClock::new();
        c.increment("old", 1).unwrap();
        c.increment("new", 30).unwrap();
        c.increment("mid", 20).unwrap();
        assert!(c.prune(3).is_empty());
        let removed = c.prune(2);
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].actor, "old");
        let removed = c.prune(0);
        assert_eq!(removed.len(), 2);
        assert!(c.is_empty());
    }

    #[test]
    fn decode_refuses_non_canonical_input() {
        let good = vc("a:1 b:2").encode();
        assert_eq!(VectorClock::decode(&good), Ok(vc("a:1 b:2")));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            VectorClock::decode(&trailing),
            Err(Error::TrailingBytes { .. })
        ));
        // Swap actor names so they are descending.
        let mut unsorted = good.clone();
        unsorted[3] = b'c';
        assert!(matches!(
            VectorClock::decode(&unsorted),
            Err(Error::Malformed { .. })
        ));
        assert!(matches!(
            VectorClock::decode(&[0x21]),
            Err(Error::UnsupportedFormat { found: 0x21, .. })
        ));
        assert!(matches!(
            VectorClock::decode(&[]),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn serde_validates() {
        let c = vc("a:1 b:2");
        let bytes = bincode::serialize(&c).unwrap();
        assert_eq!(bincode::deserialize::<VectorClock>(&bytes).unwrap(), c);
        let dup = vec![
            ClockEntry {
                actor: "a".into(),
                counter: 1,
                timestamp: 0,
            };
            2
        ];
        let bytes = bincode::serialize(&dup).unwrap();
        assert!(bincode::deserialize::<VectorClock>(&bytes).is_err());
    }

    pub(crate) fn arb_clock() -> impl Strategy<Value = VectorClock> {
        proptest::collection::btree_map("[a-e]", (1u64..6, 0u64..4), 0..5).prop_map(|m| {
            VectorClock::from_entries(
                m.into_iter()
                    .map(|(actor, (counter, timestamp))| ClockEntry {
                        actor,
                        counter,
                        timestamp,
                    })
                    .collect(),
            )
            .unwrap()
        })
    }

    proptest! {
        #[test]
        fn merge_is_a_join(a in arb_clock(), b in arb_clock(), c in arb_clock()) {
            prop_assert_eq!(a.merged(&b), b.merged(&a));
            prop_assert_eq!(a.merged(&b).merged(&c), a.merged(&b.merged(&c)));
            prop_assert_eq!(a.merged(&a), a.clone());
            let ab = a.merged(&b);
            prop_assert!(ab.descends(&a) && ab.descends(&b));
        }

        #[test]
        fn compare_agrees_with_descends(a in arb_clock(), b in arb_clock()) {
            let expect = match (a.descends(&b), b.descends(&a)) {
                (true, true) => Causality::Equal,
                (true, false) => Causality::After,
                (false, true) => Causality::Before,
                (false, false) => Causality::Concurrent,
            };
            prop_assert_eq!(a.compare(&b), expect);
            // Descends is the pointwise order.
            let pointwise = b.entries().iter().all(|e| a.get(&e.actor) >= e.counter);
            prop_assert_eq!(a.descends(&b), pointwise);
        }

        #[test]
        fn encoding_round_trips(a in arb_clock()) {
            prop_assert_eq!(VectorClock::decode(&a.encode()), Ok(a));
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            if let Ok(c) = VectorClock::decode(&bytes) {
                prop_assert_eq!(c.encode(), bytes);
            }
        }

        #[test]
        fn observe_all_is_observe_per_entry(a in arb_clock(), b in arb_clock(), now in 0u64..8) {
            let mut one_by_one = a.clone();
            for e in b.entries() {
                one_by_one.observe(&e.actor, e.counter, now);
            }
            let mut at_once = a.clone();
            at_once.observe_all(b.entries().iter().map(|e| (e.actor.as_str(), e.counter)), now);
            prop_assert_eq!(&at_once, &one_by_one);
            prop_assert!(at_once.descends(&b) && at_once.descends(&a));
        }

        #[test]
        fn prune_keeps_the_newest(a in arb_clock(), max in 0usize..6) {
            let mut p = a.clone();
            let removed = p.prune(max);
            prop_assert_eq!(p.len(), a.len().min(max));
            prop_assert_eq!(p.len() + removed.len(), a.len());
            prop_assert!(a.descends(&p));
            for r in &removed {
                for k in p.entries() {
                    prop_assert!((r.timestamp, &r.actor) < (k.timestamp, &k.actor));
                }
            }
        }
    }
}
