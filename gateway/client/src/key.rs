//! Keys and bucket names as they go into a request path.
//!
//! Keys are arbitrary bytes, so they travel percent-encoded. The gateway
//! decodes every `%XX` and takes every other byte as itself, so any
//! encoding that escapes the bytes a path cannot hold is understood; this
//! one escapes everything but the unreserved characters and `:`, exactly
//! as the gateway's own `encode_key` does, so the paths this client sends
//! read like the `key_encoded` the gateway sends back.

use crate::error::Error;

/// Percent-encodes `key` for a request path (and for showing a binary key).
///
/// Letters, digits and `-_.~:` stay as they are, every other byte becomes
/// `%XX`; a key made only of dots is escaped whole, because a path segment
/// `.` or `..` may be collapsed by whatever sits between client and gateway.
///
/// ```
/// assert_eq!(shoal_client::encode_key(b"user:42"), "user:42");
/// assert_eq!(shoal_client::encode_key(b"a/b c"), "a%2Fb%20c");
/// assert_eq!(shoal_client::encode_key(&[0, 0xff]), "%00%FF");
/// assert_eq!(shoal_client::encode_key(b".."), "%2E%2E");
/// ```
pub fn encode_key(key: &[u8]) -> String {
    let only_dots = key.iter().all(|&b| b == b'.');
    let mut out = String::with_capacity(key.len());
    for &b in key {
        let keep = !only_dots
            && (b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':'));
        if keep {
            out.push(char::from(b));
        } else {
            const HEX: &[u8; 16] = b"0123456789ABCDEF";
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
    out
}

/// The request path of `key` in `bucket` (`None` is the bucket `default`,
/// served at `/v1/kv/`), or why no request can be made for it.
pub(crate) fn key_path(bucket: Option<&str>, key: &[u8]) -> Result<String, Error> {
    if key.is_empty() {
        // The gateway would answer 400 too; refusing here saves the trip
        // and says plainly that nothing was sent.
        return Err(Error::InvalidInput {
            message: "the key is empty (keys are 1 or more bytes)".into(),
        });
    }
    let key = encode_key(key);
    Ok(match bucket {
        None => format!("/v1/kv/{key}"),
        Some(bucket) => format!("/v1/buckets/{bucket}/keys/{key}"),
    })
}

/// Longest bucket name the gateway accepts.
const MAX_BUCKET_BYTES: usize = 64;

/// Checks a bucket name as the gateway does (1 to 64 bytes of
/// `[a-z0-9_-]`): a name outside that could not even be put in a path
/// unescaped, and would only come back as a 400.
pub(crate) fn check_bucket(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= MAX_BUCKET_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput {
            message: format!(
                "bucket name {name:?} is not 1 to {MAX_BUCKET_BYTES} bytes of [a-z0-9_-]"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gateway's decoding (gateway/src/request.rs `decode_key`), to show
    /// every key survives the trip.
    fn decode(raw: &str) -> Vec<u8> {
        let b = raw.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        out
    }

    #[test]
    fn every_byte_round_trips_and_only_path_safe_bytes_stay() {
        let all: Vec<u8> = (0..=255).collect();
        let encoded = encode_key(&all);
        assert_eq!(decode(&encoded), all);
        assert!(encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~:%".contains(&b)));
        for key in [&b"plain"[..], b"a/b c%d", "café".as_bytes(), b"+", b"?#&="] {
            assert_eq!(decode(&encode_key(key)), key);
        }
        assert_eq!(encode_key("café".as_bytes()), "caf%C3%A9");
        assert_eq!(encode_key(b"a+b"), "a%2Bb");
    }

    #[test]
    fn dot_segments_are_escaped_but_dots_inside_keys_are_not() {
        assert_eq!(encode_key(b"."), "%2E");
        assert_eq!(encode_key(b"..."), "%2E%2E%2E");
        assert_eq!(encode_key(b"v1.2"), "v1.2");
        assert_eq!(encode_key(b"../etc"), "..%2Fetc");
    }

    #[test]
    fn paths() {
        assert_eq!(key_path(None, b"k").unwrap(), "/v1/kv/k");
        assert_eq!(
            key_path(Some("users"), b"a/b").unwrap(),
            "/v1/buckets/users/keys/a%2Fb"
        );
        assert!(matches!(
            key_path(None, b""),
            Err(Error::InvalidInput { .. })
        ));
    }

    #[test]
    fn bucket_names() {
        for ok in ["default", "a", "users_2-x", &"b".repeat(64)] {
            assert!(check_bucket(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Users", "a b", "a/b", "é", &"b".repeat(65)] {
            assert!(
                matches!(check_bucket(bad), Err(Error::InvalidInput { .. })),
                "{bad}"
            );
        }
    }
}
