//! Bucket and key as one byte string: the key every RPC, hint, Merkle leaf
//! and scan carries below the gateway.
//!
//! A *wire key* is one length byte, the bucket name, then the user key. The
//! bucket `default` is written with length 0, so the one spelling of a
//! default key is `0x00` + key, and no two (bucket, key) pairs share a wire
//! key. Everything under the gateway treats it as opaque bytes except three
//! places that must know the parts: where it sits on the ring
//! ([`position`]), how the store lays it out on disk, and which conflict
//! policy applies to it (the bucket's props).
//!
//! The ring position of a default key is the position of the user key alone,
//! exactly as before buckets existed, so data directories written then keep
//! their keys where the ring looks for them; a key of any other bucket is
//! placed by the hash of its whole wire key, bucket included.
//!
//! ```
//! use shoal_node::keys;
//!
//! let k = keys::wire("default", b"user:42");
//! assert_eq!(k, b"\0user:42");
//! assert_eq!(keys::position(&k), shoal_ring::key_position(b"user:42"));
//! let carts = keys::wire("carts", b"user:42");
//! let (bucket, key) = keys::split(&carts).unwrap();
//! assert_eq!((bucket, key), ("carts", &b"user:42"[..]));
//! assert!(keys::check_bucket("Carts!").is_err());
//! ```

/// The bucket of `/v1/kv/{key}` and of every key stored before buckets.
pub const DEFAULT_BUCKET: &str = "default";

/// Longest bucket name, in bytes.
pub const MAX_BUCKET_BYTES: usize = 64;

/// Why a bucket name or wire key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A bucket name outside `[a-z0-9_-]{1,64}`.
    #[error("bucket names are 1 to 64 bytes of [a-z0-9_-], not {0:?}")]
    BadBucket(String),
    /// A wire key whose length byte, bucket or key part is wrong.
    #[error("malformed key: {0}")]
    Malformed(&'static str),
}

/// Checks a bucket name against the API's rule.
pub fn check_bucket(name: &str) -> Result<(), KeyError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_BUCKET_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(KeyError::BadBucket(name.chars().take(80).collect()))
    }
}

/// The wire key of `key` in `bucket` (a name [`check_bucket`] accepts).
pub fn wire(bucket: &str, key: &[u8]) -> Vec<u8> {
    let name = if bucket == DEFAULT_BUCKET { "" } else { bucket };
    let mut out = Vec::with_capacity(1 + name.len() + key.len());
    // Names are at most 64 bytes (checked at the edge); a longer one would
    // only ever come from a bug, and is cut rather than made ambiguous.
    let name = &name.as_bytes()[..name.len().min(MAX_BUCKET_BYTES)];
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(key);
    out
}

/// The bucket and user key of a wire key, checked: a length byte of at most
/// 64, a valid bucket name (never `default` spelled out), a non-empty key.
pub fn split(wire: &[u8]) -> Result<(&str, &[u8]), KeyError> {
    let (&len, rest) = wire.split_first().ok_or(KeyError::Malformed("empty"))?;
    let len = len as usize;
    if len > MAX_BUCKET_BYTES || rest.len() < len {
        return Err(KeyError::Malformed("bucket length out of range"));
    }
    let (name, key) = rest.split_at(len);
    if key.is_empty() {
        return Err(KeyError::Malformed("empty user key"));
    }
    if len == 0 {
        return Ok((DEFAULT_BUCKET, key));
    }
    let name = std::str::from_utf8(name).map_err(|_| KeyError::Malformed("bucket not UTF-8"))?;
    check_bucket(name)?;
    if name == DEFAULT_BUCKET {
        return Err(KeyError::Malformed(
            "the default bucket is spelled with length 0",
        ));
    }
    Ok((name, key))
}

/// The bucket name of a wire key (`default` for anything malformed, which
/// the RPC layer refuses before it reaches storage).
pub fn bucket_of(wire: &[u8]) -> &str {
    split(wire).map_or(DEFAULT_BUCKET, |(b, _)| b)
}

/// Where a wire key sits on the ring: its user key's position in the
/// default bucket (as before buckets), its whole wire key's elsewhere.
pub fn position(wire: &[u8]) -> u64 {
    match wire.split_first() {
        Some((0, key)) => shoal_ring::key_position(key),
        _ => shoal_ring::key_position(wire),
    }
}

/// The user key for messages and logs (lossy UTF-8, bucket-qualified
/// outside `default`).
pub fn display(wire: &[u8]) -> String {
    match split(wire) {
        Ok((DEFAULT_BUCKET, key)) => String::from_utf8_lossy(key).into_owned(),
        Ok((bucket, key)) => format!("{bucket}/{}", String::from_utf8_lossy(key)),
        Err(_) => String::from_utf8_lossy(wire).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_names() {
        for good in ["a", "default", "carts-2", "x_y", &"z".repeat(64)] {
            assert!(check_bucket(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "a b", "a/b", "é", &"z".repeat(65)] {
            assert!(check_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn malformed_wire_keys_are_refused() {
        assert!(split(b"").is_err());
        assert!(split(b"\0").is_err());
        assert!(split(b"\x41abc").is_err());
        assert!(split(b"\x07default-k").is_err());
        assert!(split(b"\x03ABCk").is_err());
        assert!(split(b"\x03abc").is_err());
    }

    #[test]
    fn default_keys_keep_their_old_ring_position() {
        assert_eq!(
            position(&wire("default", b"k")),
            shoal_ring::key_position(b"k")
        );
        assert_ne!(
            position(&wire("other", b"k")),
            shoal_ring::key_position(b"k")
        );
    }

    fn bucket() -> impl Strategy<Value = String> {
        let alphabet: Vec<char> = "ab09_-".chars().collect();
        proptest::collection::vec(proptest::sample::select(alphabet), 1..=64)
            .prop_map(|c| c.into_iter().collect())
    }

    proptest! {
        #[test]
        fn wire_is_injective_and_splits_back(
            b1 in bucket(), k1 in proptest::collection::vec(any::<u8>(), 1..40),
            b2 in bucket(), k2 in proptest::collection::vec(any::<u8>(), 1..40),
        ) {
            let b1 = if b1 == "default" { DEFAULT_BUCKET.to_string() } else { b1 };
            let (w1, w2) = (wire(&b1, &k1), wire(&b2, &k2));
            prop_assert_eq!(split(&w1).unwrap(), (b1.as_str(), k1.as_slice()));
            prop_assert_eq!(w1 == w2, b1 == b2 && k1 == k2);
        }
    }
}
