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

mod hints;
pub(crate) mod meta;
mod written;

pub use hints::Hint;
use hints::{decode_hint, encode_hint, hint_key, HintBook};
pub use written::Written;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use shoal_merkle::{MerkleTree, TokenRange, TreeShape};
use shoal_storage::{Commit, Engine, Options, WalRecovery, WriteBatch};
use shoal_vclock::{Content, Context, SiblingSet};

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

/// One key found by [`Store::scan_ranges`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanEntry {
    /// The user key.
    pub key: Vec<u8>,
    /// [`digest_of`] its stored state.
    pub digest: [u8; 32],
    /// The state itself, when values were asked for.
    pub siblings: Option<SiblingSet>,
}

/// Where a paged scan stopped: the index of the range it was in and the last
/// data key returned from it (storage layout, opaque to callers).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScanCursor {
    /// Index into the scanned ranges.
    pub range: u32,
    /// Last storage key returned.
    pub after: Vec<u8>,
}

/// One page of a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ScanPage {
    /// Keys in ring order (range by range).
    pub entries: Vec<ScanEntry>,
    /// Where to resume; `None` when the ranges are exhausted.
    pub next: Option<ScanCursor>,
}

/// One key of a [`ListPage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListEntry {
    /// Its ring position.
    pub position: u64,
    /// The user key.
    pub key: Vec<u8>,
    /// Its state without values ([`SiblingSet::skeleton`]).
    pub skeleton: SiblingSet,
}

/// A page of `Replica::list_keys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct ListPage {
    /// Entries in `(position, key)` order.
    pub entries: Vec<ListEntry>,
    /// Whether the page stopped at its limit: keys after the last entry
    /// may exist. `false`: this node holds nothing more of the bucket.
    pub more: bool,
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

    /// Remembers when `set`'s values with a TTL expire, for the purge.
    fn note_expiry(&self, set: &SiblingSet) {
        if let Some(at) = set.next_expiry() {
            self.expiry_due.fetch_min(at, Ordering::Relaxed);
        }
    }

    /// When expired values are due a purge: a compaction reclaims their
    /// bytes from then on (`None`: nothing known to expire).
    pub fn expiry_due(&self) -> Option<u64> {
        match self.expiry_due.load(Ordering::Relaxed) {
            u64::MAX => None,
            at => Some(at.saturating_add(self.expiry_skew_ms)),
        }
    }

    /// Purges expired values now if any are due: flushes and compacts the
    /// whole store, which shrinks each expired value to its remains (the
    /// compaction filter) and notes when the next ones are due. Returns
    /// whether it ran.
    pub fn purge_expired(&self) -> Result<bool, StoreError> {
        if self
            .expiry_due()
            .is_none_or(|due| self.clock.now_millis() < due)
        {
            return Ok(false);
        }
        // Cleared first: the compaction's filter and writes meanwhile note
        // the values still to expire.
        self.expiry_due.store(u64::MAX, Ordering::Relaxed);
        self.engine.flush()?;
        self.engine.compact()?;
        Ok(true)
    }

    /// `set` with its clock bounded, as every state this store writes is.
    fn bounded(&self, mut set: SiblingSet) -> SiblingSet {
        set.prune(self.max_clock_entries);
        set
    }

    /// Runs `f` on the Merkle tree (flushed first, so answers are O(1) per
    /// node). Keep `f` short: writes wait for it.
    pub fn with_tree<T>(&self, f: impl FnOnce(&MerkleTree) -> T) -> T {
        let mut tree = self.tree.lock().unwrap_or_else(|p| p.into_inner());
        tree.flush();
        f(&tree)
    }

    /// The tree rebuilt from what the engine holds now (tests compare it with
    /// the incrementally maintained one).
    pub fn rebuilt_tree(&self) -> Result<MerkleTree, StoreError> {
        let shape = self.with_tree(|t| t.shape());
        rebuild_tree(&self.engine, shape).map(|(tree, _)| tree)
    }

    fn tree_update(&self, key: &[u8], old: Option<&[u8; 32]>, new: Option<&[u8; 32]>) {
        let position = keys::position(key);
        let mut tree = self.tree.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = tree.update(position, key, old, new) {
            // Only a removal from an empty leaf fails, which would mean the
            // tree and the engine disagree; the next diff with a peer repairs
            // the data and the next restart rebuilds the tree.
            tracing::error!(error = %e, "merkle tree update refused");
        }
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
        let position = keys::position(key);
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
    pub fn coordinate(
        &self,
        key: &[u8],
        context: &Context,
        content: Content,
        now: u64,
        hint_for: Option<&str>,
    ) -> Result<SiblingSet, StoreError> {
        self.coordinate_begin(key, context, content, now, hint_for)?
            .wait()
    }

    /// Appends the deletion of a storage key; the caller waits for the commit
    /// after releasing the key's stripe.
    fn append_delete(&self, storage_key: Vec<u8>) -> Result<Commit, StoreError> {
        let mut batch = WriteBatch::new();
        batch.delete(storage_key);
        Ok(self.engine.append(batch)?)
    }

    fn written<T>(&self, value: T, commit: Commit) -> Written<T> {
        Written::new(value, commit, self.write_timeout)
    }

    /// [`Store::coordinate`] up to the append: the counter is minted and the
    /// new state appended under the key's stripe, so that only one writer at
    /// a time mints for a key on this replica; the fsync is awaited after.
    ///
    /// With `hint_for`, this node stands in for a down owner: the new version
    /// is stored as a hint for that owner as well as in the local data. The
    /// data copy is what keeps this actor's counters for `key` monotonic: a
    /// hint is deleted once delivered, and minting from it alone would hand
    /// out the same dot twice for two different values.
    pub fn coordinate_begin(
        &self,
        key: &[u8],
        context: &Context,
        content: Content,
        now: u64,
        hint_for: Option<&str>,
    ) -> Result<Written<SiblingSet>, StoreError> {
        self.mint_begin(key, Some(context), content, now, hint_for)
    }

    /// [`Store::coordinate_begin`] of a write that supersedes every version
    /// this replica holds for `key` (last writer wins, whatever the bucket's
    /// policy): the coordinator's own state is the context.
    pub fn supersede_begin(
        &self,
        key: &[u8],
        content: Content,
        now: u64,
        hint_for: Option<&str>,
    ) -> Result<Written<SiblingSet>, StoreError> {
        self.mint_begin(key, None, content, now, hint_for)
    }

    /// `context: None` supersedes what this replica holds.
    fn mint_begin(
        &self,
        key: &[u8],
        context: Option<&Context>,
        content: Content,
        now: u64,
        hint_for: Option<&str>,
    ) -> Result<Written<SiblingSet>, StoreError> {
        let hint_key = hint_for.map(|owner| hint_key(owner, key)).transpose()?;
        let _guard = self.lock(key);
        let held = match &hint_key {
            Some(hk) => self.read_hint(hk, key)?,
            None => None,
        };
        if let (Some(owner), None) = (hint_for, &held) {
            self.hints.check_room(owner)?;
        }
        let data_key = data_key(key);
        let stored = self.engine.get(&data_key)?;
        let old_digest = stored.as_deref().map(digest_of);
        let mut set = match self.decode(key, stored)? {
            Some(set) => set,
            // Possibly a key a tombstone GC removed: mint above every
            // counter this actor minted for such keys.
            None => SiblingSet::minting_above(self.mint_floor.load(Ordering::Relaxed)),
        };
        let policy = self.props.policy(key);
        match context {
            Some(context) => policy.update(&mut set, context, &self.actor, content, now),
            None => set.update_newest(&self.actor, content, now),
        }
        .map_err(StoreError::Version)?;
        let set = self.bounded(set);
        self.note_expiry(&set);
        let encoded = set.encode();
        let new_digest = digest_of(&encoded);
        let commit = match hint_key {
            None => {
                let mut batch = WriteBatch::new();
                batch.put(data_key, encoded);
                self.engine.append(batch)?
            }
            Some(hint_key) => {
                let is_new = held.is_none();
                let hinted = match held {
                    Some((held, _)) => self.bounded(policy.sync(&held, &set)),
                    None => set.clone(),
                };
                let mut batch = WriteBatch::new();
                batch.put(data_key, encoded);
                batch.put(hint_key, encode_hint(&hinted, self.clock.now_millis()));
                let commit = self.engine.append(batch)?;
                if let (true, Some(owner)) = (is_new, hint_for) {
                    self.hints.added(owner);
                }
                commit
            }
        };
        self.tree_update(key, old_digest.as_ref(), Some(&new_digest));
        Ok(self.written(set, commit))
    }

    /// Merges `incoming` into the local state of `key`, durably; returns the
    /// merged state.
    pub fn merge(&self, key: &[u8], incoming: &SiblingSet) -> Result<SiblingSet, StoreError> {
        self.merge_begin(key, incoming)?.wait()
    }

    /// [`Store::merge`] up to the append, under the key's stripe. When the
    /// state does not change nothing is appended, but what was read may be a
    /// write still waiting for its fsync, so the commit is a barrier behind it.
    pub fn merge_begin(
        &self,
        key: &[u8],
        incoming: &SiblingSet,
    ) -> Result<Written<SiblingSet>, StoreError> {
        let storage_key = data_key(key);
        let _guard = self.lock(key);
        let stored = self.engine.get(&storage_key)?;
        let old_digest = stored.as_deref().map(digest_of);
        let current = self.decode(key, stored)?;
        let policy = self.props.policy(key);
        let merged = self.bounded(match &current {
            Some(c) => policy.sync(c, incoming),
            None => policy.sync(&SiblingSet::new(), incoming),
        });
        if current.as_ref() == Some(&merged) {
            let commit = self.engine.barrier()?;
            return Ok(self.written(merged, commit));
        }
        self.note_expiry(&merged);
        let encoded = merged.encode();
        let digest = digest_of(&encoded);
        let mut batch = WriteBatch::new();
        batch.put(storage_key, encoded);
        let commit = self.engine.append(batch)?;
        self.tree_update(key, old_digest.as_ref(), Some(&digest));
        Ok(self.written(merged, commit))
    }

    /// Merges many states at once (anti-entropy and range streaming): one
    /// engine batch, so one commit-log sync for the lot. Returns the merged
    /// states in input order and how many keys changed.
    pub fn merge_many(
        &self,
        items: &[(Vec<u8>, SiblingSet)],
    ) -> Result<(Vec<SiblingSet>, usize), StoreError> {
        // Stripes locked in ascending order, each once: every other path
        // holds one stripe at a time, so this cannot deadlock.
        let mut stripes: Vec<usize> = items.iter().map(|(k, _)| stripe_of(k)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        let guards: Vec<_> = stripes
            .iter()
            .map(|&i| self.locks[i].lock().unwrap_or_else(|p| p.into_inner()))
            .collect();
        let mut batch = WriteBatch::new();
        let mut merged_all = Vec::with_capacity(items.len());
        let mut updates = Vec::new();
        // A key twice in one batch: the second merge must see the first.
        // Ordered, so the batch (and a simulation's trace) is the same on
        // every run.
        let mut pending: std::collections::BTreeMap<&[u8], (Option<[u8; 32]>, SiblingSet)> =
            std::collections::BTreeMap::new();
        for (key, incoming) in items {
            let (old_digest, current) = match pending.get(key.as_slice()) {
                Some((d, set)) => (*d, Some(set.clone())),
                None => {
                    let stored = self.engine.get(&data_key(key))?;
                    (stored.as_deref().map(digest_of), self.decode(key, stored)?)
                }
            };
            let policy = self.props.policy(key);
            let merged = self.bounded(match &current {
                Some(c) => policy.sync(c, incoming),
                None => policy.sync(&SiblingSet::new(), incoming),
            });
            if current.as_ref() != Some(&merged) {
                pending.insert(key.as_slice(), (old_digest, merged.clone()));
            } else if let Some(entry) = pending.get_mut(key.as_slice()) {
                entry.1 = merged.clone();
            }
            merged_all.push(merged);
        }
        let changed = pending.len();
        for (key, (old_digest, set)) in pending {
            self.note_expiry(&set);
            let encoded = set.encode();
            updates.push((key.to_vec(), old_digest, digest_of(&encoded)));
            batch.put(data_key(key), encoded);
        }
        let commit = if batch.is_empty() {
            // Unchanged states may be writes still waiting for their fsync.
            self.engine.barrier()?
        } else {
            self.engine.append(batch)?
        };
        for (key, old, new) in updates {
            self.tree_update(&key, old.as_ref(), Some(&new));
        }
        // The fsync is waited for without the stripes, which inline RPCs on
        // the runtime would otherwise wait on.
        drop(guards);
        commit.wait()?;
        Ok((merged_all, changed))
    }

    /// The local states of many keys, in order.
    pub fn read_many(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<SiblingSet>>, StoreError> {
        keys.iter().map(|k| self.read(k)).collect()
    }

    /// Deletes data keys whose state is only tombstones older than the grace
    /// period, under their lock, removing them from the tree. Visits at most
    /// `limit` keys per call and returns how many it purged.
    pub fn purge_tombstones(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let mut candidates = Vec::new();
        let mut visited = 0;
        'spaces: for space in [DATA, BUCKET] {
            for item in self
                .engine
                .scan([space].as_slice()..[space + 1].as_slice())?
            {
                if visited >= limit {
                    break 'spaces;
                }
                visited += 1;
                let (k, v) = item?;
                if !keep_after_grace(&k, &v, now_ms, self.grace_ms) {
                    candidates.push(k);
                }
            }
        }
        let mut purged = 0;
        for k in candidates {
            let Some(key) = wire_of(&k) else {
                continue;
            };
            let guard = self.lock(&key);
            // Re-read under the lock: a write may have revived the key.
            let Some(v) = self.engine.get(&k)? else {
                continue;
            };
            if keep_after_grace(&k, &v, now_ms, self.grace_ms) {
                continue;
            }
            let commit = self.append_delete(k.clone())?;
            self.tree_update(&key, Some(&digest_of(&v)), None);
            drop(guard);
            commit.wait()?;
            purged += 1;
            self.counters
                .tombstones_purged
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(purged)
    }

    /// Tombstone GC candidates: data keys whose state is dead (tombstones,
    /// and values expired for longer than `expiry.max_skew_ms`), with the
    /// digest of that state; at most `limit`, from `after` (a
    /// storage key; exclusive) on, and where the scan stopped.
    pub fn tombstone_candidates(
        &self,
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Candidate>, Option<Vec<u8>>), StoreError> {
        let mut out = Vec::new();
        let dead_before = self.clock.now_millis().saturating_sub(self.expiry_skew_ms);
        let start = after.map_or_else(
            || vec![DATA],
            |a| {
                let mut k = a.to_vec();
                k.push(0);
                k
            },
        );
        for item in self
            .engine
            .scan(start.as_slice()..[BUCKET + 1].as_slice())?
        {
            let (k, v) = item?;
            if !matches!(k.first(), Some(&DATA | &BUCKET)) {
                continue;
            }
            let Ok(set) = SiblingSet::decode(&v) else {
                continue;
            };
            if set.is_dead(dead_before) {
                if let Some(key) = wire_of(&k) {
                    out.push((key, digest_of(&v)));
                }
            }
            if out.len() >= limit {
                return Ok((out, Some(k)));
            }
        }
        Ok((out, None))
    }

    /// What a tombstone GC asks of each member about `key`: the digest of
    /// its state (`None`: it holds none) and whether it holds a hint for it
    /// (for any owner).
    pub fn gc_state(&self, key: &[u8]) -> Result<(Option<[u8; 32]>, bool), StoreError> {
        let digest = self.engine.get(&data_key(key))?.map(|v| digest_of(&v));
        let mut hinted = false;
        for (owner, _) in self.hints_by_owner() {
            if self.engine.get(&hint_key(&owner, key)?)?.is_some() {
                hinted = true;
                break;
            }
        }
        Ok((digest, hinted))
    }

    /// Removes `key`'s state if it is still exactly the dead state (only
    /// tombstones and expired values) whose digest is `digest` (a write since the GC's check changes it, and then
    /// the key stays). The highest counter this actor minted for the key is
    /// made durable as the mint floor in the same batch. Returns whether it
    /// removed it.
    pub fn gc_purge(&self, key: &[u8], digest: &[u8; 32]) -> Result<bool, StoreError> {
        let storage_key = data_key(key);
        let guard = self.lock(key);
        let Some(v) = self.engine.get(&storage_key)? else {
            return Ok(false);
        };
        if digest_of(&v) != *digest {
            return Ok(false);
        }
        let set = SiblingSet::decode(&v).map_err(|source| StoreError::Corrupt {
            key: keys::display(key),
            source,
        })?;
        let dead_before = self.clock.now_millis().saturating_sub(self.expiry_skew_ms);
        if !set.is_dead(dead_before) {
            return Ok(false);
        }
        let minted = set.clock().get(&self.actor).max(set.counter_floor());
        let floor = self
            .mint_floor
            .fetch_max(minted, Ordering::Relaxed)
            .max(minted);
        let mut batch = WriteBatch::new();
        batch.delete(storage_key);
        batch.put(
            meta_key(meta::MINT_FLOOR.as_bytes()),
            floor.to_be_bytes().to_vec(),
        );
        let commit = self.engine.append(batch)?;
        self.tree_update(key, Some(digest), None);
        drop(guard);
        commit.wait()?;
        self.counters
            .tombstones_purged
            .fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// One page of the data keys in `ranges` (ring token ranges, each one
    /// ordered scan), from `cursor`, up to `max_keys` keys or about
    /// `max_bytes` of values. With `values` false only digests are returned
    /// (anti-entropy's listing); with it true the states too (streaming).
    pub fn scan_ranges(
        &self,
        ranges: &[TokenRange],
        cursor: Option<&ScanCursor>,
        max_keys: usize,
        max_bytes: usize,
        values: bool,
    ) -> Result<ScanPage, StoreError> {
        let mut page = ScanPage::default();
        let mut bytes = 0usize;
        // The range index and storage key of the last entry taken.
        let mut last_at: Option<(u32, Vec<u8>)> = None;
        let first = cursor.map_or(0, |c| c.range as usize);
        if cursor.is_some() && first >= ranges.len() {
            return Err(StoreError::BadCursor);
        }
        for (index, range) in ranges.iter().enumerate().skip(first) {
            let after = cursor
                .filter(|c| c.range as usize == index)
                .map(|c| &c.after);
            if let Some(after) = after {
                if wire_of(after).is_none() {
                    return Err(StoreError::BadCursor);
                }
            }
            let mut segments = Vec::new();
            for space in self.spaces()? {
                segments.extend(storage_segments(&space, *range));
            }
            // Resume inside the segment that holds the cursor; earlier
            // segments are done.
            let (skip, mut from) = match after {
                None => (0, None),
                Some(a) => match segments.iter().position(|(lo, hi)| {
                    lo.as_slice() <= a.as_slice() && a.as_slice() < hi.as_slice()
                }) {
                    Some(i) => (i, Some(a.clone())),
                    None => return Err(StoreError::BadCursor),
                },
            };
            for (lo, hi) in segments.into_iter().skip(skip) {
                let start = match from.take() {
                    Some(a) => std::ops::Bound::Excluded(a),
                    None => std::ops::Bound::Included(lo),
                };
                let bounds = (start, std::ops::Bound::Excluded(hi));
                for item in self.engine.scan::<Vec<u8>, _>(bounds)? {
                    let (k, v) = item?;
                    let size = k.len() + if values { v.len() } else { 32 };
                    if bytes + size > max_bytes {
                        // Stop before the entry that would overflow the
                        // budget (a page always takes at least one).
                        if let Some((range, after)) = last_at.take() {
                            page.next = Some(ScanCursor { range, after });
                            return Ok(page);
                        }
                    }
                    bytes += size;
                    last_at = Some((index as u32, k.clone()));
                    let Some(key) = wire_of(&k) else {
                        continue;
                    };
                    let siblings = if values {
                        self.decode(&key, Some(v.clone()))?
                    } else {
                        None
                    };
                    page.entries.push(ScanEntry {
                        digest: digest_of(&v),
                        key,
                        siblings,
                    });
                    if page.entries.len() >= max_keys {
                        page.next = Some(ScanCursor {
                            range: index as u32,
                            after: k,
                        });
                        return Ok(page);
                    }
                }
            }
        }
        Ok(page)
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

    /// The data-space prefixes this store holds keys under: the default
    /// bucket's, then each other bucket's in name order (one seek per
    /// bucket, so a scan over every bucket costs the buckets it meets).
    fn spaces(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = vec![vec![DATA]];
        let mut from = vec![BUCKET];
        let end = [BUCKET + 1];
        loop {
            let Some(item) = self.engine.scan(from.as_slice()..end.as_slice())?.next() else {
                break;
            };
            let (k, _) = item?;
            let len = k.get(1).copied().unwrap_or(0) as usize;
            let Some(prefix) = k.get(..2 + len) else {
                break;
            };
            let prefix = prefix.to_vec();
            match hints::prefix_successor(&prefix) {
                Some(next) => from = next,
                None => {
                    out.push(prefix);
                    break;
                }
            }
            out.push(prefix);
        }
        Ok(out)
    }

    /// Up to `max_keys` keys of `bucket` (or about `max_bytes` of their
    /// skeletons) in `(position, key)` order from `position` (after the key
    /// `after` there). Reads that bucket's space only, so listing a small
    /// bucket costs its own keys whatever else the node holds.
    pub fn list_bucket(
        &self,
        bucket: &str,
        position: u64,
        after: Option<&[u8]>,
        max_keys: usize,
        max_bytes: usize,
    ) -> Result<ListPage, StoreError> {
        let space = space_of(bucket);
        let mut from = space.clone();
        from.extend_from_slice(&position.to_be_bytes());
        let start = match after {
            Some(key) => {
                from.extend_from_slice(key);
                std::ops::Bound::Excluded(from)
            }
            None => std::ops::Bound::Included(from),
        };
        let end = match hints::prefix_successor(&space) {
            Some(end) => std::ops::Bound::Excluded(end),
            None => std::ops::Bound::Unbounded,
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        for item in self.engine.scan::<Vec<u8>, _>((start, end))? {
            if out.len() >= max_keys || bytes >= max_bytes {
                return Ok(ListPage {
                    entries: out,
                    more: true,
                });
            }
            let (k, v) = item?;
            let Some(pos) = k
                .get(space.len()..space.len() + 8)
                .and_then(|p| <[u8; 8]>::try_from(p).ok())
            else {
                continue;
            };
            let key = k[space.len() + 8..].to_vec();
            let skeleton = self.decode(&k, Some(v))?.unwrap_or_default().skeleton();
            bytes += key.len() + 64 + skeleton.clock().len() * 32;
            out.push(ListEntry {
                position: u64::from_be_bytes(pos),
                key,
                skeleton,
            });
        }
        Ok(ListPage {
            entries: out,
            more: false,
        })
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

    /// Purges expired tombstones, then runs a compaction now (tests use it
    /// to check tombstone purging).
    pub fn compact(&self) -> Result<(), StoreError> {
        self.purge_tombstones(self.clock.now_millis(), usize::MAX)?;
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
                    key: keys::display(key),
                    source,
                }),
        }
    }
}

fn stripe_of(key: &[u8]) -> usize {
    (keys::position(key) as usize) % STRIPES
}

/// The tree over every data key, and the earliest expiry instant of a
/// value whose bytes are still held (`u64::MAX`: none).
fn rebuild_tree(engine: &Engine, shape: TreeShape) -> Result<(MerkleTree, u64), StoreError> {
    let mut entries = Vec::new();
    let mut due = u64::MAX;
    for space in [DATA, BUCKET] {
        for item in engine.scan([space].as_slice()..[space + 1].as_slice())? {
            let (k, v) = match item {
                Ok(kv) => kv,
                Err(e) => {
                    // Serve what is intact: the keys past the damage are
                    // missing from the tree, so diffs with peers show them as
                    // differing and anti-entropy brings them back.
                    tracing::error!(error = %e, "merkle rebuild stopped at damaged data");
                    break;
                }
            };
            let Some(key) = wire_of(&k) else {
                continue;
            };
            if SiblingSet::may_expire(&v) {
                if let Some(at) = SiblingSet::decode(&v).ok().and_then(|s| s.next_expiry()) {
                    due = due.min(at);
                }
            }
            entries.push((keys::position(&key), key, digest_of(&v)));
        }
    }
    Ok((MerkleTree::rebuild(shape, entries), due))
}

/// Compaction's verdict on a data entry that holds values with a TTL:
/// expired values (by `cutoff`) shrink to their remains; the others are
/// noted as due later. Undecodable bytes are kept as they are.
fn expiry_verdict(
    value: &[u8],
    cutoff: u64,
    counters: &crate::observe::NodeCounters,
    due: &AtomicU64,
) -> shoal_storage::Verdict {
    let Ok(mut set) = SiblingSet::decode(value) else {
        return shoal_storage::Verdict::Keep;
    };
    let freed = set.purge_expired(cutoff);
    if let Some(at) = set.next_expiry() {
        due.fetch_min(at, Ordering::Relaxed);
    }
    if freed == 0 {
        return shoal_storage::Verdict::Keep;
    }
    let encoded = set.encode();
    counters.expired_purged.fetch_add(1, Ordering::Relaxed);
    counters.expired_bytes_reclaimed.fetch_add(
        value.len().saturating_sub(encoded.len()) as u64,
        Ordering::Relaxed,
    );
    shoal_storage::Verdict::Replace(encoded)
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

/// The storage-key segments `[lo, hi)` of a token range in one bucket's
/// space, in scan order: a wrapping range is its part up to the top of the
/// ring, then from zero.
fn storage_segments(space: &[u8], range: TokenRange) -> Vec<(Vec<u8>, Vec<u8>)> {
    let at = |p: u64| {
        let mut k = space.to_vec();
        k.extend_from_slice(&p.to_be_bytes());
        k
    };
    let top = hints::prefix_successor(space).unwrap_or_else(|| vec![u8::MAX; 9]);
    if range.start < range.end {
        vec![(at(range.start), at(range.end))]
    } else if range.end == 0 {
        vec![(at(range.start), top)]
    } else {
        vec![(at(range.start), top), (at(0), at(range.end))]
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

/// The storage key of a wire key: its bucket's space, its ring position,
/// its user key. A malformed wire key (refused by every RPC before it gets
/// here) is stored as a default key of its whole bytes.
pub fn data_key(wire: &[u8]) -> Vec<u8> {
    let (space, key) = match keys::split(wire) {
        Ok((bucket, key)) => (space_of(bucket), key),
        Err(_) => (vec![DATA], wire),
    };
    let mut k = Vec::with_capacity(space.len() + 8 + key.len());
    k.extend_from_slice(&space);
    k.extend_from_slice(&keys::position(wire).to_be_bytes());
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

/// Compaction filter: drop a data or hint entry whose state is only
/// tombstones, all older than the grace period (when one is set). Anything undecodable is kept
/// (purging is never the way to handle corruption).
fn keep_after_grace(key: &[u8], value: &[u8], now_ms: u64, grace_ms: u64) -> bool {
    // 0: no grace purge at all (the default); the tombstone GC decides.
    if key.first() == Some(&META) || grace_ms == 0 {
        return true;
    }
    let decoded = if key.first() == Some(&HINT) {
        decode_hint(value).map(|(set, _)| set)
    } else {
        SiblingSet::decode(value)
    };
    match decoded {
        Ok(set) if set.is_tombstone_only() => match set.latest_write_time() {
            Some(t) => now_ms.saturating_sub(t) < grace_ms,
            None => true,
        },
        _ => true,
    }
}

#[cfg(test)]
mod tests;
