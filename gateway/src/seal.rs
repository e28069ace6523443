//! Contexts the cluster can trust: every `X-Shoal-Context` a gateway hands
//! out carries a MAC, keyed by the cluster secret and bound to its bucket and
//! key.
//!
//! A context decides what a write supersedes, so a made-up one (claiming
//! writes the client never read, or counters no replica ever minted) erases
//! concurrent writes or bricks the key, and a context read from one key and
//! sent with another erases that key's siblings. With the MAC, the only
//! contexts a gateway accepts are ones some gateway of this cluster produced
//! for this very key: anything altered, invented or moved is a 400.
//!
//! The token is URL-safe base64 (no padding) of the context's binary form
//! followed by a 16-byte tag, HMAC-SHA256 truncated (NIST SP 800-107 allows
//! it; 128 bits is what AES-GCM and Poly1305 tags give). Every gateway of the
//! cluster derives the same key, so a context read through one gateway is
//! good at every other.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use shoal_node::secure::ClusterSecret;
use shoal_vclock::Context;

use crate::error::ApiError;

/// Bytes of tag after the context.
pub const TAG_BYTES: usize = 16;

/// The bucket contexts are bound to until the API has buckets; writes of
/// today's keys keep their contexts valid once buckets exist, as the keys of
/// the default bucket.
pub const DEFAULT_BUCKET: &str = "default";

/// What a seal key is derived for, so no other use of the secret shares it.
const PURPOSE: &str = "gateway context mac";

/// Seals and opens context tokens with one cluster-wide key.
#[derive(Clone)]
pub struct ContextSeal {
    mac: Hmac<Sha256>,
    max_token_bytes: usize,
}

impl std::fmt::Debug for ContextSeal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContextSeal")
            .field("max_token_bytes", &self.max_token_bytes)
            .finish_non_exhaustive()
    }
}

impl ContextSeal {
    /// The seal of the cluster that `secret` belongs to; tokens longer than
    /// `max_token_bytes` (as sent, base64) are refused unread.
    pub fn new(secret: &ClusterSecret, max_token_bytes: usize) -> Self {
        let key = secret.derive_key(PURPOSE);
        let mac = <Hmac<Sha256> as Mac>::new_from_slice(&key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        Self {
            mac,
            max_token_bytes,
        }
    }

    fn tag(&self, bucket: &str, key: &[u8], context: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = self.mac.clone();
        // Length-prefixed, so no (bucket, key, context) split of the same
        // bytes can yield another's tag.
        mac.update(b"ctx1");
        mac.update(&(bucket.len() as u64).to_be_bytes());
        mac.update(bucket.as_bytes());
        mac.update(&(key.len() as u64).to_be_bytes());
        mac.update(key);
        mac.update(context);
        let full = mac.finalize().into_bytes();
        let mut tag = [0u8; TAG_BYTES];
        tag.copy_from_slice(&full[..TAG_BYTES]);
        tag
    }

    /// The token a client receives for `context`, read from (or written to)
    /// `key` of `bucket`.
    pub fn seal(&self, bucket: &str, key: &[u8], context: &Context) -> String {
        let mut bytes = context.encode();
        let tag = self.tag(bucket, key, &bytes);
        bytes.extend_from_slice(&tag);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// The context of a write's `X-Shoal-Context` header. Absent or empty is
    /// the empty context (a blind write, which supersedes nothing and so
    /// needs no proof); anything else must be a token this cluster sealed for
    /// this bucket and key.
    pub fn open(
        &self,
        bucket: &str,
        key: &[u8],
        header: Option<&[u8]>,
    ) -> Result<Context, ApiError> {
        let Some(raw) = header else {
            return Ok(Context::empty());
        };
        if raw.len() > self.max_token_bytes {
            return Err(ApiError::bad_request(format!(
                "context refused: {} bytes is over limits.max_context_bytes ({})",
                raw.len(),
                self.max_token_bytes
            )));
        }
        // Padding and surrounding blanks are tolerated, as clients add them.
        let text = std::str::from_utf8(raw)
            .map_err(|_| ApiError::bad_request("malformed context: not ASCII"))?
            .trim()
            .trim_end_matches('=');
        if text.is_empty() {
            return Ok(Context::empty());
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(text)
            .map_err(|e| ApiError::bad_request(format!("malformed context: {e}")))?;
        if bytes.len() <= TAG_BYTES {
            return Err(ApiError::bad_request(
                "malformed context: too short to be a context this cluster issued",
            ));
        }
        let (body, tag) = bytes.split_at(bytes.len() - TAG_BYTES);
        let expected = self.tag(bucket, key, body);
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], tag)) {
            return Err(ApiError::bad_request(
                "context refused: it was not issued by this cluster for this key \
                 (altered, made up, or read from another key)",
            ));
        }
        Context::decode(body).map_err(|e| ApiError::bad_request(format!("malformed context: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_vclock::{Content, SiblingSet};

    fn seal() -> ContextSeal {
        ContextSeal::new(&ClusterSecret::from_bytes(&[7; 32]).unwrap(), 4096)
    }

    fn context() -> Context {
        let mut s = SiblingSet::new();
        s.update(
            &Context::empty(),
            "node-1#1",
            Content::value("v", "text/plain"),
            1,
        )
        .unwrap();
        s.update(&Context::empty(), "node-2#1", Content::Tombstone, 2)
            .unwrap();
        s.context()
    }

    #[test]
    fn a_sealed_context_opens_for_its_own_key_only() {
        let seal = seal();
        let ctx = context();
        let token = seal.seal(DEFAULT_BUCKET, b"k", &ctx);
        assert!(!token.contains('=') && !token.contains('+') && !token.contains('/'));
        let padded = format!(" {token}== ");
        assert_eq!(
            seal.open(DEFAULT_BUCKET, b"k", Some(padded.as_bytes()))
                .unwrap(),
            ctx
        );
        assert_eq!(
            seal.open(DEFAULT_BUCKET, b"k", Some(token.as_bytes()))
                .unwrap(),
            ctx
        );
        for (bucket, key) in [
            (DEFAULT_BUCKET, &b"k2"[..]),
            ("other", b"k"),
            ("", b"defaultk"),
        ] {
            let e = seal.open(bucket, key, Some(token.as_bytes())).unwrap_err();
            assert_eq!(e.code(), "bad_request", "{bucket}/{key:?}");
        }
    }

    #[test]
    fn every_altered_byte_is_refused() {
        let seal = seal();
        let token = seal.seal(DEFAULT_BUCKET, b"k", &context());
        let raw = URL_SAFE_NO_PAD.decode(&token).unwrap();
        for i in 0..raw.len() {
            let mut bad = raw.clone();
            bad[i] ^= 0x01;
            let bad = URL_SAFE_NO_PAD.encode(bad);
            assert!(
                seal.open(DEFAULT_BUCKET, b"k", Some(bad.as_bytes()))
                    .is_err(),
                "byte {i}"
            );
        }
    }

    #[test]
    fn another_clusters_seal_and_unsealed_contexts_are_refused() {
        let ours = seal();
        let theirs = ContextSeal::new(&ClusterSecret::from_bytes(&[8; 32]).unwrap(), 4096);
        let token = theirs.seal(DEFAULT_BUCKET, b"k", &context());
        assert!(ours
            .open(DEFAULT_BUCKET, b"k", Some(token.as_bytes()))
            .is_err());
        // The pre-MAC form: the bare context bytes.
        let bare = URL_SAFE_NO_PAD.encode(context().encode());
        assert!(ours
            .open(DEFAULT_BUCKET, b"k", Some(bare.as_bytes()))
            .is_err());
    }

    #[test]
    fn absent_or_empty_is_a_blind_write_and_oversize_is_refused_unread() {
        let seal = ContextSeal::new(&ClusterSecret::from_bytes(&[7; 32]).unwrap(), 64);
        assert!(seal.open(DEFAULT_BUCKET, b"k", None).unwrap().is_empty());
        assert!(seal
            .open(DEFAULT_BUCKET, b"k", Some(b""))
            .unwrap()
            .is_empty());
        let e = seal
            .open(DEFAULT_BUCKET, b"k", Some(&[b'A'; 65]))
            .unwrap_err();
        assert!(e.to_string().contains("max_context_bytes"), "{e}");
        for garbage in [&b"not base64!"[..], b"AAAA", &[0xff, 0xfe]] {
            assert_eq!(
                seal.open(DEFAULT_BUCKET, b"k", Some(garbage))
                    .unwrap_err()
                    .code(),
                "bad_request"
            );
        }
    }
}
