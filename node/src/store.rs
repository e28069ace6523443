//! The node's view of its LSM engine: key layout, per-key serialization of
//! read-modify-write, sibling-set encoding, hints and node metadata.
//!
//! Layout (one engine, three key spaces distinguished by the first byte):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `0x00` | metadata name (`incarnation`, `epoch`) | u64 big-endian |
//! | `0x01` | ring position (8 bytes BE) + user key | encoded `SiblingSet` |
//! | `0x02` | owner id length (1 byte) + owner id + position + user key | encoded `SiblingSet` |
//!
//! Data keys start with their ring position, so a token range is one ordered
//! scan (anti-entropy and range streaming read them that way). Hints live in
//! their own space, grouped by the owner they are for, and never mix with the
//! node's own data.
//!
//! All methods are synchronous; the service calls them in `spawn_blocking`.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_storage::{Engine, Options, WalRecovery, WriteBatch};
use shoal_vclock::{Content, Context, SiblingSet};

use crate::config::{Config, SyncMode};
use crate::env::Clock;

const META: u8 = 0x00;
const DATA: u8 = 0x01;
const HINT: u8 = 0x02;

/// Lock stripes for read-modify-write. A fixed array bounds memory whatever
/// the key count; two keys sharing a stripe only wait for each other.
const STRIPES: usize = 4096;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (I/O, disk full, read-only, corrupt block).
    #[error(transparent)]
    Engine(#[from] shoal_storage::Error),
    /// A stored sibling set did not decode.
    #[error("stored value for key {key:?} is corrupt: {source}")]
    Corrupt {
        /// The user key (lossy UTF-8 for the message).
        key: String,
        /// The decoding error.
        source: shoal_vclock::Error,
    },
    /// The version could not be minted (a forged context at `u64::MAX`).
    #[error("cannot apply the write: {0}")]
    Version(shoal_vclock::Error),
    /// An owner id too long for the hint key layout.
    #[error("owner id of {len} bytes is longer than 255")]
    OwnerTooLong {
        /// Its length.
        len: usize,
    },
}

/// A hint read back for delivery.
#[derive(Debug, Clone)]
pub struct Hint {
    /// The owner it is for.
    pub owner: String,
    /// The user key.
    pub key: Vec<u8>,
    /// The state to hand over.
    pub siblings: SiblingSet,
}

/// The node's storage.
pub struct Store {
    engine: Engine,
    /// The vclock actor of this node's data: its id plus an epoch that changes
    /// when the data directory is created anew, so a wiped node never mints a
    /// dot it already minted before the wipe (shoal-vclock's uniqueness rule).
    actor: String,
    incarnation: u64,
    locks: Vec<Mutex<()>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("actor", &self.actor)
            .field("incarnation", &self.incarnation)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`, bumps the incarnation, and
    /// installs the tombstone purge filter.
    pub fn open(
        dir: &Path,
        node_id: &str,
        config: &Config,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StoreError> {
        let grace_ms = config.tombstones.grace_secs.saturating_mul(1000);
        let filter_clock = clock.clone();
        let options = Options {
            sync: match config.storage.sync {
                SyncMode::Always => shoal_storage::SyncMode::Always,
                SyncMode::Periodic => shoal_storage::SyncMode::Periodic(Duration::from_millis(
                    config.storage.sync_interval_ms,
                )),
                SyncMode::Never => shoal_storage::SyncMode::Never,
            },
            memtable_bytes: config.storage.memtable_bytes,
            max_key_len: config.limits.max_key_bytes + 300,
            max_value_len: config.limits.max_value_bytes + (1 << 20),
            // A replica repairs a lost log suffix from its peers; refusing to
            // start would turn one bad record into an outage.
            wal_recovery: WalRecovery::Salvage,
            compaction_filter: Some(Arc::new(move |key: &[u8], value: &[u8]| {
                keep_after_grace(key, value, filter_clock.now_millis(), grace_ms)
            })),
            ..Options::default()
        };
        let engine = Engine::open(dir, options)?;
        let report = engine.recovery();
        for damage in report.torn_tails.iter().chain(report.salvaged.iter()) {
            tracing::warn!(?damage, dir = %dir.display(), "commit log damage repaired at open");
        }
        let incarnation = read_meta(&engine, b"incarnation")?.unwrap_or(0) + 1;
        engine.put(&meta_key(b"incarnation"), &incarnation.to_be_bytes())?;
        let epoch = match read_meta(&engine, b"epoch")? {
            Some(e) => e,
            None => {
                // Wall-clock millis are unique enough per data directory of one
                // node id, and need no randomness source.
                let e = clock.now_millis();
                engine.put(&meta_key(b"epoch"), &e.to_be_bytes())?;
                e
            }
        };
        Ok(Self {
            engine,
            actor: format!("{node_id}#{epoch:x}"),
            incarnation,
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        })
    }

    /// The incarnation of this run (rises on every open).
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The vclock actor id of this node's writes.
    pub fn actor(&self) -> &str {
        &self.actor
    }

    fn lock(&self, key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        let position = shoal_ring::key_position(key);
        // The position is already a uniform hash; its low bits pick the stripe.
        let stripe = (position as usize) % STRIPES;
        // A poisoned stripe only means another write panicked mid-way; the
        // engine's state is still consistent, so keep serving.
        self.locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Coordinates a client write: reads the local state, applies `update`
    /// with this node's actor, stores it durably and returns it.
    ///
    /// With `hint_for`, this node stands in for a down owner: the new version
    /// is stored as a hint for that owner as well as in the local data. The
    /// data copy is what keeps this actor's counters for `key` monotonic: a
    /// hint is deleted once delivered, and minting from it alone would hand
    /// out the same dot twice for two different values.
    pub fn coordinate(
        &self,
        key: &[u8],
        context: &Context,
        content: Content,
        now: u64,
        hint_for: Option<&str>,
    ) -> Result<SiblingSet, StoreError> {
        let hint_key = hint_for.map(|owner| hint_key(owner, key)).transpose()?;
        let _guard = self.lock(key);
        let data_key = data_key(key);
        let mut set = self
            .decode(key, self.engine.get(&data_key)?)?
            .unwrap_or_default();
        set.update(context, &self.actor, content, now)
            .map_err(StoreError::Version)?;
        let encoded = set.encode();
        match hint_key {
            None => self.engine.put(&data_key, &encoded)?,
            Some(hint_key) => {
                let hinted = match self.decode(key, self.engine.get(&hint_key)?)? {
                    Some(held) => held.sync(&set),
                    None => set.clone(),
                };
                let mut batch = WriteBatch::new();
                batch.put(data_key, encoded);
                batch.put(hint_key, hinted.encode());
                self.engine.write(batch)?;
            }
        }
        Ok(set)
    }

    /// Merges `incoming` into the local state of `key`, durably; returns the
    /// merged state.
    pub fn merge(&self, key: &[u8], incoming: &SiblingSet) -> Result<SiblingSet, StoreError> {
        self.merge_at(&data_key(key), key, incoming)
    }

    /// Merges `incoming` into the hint this node holds for `owner`.
    pub fn put_hint(
        &self,
        owner: &str,
        key: &[u8],
        incoming: &SiblingSet,
    ) -> Result<SiblingSet, StoreError> {
        self.merge_at(&hint_key(owner, key)?, key, incoming)
    }

    fn merge_at(
        &self,
        storage_key: &[u8],
        key: &[u8],
        incoming: &SiblingSet,
    ) -> Result<SiblingSet, StoreError> {
        let _guard = self.lock(key);
        let current = self.decode(key, self.engine.get(storage_key)?)?;
        let merged = match &current {
            Some(c) => c.sync(incoming),
            None => incoming.clone(),
        };
        if current.as_ref() != Some(&merged) {
            self.engine.put(storage_key, &merged.encode())?;
        }
        Ok(merged)
    }

    /// The local state of `key`.
    pub fn read(&self, key: &[u8]) -> Result<Option<SiblingSet>, StoreError> {
        self.decode(key, self.engine.get(&data_key(key))?)
    }

    /// The hints held for `key`, by owner.
    pub fn hints_for_key(&self, key: &[u8]) -> Result<Vec<(String, SiblingSet)>, StoreError> {
        let mut out = Vec::new();
        for hint in self.hints(usize::MAX)? {
            if hint.key == key {
                out.push((hint.owner, hint.siblings));
            }
        }
        Ok(out)
    }

    /// Up to `limit` hints, grouped by owner in key order.
    pub fn hints(&self, limit: usize) -> Result<Vec<Hint>, StoreError> {
        let mut out = Vec::new();
        for item in self.engine.scan([HINT].as_slice()..[HINT + 1].as_slice())? {
            if out.len() >= limit {
                break;
            }
            let (k, v) = item?;
            let Some((owner, key)) = parse_hint_key(&k) else {
                tracing::warn!(key = ?k, "skipping malformed hint key");
                continue;
            };
            let Some(siblings) = self.decode(&key, Some(v))? else {
                continue;
            };
            out.push(Hint {
                owner,
                key,
                siblings,
            });
        }
        Ok(out)
    }

    /// Up to `per_owner` hints for each owner, in owner then key order.
    ///
    /// Taking a bounded slice per owner, rather than the first `n` hints of
    /// the key space, keeps one long-dead owner's backlog from hiding every
    /// other owner's hints from the handoff loop.
    pub fn hints_per_owner(&self, per_owner: usize) -> Result<Vec<Hint>, StoreError> {
        let mut out = Vec::new();
        let mut from = vec![HINT];
        let end = [HINT + 1];
        'owners: loop {
            let mut taken = 0;
            let mut current: Option<Vec<u8>> = None;
            for item in self.engine.scan(from.as_slice()..end.as_slice())? {
                let (k, v) = item?;
                let Some((owner, key)) = parse_hint_key(&k) else {
                    tracing::warn!(key = ?k, "skipping malformed hint key");
                    continue;
                };
                // HINT, length byte, owner: the prefix shared by one owner's hints.
                let prefix = k[..2 + owner.len()].to_vec();
                match &current {
                    Some(p) if *p != prefix => {
                        from = prefix;
                        continue 'owners;
                    }
                    Some(_) if taken >= per_owner => {
                        match prefix_successor(&prefix) {
                            Some(next) => from = next,
                            None => break 'owners,
                        }
                        continue 'owners;
                    }
                    _ => current = Some(prefix),
                }
                if let Some(siblings) = self.decode(&key, Some(v))? {
                    out.push(Hint {
                        owner,
                        key,
                        siblings,
                    });
                    taken += 1;
                }
            }
            break;
        }
        Ok(out)
    }

    /// Number of hints held.
    pub fn hint_count(&self) -> Result<u64, StoreError> {
        let mut n = 0;
        for item in self.engine.scan([HINT].as_slice()..[HINT + 1].as_slice())? {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Deletes a delivered hint, unless it changed since it was read (a newer
    /// write arrived for the same owner and key; it will be delivered next).
    pub fn delete_hint_if_unchanged(
        &self,
        owner: &str,
        key: &[u8],
        delivered: &SiblingSet,
    ) -> Result<bool, StoreError> {
        let _guard = self.lock(key);
        let hk = hint_key(owner, key)?;
        let current = self.decode(key, self.engine.get(&hk)?)?;
        if current.as_ref() == Some(delivered) {
            self.engine.delete(&hk)?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Deletes a hint whatever it holds (expired past its TTL).
    pub fn drop_hint(&self, owner: &str, key: &[u8]) -> Result<(), StoreError> {
        let _guard = self.lock(key);
        self.engine.delete(&hint_key(owner, key)?)?;
        Ok(())
    }

    /// Flushes the memtable and closes the engine (graceful shutdown).
    pub fn close(&self) -> Result<(), StoreError> {
        self.engine.flush()?;
        self.engine.close()?;
        Ok(())
    }

    /// Runs a compaction now (tests use it to check tombstone purging).
    pub fn compact(&self) -> Result<(), StoreError> {
        self.engine.flush()?;
        self.engine.compact()?;
        Ok(())
    }

    fn decode(&self, key: &[u8], bytes: Option<Vec<u8>>) -> Result<Option<SiblingSet>, StoreError> {
        match bytes {
            None => Ok(None),
            Some(b) => SiblingSet::decode(&b)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    key: String::from_utf8_lossy(key).into_owned(),
                    source,
                }),
        }
    }
}

fn meta_key(name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + name.len());
    k.push(META);
    k.extend_from_slice(name);
    k
}

fn read_meta(engine: &Engine, name: &[u8]) -> Result<Option<u64>, StoreError> {
    Ok(engine.get(&meta_key(name))?.and_then(|v| {
        let bytes: [u8; 8] = v.as_slice().try_into().ok()?;
        Some(u64::from_be_bytes(bytes))
    }))
}

/// `0x01` + position + key.
pub fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.push(DATA);
    k.extend_from_slice(&shoal_ring::key_position(key).to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn hint_key(owner: &str, key: &[u8]) -> Result<Vec<u8>, StoreError> {
    let len =
        u8::try_from(owner.len()).map_err(|_| StoreError::OwnerTooLong { len: owner.len() })?;
    let mut k = Vec::with_capacity(10 + owner.len() + key.len());
    k.push(HINT);
    k.push(len);
    k.extend_from_slice(owner.as_bytes());
    k.extend_from_slice(&shoal_ring::key_position(key).to_be_bytes());
    k.extend_from_slice(key);
    Ok(k)
}

/// The smallest key greater than every key that starts with `prefix`.
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut next = prefix.to_vec();
    while let Some(last) = next.pop() {
        if last < u8::MAX {
            next.push(last + 1);
            return Some(next);
        }
    }
    None
}

fn parse_hint_key(k: &[u8]) -> Option<(String, Vec<u8>)> {
    let (&len, rest) = k.get(1..)?.split_first()?;
    let owner = rest.get(..len as usize)?;
    let key = rest.get(len as usize + 8..)?;
    Some((String::from_utf8(owner.to_vec()).ok()?, key.to_vec()))
}

/// Compaction filter: drop a data or hint entry whose state is only
/// tombstones, all older than the grace period. Anything undecodable is kept
/// (purging is never the way to handle corruption).
fn keep_after_grace(key: &[u8], value: &[u8], now_ms: u64, grace_ms: u64) -> bool {
    if key.first() == Some(&META) {
        return true;
    }
    match SiblingSet::decode(value) {
        Ok(set) if set.is_tombstone_only() => match set.latest_write_time() {
            Some(t) => now_ms.saturating_sub(t) < grace_ms,
            None => true,
        },
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::SystemClock;

    fn open(dir: &Path) -> Store {
        let mut config = Config::default();
        config.storage.sync = SyncMode::Never;
        Store::open(dir, "node-1", &config, Arc::new(SystemClock)).unwrap()
    }

    fn value(v: &str) -> Content {
        Content::value(v.as_bytes().to_vec(), "text/plain")
    }

    #[test]
    fn hints_per_owner_takes_a_bounded_slice_of_every_owner() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut set = SiblingSet::new();
        set.update(&Context::empty(), "w#1", value("v"), 1).unwrap();
        for owner in ["a", "b", "c"] {
            for i in 0..5 {
                s.put_hint(owner, format!("k{i}").as_bytes(), &set).unwrap();
            }
        }
        s.put_hint("\u{ff}", b"k", &set).unwrap();
        let got = s.hints_per_owner(2).unwrap();
        let owners: Vec<&str> = got.iter().map(|h| h.owner.as_str()).collect();
        assert_eq!(owners, ["a", "a", "b", "b", "c", "c", "\u{ff}"]);
        assert_eq!(s.hints_per_owner(10).unwrap().len(), 16);
        assert_eq!(prefix_successor(&[1, 255]), Some(vec![2]));
        assert_eq!(prefix_successor(&[255, 255]), None);
    }

    #[test]
    fn standing_in_keeps_a_hint_and_never_reuses_a_dot() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let first = s
            .coordinate(b"k", &Context::empty(), value("a"), 1, Some("owner-1"))
            .unwrap();
        let held = s.hints_for_key(b"k").unwrap();
        assert_eq!(held.len(), 1);
        assert_eq!(held[0].0, "owner-1");
        assert_eq!(held[0].1, first, "the hint carries the minted version");
        // The hint is delivered and deleted; a second blind write for the same
        // owner must still mint a fresh dot, or the owner would see two values
        // under one dot and keep only one of them.
        s.drop_hint("owner-1", b"k").unwrap();
        let second = s
            .coordinate(b"k", &Context::empty(), value("b"), 2, Some("owner-1"))
            .unwrap();
        let hint = s.hints_for_key(b"k").unwrap().remove(0).1;
        let dot_of = |v: &[u8]| {
            hint.values()
                .iter()
                .find(|s| s.value() == Some(v))
                .map(|s| s.dot.clone())
        };
        let (a, b) = (dot_of(b"a").unwrap(), dot_of(b"b").unwrap());
        assert_ne!(a, b, "one dot minted for two values");
        assert_eq!(second.values().len(), 2, "a blind write keeps the other");
    }

    #[test]
    fn coordinate_mints_increasing_dots_and_persists() {
        let dir = tempfile::tempdir().unwrap();
        let actor;
        {
            let s = open(dir.path());
            actor = s.actor().to_string();
            let a = s
                .coordinate(b"k", &Context::empty(), value("a"), 1, None)
                .unwrap();
            let b = s
                .coordinate(b"k", &Context::empty(), value("b"), 2, None)
                .unwrap();
            assert_eq!(b.values().len(), 2, "blind writes keep both");
            let c = s
                .coordinate(b"k", &b.context(), value("c"), 3, None)
                .unwrap();
            assert_eq!(c.values().len(), 1);
            assert!(a.values()[0].dot.counter < c.values()[0].dot.counter);
            assert_eq!(s.incarnation(), 1);
            s.close().unwrap();
        }
        let s = open(dir.path());
        assert_eq!(s.incarnation(), 2, "incarnation rises on every open");
        assert_eq!(s.actor(), actor, "epoch survives a restart");
        let got = s.read(b"k").unwrap().unwrap();
        assert_eq!(got.values()[0].value(), Some(&b"c"[..]));
    }

    #[test]
    fn hints_are_kept_apart_and_deleted_only_if_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let s = open(dir.path());
        let mut v1 = SiblingSet::new();
        v1.update(&Context::empty(), "node-2#1", value("x"), 1)
            .unwrap();
        s.put_hint("node-3", b"key", &v1).unwrap();
        assert_eq!(s.read(b"key").unwrap(), None, "a hint is not local data");
        assert_eq!(s.hint_count().unwrap(), 1);
        let hints = s.hints(10).unwrap();
        assert_eq!(hints.len(), 1);
        assert_eq!(hints[0].owner, "node-3");
        assert_eq!(hints[0].key, b"key");

        let mut v2 = v1.clone();
        v2.update(&v1.context(), "node-2#1", value("y"), 2).unwrap();
        s.put_hint("node-3", b"key", &v2).unwrap();
        assert!(!s.delete_hint_if_unchanged("node-3", b"key", &v1).unwrap());
        assert!(s.delete_hint_if_unchanged("node-3", b"key", &v2).unwrap());
        assert_eq!(s.hint_count().unwrap(), 0);
        assert_eq!(s.hints_for_key(b"key").unwrap(), vec![]);
    }

    #[test]
    fn tombstones_purge_only_after_grace() {
        let mut t = SiblingSet::new();
        t.update(&Context::empty(), "a", Content::Tombstone, 1_000)
            .unwrap();
        let bytes = t.encode();
        let key = data_key(b"k");
        assert!(keep_after_grace(&key, &bytes, 1_500, 1_000));
        assert!(!keep_after_grace(&key, &bytes, 2_001, 1_000));
        let mut v = SiblingSet::new();
        v.update(&Context::empty(), "a", value("v"), 1_000).unwrap();
        assert!(keep_after_grace(&key, &v.encode(), 1_000_000, 1_000));
        assert!(keep_after_grace(&key, b"garbage", 1_000_000, 1_000));
        assert!(keep_after_grace(
            &meta_key(b"epoch"),
            b"x",
            1_000_000,
            1_000
        ));
    }

    #[test]
    fn hint_keys_round_trip() {
        let k = hint_key("node-7", b"\x00\xffuser").unwrap();
        assert_eq!(
            parse_hint_key(&k),
            Some(("node-7".into(), b"\x00\xffuser".to_vec()))
        );
        assert!(parse_hint_key(&[HINT, 9, b'a']).is_none());
        assert!(hint_key(&"x".repeat(300), b"k").is_err());
    }
}
