//! The engine: ties the commit log, memtables, tables and manifest together.
//!
//! This file keeps the public [`Engine`] API, the state its handle shares with the
//! background threads ([`Shared`], whose doc gives the lock order) and `install`, the
//! one step both table-writing jobs share. Each duty is a submodule (an `impl Shared`
//! block, or free functions), and the submodules call each other in one direction
//! only, so each can be read knowing only the ones below it:
//!
//! - `write`: validation, back-pressure, append, memtable freeze; uses `background`
//!   (inline work after a write) and `group_commit`.
//! - `background`: the threads and their inline stand-in; uses `flush`,
//!   `compaction` and `group_commit`.
//! - `flush`, `compaction`: the two jobs that write tables; `compaction` asks the
//!   pure `compaction_policy` what to merge.
//! - `group_commit`: one fsync for every waiting writer, on the commit thread (or
//!   inline); uses `commit`.
//! - `commit`: [`Commit`], the future a write's durability is, and the queue of
//!   commits waiting for an fsync.
//! - `recovery`: what `open` does before the engine exists.
//! - `files`: file names and table writing, for recovery and both jobs.

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::Instant;

use crate::bloom;
use crate::error::{io_err, Error, Result};
use crate::fs::OpenMode;
use crate::iter::{Iter, MemIter, Merger, Source};
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::options::{Background, Options, SyncMode};
use crate::sstable::{BlockCache, Table, TableIter};
use crate::wal::{LogWriter, Op};

mod background;
mod commit;
#[cfg(test)]
mod commit_tests;
mod compaction;
mod compaction_policy;
mod files;
mod flush;
mod group_commit;
mod recovery;
mod resume;
mod write;

pub use commit::Commit;
use files::parse_name;
pub use recovery::RecoveryReport;

/// Locks a mutex, ignoring poisoning: every critical section here leaves its data
/// consistent at each step, and a stuck lock would hang every later caller.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Counters for monitoring and benchmarks, from [`Engine::stats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    /// Live tables.
    pub tables: usize,
    /// Bytes of live tables.
    pub table_bytes: u64,
    /// Entries in live tables, counting shadowed versions and tombstones.
    pub table_entries: u64,
    /// Approximate bytes in the active memtable.
    pub memtable_bytes: usize,
    /// Frozen memtables waiting to be flushed.
    pub immutable_memtables: usize,
    /// Key and value bytes written by callers since open.
    pub user_bytes_written: u64,
    /// Bytes appended to the commit log since open.
    pub wal_bytes_written: u64,
    /// Bytes of tables written by memtable flushes since open.
    pub flush_bytes_written: u64,
    /// Bytes of tables written by compactions since open.
    pub compaction_bytes_written: u64,
    /// Memtable flushes since open.
    pub flushes: u64,
    /// Compactions since open.
    pub compactions: u64,
    /// Group commit fsyncs of the commit log since open (`SyncMode::Always` and
    /// `Periodic`); writes over this is how many writes one fsync covered.
    pub commit_syncs: u64,
    /// Table lookups the Bloom filter answered "absent".
    pub bloom_negatives: u64,
    /// Table lookups the Bloom filter let through for a key the table lacked.
    pub bloom_false_positives: u64,
    /// The most recent background flush or compaction failure, if any.
    pub last_background_error: Option<String>,
}

impl Stats {
    /// Bytes written to disk (log, flushes, compactions) per byte written by callers.
    pub fn write_amplification(&self) -> f64 {
        let disk =
            self.wal_bytes_written + self.flush_bytes_written + self.compaction_bytes_written;
        disk as f64 / self.user_bytes_written.max(1) as f64
    }

    /// Measured false-positive rate over lookups of keys a table did not hold.
    pub fn bloom_false_positive_rate(&self) -> f64 {
        let absent = self.bloom_negatives + self.bloom_false_positives;
        self.bloom_false_positives as f64 / absent.max(1) as f64
    }
}

/// An atomic group of puts and deletes: after a crash all of it or none of it is
/// visible, because it is one commit log record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    ops: Vec<Op>,
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> WriteBatch {
        WriteBatch::default()
    }

    /// Adds a put; a later op on the same key in the batch wins.
    pub fn put(&mut self, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push((key.into(), Some(value.into())));
        self
    }

    /// Adds a delete.
    pub fn delete(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.ops.push((key.into(), None));
        self
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch has no operations.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The set of memtables and tables a read consults, swapped atomically.
struct Version {
    active: Arc<Memtable>,
    /// Frozen memtables, newest first.
    immutables: Vec<Arc<Memtable>>,
    /// Live tables, newest first.
    tables: Vec<Arc<Table>>,
}

struct WriteState {
    log: LogWriter,
    active: Arc<Memtable>,
    /// Records appended since open: the sequence number of the latest, which
    /// group commit compares against `Shared::synced`.
    appended: u64,
}

#[derive(Default)]
struct BgState {
    shutdown: bool,
    compact_wanted: bool,
    last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    user: AtomicU64,
    wal: AtomicU64,
    flush: AtomicU64,
    compaction: AtomicU64,
    flushes: AtomicU64,
    compactions: AtomicU64,
    commit_syncs: AtomicU64,
    bloom_neg: AtomicU64,
    bloom_fp: AtomicU64,
}

/// The state the [`Engine`] handle shares with its background threads.
///
/// # Lock order
///
/// While holding one of the numbered locks a thread takes only locks further down
/// the list, never one above it; every path that holds two at once keeps to this, so
/// they cannot deadlock:
///
/// 1. `flush_lock` or `compaction_lock`. Each serialises one job for its whole run
///    (read the table set, write a table, `install` it), so two flushes never write
///    the same memtable and two compactions never merge the same tables. They come
///    first because the job takes the others while holding one. No thread holds both:
///    a flush and a compaction may run at once, and `install` keeps them consistent.
/// 2. `write`. `freeze` runs under it (from `append` when the memtable fills, and from
///    `Engine::flush`) and takes `version` to publish the new memtable before any
///    writer can append to it; `close` keeps it while it reads `manifest`, so that no
///    writer rotates the log while it fsyncs the older segments.
/// 3. `manifest`. `install` keeps it from reading the current tables to publishing
///    the new `version`: tables change only under it, so the list it computes from
///    cannot go stale, and readers never see a table set the manifest has not
///    committed.
/// 4. `version`. Nothing is taken under it; readers hold it only to clone the `Arc`.
///
/// `sync` comes before that chain, `commits` and `bg` outside it:
///
/// - `sync` serialises fsync rounds of the commit log (the commit thread's, the
///   periodic thread's, an inline writer's) with each other and with `close`. A round
///   holds it while it takes `write` (twice, to drain the buffer and to recheck the
///   log after its fsync) and `commits`; nothing holding a numbered lock takes it.
/// - `commits` (the queue of commits waiting for an fsync) is a leaf: appenders take
///   it under `write` so the queue stays in sequence order, everyone else alone.
///   Slots are woken after it is released.
/// - `bg` is a leaf: nothing is taken under it. A flush takes it under `flush_lock`
///   (to request a compaction); every other path takes it alone. `wait_for_room`
///   drops it before `stalled`, which takes it again (these mutexes are not
///   reentrant).
///
/// `commits_cv` (the commit thread waiting for work) and `room_cv` (writers waiting
/// for room in the queue) wait with `commits`, `bg_cv` with `bg`. Some conditions change outside
/// the paired mutex (the memtable count is an atomic that `freeze` and `flush_one`
/// change and then notify; `compact_loop` drops `bg` between checking
/// `compact_wanted` and waiting), so a wait can miss its wakeup. Every wait therefore
/// has a timeout and rechecks its condition: a missed wakeup costs at most one
/// timeout, 100 ms to a writer waiting for room, 500 ms to the flush thread and 1 s
/// to the compaction and commit threads. `shutdown` and `synced` change only under their mutex,
/// and every wait checks them under it, so those wakeups are never missed.
///
/// `wal_failed` is a leaf, taken alone or under `write` (by `fail_wal`, which then
/// takes `commits` after releasing it, to fail the queued commits); `try_resume`
/// takes `write` (then `version`), releases both, and only then flushes.
///
/// The locks inside a memtable, the block cache and the file system are leaves
/// below all of these and never call back into the engine. The [`Engine`]'s own
/// `threads` and `dir_lock` are taken only by `close`, one after the other and with
/// none of these held; it joins the threads while holding `threads`, which they
/// never touch.
struct Shared {
    dir: PathBuf,
    opts: Options,
    write: Mutex<WriteState>,
    sync: Mutex<()>,
    /// The highest sequence number an fsync is known to cover; lets a round or a
    /// barrier with nothing new to sync skip the fsync.
    synced: AtomicU64,
    commits: Mutex<commit::Pending>,
    commits_cv: Condvar,
    room_cv: Condvar,
    version: RwLock<Arc<Version>>,
    flush_lock: Mutex<()>,
    compaction_lock: Mutex<()>,
    manifest: Mutex<Manifest>,
    next_file: AtomicU64,
    cache: Arc<BlockCache>,
    bg: Mutex<BgState>,
    bg_cv: Condvar,
    counters: Counters,
    /// [`Options::sync_observer`], kept apart from the options the engine
    /// otherwise reads once.
    sync_observer: Option<crate::options::SyncObserver>,
    closed: AtomicBool,
    immutables: AtomicUsize,
    /// Writers between entering `write` and appending their record; a group commit
    /// round briefly waits for them so that one fsync covers them too.
    joining: AtomicUsize,
    /// Set by a failed commit log append or fsync (the first failure's reason),
    /// cleared by `try_resume` once a fresh segment and tables hold everything;
    /// see `Error::WalFailed`. A leaf lock, read only when `wal_broken` is set.
    wal_failed: Mutex<Option<String>>,
    /// Whether `wal_failed` holds a reason: the writers' fast path.
    wal_broken: AtomicBool,
}

/// A Shoal storage engine over one directory. `Send + Sync`: share it with `Arc`.
pub struct Engine {
    inner: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    recovery: RecoveryReport,
    /// The data directory's `LOCK`, held until `close`.
    dir_lock: Mutex<Option<Box<dyn crate::fs::LockGuard>>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.inner.dir)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Opens (creating if needed) the engine in `dir` and recovers it.
    ///
    /// Recovery replays every commit log segment the manifest does not cover,
    /// truncating torn tails, writes the replayed data to a table and starts a fresh
    /// segment. It fails on a corrupt manifest, on a table whose footer, index or
    /// filter is damaged (its key set is unknown, so serving around it could return
    /// stale data), and on mid-segment log damage under `WalRecovery::Strict`.
    pub fn open(dir: impl AsRef<Path>, opts: Options) -> Result<Engine> {
        let dir = dir.as_ref().to_path_buf();
        if opts.background == Background::Inline {
            if let SyncMode::Periodic(_) = opts.sync {
                return Err(Error::InvalidOptions(
                    "SyncMode::Periodic needs a sync thread, which Background::Inline does \
                     not have; use Always or Never"
                        .into(),
                ));
            }
        }
        let recovery::Recovered {
            dir_lock,
            manifest: man,
            tables,
            next_file,
            log,
            report,
        } = recovery::recover(&dir, &opts)?;

        let active = Arc::new(Memtable::new());
        let inner = Arc::new(Shared {
            cache: Arc::new(BlockCache::new(opts.block_cache_bytes)),
            write: Mutex::new(WriteState {
                log,
                active: active.clone(),
                appended: 0,
            }),
            sync: Mutex::new(()),
            synced: AtomicU64::new(0),
            commits: Mutex::new(commit::Pending::default()),
            commits_cv: Condvar::new(),
            room_cv: Condvar::new(),
            version: RwLock::new(Arc::new(Version {
                active,
                immutables: Vec::new(),
                tables,
            })),
            flush_lock: Mutex::new(()),
            compaction_lock: Mutex::new(()),
            manifest: Mutex::new(man),
            next_file,
            bg: Mutex::new(BgState::default()),
            bg_cv: Condvar::new(),
            counters: Counters::default(),
            sync_observer: opts.sync_observer.clone(),
            closed: AtomicBool::new(false),
            immutables: AtomicUsize::new(0),
            joining: AtomicUsize::new(0),
            wal_failed: Mutex::new(None),
            wal_broken: AtomicBool::new(false),
            dir,
            opts,
        });
        let threads = if inner.inline() {
            inner.request_compaction();
            inner.run_inline_logged();
            Vec::new()
        } else {
            let threads = background::spawn(&inner)?;
            inner.request_compaction();
            threads
        };
        Ok(Engine {
            inner,
            threads: Mutex::new(threads),
            recovery: report,
            dir_lock: Mutex::new(Some(dir_lock)),
        })
    }

    /// What recovery found at open.
    pub fn recovery(&self) -> &RecoveryReport {
        &self.recovery
    }

    /// The value stored under `key`, if any.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.inner.check_open()?;
        self.inner.get(key)
    }

    /// Stores `value` under `key`; returns once it is durable under the sync mode.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Shared::write(&self.inner, vec![(key.to_vec(), Some(value.to_vec()))])?.wait()
    }

    /// Removes `key` (writes a tombstone that shadows older versions); returns
    /// once it is durable under the sync mode.
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        Shared::write(&self.inner, vec![(key.to_vec(), None)])?.wait()
    }

    /// Applies a batch atomically; returns once it is durable under the sync mode.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        self.append(batch)?.wait()
    }

    /// Applies a batch atomically without waiting for its fsync: when this returns
    /// the batch is in the memtable (readers see it) and in the commit log buffer,
    /// and the [`Commit`] resolves once it is durable under the sync mode (at once
    /// unless `SyncMode::Always` with background threads; under
    /// `Background::Inline` the fsync ran in this call). An async caller awaits the
    /// commit instead of parking a thread for the fsync, and may release its own
    /// locks first: a later write's commit covers every earlier one, since the log
    /// is fsynced in order. Acknowledge nothing before the commit resolves `Ok`.
    ///
    /// It may still block, as `write` does, for back-pressure (the memtable
    /// backlog or a full commit queue, each at most `Options::write_timeout`) and
    /// on the occasional memtable rotation, which fsyncs the old segment.
    pub fn append(&self, batch: WriteBatch) -> Result<Commit> {
        if batch.is_empty() {
            self.inner.check_open()?;
            return Ok(Commit::ready(Ok(())));
        }
        Shared::write(&self.inner, batch.ops)
    }

    /// Whether a write now would wait for memtable flushes (the backlog of frozen
    /// memtables is full, usually because flushes fail or lag). `append` then
    /// blocks up to `Options::write_timeout`, so an async caller sends its writes
    /// to a blocking thread while this holds rather than stall its runtime.
    /// Never under `Background::Inline`, whose writes flush or refuse at once.
    pub fn backlogged(&self) -> bool {
        !self.inner.inline()
            && self.inner.immutables.load(Ordering::Acquire)
                >= self.inner.opts.max_immutable_memtables.max(1)
    }

    /// A [`Commit`] that resolves once every write appended before this call is
    /// durable. A caller that read a value some other writer appended and is
    /// still waiting for (so possibly not durable yet) awaits this before it
    /// acknowledges anything based on that value.
    pub fn barrier(&self) -> Result<Commit> {
        Shared::barrier(&self.inner)
    }

    /// Live entries with keys in `range`, ascending. For a full scan use [`Engine::iter`].
    pub fn scan<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Iter> {
        self.inner.check_open()?;
        let own = |b: Bound<&K>| match b {
            Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
            Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let (start, end) = (own(range.start_bound()), own(range.end_bound()));
        let v = self.inner.version();
        let mut sources = Vec::new();
        for m in std::iter::once(&v.active).chain(&v.immutables) {
            sources.push(Source::Mem(MemIter::new(
                m.clone(),
                start.clone(),
                end.clone(),
            )));
        }
        for t in &v.tables {
            sources.push(Source::Table(TableIter::new(
                t.clone(),
                self.inner.cache.clone(),
                start.clone(),
                end.clone(),
            )));
        }
        Ok(Iter {
            merger: Merger::new(sources),
        })
    }

    /// Every live entry, ascending; the node counts and indexes its data with this at
    /// start-up.
    pub fn iter(&self) -> Result<Iter> {
        self.scan::<&[u8], _>(..)
    }

    /// Makes everything written so far durable in tables: freezes the active
    /// memtable and flushes all frozen ones before returning.
    pub fn flush(&self) -> Result<()> {
        self.inner.check_open()?;
        {
            let mut w = lock(&self.inner.write);
            self.inner.freeze(&mut w)?;
        }
        let deadline = Instant::now() + self.inner.opts.write_timeout;
        while self.inner.flush_one()? {
            if Instant::now() > deadline {
                return Err(self.inner.stalled("memtable flush", deadline));
            }
        }
        if self.inner.inline() {
            self.inner.run_inline_logged();
        }
        Ok(())
    }

    /// Merges all tables into one, dropping shadowed versions and tombstones and
    /// applying the compaction filter everywhere. Memtables are not included; call
    /// [`Engine::flush`] first to compact everything.
    pub fn compact(&self) -> Result<()> {
        self.inner.check_open()?;
        self.inner.compact_once(true).map(|_| ())
    }

    /// Counters since open.
    pub fn stats(&self) -> Stats {
        let s = &self.inner;
        let v = s.version();
        let c = &s.counters;
        Stats {
            tables: v.tables.len(),
            table_bytes: v.tables.iter().map(|t| t.size).sum(),
            table_entries: v.tables.iter().map(|t| t.entries).sum(),
            memtable_bytes: v.active.bytes(),
            immutable_memtables: v.immutables.len(),
            user_bytes_written: c.user.load(Ordering::Relaxed),
            wal_bytes_written: c.wal.load(Ordering::Relaxed),
            flush_bytes_written: c.flush.load(Ordering::Relaxed),
            compaction_bytes_written: c.compaction.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            commit_syncs: c.commit_syncs.load(Ordering::Relaxed),
            bloom_negatives: c.bloom_neg.load(Ordering::Relaxed),
            bloom_false_positives: c.bloom_fp.load(Ordering::Relaxed),
            last_background_error: lock(&s.bg).last_error.clone(),
        }
    }

    /// Stops background work, writes and fsyncs the commit log, and rejects further
    /// calls with [`Error::Closed`]. Every pending [`Commit`] is resolved: durable
    /// by this fsync, or failed with it (or with an earlier log failure).
    /// Idempotent; dropping the engine does the same but can only log a failure.
    pub fn close(&self) -> Result<()> {
        let s = &self.inner;
        let synced = {
            // After any running round, and deciding the pending commits before
            // the next: no other fsync of the log may take the write-back error
            // this one should see, and act on it.
            let _round = lock(&s.sync);
            let synced = {
                let mut w = lock(&s.write);
                if s.closed.swap(true, Ordering::SeqCst) {
                    return Ok(());
                }
                if !s.wal_broken.load(Ordering::Acquire) {
                    w.log
                        .drain()
                        .and_then(|()| {
                            w.log
                                .file
                                .sync_all()
                                .map_err(io_err(&w.log.path, "fsync commit log"))
                        })
                        .and_then(|()| match s.opts.sync {
                            SyncMode::Never => s.sync_unflushed_segments(&w.log.path),
                            _ => Ok(()),
                        })
                } else {
                    Ok(())
                }
            };
            // No append happens after `closed`, so this decides every commit.
            if let Err(e) = &synced {
                s.fail_wal(e);
            }
            match s.wal_failed() {
                Ok(()) => s.resolve_pending(None, &commit::Outcome::Durable),
                Err(e) => s.resolve_pending(None, &commit::Outcome::Failed(e.to_string())),
            }
            synced
        };
        // Stop the threads even when the final sync failed: the engine is closed
        // either way, and a second close returns early.
        lock(&s.bg).shutdown = true;
        s.bg_cv.notify_all();
        {
            let mut p = lock(&s.commits);
            p.shutdown = true;
            s.commits_cv.notify_all();
            s.room_cv.notify_all();
        }
        for t in lock(&self.threads).drain(..) {
            if t.join().is_err() {
                tracing::error!("a storage background thread panicked");
            }
        }
        lock(&self.dir_lock).take();
        synced
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!(error = %e, "closing storage engine failed");
        }
    }
}

impl Shared {
    fn version(&self) -> Arc<Version> {
        self.version
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(())
    }

    fn wal_failed(&self) -> Result<()> {
        if !self.wal_broken.load(Ordering::Acquire) {
            return Ok(());
        }
        match lock(&self.wal_failed).as_ref() {
            Some(r) => Err(Error::WalFailed { reason: r.clone() }),
            None => Ok(()),
        }
    }

    /// Marks the commit log failed and fails every queued commit: none of them is
    /// known to be durable, and none may be acknowledged (a commit an earlier fsync
    /// covered was resolved and left the queue before).
    fn fail_wal(&self, e: &Error) {
        let reason = {
            let mut failed = lock(&self.wal_failed);
            if failed.is_none() {
                *failed = Some(e.to_string());
                self.wal_broken.store(true, Ordering::Release);
                tracing::error!(error = %e, "commit log failed; refusing writes until it can be resumed");
            }
            failed.clone().unwrap_or_else(|| e.to_string())
        };
        self.resolve_pending(None, &commit::Outcome::Failed(reason));
    }

    fn last_error(&self) -> String {
        lock(&self.bg)
            .last_error
            .clone()
            .unwrap_or_else(|| "none".into())
    }

    fn stalled(&self, what: &'static str, deadline: Instant) -> Error {
        let waited = self.opts.write_timeout + Instant::now().saturating_duration_since(deadline);
        Error::Stalled {
            what,
            waited,
            last_error: self.last_error(),
        }
    }

    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let v = self.version();
        for m in std::iter::once(&v.active).chain(&v.immutables) {
            if let Some(x) = m.get(key) {
                return Ok(x);
            }
        }
        let h = bloom::hash(key);
        let (mut neg, mut fp) = (0, 0);
        let mut found = None;
        for t in &v.tables {
            if !t.may_contain(h) {
                neg += 1;
                continue;
            }
            match t.get(key, &self.cache)? {
                Some(x) => {
                    found = x;
                    break;
                }
                None => fp += 1,
            }
        }
        if neg > 0 {
            self.counters.bloom_neg.fetch_add(neg, Ordering::Relaxed);
        }
        if fp > 0 {
            self.counters.bloom_fp.fetch_add(fp, Ordering::Relaxed);
        }
        Ok(found)
    }

    fn inline(&self) -> bool {
        self.opts.background == Background::Inline
    }

    /// Fsyncs every commit log segment other than `current` that holds data not yet
    /// in a table. Under `Never` rotation does not fsync the old segment, so without
    /// this a frozen memtable still waiting for its flush at close would be lost in
    /// a machine crash while the newer, fsynced segment survived.
    fn sync_unflushed_segments(&self, current: &Path) -> Result<()> {
        let fs = &*self.opts.fs;
        let log_number = lock(&self.manifest).log_number;
        let names = fs
            .list(&self.dir)
            .map_err(io_err(&self.dir, "list data directory"))?;
        for name in names {
            let path = self.dir.join(&name);
            match parse_name(&name) {
                Some((id, "log")) if id >= log_number && path != current => {
                    // A segment a concurrent flush just removed needs no fsync.
                    match fs.open_write(&path, OpenMode::Append) {
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        f => f
                            .and_then(|f| f.sync_data())
                            .map_err(io_err(&path, "fsync commit log"))?,
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// Commits a new table list (computed from the current one) to the manifest,
    /// then publishes it, dropping `flushed` from the frozen memtables.
    fn install(
        &self,
        new_tables: impl FnOnce(&[Arc<Table>]) -> Vec<Arc<Table>>,
        flushed: Option<&Arc<Memtable>>,
        log_number: Option<u64>,
    ) -> Result<()> {
        let mut m = lock(&self.manifest);
        // Tables change only under the manifest lock, so this list stays current.
        let tables = new_tables(&self.version().tables);
        let next = Manifest {
            next_file: self.next_file.load(Ordering::SeqCst),
            log_number: log_number.unwrap_or(m.log_number).max(m.log_number),
            tables: tables.iter().map(|t| t.id).collect(),
        };
        next.store(&*self.opts.fs, &self.dir)?;
        *m = next;
        let mut vg = self.version.write().unwrap_or_else(PoisonError::into_inner);
        let immutables = vg
            .immutables
            .iter()
            .filter(|x| !flushed.is_some_and(|f| Arc::ptr_eq(x, f)))
            .cloned()
            .collect();
        *vg = Arc::new(Version {
            active: vg.active.clone(),
            immutables,
            tables,
        });
        Ok(())
    }

    fn request_compaction(&self) {
        lock(&self.bg).compact_wanted = true;
        self.bg_cv.notify_all();
    }

    fn record_error(&self, what: &str, e: &Error) {
        tracing::error!(error = %e, "background {what} failed");
        lock(&self.bg).last_error = Some(format!("{what}: {e}"));
    }
}
