//! Expiry: purging expired values without changing what anti-entropy sees.
//!
//! A replica purges an expired value by replacing it with
//! [`Content::Expired`], which keeps the value's expiry instant and a digest
//! of its bytes. The digest replicas compare ([`SiblingSet::stored_digest`])
//! covers a value with a TTL through that same digest, so a state hashes the
//! same before and after the purge: replicas purge at different moments (each
//! when its own compaction reaches the key) and anti-entropy never sees a
//! difference to repair. The clock stays, so the purged state still
//! supersedes every older version the value did.

use sha2::{Digest, Sha256};

use super::{Content, Sibling, SiblingSet, SIBLINGS_FORMAT_EXPIRY};
use crate::codec::put_varint;

/// Domain separation of [`SiblingSet::stored_digest`] for sets with TTLs.
const STORED_DIGEST_DOMAIN: &[u8] = b"shoal-vclock/stored-digest/v2\0";

/// `SHA-256(len ‖ content_type ‖ bytes)`: what an expired value keeps of
/// what it held.
pub(crate) fn value_digest(content_type: &str, bytes: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut len = Vec::with_capacity(10);
    put_varint(&mut len, content_type.len() as u64);
    h.update(&len);
    h.update(content_type.as_bytes());
    h.update(bytes);
    h.finalize().into()
}

impl Content {
    /// This content with its bytes purged if it is a value that expired at
    /// or before `before`; `None` if there is nothing to purge.
    fn purged(&self, before: u64) -> Option<Content> {
        match self {
            Content::Value {
                bytes,
                content_type,
                expires_at: Some(at),
            } if *at <= before => Some(Content::Expired {
                expires_at: *at,
                digest: value_digest(content_type, bytes),
            }),
            _ => None,
        }
    }
}

impl SiblingSet {
    /// True when a sibling carries an expiry (a TTL value or its purged
    /// remains): such a set is stored in the `0x32` format.
    pub fn has_expiry(&self) -> bool {
        self.siblings
            .iter()
            .any(|s| s.content.expires_at().is_some())
    }

    /// True when `encoded` ([`SiblingSet::encode`] output) may hold values
    /// with a TTL: a check of the first byte, so a node's compaction decodes
    /// only the states that can expire.
    pub fn may_expire(encoded: &[u8]) -> bool {
        encoded.first() == Some(&SIBLINGS_FORMAT_EXPIRY)
    }

    /// True when nothing in this state can be read at `now` or later:
    /// every sibling is a tombstone, a purged value, or a value expired by
    /// `now`. Such a state matters only by its clock (what it supersedes),
    /// as a tombstone does; an empty state is not dead, it is nothing.
    pub fn is_dead(&self, now: u64) -> bool {
        !self.siblings.is_empty()
            && self
                .siblings
                .iter()
                .all(|s| s.is_tombstone() || s.content.is_expired(now))
    }

    /// The earliest expiry instant of a value whose bytes are still held:
    /// when a purge of this set would first reclaim something.
    pub fn next_expiry(&self) -> Option<u64> {
        self.siblings
            .iter()
            .filter_map(|s| match &s.content {
                Content::Value { expires_at, .. } => *expires_at,
                _ => None,
            })
            .min()
    }

    /// Replaces every value that expired at or before `before` (ms since
    /// the Unix epoch) by its [`Content::Expired`] remains; returns the
    /// value bytes freed. The clock, the dots and the
    /// [`stored_digest`](SiblingSet::stored_digest) are unchanged.
    pub fn purge_expired(&mut self, before: u64) -> usize {
        let mut freed = 0;
        for s in &mut self.siblings {
            if let Some(purged) = s.content.purged(before) {
                freed += s.value().map_or(0, <[u8]>::len) + s.content_type().map_or(0, str::len);
                s.content = purged;
            }
        }
        freed
    }

    /// The digest a replica files this state under in its Merkle tree,
    /// from the stored bytes ([`SiblingSet::encode`]): SHA-256 of the bytes
    /// for a set without TTLs (as it always was), and for a set with TTLs a
    /// digest in which a value with a TTL counts only by its expiry instant
    /// and [`value_digest`], so its purged form hashes alike. Bytes that do
    /// not decode are hashed as they are.
    pub fn stored_digest(encoded: &[u8]) -> [u8; 32] {
        if encoded.first() == Some(&SIBLINGS_FORMAT_EXPIRY) {
            if let Ok(set) = SiblingSet::decode(encoded) {
                return set.expiry_digest();
            }
        }
        Sha256::digest(encoded).into()
    }

    fn expiry_digest(&self) -> [u8; 32] {
        let mut buf = Vec::with_capacity(64 + self.clock.len() * 24 + self.siblings.len() * 56);
        buf.extend_from_slice(STORED_DIGEST_DOMAIN);
        put_varint(&mut buf, self.floor);
        put_varint(&mut buf, self.clock.len() as u64);
        for e in self.clock.entries() {
            put_varint(&mut buf, e.actor.len() as u64);
            buf.extend_from_slice(e.actor.as_bytes());
            put_varint(&mut buf, e.counter);
            put_varint(&mut buf, e.timestamp);
        }
        put_varint(&mut buf, self.siblings.len() as u64);
        for s in &self.siblings {
            sibling_digest_input(&mut buf, s);
        }
        Sha256::digest(&buf).into()
    }
}

fn sibling_digest_input(buf: &mut Vec<u8>, s: &Sibling) {
    put_varint(buf, s.dot.actor.len() as u64);
    buf.extend_from_slice(s.dot.actor.as_bytes());
    put_varint(buf, s.dot.counter);
    put_varint(buf, s.write_time);
    match &s.content {
        Content::Tombstone => buf.push(0),
        Content::Value {
            bytes,
            content_type,
            expires_at: None,
        } => {
            buf.push(1);
            buf.extend_from_slice(&value_digest(content_type, bytes));
        }
        Content::Value {
            bytes,
            content_type,
            expires_at: Some(at),
        } => {
            buf.push(2);
            put_varint(buf, *at);
            buf.extend_from_slice(&value_digest(content_type, bytes));
        }
        Content::Expired { expires_at, digest } => {
            buf.push(2);
            put_varint(buf, *expires_at);
            buf.extend_from_slice(digest);
        }
    }
}
