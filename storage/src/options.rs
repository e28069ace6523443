//! Engine configuration.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::fs::{Fs, StdFs};

/// When the commit log is fsynced, which decides what survives a machine crash.
///
/// A process crash (SIGKILL) loses nothing written to the OS; only the engine's
/// in-memory log buffer is at risk, and that buffer is written out before every fsync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// Every write is fsynced before it is acknowledged: before its call returns,
    /// or before its [`crate::Commit`] resolves. Concurrent writers share one fsync
    /// (group commit): the engine's commit thread writes everyone's buffered
    /// records and fsyncs once, then wakes the writers it covered.
    Always,
    /// A background thread writes and fsyncs the log every interval; a machine crash
    /// loses at most about one interval of acknowledged writes.
    Periodic(Duration),
    /// The log is written to the OS when its buffer fills and fsynced only by flush
    /// and close (close also fsyncs older segments whose memtables are not flushed
    /// yet). Fastest; a crash may lose recent writes.
    Never,
}

/// What recovery does with a commit log record that is corrupt in the middle of a
/// segment (a torn tail, at the end of a segment, is always truncated silently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WalRecovery {
    /// Refuse to open, returning [`crate::Error::CorruptRecord`]: the operator decides.
    Strict,
    /// Keep the records before the damage, skip the rest of that segment, report the
    /// damage in [`crate::RecoveryReport`] and open. In a replicated store the lost
    /// suffix is repaired from other replicas.
    Salvage,
}

/// Where flushes, compactions and periodic log syncs run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Background {
    /// Dedicated threads flush frozen memtables, compact and (under
    /// [`SyncMode::Periodic`]) sync the log, off the writers' path.
    #[default]
    Threads,
    /// No threads at all: a write that fills the memtable flushes it (and compacts, if
    /// due) on the caller's thread before returning. For deterministic simulation,
    /// where a thread outside the simulator would break reproducibility and could not
    /// reach a simulated file system. `SyncMode::Periodic` needs a thread and is
    /// refused at open with [`crate::Error::InvalidOptions`].
    Inline,
}

/// What compaction does with one live entry: see [`CompactionFilter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Write it out as it is.
    Keep,
    /// Purge it.
    Purge,
    /// Write out this value in its place (the node shrinks expired values
    /// to what it must remember of them).
    Replace(Vec<u8>),
}

/// Decides during compaction what becomes of each live value.
///
/// The engine applies a purge only where it is safe: when the compaction
/// includes the oldest table the entry is dropped; otherwise it is replaced by
/// a tombstone so that no older version can resurface. A replacement is
/// written as the entry's value, so it must be what a reader may see in the
/// entry's place at any time from then on. The node uses it to purge its own
/// tombstones (ordinary values here) after their grace period, and to shrink
/// expired values.
pub type CompactionFilter = Arc<dyn Fn(&[u8], &[u8]) -> Verdict + Send + Sync>;

/// Told how long each commit log fsync took: the node feeds its
/// `shoal_storage_fsync_duration_seconds` histogram from it. It runs on the
/// commit thread right after the fsync, so it must be cheap (an atomic add).
pub type SyncObserver = Arc<dyn Fn(Duration) + Send + Sync>;

/// Engine configuration; `Options::default()` is a sensible production setting.
#[derive(Clone)]
pub struct Options {
    /// Commit log durability; see [`SyncMode`].
    pub sync: SyncMode,
    /// Approximate bytes the active memtable holds before it is frozen and flushed.
    pub memtable_bytes: usize,
    /// Frozen memtables allowed to wait for flushing before writers stall.
    pub max_immutable_memtables: usize,
    /// Target size of an SSTable data block, uncompressed.
    pub block_bytes: usize,
    /// Bloom filter bits per key; 10 gives about 1% false positives.
    pub bloom_bits_per_key: u32,
    /// Bytes of decoded blocks kept in memory across all tables.
    pub block_cache_bytes: usize,
    /// Number of tables at which background compaction merges some of them.
    pub compaction_trigger: usize,
    /// Whether compaction runs on its own when the trigger is reached (on a thread, or
    /// inline after a flush under [`Background::Inline`]); explicit `compact` always
    /// works.
    pub background_compaction: bool,
    /// Longest key accepted; keys must be non-empty.
    pub max_key_len: usize,
    /// Longest value accepted.
    pub max_value_len: usize,
    /// What recovery does with mid-segment log corruption.
    pub wal_recovery: WalRecovery,
    /// How long a write waits for a stalled flush or an fsync before it fails.
    pub write_timeout: Duration,
    /// Optional purge predicate applied during compaction; see [`CompactionFilter`].
    pub compaction_filter: Option<CompactionFilter>,
    /// The file system the engine's files live in; [`StdFs`] except in simulations
    /// and crash tests.
    pub fs: Arc<dyn Fs>,
    /// Whether flushing and compaction run on background threads or inline.
    pub background: Background,
    /// Optional observer of commit log fsync times; see [`SyncObserver`].
    pub sync_observer: Option<SyncObserver>,
    /// Zeros written ahead of the commit log's appends, this many bytes at a
    /// time (0: none). An append that grows the file makes every `fdatasync`
    /// also write the inode; inside zeros already on disk it writes only the
    /// data, which on ext4 measured 122 -> 80 us per fsync and 54 -> 36 us of
    /// CPU (BENCHMARKS.md). Replay ends where only zeros remain.
    pub log_preallocate_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncMode::Always,
            memtable_bytes: 32 << 20,
            max_immutable_memtables: 4,
            block_bytes: 4096,
            bloom_bits_per_key: 10,
            block_cache_bytes: 64 << 20,
            compaction_trigger: 4,
            background_compaction: true,
            max_key_len: 64 << 10,
            max_value_len: 64 << 20,
            wal_recovery: WalRecovery::Strict,
            write_timeout: Duration::from_secs(30),
            compaction_filter: None,
            fs: Arc::new(StdFs),
            background: Background::Threads,
            sync_observer: None,
            log_preallocate_bytes: 1 << 20,
        }
    }
}

impl Options {
    /// The false-positive rate the Bloom filter is designed for at the configured
    /// bits per key, `(1 - e^(-k/b))^k` with the optimal `k`, to compare with the
    /// measured rate in [`crate::Stats`].
    pub fn expected_false_positive_rate(&self) -> f64 {
        let b = f64::from(self.bloom_bits_per_key.max(1));
        let k = f64::from(crate::bloom::num_probes(self.bloom_bits_per_key));
        (1.0 - (-k / b).exp()).powf(k)
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("sync", &self.sync)
            .field("memtable_bytes", &self.memtable_bytes)
            .field("max_immutable_memtables", &self.max_immutable_memtables)
            .field("block_bytes", &self.block_bytes)
            .field("bloom_bits_per_key", &self.bloom_bits_per_key)
            .field("block_cache_bytes", &self.block_cache_bytes)
            .field("compaction_trigger", &self.compaction_trigger)
            .field("background_compaction", &self.background_compaction)
            .field("max_key_len", &self.max_key_len)
            .field("max_value_len", &self.max_value_len)
            .field("wal_recovery", &self.wal_recovery)
            .field("write_timeout", &self.write_timeout)
            .field(
                "compaction_filter",
                &self.compaction_filter.as_ref().map(|_| "<fn>"),
            )
            .field("fs", &self.fs)
            .field("background", &self.background)
            .field("log_preallocate_bytes", &self.log_preallocate_bytes)
            .finish()
    }
}
