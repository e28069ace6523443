//! The gateway's bucket work beyond one key: setting a bucket's props on
//! every node, and listing a bucket's keys in ring order.
//!
//! **Props.** A change becomes a record versioned above the one this
//! gateway holds ([`shoal_node::buckets::PropsTable::next_record`]), is sent to every live
//! storage node at once, and is acknowledged once W of them stored it
//! durably; the rest learn it by the nodes' once-a-second pulls (and this
//! gateway's own table takes it at once). Other gateways learn it by their
//! pull within a second or two.
//!
//! **Listing.** A page starts at a cursor, a `(ring position, key)` pair,
//! and asks every live ring member for the bucket's next keys from there
//! ([`shoal_node::rpc::Replica::list_keys`]: each scans only that bucket's
//! storage space). Nodes answer in `(position, key)` order, so the answers
//! are complete up to the *horizon*, the smallest last entry of any node
//! that stopped at its limit. Every key up to the horizon is merged over
//! the nodes that hold it (state skeletons, so a tombstone on one replica
//! hides an older value on another) and listed when a live version is
//! left; the cursor then moves to the last key taken. Because at least R of
//! the current owners of every position in the span must have answered
//! (else the page fails with `quorum_failed`), a key acknowledged at W is
//! seen under W + R > N. The cursor is a ring position, not a range or a
//! node, so it survives a node failing between pages and any membership
//! change; it only moves forward, so no key is listed twice, and a key
//! present throughout the listing is listed once.

use std::collections::{BTreeMap, BTreeSet};

use base64::Engine as _;
use shoal_coordinator::QuorumFailure;
use shoal_node::buckets::{BucketProps, VersionedProps};
use shoal_node::rpc::{ListPage, ListRequest};
use shoal_ring::TokenRange;
use shoal_vclock::SiblingSet;
use tokio::time::Instant;

use crate::error::{ApiError, Operation};
use crate::ops::Dispatcher;

/// Most rounds of node pages one listing page may take (each round moves
/// the cursor past at least one stored key, tombstones included).
const MAX_ROUNDS: usize = 64;

/// Where a listing resumes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListCursor {
    /// Ring position.
    pub position: u64,
    /// The last key listed (or skipped) at `position`.
    pub after: Option<Vec<u8>>,
}

impl ListCursor {
    /// The opaque token clients get: URL-safe base64 of the position and
    /// the key.
    pub fn encode(&self) -> String {
        let mut bytes = self.position.to_be_bytes().to_vec();
        if let Some(key) = &self.after {
            bytes.push(1);
            bytes.extend_from_slice(key);
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Undoes [`ListCursor::encode`]; `max_key` bounds the key.
    pub fn decode(token: &str, max_key: usize) -> Result<Self, ApiError> {
        let bad = || ApiError::bad_request("malformed listing cursor");
        if token.len() > 4 * (max_key + 16) / 3 + 4 {
            return Err(bad());
        }
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| bad())?;
        let (position, rest) = bytes.split_at_checked(8).ok_or_else(bad)?;
        let position = u64::from_be_bytes(position.try_into().map_err(|_| bad())?);
        let after = match rest.split_first() {
            None => None,
            Some((1, key)) if !key.is_empty() && key.len() <= max_key => Some(key.to_vec()),
            Some(_) => return Err(bad()),
        };
        Ok(Self { position, after })
    }
}

/// A page of keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Live keys, in ring order.
    pub keys: Vec<Vec<u8>>,
    /// Where the next page starts; `None` when the ring is walked.
    pub next: Option<ListCursor>,
}

/// Whether the ring range `range` holds any position in `[from, to]`.
fn intersects(range: &TokenRange, from: u64, to: u64) -> bool {
    range.contains(from) || (from <= range.start && range.start <= to)
}

impl Dispatcher {
    /// Sets `bucket`'s props on every live node; answers once `w` stored
    /// the record durably.
    pub async fn set_props(
        &self,
        bucket: &str,
        props: BucketProps,
        origin: &str,
        now_ms: u64,
        w: usize,
        deadline: Instant,
    ) -> Result<VersionedProps, ApiError> {
        let table = self.props();
        if !table.has_room_for(bucket) {
            return Err(ApiError::bad_request(format!(
                "at most {} buckets may have properties",
                shoal_node::buckets::MAX_BUCKETS_WITH_PROPS
            )));
        }
        let record = table.next_record(bucket, props, origin, now_ms);
        let records = vec![(bucket.to_string(), record.clone())];
        let snap = self.cluster().snapshot();
        let mut targets: Vec<String> = snap
            .nodes
            .iter()
            .filter(|(_, r)| r.up)
            .map(|(id, _)| id.clone())
            .collect();
        targets.sort();
        let calls = targets.iter().map(|node| {
            let records = records.clone();
            let snap = &snap;
            async move {
                self.call(snap, node, deadline, |c, ctx| async move {
                    c.set_bucket_props(ctx, records).await
                })
                .await
            }
        });
        let results = futures::future::join_all(calls).await;
        let succeeded = results.iter().filter(|r| r.is_ok()).count();
        if succeeded < w {
            return Err(ApiError::QuorumFailed {
                operation: Operation::Write,
                failure: QuorumFailure {
                    succeeded,
                    needed: w,
                    failed: results.len() - succeeded,
                    unknown: 0,
                    total: results.len(),
                },
            });
        }
        table.merge(&records);
        Ok(record)
    }

    /// One page of at most `limit` live keys of `bucket` from `from`, each
    /// position's keys seen by at least `r` of its owners.
    pub async fn list(
        &self,
        bucket: &str,
        from: ListCursor,
        limit: usize,
        r: usize,
        deadline: Instant,
    ) -> Result<Listed, ApiError> {
        let snap = self.cluster().snapshot();
        let Some(ring) = snap.view.current().cloned() else {
            return Err(self.list_failed(r, 0, 0));
        };
        let members: Vec<String> = ring.members().iter().map(|m| m.id.clone()).collect();
        let policy = self.props().policy(&shoal_node::keys::wire(bucket, b"-"));
        let ranges = ring.ranges();
        // One instant for the whole page: a key that expires mid-listing is
        // judged once.
        let now = self.now_ms();
        let mut cursor = from;
        let mut keys = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let want = (limit - keys.len()) as u32;
            let calls = members.iter().map(|node| {
                let request = ListRequest {
                    bucket: bucket.to_string(),
                    position: cursor.position,
                    after: cursor.after.clone(),
                    limit: want,
                };
                let snap = &snap;
                async move {
                    if !snap.is_live(node) {
                        return (node.clone(), None);
                    }
                    let page = self
                        .call(snap, node, deadline, |c, ctx| async move {
                            c.list_keys(ctx, request).await
                        })
                        .await;
                    (node.clone(), page.ok())
                }
            });
            let pages: Vec<(String, Option<ListPage>)> = futures::future::join_all(calls).await;
            let answered: BTreeSet<&str> = pages
                .iter()
                .filter(|(_, p)| p.is_some())
                .map(|(n, _)| n.as_str())
                .collect();
            // Complete up to the smallest last entry of any truncated page.
            let horizon = pages
                .iter()
                .filter_map(|(_, p)| p.as_ref())
                .filter(|p| p.more)
                .filter_map(|p| p.entries.last())
                .map(|e| (e.position, e.key.clone()))
                .min();
            let span_end = horizon.as_ref().map_or(u64::MAX, |(p, _)| *p);
            for range in ranges
                .iter()
                .filter(|g| intersects(g, cursor.position, span_end))
            {
                let owners = ring.replicas_of(range, self.n());
                let seen = owners.iter().filter(|o| answered.contains(**o)).count();
                if seen < r {
                    return Err(self.list_failed(r, seen, owners.len()));
                }
            }
            let mut merged: BTreeMap<(u64, Vec<u8>), SiblingSet> = BTreeMap::new();
            for page in pages.into_iter().filter_map(|(_, p)| p) {
                for e in page.entries {
                    let at = (e.position, e.key);
                    if horizon.as_ref().is_some_and(|h| at > *h) {
                        continue;
                    }
                    let slot = merged.entry(at).or_default();
                    *slot = policy.sync(slot, &e.skeleton);
                }
            }
            for ((position, key), state) in merged {
                cursor = ListCursor {
                    position,
                    after: Some(key.clone()),
                };
                if state.values().iter().any(|s| s.is_live(now)) {
                    keys.push(key);
                    if keys.len() >= limit {
                        return Ok(Listed {
                            keys,
                            next: Some(cursor),
                        });
                    }
                }
            }
            match horizon {
                None => return Ok(Listed { keys, next: None }),
                Some((position, key)) => {
                    cursor = ListCursor {
                        position,
                        after: Some(key),
                    }
                }
            }
        }
        Ok(Listed {
            keys,
            next: Some(cursor),
        })
    }

    fn list_failed(&self, r: usize, seen: usize, total: usize) -> ApiError {
        ApiError::QuorumFailed {
            operation: Operation::Read,
            failure: QuorumFailure {
                succeeded: seen,
                needed: r,
                failed: total.saturating_sub(seen),
                unknown: 0,
                total,
            },
        }
    }
}

/// The props a `PUT .../props` body makes of the current ones: every field
/// it names replaces the current value (`"ttl_s": null` clears it).
pub fn apply_props_body(current: BucketProps, body: &[u8]) -> Result<BucketProps, ApiError> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        conflict: Option<shoal_vclock::Policy>,
        #[serde(default, deserialize_with = "some_or_null")]
        ttl_s: Option<Option<u64>>,
    }
    fn some_or_null<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<u64>>, D::Error> {
        serde::Deserialize::deserialize(d).map(Some)
    }
    let body: Body = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("bad props body: {e}")))?;
    let mut props = current;
    if let Some(conflict) = body.conflict {
        props.conflict = conflict;
    }
    if let Some(ttl) = body.ttl_s {
        props.ttl_s = ttl;
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        for c in [
            ListCursor::default(),
            ListCursor {
                position: u64::MAX,
                after: Some(b"k/\x00".to_vec()),
            },
        ] {
            assert_eq!(ListCursor::decode(&c.encode(), 100).unwrap(), c);
        }
        for bad in ["", "!!", "AAAA", &"A".repeat(10_000)] {
            assert!(ListCursor::decode(bad, 100).is_err(), "{bad}");
        }
    }

    #[test]
    fn props_bodies() {
        let lww = apply_props_body(BucketProps::default(), br#"{"conflict":"lww"}"#).unwrap();
        assert_eq!(lww.conflict, shoal_vclock::Policy::Lww);
        let ttl = apply_props_body(lww.clone(), br#"{"ttl_s":60}"#).unwrap();
        assert_eq!(
            (ttl.conflict, ttl.ttl_s),
            (shoal_vclock::Policy::Lww, Some(60))
        );
        let cleared = apply_props_body(ttl, br#"{"ttl_s":null}"#).unwrap();
        assert_eq!(cleared.ttl_s, None);
        for bad in [
            &br#"{"conflict":"newest"}"#[..],
            br#"{"x":1}"#,
            b"[",
            br#"{"ttl_s":-1}"#,
        ] {
            assert!(apply_props_body(BucketProps::default(), bad).is_err());
        }
    }

    #[test]
    fn range_intersection() {
        let plain = TokenRange { start: 10, end: 20 };
        assert!(intersects(&plain, 0, 10));
        assert!(intersects(&plain, 15, 15));
        assert!(!intersects(&plain, 20, 30));
        assert!(!intersects(&plain, 0, 9));
        let wrap = TokenRange { start: 100, end: 5 };
        assert!(intersects(&wrap, 0, 0));
        assert!(intersects(&wrap, 50, 100));
        assert!(!intersects(&wrap, 5, 99));
    }
}
