//! Bucket properties (`conflict`, `ttl_s`) and how every process agrees on
//! them.
//!
//! Properties are cluster metadata, not data: each bucket's record carries a
//! version (milliseconds, then the id of the process that set it), and a
//! record replaces another only when its version is greater. Every storage
//! node keeps the whole table in its store's metadata space, so it survives
//! restarts; gateways keep it in memory. A change is sent by the gateway
//! that takes it to every live node (answered once W of them hold it
//! durably), and every node and gateway pulls a random live node's table
//! once a second when its digest differs from its own: the greatest version
//! wins everywhere, so two concurrent changes of one bucket converge to the
//! same record on every process, and a node that was down when the change
//! was made has it within a pull or two of coming back.
//!
//! Why not gossip: membership gossip carries one small record per member and
//! is tuned for that; the props table is per bucket, changes rarely, and
//! must be durable where it is acknowledged. Why not a system bucket read at
//! quorum: every write's merge needs the bucket's policy locally and at
//! once, so each node holds the whole table anyway.
//!
//! New properties (`r`, `w`, ...) are new optional fields of
//! [`BucketProps`]: records written before them decode with the default.

use std::collections::BTreeMap;
use std::sync::RwLock;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use shoal_vclock::Policy;

use crate::keys;

/// At most this many buckets have properties set; past it a new one is
/// refused (every process holds the whole table in memory).
pub const MAX_BUCKETS_WITH_PROPS: usize = 10_000;

/// Longest `ttl_s` accepted (2^31 seconds, as for `?ttl=`).
pub const MAX_TTL_S: u64 = 1 << 31;

/// What a bucket's keys do differently.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketProps {
    /// How concurrent versions are resolved.
    pub conflict: Policy,
    /// Seconds after which a version written without its own `ttl` expires.
    pub ttl_s: Option<u64>,
}

/// Which of two records of one bucket wins: the later one, then the greater
/// origin id.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PropsVersion {
    /// Milliseconds since the Unix epoch on the setter's clock, raised above
    /// the version it replaced so a change always wins over what its setter
    /// saw.
    pub ms: u64,
    /// The gateway or node that set it.
    pub origin: String,
}

/// A bucket's properties and their version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionedProps {
    /// Orders concurrent changes.
    pub version: PropsVersion,
    /// The properties.
    pub props: BucketProps,
}

/// Why a props record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PropsError {
    /// The bucket name breaks the naming rule.
    #[error(transparent)]
    Bucket(#[from] keys::KeyError),
    /// `ttl_s` out of 1..=2^31.
    #[error("ttl_s must be in 1..={MAX_TTL_S}, not {0}")]
    Ttl(u64),
    /// The table is full.
    #[error("at most {MAX_BUCKETS_WITH_PROPS} buckets may have properties")]
    Full,
}

/// Checks one record's contents.
pub fn check(bucket: &str, props: &BucketProps) -> Result<(), PropsError> {
    keys::check_bucket(bucket)?;
    match props.ttl_s {
        Some(t) if t == 0 || t > MAX_TTL_S => Err(PropsError::Ttl(t)),
        _ => Ok(()),
    }
}

/// The table of every bucket's properties one process knows.
#[derive(Debug, Default)]
pub struct PropsTable {
    table: RwLock<BTreeMap<String, VersionedProps>>,
}

impl PropsTable {
    /// An empty table (every bucket has the defaults).
    pub fn new() -> Self {
        Self::default()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, VersionedProps>> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    /// A bucket's properties (the defaults if never set).
    pub fn get(&self, bucket: &str) -> BucketProps {
        self.read()
            .get(bucket)
            .map(|v| v.props.clone())
            .unwrap_or_default()
    }

    /// A bucket's record, if it has one.
    pub fn record(&self, bucket: &str) -> Option<VersionedProps> {
        self.read().get(bucket).cloned()
    }

    /// The conflict policy of a wire key's bucket.
    pub fn policy(&self, wire: &[u8]) -> Policy {
        let table = self.read();
        if table.is_empty() {
            return Policy::Siblings;
        }
        table
            .get(keys::bucket_of(wire))
            .map_or(Policy::Siblings, |v| v.props.conflict)
    }

    /// Takes every record newer than the one held (and valid); returns
    /// those taken, for the caller to persist.
    pub fn merge(&self, records: &[(String, VersionedProps)]) -> Vec<(String, VersionedProps)> {
        let mut table = self.table.write().unwrap_or_else(|p| p.into_inner());
        let mut taken = Vec::new();
        for (bucket, record) in records {
            if check(bucket, &record.props).is_err() {
                continue;
            }
            let newer = match table.get(bucket) {
                Some(held) => record.version > held.version,
                None => table.len() < MAX_BUCKETS_WITH_PROPS,
            };
            if newer {
                table.insert(bucket.clone(), record.clone());
                taken.push((bucket.clone(), record.clone()));
            }
        }
        taken
    }

    /// Whether a record for a bucket with none yet would fit.
    pub fn has_room_for(&self, bucket: &str) -> bool {
        let table = self.read();
        table.contains_key(bucket) || table.len() < MAX_BUCKETS_WITH_PROPS
    }

    /// Every record, in bucket order.
    pub fn records(&self) -> Vec<(String, VersionedProps)> {
        self.read()
            .iter()
            .map(|(b, v)| (b.clone(), v.clone()))
            .collect()
    }

    /// SHA-256 over every record in order: equal exactly when the tables are.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        for (bucket, record) in self.read().iter() {
            h.update((bucket.len() as u64).to_be_bytes());
            h.update(bucket.as_bytes());
            h.update(bincode::serialize(record).unwrap_or_default());
        }
        h.finalize().into()
    }

    /// The record a change by `origin` at `now_ms` makes of `props`: its
    /// version above the one held, so the setter's change wins over what it
    /// saw.
    pub fn next_record(
        &self,
        bucket: &str,
        props: BucketProps,
        origin: &str,
        now_ms: u64,
    ) -> VersionedProps {
        let floor = self.read().get(bucket).map_or(0, |v| v.version.ms + 1);
        VersionedProps {
            version: PropsVersion {
                ms: now_ms.max(floor),
                origin: origin.to_string(),
            },
            props,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(ms: u64, origin: &str, conflict: Policy) -> VersionedProps {
        VersionedProps {
            version: PropsVersion {
                ms,
                origin: origin.into(),
            },
            props: BucketProps {
                conflict,
                ttl_s: None,
            },
        }
    }

    #[test]
    fn concurrent_changes_converge_whatever_the_order() {
        let a = ("b".to_string(), rec(10, "gw-1", Policy::Lww));
        let b = ("b".to_string(), rec(10, "gw-2", Policy::Siblings));
        let (x, y) = (PropsTable::new(), PropsTable::new());
        x.merge(std::slice::from_ref(&a));
        x.merge(std::slice::from_ref(&b));
        y.merge(&[b]);
        y.merge(&[a]);
        assert_eq!(x.records(), y.records());
        assert_eq!(x.digest(), y.digest());
        assert_eq!(x.get("b").conflict, Policy::Siblings);
    }

    #[test]
    fn an_older_record_never_replaces_a_newer() {
        let t = PropsTable::new();
        assert_eq!(t.merge(&[("b".into(), rec(20, "g", Policy::Lww))]).len(), 1);
        assert!(t
            .merge(&[("b".into(), rec(19, "g", Policy::Siblings))])
            .is_empty());
        assert_eq!(t.policy(&keys::wire("b", b"k")), Policy::Lww);
        assert_eq!(t.policy(&keys::wire("default", b"k")), Policy::Siblings);
        let next = t.next_record("b", BucketProps::default(), "g", 5);
        assert_eq!(next.version.ms, 21);
    }

    #[test]
    fn invalid_records_are_not_taken() {
        let t = PropsTable::new();
        let mut bad = rec(1, "g", Policy::Lww);
        bad.props.ttl_s = Some(0);
        assert!(t.merge(&[("b".into(), bad)]).is_empty());
        assert!(t
            .merge(&[("Bad!".into(), rec(1, "g", Policy::Lww))])
            .is_empty());
    }
}
