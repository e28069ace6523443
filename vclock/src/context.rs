//! Causal context tokens: what a client read, handed back with its write.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::codec::{as_bytes, put_bytes, put_varint, Reader};
use crate::{Dot, Error};

/// Format byte of [`Context::encode`]: kind 2, version 1.
const CONTEXT_FORMAT_V1: u8 = 0x21;

/// The causal context of a read: for each actor, how many of its writes the
/// reader has seen (a version vector without timestamps).
///
/// Clients treat it as opaque bytes ([`Context::encode`], base64 over HTTP)
/// and send it back with their next write to the key; the write then
/// supersedes exactly the siblings whose dots the context covers. The empty
/// context (a blind write) covers nothing.
///
/// It also carries the sibling set's counter floor (see
/// [`crate::SiblingSet::prune`]) so that a coordinator whose own copy of the
/// key was pruned still mints counters above every pruned one.
///
/// Contexts are not authenticated: a forged context can claim writes it never
/// saw and so supersede them, exactly as a client that read first could. A
/// deployment that does not trust its clients should MAC the bytes at the
/// gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Context {
    /// Sorted by actor, unique, counters ≥ 1.
    entries: Vec<(String, u64)>,
    floor: u64,
}

impl Context {
    /// The empty context: a write carrying it supersedes nothing.
    pub fn empty() -> Self {
        Self::default()
    }

    pub(crate) fn from_parts(entries: Vec<(String, u64)>, floor: u64) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0));
        Context { entries, floor }
    }

    /// True when the context covers no write at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.floor == 0
    }

    /// `(actor, counter)` pairs sorted by actor.
    pub fn entries(&self) -> impl ExactSizeIterator<Item = (&str, u64)> + '_ {
        self.entries.iter().map(|(a, n)| (a.as_str(), *n))
    }

    /// How many writes of `actor` the reader has seen.
    pub fn get(&self, actor: &str) -> u64 {
        self.entries
            .binary_search_by(|(a, _)| a.as_str().cmp(actor))
            .map_or(0, |i| self.entries[i].1)
    }

    /// The highest counter pruned from the state this context was read from.
    pub fn counter_floor(&self) -> u64 {
        self.floor
    }

    /// True when the write identified by `dot` is in the reader's past.
    pub fn covers(&self, dot: &Dot) -> bool {
        self.get(&dot.actor) >= dot.counter
    }

    /// Compact binary form: format byte `0x21`, varint counter floor, varint
    /// entry count, then per entry the length-prefixed actor and a varint
    /// counter, sorted by actor. Three actors named like `node-1` with
    /// four-digit counters take 30 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(3 + self.entries.len() * 12);
        out.push(CONTEXT_FORMAT_V1);
        put_varint(&mut out, self.floor);
        put_varint(&mut out, self.entries.len() as u64);
        for (actor, counter) in &self.entries {
            put_bytes(&mut out, actor.as_bytes());
            put_varint(&mut out, *counter);
        }
        out
    }

    /// Parses [`Context::encode`] output. Garbage (a truncated token, a
    /// token from a newer format, random bytes) is an error, never a panic,
    /// and only the canonical encoding is accepted.
    pub fn decode(bytes: &[u8]) -> Result<Context, Error> {
        let mut r = Reader::new(bytes, "context");
        r.format(CONTEXT_FORMAT_V1)?;
        let floor = r.varint()?;
        let n = r.count(2)?;
        let mut entries: Vec<(String, u64)> = Vec::with_capacity(n);
        for _ in 0..n {
            let at = r.pos();
            let actor = r.string()?;
            if entries.last().is_some_and(|(p, _)| *p >= actor) {
                return Err(r.malformed(at, "actors are not strictly ascending"));
            }
            let at = r.pos();
            let counter = r.varint()?;
            if counter == 0 {
                return Err(r.malformed(at, "counter is 0"));
            }
            entries.push((actor, counter));
        }
        r.finish()?;
        Ok(Context { entries, floor })
    }
}

impl fmt::Display for Context {
    /// Human-readable, for logs: `{node-1:3, node-2:1}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (a, n)) in self.entries.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{a}:{n}")?;
        }
        if self.floor > 0 {
            write!(f, " floor {}", self.floor)?;
        }
        f.write_str("}")
    }
}

/// Serialized as its binary encoding, so deserializing validates it.
impl Serialize for Context {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.encode())
    }
}

impl<'de> Deserialize<'de> for Context {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        as_bytes::deserialize(d, Context::decode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ctx(pairs: &[(&str, u64)], floor: u64) -> Context {
        let mut e: Vec<(String, u64)> = pairs.iter().map(|(a, n)| ((*a).into(), *n)).collect();
        e.sort();
        Context::from_parts(e, floor)
    }

    #[test]
    fn round_trip_and_size() {
        let c = ctx(&[("node-1", 1000), ("node-2", 2000), ("node-3", 3000)], 0);
        let bytes = c.encode();
        assert_eq!(bytes.len(), 30);
        assert_eq!(Context::decode(&bytes), Ok(c.clone()));
        assert_eq!(c.get("node-2"), 2000);
        assert!(c.covers(&Dot::new("node-1", 1000)));
        assert!(!c.covers(&Dot::new("node-1", 1001)));
        assert!(!c.covers(&Dot::new("node-9", 1)));
        assert_eq!(c.to_string(), "{node-1:1000, node-2:2000, node-3:3000}");
        assert_eq!(
            Context::decode(&Context::empty().encode()),
            Ok(Context::empty())
        );
    }

    #[test]
    fn garbage_is_an_error() {
        let good = ctx(&[("a", 1), ("b", 2)], 0).encode();
        for cut in 0..good.len() {
            assert!(Context::decode(&good[..cut]).is_err(), "prefix {cut}");
        }
        assert!(matches!(
            Context::decode(&[0x31, 0, 0]),
            Err(Error::UnsupportedFormat {
                found: 0x31,
                expected: 0x21,
                ..
            })
        ));
        // Zero counter.
        assert!(matches!(
            Context::decode(&[0x21, 0, 1, 1, b'a', 0]),
            Err(Error::Malformed { offset: 5, .. })
        ));
        // Duplicate actor.
        assert!(matches!(
            Context::decode(&[0x21, 0, 2, 1, b'a', 1, 1, b'a', 1]),
            Err(Error::Malformed { offset: 6, .. })
        ));
        // Invalid UTF-8.
        assert!(matches!(
            Context::decode(&[0x21, 0, 1, 1, 0xff, 1]),
            Err(Error::Malformed { .. })
        ));
    }

    #[test]
    fn serde_goes_through_decode() {
        let c = ctx(&[("node-1", 7)], 3);
        let bytes = bincode::serialize(&c).unwrap();
        assert_eq!(bincode::deserialize::<Context>(&bytes).unwrap(), c);
        let bad = bincode::serialize(&vec![0x21u8, 0, 1]).unwrap();
        assert!(bincode::deserialize::<Context>(&bad).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn decoding_random_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(c) = Context::decode(&bytes) {
                // Only canonical bytes decode.
                prop_assert_eq!(c.encode(), bytes);
            }
        }

        #[test]
        fn decoding_mutated_tokens_never_panics(
            flips in proptest::collection::vec((0usize..40, any::<u8>()), 1..4),
        ) {
            let mut bytes = ctx(&[("node-1", 300), ("node-2", 5), ("node-3", 1 << 40)], 9).encode();
            for (i, b) in flips {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            if let Ok(c) = Context::decode(&bytes) {
                prop_assert_eq!(c.encode(), bytes);
            }
        }
    }
}
