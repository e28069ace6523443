//! The node's view of its LSM engine: key layout, per-key serialization of
//! read-modify-write, sibling-set encoding, hints and node metadata.
//!
//! Layout (one engine, key spaces distinguished by the first byte; keys
//! arrive as wire keys, see [`crate::keys`]):
//!
//! | prefix | key | value |
//! |---|---|---|
//! | `0x00` | metadata name (`incarnation`, `epoch`, `clean-stop`, `decommissioned`, `bucket-props/...`) | u64 big-endian, a flag, or a record |
//! | `0x01` | ring position (8 bytes BE) + user key, bucket `default` | encoded `SiblingSet` |
//! | `0x02` | hints as written before buckets: moved to `0x04` at open | |
//! | `0x03` | bucket length (1 byte) + bucket + position + user key | encoded `SiblingSet` |
//! | `0x04` | owner id length (1 byte) + owner id + position + wire key | receipt time + encoded `SiblingSet` |
//!
//! Within a bucket, data keys start with their ring position, so a token
//! range of one bucket is one ordered scan, and listing a bucket reads that
//! bucket's keys and no other's. The default bucket keeps the layout data
//! directories had before buckets (`0x01`), so they open unchanged; their
//! hints are rewritten once into the wire-key layout. Hints live in their
//! own space, grouped by the owner they are for, and never mix with the
//! node's own data.
//!
//! The store also keeps the node's one [`MerkleTree`] over every data key
//! (hints are not in it): each key contributes `(position, key, SHA-256 of its
//! encoded sibling set)`, the encoding being canonical so equal states give
//! equal digests. The tree is rebuilt from the data space at open and updated
//! under the key's lock by every write that changes stored data (coordinate,
//! merge, batch merge, tombstone purge), so it always equals a rebuild.
//! Tombstones are purged by [`Store::purge_tombstones`], which deletes them
//! under their lock and removes them from the tree, rather than by a storage
//! compaction filter, which would drop them without telling the tree.
//!
//! All methods are synchronous. The write paths of the replica RPCs also come
//! as `*_begin`, which do the read-modify-write and the append under the key's
//! stripe and return a [`Written`]: the RPC releases the stripe, awaits the
//! fsync on the runtime and only then answers, so neither a stripe nor a
//! thread is held for an fsync. The blocking methods, which the service calls
//! in `spawn_blocking`, also release their stripes before they wait for the
//! fsync, so an inline RPC never waits on a stripe for a disk.

mod gc;
mod hints;
pub(crate) mod meta;
mod scan;
mod tree;
mod write;
mod written;

use gc::{expiry_verdict, keep_after_grace};
pub use hints::Hint;
use hints::HintBook;
pub use scan::{ListEntry, ListPage, ScanCursor, ScanEntry, ScanPage};
use tree::rebuild_tree;
pub use written::Written;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use shoal_merkle::{MerkleTree, TreeShape};
use shoal_storage::{Engine, Options, WalRecovery, WriteBatch};
use shoal_vclock::SiblingSet;

use crate::buckets::{PropsTable, VersionedProps};
use crate::config::{Config, SyncMode};
use crate::env::Clock;
use crate::keys;

const META: u8 = 0x00;
const DATA: u8 = 0x01;
/// Where hints were before buckets (user key, not wire key).
const LEGACY_HINT: u8 = 0x02;
const BUCKET: u8 = 0x03;
pub(crate) const HINT: u8 = 0x04;

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
    /// A new hint was refused: hinted handoff is off, or the hint quotas
    /// are reached. The caller tries another fallback.
    #[error("hint refused: {reason}")]
    HintRefused {
        /// Which limit.
        reason: String,
    },
    /// An owner id too long for the hint key layout.
    #[error("owner id of {len} bytes is longer than 255")]
    OwnerTooLong {
        /// Its length.
        len: usize,
    },
    /// The Merkle tree refused an update or a query (a shape mismatch, a
    /// malformed request, a range off the leaf grid).
    #[error("merkle tree: {0}")]
    Merkle(#[from] shoal_merkle::MerkleError),
    /// A scan cursor that does not point into the data space.
    #[error("scan cursor is not a data key of one of the scanned ranges")]
    BadCursor,
    /// A record could not be encoded.
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// The version digest of a stored sibling set: SHA-256 of its canonical
/// encoding, so two replicas agree on it exactly when they hold the same state.
pub fn digest_of(encoded: &[u8]) -> [u8; 32] {
    // SHA-256 of the bytes, except that a value with a TTL counts by its
    // expiry and a digest of its bytes, so a purge changes nothing here.
    SiblingSet::stored_digest(encoded)
}

/// A tombstone GC candidate: a wire key and its state's digest.
pub type Candidate = (Vec<u8>, [u8; 32]);

/// The node's storage.
pub struct Store {
    engine: Engine,
    /// The vclock actor of this node's data: its id plus an epoch that changes
    /// when the data directory is created anew, so a wiped node never mints a
    /// dot it already minted before the wipe (shoal-vclock's uniqueness rule).
    actor: String,
    incarnation: u64,
    locks: Vec<Mutex<()>>,
    /// One tree over the whole ring; per-range views come from
    /// `range_hash`. A std mutex: every holder does bounded CPU work and
    /// never awaits. Lock order: a key stripe, then the tree.
    tree: Mutex<MerkleTree>,
    grace_ms: u64,
    clock: Arc<dyn Clock>,
    /// Hint counts and quotas.
    hints: HintBook,
    /// `versioning.max_clock_entries`: every state this store writes is
    /// pruned to it, so no client or peer can make a key's clock grow for
    /// good (pruning may bring back a superseded version as a sibling,
    /// never lose one; vclock's model test proves it).
    max_clock_entries: usize,
    /// The engine's `write_timeout`: how long [`Written::durable`] waits.
    write_timeout: Duration,
    /// Every bucket's properties, loaded from the metadata space at open;
    /// the merges read each key's conflict policy here.
    props: Arc<PropsTable>,
    props_order: Mutex<()>,
    /// Commit log fsync times, from the engine's observer.
    fsync: Arc<crate::metrics::Histogram>,
    /// The node's counters. They live here because the store is the one
    /// handle every component of a node (RPCs, handoff, anti-entropy,
    /// handover) already holds.
    counters: Arc<crate::observe::NodeCounters>,
    /// The earliest expiry instant of a value whose bytes this store still
    /// holds, as far as it knows (`u64::MAX`: none): a purge is due once
    /// the clock passes it plus `expiry.max_skew_ms`.
    expiry_due: Arc<AtomicU64>,
    /// `expiry.max_skew_ms`.
    expiry_skew_ms: u64,
    /// [`meta::MINT_FLOOR`], loaded at open: a key this node has no state
    /// for is minted above it.
    mint_floor: AtomicU64,
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
        Self::open_with(
            dir,
            node_id,
            config,
            clock,
            Arc::new(shoal_storage::StdFs),
            shoal_storage::Background::Threads,
        )
    }

    /// [`Store::open`] on a given file system, with the engine's flushes and
    /// compactions on its own threads or inline. A deterministic simulation
    /// passes its simulated disk (where a crash drops what was not synced)
    /// and `Inline`: engine threads would run in real time, outside the
    /// simulated schedule and outside the simulated disk.
    pub fn open_with(
        dir: &Path,
        node_id: &str,
        config: &Config,
        clock: Arc<dyn Clock>,
        fs: Arc<dyn shoal_storage::Fs>,
        background: shoal_storage::Background,
    ) -> Result<Self, StoreError> {
        let grace_ms = config.tombstones.grace_secs.saturating_mul(1000);
        let filter_clock = clock.clone();
        let counters = Arc::new(crate::observe::NodeCounters::default());
        let expiry_due = Arc::new(AtomicU64::new(u64::MAX));
        let expiry_skew_ms = config.expiry.max_skew_ms;
        let (filter_counters, filter_due) = (counters.clone(), expiry_due.clone());
        let fsync = Arc::new(crate::metrics::Histogram::new(crate::metrics::FSYNC_BOUNDS));
        let observed = fsync.clone();
        let options = Options {
            sync: match config.storage.sync {
                SyncMode::Always => shoal_storage::SyncMode::Always,
                SyncMode::Periodic => shoal_storage::SyncMode::Periodic(Duration::from_millis(
                    config.storage.sync_interval_ms,
                )),
                SyncMode::Never => shoal_storage::SyncMode::Never,
            },
            memtable_bytes: config.storage.memtable_bytes,
            // Room for the bucket (65), a hint's owner (256) and positions.
            max_key_len: config.limits.max_key_bytes + 400,
            max_value_len: config.limits.max_value_bytes + (1 << 20),
            // A replica repairs a lost log suffix from its peers; refusing to
            // start would turn one bad record into an outage.
            wal_recovery: WalRecovery::Salvage,
            // Hints are purged by compaction. Data keys are in the Merkle
            // tree, so their tombstones go through `purge_tombstones`; their
            // expired values are shrunk here, which leaves their digests (and
            // so the tree) as they were.
            compaction_filter: Some(Arc::new(move |key: &[u8], value: &[u8]| {
                let now = filter_clock.now_millis();
                match key.first() {
                    Some(&HINT) if !keep_after_grace(key, value, now, grace_ms) => {
                        shoal_storage::Verdict::Purge
                    }
                    Some(&DATA | &BUCKET) if SiblingSet::may_expire(value) => expiry_verdict(
                        value,
                        now.saturating_sub(expiry_skew_ms),
                        &filter_counters,
                        &filter_due,
                    ),
                    _ => shoal_storage::Verdict::Keep,
                }
            })),
            fs,
            background,
            sync_observer: Some(Arc::new(move |took| observed.observe(took))),
            ..Options::default()
        };
        let write_timeout = options.write_timeout;
        let engine = Engine::open(dir, options)?;
        let report = engine.recovery();
        for damage in report.torn_tails.iter().chain(report.salvaged.iter()) {
            tracing::warn!(?damage, dir = %dir.display(), "commit log damage repaired at open");
        }
        let incarnation = read_meta(&engine, meta::INCARNATION.as_bytes())?.unwrap_or(0) + 1;
        engine.put(
            &meta_key(meta::INCARNATION.as_bytes()),
            &incarnation.to_be_bytes(),
        )?;
        // Whether the last run stopped cleanly; cleared now, set again by
        // `close`.
        let clean = read_meta(&engine, meta::CLEAN_STOP.as_bytes())?.is_some();
        engine.delete(&meta_key(meta::CLEAN_STOP.as_bytes()))?;
        let unsynced = config.storage.sync != SyncMode::Always;
        let epoch = match read_meta(&engine, meta::EPOCH.as_bytes())? {
            // After a crash, this node's latest dots may be gone from its
            // own disk while peers hold them: without fsync per write they
            // were acknowledged unsynced, and with it a forwarded write
            // (`coordinate_forward`) sends its dot to the replicas while its
            // own fsync is still running. Minting from what is left would
            // hand out those dots again, for other values, and a peer would
            // take the new value for one it already has. A new epoch is a
            // new actor, whose dots no one has seen (Riak's vnode epoch does
            // the same); each crash adds one actor to the clocks it touches,
            // which `versioning.max_clock_entries` bounds.
            Some(e) if !clean => {
                let fresh = clock.now_millis().max(e + 1);
                tracing::warn!(
                    old = e,
                    new = fresh,
                    "unclean stop: minting under a new actor epoch"
                );
                engine.put(&meta_key(meta::EPOCH.as_bytes()), &fresh.to_be_bytes())?;
                // Durable before any dot is minted under it: otherwise a second
                // crash could bring the old epoch back.
                engine.flush()?;
                fresh
            }
            Some(e) => e,
            None => {
                // Wall-clock millis are unique enough per data directory of one
                // node id, and need no randomness source.
                let e = clock.now_millis();
                engine.put(&meta_key(meta::EPOCH.as_bytes()), &e.to_be_bytes())?;
                if unsynced {
                    engine.flush()?;
                }
                e
            }
        };
        let moved = hints::migrate_legacy(&engine)?;
        if moved > 0 {
            tracing::info!(
                moved,
                "hints written before buckets moved to the wire-key layout"
            );
        }
        let hints = HintBook::open(&engine, &config.handoff)?;
        let mint_floor = read_meta(&engine, meta::MINT_FLOOR.as_bytes())?.unwrap_or(0);
        let props = Arc::new(PropsTable::new());
        props.merge(&load_props(&engine)?);
        let shape = TreeShape::new(config.anti_entropy.leaf_bits, 4)?;
        let (tree, due) = rebuild_tree(&engine, shape)?;
        expiry_due.fetch_min(due, Ordering::Relaxed);
        tracing::info!(keys = tree.len(), dir = %dir.display(), "merkle tree rebuilt from storage");
        Ok(Self {
            engine,
            actor: format!("{node_id}#{epoch:x}"),
            incarnation,
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            tree: Mutex::new(tree),
            grace_ms,
            clock,
            hints,
            max_clock_entries: config.versioning.max_clock_entries,
            write_timeout,
            props,
            props_order: Mutex::new(()),
            fsync,
            counters,
            expiry_due,
            expiry_skew_ms,
            mint_floor: AtomicU64::new(mint_floor),
        })
    }

    /// Whether a write would block now on the engine's back-pressure (see
    /// `Engine::backlogged`): the RPCs then take the blocking pool.
    pub fn write_would_block(&self) -> bool {
        self.engine.backlogged()
    }

    /// The storage engine's counters (tables, memtable, flushes, fsyncs).
    pub fn engine_stats(&self) -> shoal_storage::Stats {
        self.engine.stats()
    }

    /// The node's counters (see [`crate::observe`]).
    pub fn counters(&self) -> &Arc<crate::observe::NodeCounters> {
        &self.counters
    }

    /// How long the commit log's fsyncs took.
    pub fn fsync_times(&self) -> crate::metrics::HistogramSnapshot {
        self.fsync.snapshot()
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
        self.lock_at(keys::position(key))
    }

    /// [`Store::lock`] for a key whose ring position the caller already has
    /// (a write needs it three times: stripe, storage key, Merkle leaf; each
    /// is a SHA-256 of the key).
    fn lock_at(&self, position: u64) -> std::sync::MutexGuard<'_, ()> {
        // The position is already a uniform hash; its low bits pick the stripe.
        let stripe = (position as usize) % STRIPES;
        // A poisoned stripe only means another write panicked mid-way; the
        // engine's state is still consistent, so keep serving.
        self.locks[stripe]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The local states of many keys, in order.
    pub fn read_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<SiblingSet>>, StoreError> {
        keys.iter().map(|k| self.read(k)).collect()
    }

    /// Every bucket's properties as this node knows them.
    pub fn props(&self) -> &Arc<PropsTable> {
        &self.props
    }

    /// Takes the props records newer than those held and stores them
    /// durably before returning (a gateway counts this node's answer as
    /// one copy of the change). Returns how many were taken.
    pub fn merge_props(&self, records: &[(String, VersionedProps)]) -> Result<usize, StoreError> {
        // Taken and appended under one lock, so the log holds a bucket's
        // records in version order and a restart never reads an older one.
        let guard = self.props_order.lock().unwrap_or_else(|p| p.into_inner());
        let taken = self.props.merge(records);
        if taken.is_empty() {
            return Ok(0);
        }
        let mut batch = WriteBatch::new();
        for (bucket, record) in &taken {
            let bytes =
                bincode::serialize(record).map_err(|e| StoreError::Encode(e.to_string()))?;
            batch.put(props_key(bucket), bytes);
        }
        let commit = self.engine.append(batch)?;
        drop(guard);
        commit.wait()?;
        Ok(taken.len())
    }

    /// A metadata value (join progress and the like), if set.
    pub fn get_meta(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.engine.get(&meta_key(name.as_bytes()))?)
    }

    /// Sets a metadata value durably (under the configured sync mode).
    pub fn put_meta(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        Ok(self.engine.put(&meta_key(name.as_bytes()), value)?)
    }

    /// The local state of `key`.
    pub fn read(&self, key: &[u8]) -> Result<Option<SiblingSet>, StoreError> {
        self.decode(key, self.engine.get(&data_key(key))?)
    }

    /// Flushes the memtable and closes the engine (graceful shutdown), and
    /// records the clean stop: the next open keeps the actor epoch.
    pub fn close(&self) -> Result<(), StoreError> {
        self.engine
            .put(&meta_key(meta::CLEAN_STOP.as_bytes()), &1u64.to_be_bytes())?;
        self.engine.flush()?;
        self.engine.close()?;
        Ok(())
    }

    fn decode(&self, key: &[u8], bytes: Option<Vec<u8>>) -> Result<Option<SiblingSet>, StoreError> {
        match bytes {
            None => Ok(None),
            Some(b) => SiblingSet::decode(&b)
                .map(Some)
                .map_err(|source| StoreError::Corrupt {
                    key: keys::display(key),
                    source,
                }),
        }
    }
}

/// The prefix of a bucket's data space: `0x01` for `default`, else `0x03`,
/// the name's length and the name.
fn space_of(bucket: &str) -> Vec<u8> {
    if bucket == keys::DEFAULT_BUCKET {
        return vec![DATA];
    }
    let mut p = Vec::with_capacity(2 + bucket.len());
    p.push(BUCKET);
    p.push(bucket.len() as u8);
    p.extend_from_slice(bucket.as_bytes());
    p
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

/// The storage key of a wire key: its bucket's space, its ring position,
/// its user key. A malformed wire key (refused by every RPC before it gets
/// here) is stored as a default key of its whole bytes.
pub fn data_key(wire: &[u8]) -> Vec<u8> {
    data_key_at(wire, keys::position(wire))
}

/// [`data_key`] with the wire key's ring position already computed.
pub(crate) fn data_key_at(wire: &[u8], position: u64) -> Vec<u8> {
    let (space, key) = match keys::split(wire) {
        Ok((bucket, key)) => (space_of(bucket), key),
        Err(_) => (vec![DATA], wire),
    };
    let mut k = Vec::with_capacity(space.len() + 8 + key.len());
    k.extend_from_slice(&space);
    k.extend_from_slice(&position.to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The wire key of a data space's storage key ([`data_key`] undone).
fn wire_of(storage_key: &[u8]) -> Option<Vec<u8>> {
    match storage_key.split_first()? {
        (&DATA, rest) => {
            let key = rest.get(8..).filter(|k| !k.is_empty())?;
            Some(keys::wire(keys::DEFAULT_BUCKET, key))
        }
        (&BUCKET, rest) => {
            let (&len, rest) = rest.split_first()?;
            let name = std::str::from_utf8(rest.get(..len as usize)?).ok()?;
            let key = rest.get(len as usize + 8..).filter(|k| !k.is_empty())?;
            keys::check_bucket(name).ok()?;
            Some(keys::wire(name, key))
        }
        _ => None,
    }
}

fn props_key(bucket: &str) -> Vec<u8> {
    meta_key(format!("{}{bucket}", meta::BUCKET_PROPS).as_bytes())
}

/// Every bucket's props record kept in the metadata space.
fn load_props(engine: &Engine) -> Result<Vec<(String, VersionedProps)>, StoreError> {
    let from = meta_key(meta::BUCKET_PROPS.as_bytes());
    let to = hints::prefix_successor(&from).unwrap_or_else(|| vec![META + 1]);
    let mut out = Vec::new();
    for item in engine.scan(from.as_slice()..to.as_slice())? {
        let (k, v) = item?;
        let bucket = String::from_utf8_lossy(&k[from.len()..]).into_owned();
        match bincode::deserialize::<VersionedProps>(&v) {
            Ok(record) => out.push((bucket, record)),
            // Peers hold the record too; the next pull brings it back.
            Err(e) => {
                tracing::error!(%bucket, error = %e, "unreadable bucket props record skipped")
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
