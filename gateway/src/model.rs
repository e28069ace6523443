//! The JSON shapes of the HTTP API (README, "HTTP API"), with their OpenAPI schemas.
//! Field names are part of the client contract; fields may be added.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use shoal_vclock::SiblingSet;
use utoipa::ToSchema;

use crate::encode::{encode_key, encode_value, rfc3339};

/// Body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Machine-readable code: `key_too_long`, `value_too_large`,
    /// `bad_request`, `not_found`, `quorum_failed`, `overloaded`, `internal`.
    pub error: String,
    /// What went wrong and why.
    pub message: String,
}

/// The JSON form of a read (`300`, or `200` with `Accept: application/json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReadBody {
    /// The key (lossy UTF-8 for binary keys; see `key_encoded`).
    pub key: String,
    /// The key percent-encoded, exact for any bytes.
    pub key_encoded: String,
    /// Context covering every sibling: send it back to supersede them.
    pub context: String,
    /// The concurrent values (tombstones are left out).
    pub siblings: Vec<SiblingBody>,
}

/// One value of a read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SiblingBody {
    /// The value, standard base64.
    pub value: String,
    /// The `Content-Type` it was written with.
    pub content_type: String,
    /// When its coordinator accepted it (RFC 3339, UTC).
    pub written_at: String,
    /// When it expires (RFC 3339, UTC), for a value written with a TTL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

impl ReadBody {
    /// The JSON form of a merged sibling set as a reader at `now` (ms since
    /// the Unix epoch) sees it: tombstones and expired values left out.
    pub fn new(key: &[u8], context: String, set: &SiblingSet, now: u64) -> Self {
        Self {
            key: String::from_utf8_lossy(key).into_owned(),
            key_encoded: encode_key(key),
            context,
            siblings: set
                .values()
                .iter()
                .filter(|s| s.is_live(now))
                .filter_map(|s| {
                    Some(SiblingBody {
                        value: encode_value(s.value()?),
                        content_type: s.content_type().unwrap_or_default().to_string(),
                        written_at: rfc3339(s.write_time),
                        expires_at: s.content.expires_at().map(rfc3339),
                    })
                })
                .collect(),
        }
    }
}

/// `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClusterBody {
    /// Replicas per key.
    pub n: usize,
    /// Default read quorum.
    pub r: usize,
    /// Default write quorum.
    pub w: usize,
    /// Every member this gateway knows, itself included, sorted by id.
    pub members: Vec<MemberBody>,
    /// Share of all stored replicas per storage node (sums to 1).
    pub ownership: BTreeMap<String, f64>,
}

/// One member in `GET /v1/cluster`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MemberBody {
    /// Member id.
    pub id: String,
    /// Its RPC (gossip) address.
    pub addr: String,
    /// `storage` or `gateway`.
    pub role: String,
    /// `alive`, `suspect`, `down`, `leaving` or `left`.
    pub status: String,
    /// Relative capacity on the ring.
    pub weight: u32,
    /// Its failure domain (`member.zone`, `default` unless set): the N owners
    /// of a key lie in N distinct zones of storage members when there are
    /// that many.
    pub zone: String,
    /// Whether the member is still receiving the ranges it joins with: it
    /// takes writes for them but no reads yet.
    pub joining: bool,
    /// Latest heartbeat heard.
    pub heartbeat: u64,
    /// Process generation.
    pub incarnation: u64,
    /// Whether the member can be dialed at `addr`. For the gateway answering,
    /// whether dialing its own advertised address reached itself; for
    /// another member alive by gossip, `false` once this gateway's dials to
    /// it have failed for a failure timeout (its `member.advertise` is likely
    /// wrong), else `true`. `null` when not known (not checked, or not
    /// alive).
    #[serde(default)]
    pub dialable: Option<bool>,
    /// Why it cannot be dialed, when `dialable` is `false`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dial_error: Option<String>,
}

/// `GET /v1/cluster/preflist/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PreflistBody {
    /// The key (lossy UTF-8).
    pub key: String,
    /// Its position on the ring.
    pub token: u64,
    /// The N owners, in preference order.
    pub owners: Vec<String>,
    /// Live nodes standing in for down owners right now.
    pub fallbacks: Vec<String>,
    /// Where a write would go now, in order (the first coordinates).
    pub targets: Vec<String>,
}

/// `GET /v1/debug/replicas/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicasBody {
    /// The key (lossy UTF-8).
    pub key: String,
    /// Its position on the ring.
    pub token: u64,
    /// What each owner (and each hint holder) stores.
    pub replicas: Vec<ReplicaBody>,
}

/// One node's local copy in `GET /v1/debug/replicas/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaBody {
    /// Node id.
    pub node: String,
    /// `owner` (its own copy) or `hint` (held for `hint_for`).
    pub role: String,
    /// Whether the node answered.
    pub reachable: bool,
    /// The stored siblings; `null` when the node has nothing (or did not answer).
    pub siblings: Option<Vec<ReplicaSibling>>,
    /// The set's clock: actor → counter of every write it has seen.
    pub clock: Option<BTreeMap<String, u64>>,
    /// The owner a hint is held for.
    pub hint_for: Option<String>,
    /// Why the node did not answer.
    pub error: Option<String>,
}

/// One stored sibling in `GET /v1/debug/replicas/{key}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReplicaSibling {
    /// The value, standard base64 (`null` for a tombstone).
    pub value: Option<String>,
    /// True for a delete.
    pub tombstone: bool,
    /// The write's dot, `actor:counter`.
    pub dot: String,
    /// The clock of the set this sibling belongs to (a DVV set shares one).
    pub clock: BTreeMap<String, u64>,
    /// Its content type (`null` for a tombstone).
    pub content_type: Option<String>,
    /// When its coordinator accepted it (RFC 3339, UTC).
    pub written_at: String,
}

impl ReplicaSibling {
    /// Every sibling of a stored set.
    pub fn all(set: &SiblingSet) -> Vec<Self> {
        let clock = set.causal_view().clock;
        set.values()
            .iter()
            .map(|s| ReplicaSibling {
                value: s.value().map(encode_value),
                tombstone: s.is_tombstone(),
                dot: s.dot.to_string(),
                clock: clock.clone(),
                content_type: s.content_type().map(str::to_string),
                written_at: rfc3339(s.write_time),
            })
            .collect()
    }
}

/// `GET /health`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HealthBody {
    /// `ok` when at least W storage nodes are live, else `unavailable`.
    pub status: String,
    /// This gateway's id.
    pub id: String,
    /// Storage nodes live as this gateway sees them.
    pub live_nodes: usize,
    /// Storage nodes on the ring (live or not).
    pub ring_nodes: usize,
    /// The default W the health check compares against.
    pub w: usize,
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_vclock::{Content, Context};

    #[test]
    fn read_body_shape() {
        let mut s = SiblingSet::new();
        s.update(
            &Context::empty(),
            "node-1",
            Content::value(b"hi".to_vec(), "text/plain"),
            1_795_554_000_000,
        )
        .unwrap();
        s.update(&Context::empty(), "node-1", Content::Tombstone, 1)
            .unwrap();
        let body = ReadBody::new(b"user:42", "ctx".into(), &s, 0);
        let json = serde_json::to_value(&body).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "key": "user:42", "key_encoded": "user:42", "context": "ctx",
                "siblings": [{"value": "aGk=", "content_type": "text/plain",
                              "written_at": "2026-11-24T21:00:00Z"}]
            })
        );
        let rows = ReplicaSibling::all(&s);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.iter().filter(|r| r.tombstone).count(), 1);
        assert_eq!(rows[0].clock.get("node-1"), Some(&2));
    }
}

/// `GET /v1/buckets/{bucket}/keys`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ListBody {
    /// Live keys, percent-encoded, in ring order.
    pub keys: Vec<String>,
    /// Pass back as `cursor` for the next page; `null` when done.
    pub cursor: Option<String>,
}

/// `GET /v1/buckets/{bucket}/props` (and the fields a `PUT` may set).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PropsBody {
    /// `siblings` (default) or `lww`.
    pub conflict: String,
    /// Seconds after which a version written without `?ttl=` expires.
    pub ttl_s: Option<u64>,
}
