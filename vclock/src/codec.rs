//! Varint framing shared by the binary encodings.
//!
//! Integers are unsigned LEB128 (1 byte below 128, at most 10 bytes), strings
//! and byte strings are a varint length followed by the bytes. Decoding accepts
//! only the shortest form of each integer, so every state has exactly one
//! encoding and digests of the encoding are canonical.

use crate::Error;

/// Appends `v` as unsigned LEB128.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        // Truncation is the point: the low seven bits go out, the rest loops.
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends a length-prefixed byte string.
pub(crate) fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// A cursor over untrusted input: every read checks bounds and reports where
/// it failed.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    pub(crate) fn pos(&self) -> usize {
        self.pos
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(crate) fn malformed(&self, offset: usize, reason: &'static str) -> Error {
        Error::Malformed {
            what: self.what,
            offset,
            reason,
        }
    }

    pub(crate) fn u8(&mut self) -> Result<u8, Error> {
        let b = *self.buf.get(self.pos).ok_or(Error::Truncated {
            what: self.what,
            offset: self.pos,
            needed: 1,
        })?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads and checks the leading format byte.
    pub(crate) fn format(&mut self, expected: u8) -> Result<(), Error> {
        let found = self.u8()?;
        if found != expected {
            return Err(Error::UnsupportedFormat {
                what: self.what,
                found,
                expected,
            });
        }
        Ok(())
    }

    pub(crate) fn varint(&mut self) -> Result<u64, Error> {
        let start = self.pos;
        let mut v: u64 = 0;
        for i in 0..10u32 {
            let b = self.u8()?;
            let low = u64::from(b & 0x7f);
            if i == 9 && b > 1 {
                return Err(self.malformed(start, "varint overflows u64"));
            }
            v |= low << (7 * i);
            if b & 0x80 == 0 {
                if b == 0 && i > 0 {
                    return Err(self.malformed(start, "varint is not in shortest form"));
                }
                return Ok(v);
            }
        }
        Err(self.malformed(start, "varint longer than 10 bytes"))
    }

    /// Reads a count of items that each take at least `min_item_len` bytes,
    /// refusing counts the remaining input cannot hold (so a garbage count
    /// never drives a huge allocation).
    pub(crate) fn count(&mut self, min_item_len: usize) -> Result<usize, Error> {
        let start = self.pos;
        let n = self.varint()?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_item_len))
            .is_some_and(|need| need <= self.remaining());
        if !fits {
            return Err(self.malformed(start, "item count exceeds the remaining input"));
        }
        // `fits` proved the conversion succeeds.
        Ok(n as usize)
    }

    pub(crate) fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let start = self.pos;
        let len = self.varint()?;
        let len = match usize::try_from(len) {
            Ok(len) if len <= self.remaining() => len,
            _ => {
                return Err(Error::Truncated {
                    what: self.what,
                    offset: start,
                    needed: usize::try_from(len).unwrap_or(usize::MAX),
                })
            }
        };
        let b = &self.buf[self.pos..self.pos + len];
        self.pos += len;
        Ok(b)
    }

    pub(crate) fn string(&mut self) -> Result<String, Error> {
        let start = self.pos;
        let b = self.bytes()?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| self.malformed(start, "string is not valid UTF-8"))
    }

    /// Fails unless the whole input was consumed.
    pub(crate) fn finish(self) -> Result<(), Error> {
        if self.remaining() != 0 {
            return Err(Error::TrailingBytes {
                what: self.what,
                offset: self.pos,
                count: self.remaining(),
            });
        }
        Ok(())
    }
}

/// Serde support for types whose serde form is their binary encoding: a byte
/// string, so decoding (and its validation) is the only way in.
pub(crate) mod as_bytes {
    use serde::de::{Error as _, SeqAccess, Visitor};
    use std::fmt;

    /// Accepts bytes from formats that have them (bincode) and sequences of
    /// numbers from those that do not (JSON).
    pub(crate) struct BytesVisitor;

    impl<'de> Visitor<'de> for BytesVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a byte string")
        }

        fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(v)
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }
    }

    pub(crate) fn deserialize<'de, D, T>(
        d: D,
        decode: fn(&[u8]) -> Result<T, crate::Error>,
    ) -> Result<T, D::Error>
    where
        D: serde::Deserializer<'de>,
    {
        let bytes = d.deserialize_bytes(BytesVisitor)?;
        decode(&bytes).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trips_and_is_canonical() {
        for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut r = Reader::new(&out, "test");
            assert_eq!(r.varint(), Ok(v));
            r.finish().unwrap();
        }
        // 0 written in two bytes is refused: one state, one encoding.
        let mut r = Reader::new(&[0x80, 0x00], "test");
        assert!(matches!(r.varint(), Err(Error::Malformed { .. })));
        // 11 continuation bytes overflow.
        let mut r = Reader::new(&[0xff; 11], "test");
        assert!(matches!(r.varint(), Err(Error::Malformed { .. })));
    }

    #[test]
    fn huge_lengths_are_refused_without_allocating() {
        let mut buf = Vec::new();
        put_varint(&mut buf, u64::MAX);
        let mut r = Reader::new(&buf, "test");
        assert!(matches!(r.bytes(), Err(Error::Truncated { .. })));
        let mut r = Reader::new(&buf, "test");
        assert!(matches!(r.count(1), Err(Error::Malformed { .. })));
    }
}
