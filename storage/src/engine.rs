//! The engine: ties the commit log, memtables, tables and manifest together.

use std::collections::HashSet;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::bloom;
use crate::error::{io_err, Error, Result};
use crate::fs::OpenMode;
use crate::iter::{Iter, MemIter, Merger, Source};
use crate::manifest::{self, Manifest};
use crate::memtable::Memtable;
use crate::options::{Background, Options, SyncMode};
use crate::sstable::{table_path, BlockCache, Entry, Table, TableBuilder, TableIter};
use crate::wal::{self, encode_record, segment_path, Damage, LogWriter, Op};

mod compaction_policy;

use compaction_policy::Choice;

/// Bytes buffered in memory before the log buffer is written to the OS even when no
/// fsync is due; bounds what a process crash loses under `Never`/`Periodic`.
const LOG_BUFFER: usize = 256 << 10;

/// Locks a mutex, ignoring poisoning: every critical section here leaves its data
/// consistent at each step, and a stuck lock would hang every later caller.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What recovery found when the engine was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Live tables opened.
    pub tables: usize,
    /// Commit log segments replayed.
    pub segments_replayed: usize,
    /// Records (write batches) replayed from the commit log.
    pub records_replayed: u64,
    /// Torn records cut from the end of a segment: writes that were in flight at the
    /// crash and never acknowledged under `SyncMode::Always`.
    pub torn_tails: Vec<Damage>,
    /// Mid-segment damage skipped under `WalRecovery::Salvage`.
    pub salvaged: Vec<Damage>,
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
    /// Records appended since open; group commit compares against `SyncState::synced`.
    appended: u64,
}

struct SyncState {
    synced: u64,
    syncing: bool,
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
    bloom_neg: AtomicU64,
    bloom_fp: AtomicU64,
}

struct Shared {
    dir: PathBuf,
    opts: Options,
    write: Mutex<WriteState>,
    sync: Mutex<SyncState>,
    sync_cv: Condvar,
    version: RwLock<Arc<Version>>,
    flush_lock: Mutex<()>,
    compaction_lock: Mutex<()>,
    manifest: Mutex<Manifest>,
    next_file: AtomicU64,
    cache: Arc<BlockCache>,
    bg: Mutex<BgState>,
    bg_cv: Condvar,
    counters: Counters,
    closed: AtomicBool,
    immutables: AtomicUsize,
    /// Writers between entering `write` and appending their record; a group commit
    /// leader briefly waits for them so that one fsync covers them too.
    joining: AtomicUsize,
    /// Set once by the first failed commit log append or fsync; see `Error::WalFailed`.
    wal_failed: OnceLock<String>,
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

/// The file whose lock marks the directory as in use by one engine.
const LOCK_FILE: &str = "LOCK";

fn parse_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 16 {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// Writes `entries` (ascending) to table `id`; `None` if there were none. A partial
/// file is removed on failure.
fn write_table(
    dir: &Path,
    id: u64,
    opts: &Options,
    entries: impl Iterator<Item = Result<Entry>>,
) -> Result<Option<Arc<Table>>> {
    build_table(dir, id, opts, |b| {
        for e in entries {
            let (k, v) = e?;
            b.add(&k, v.as_deref())?;
        }
        Ok(())
    })
}

/// Writes a table from a memtable, borrowing its entries instead of copying them.
fn write_memtable(
    dir: &Path,
    id: u64,
    opts: &Options,
    mem: &Memtable,
) -> Result<Option<Arc<Table>>> {
    build_table(dir, id, opts, |b| mem.for_each_entry(|k, v| b.add(k, v)))
}

fn build_table(
    dir: &Path,
    id: u64,
    opts: &Options,
    fill: impl FnOnce(&mut TableBuilder) -> Result<()>,
) -> Result<Option<Arc<Table>>> {
    let path = table_path(dir, id);
    let fs = &*opts.fs;
    let build = || -> Result<Option<Arc<Table>>> {
        let mut b =
            TableBuilder::create(fs, path.clone(), opts.block_bytes, opts.bloom_bits_per_key)?;
        fill(&mut b)?;
        if b.entries() == 0 {
            drop(b);
            fs.remove_file(&path)
                .map_err(io_err(&path, "remove empty table"))?;
            return Ok(None);
        }
        b.finish()?;
        // The manifest will name this table; its directory entry must be durable
        // before that, or a crash leaves a manifest naming a missing file.
        manifest::sync_dir(fs, dir)?;
        Ok(Some(Arc::new(Table::open(fs, path.clone(), id)?)))
    };
    let r = build();
    if r.is_err() {
        let _ = fs.remove_file(&path);
    }
    r
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
        let fs = opts.fs.clone();
        fs.create_dir_all(&dir)
            .map_err(io_err(&dir, "create data directory"))?;
        // Before reading anything: a second engine on this directory would replay
        // the same log and delete files the first one still uses.
        let lock_path = dir.join(LOCK_FILE);
        let dir_lock = match fs.lock(&lock_path) {
            Ok(guard) => guard,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                return Err(Error::Locked { path: lock_path })
            }
            Err(e) => return Err(io_err(&lock_path, "lock data directory")(e)),
        };
        let mut man = Manifest::load(&*fs, &dir)?.unwrap_or_default();
        let mut report = RecoveryReport::default();
        let live: HashSet<u64> = man.tables.iter().copied().collect();
        let mut segments = Vec::new();
        let mut max_id = 0;
        for name in fs.list(&dir).map_err(io_err(&dir, "list data directory"))? {
            // Removals here need no directory fsync: a file that comes back after a
            // crash is recognised and removed again by the next open.
            if name == "MANIFEST.tmp" {
                let _ = fs.remove_file(&dir.join(&name));
                continue;
            }
            let Some((id, ext)) = parse_name(&name) else {
                continue;
            };
            max_id = max_id.max(id);
            match ext {
                "log" => segments.push(id),
                // A table not in the manifest is the output of a flush or compaction
                // that crashed before committing; its data is still elsewhere.
                "sst" if !live.contains(&id) => {
                    let _ = fs.remove_file(&dir.join(&name));
                }
                _ => {}
            }
        }
        segments.sort_unstable();
        let mut tables = Vec::with_capacity(man.tables.len());
        for &id in &man.tables {
            tables.push(Arc::new(Table::open(&*fs, table_path(&dir, id), id)?));
        }
        let next_file = AtomicU64::new(man.next_file.max(max_id + 1));

        let mem = Memtable::new();
        let mut replayed = Vec::new();
        for &id in &segments {
            let path = segment_path(&dir, id);
            if id < man.log_number {
                let _ = fs.remove_file(&path);
                continue;
            }
            let r = wal::replay_segment(&*fs, &path, opts.wal_recovery, |ops| mem.apply(ops))?;
            report.segments_replayed += 1;
            report.records_replayed += r.records;
            report.torn_tails.extend(r.torn_tail);
            report.salvaged.extend(r.salvaged);
            replayed.push(path);
        }
        let log_id = next_file.fetch_add(1, Ordering::SeqCst);
        let log = LogWriter::create(&*fs, &dir, log_id)?;
        if !mem.is_empty() {
            let id = next_file.fetch_add(1, Ordering::SeqCst);
            if let Some(t) = write_memtable(&dir, id, &opts, &mem)? {
                tables.insert(0, t);
            }
        }
        man = Manifest {
            next_file: next_file.load(Ordering::SeqCst),
            log_number: log_id,
            tables: tables.iter().map(|t| t.id).collect(),
        };
        man.store(&*fs, &dir)?;
        for p in replayed {
            if let Err(e) = fs.remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "could not remove replayed segment");
            }
        }
        report.tables = tables.len();

        let active = Arc::new(Memtable::new());
        let inner = Arc::new(Shared {
            cache: Arc::new(BlockCache::new(opts.block_cache_bytes)),
            write: Mutex::new(WriteState {
                log,
                active: active.clone(),
                appended: 0,
            }),
            sync: Mutex::new(SyncState {
                synced: 0,
                syncing: false,
            }),
            sync_cv: Condvar::new(),
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
            closed: AtomicBool::new(false),
            immutables: AtomicUsize::new(0),
            joining: AtomicUsize::new(0),
            wal_failed: OnceLock::new(),
            dir,
            opts,
        });
        let mut threads = Vec::new();
        if inner.inline() {
            inner.request_compaction();
            inner.run_inline_logged();
            return Ok(Engine {
                inner,
                threads: Mutex::new(threads),
                recovery: report,
                dir_lock: Mutex::new(Some(dir_lock)),
            });
        }
        let spawn = |name: &str, f: fn(&Shared)| {
            let s = inner.clone();
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || f(&s))
                .map_err(io_err(&inner.dir, "spawn background thread"))
        };
        threads.push(spawn("shoal-flush", Shared::flush_loop)?);
        if inner.opts.background_compaction {
            threads.push(spawn("shoal-compact", Shared::compact_loop)?);
        }
        if let SyncMode::Periodic(_) = inner.opts.sync {
            threads.push(spawn("shoal-sync", Shared::sync_loop)?);
        }
        inner.request_compaction();
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

    /// Stores `value` under `key`.
    pub fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.inner.write(vec![(key.to_vec(), Some(value.to_vec()))])
    }

    /// Removes `key` (writes a tombstone that shadows older versions).
    pub fn delete(&self, key: &[u8]) -> Result<()> {
        self.inner.write(vec![(key.to_vec(), None)])
    }

    /// Applies a batch atomically.
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        self.inner.write(batch.ops)
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
            bloom_negatives: c.bloom_neg.load(Ordering::Relaxed),
            bloom_false_positives: c.bloom_fp.load(Ordering::Relaxed),
            last_background_error: lock(&s.bg).last_error.clone(),
        }
    }

    /// Stops background work, writes and fsyncs the commit log, and rejects further
    /// calls with [`Error::Closed`]. Idempotent; dropping the engine does the same but
    /// can only log a failure.
    pub fn close(&self) -> Result<()> {
        let s = &self.inner;
        let synced = {
            let mut w = lock(&s.write);
            if s.closed.swap(true, Ordering::SeqCst) {
                return Ok(());
            }
            if s.wal_failed.get().is_none() {
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
        // Stop the threads even when the final sync failed: the engine is closed
        // either way, and a second close returns early.
        lock(&s.bg).shutdown = true;
        s.bg_cv.notify_all();
        s.sync_cv.notify_all();
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
        match self.wal_failed.get() {
            Some(r) => Err(Error::WalFailed { reason: r.clone() }),
            None => Ok(()),
        }
    }

    fn fail_wal(&self, e: &Error) {
        if self.wal_failed.set(e.to_string()).is_ok() {
            tracing::error!(error = %e, "commit log failed; refusing further writes");
        }
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

    fn validate(&self, ops: &[Op]) -> Result<()> {
        for (k, v) in ops {
            if k.is_empty() || k.len() > self.opts.max_key_len {
                return Err(Error::InvalidKey {
                    len: k.len(),
                    max: self.opts.max_key_len,
                });
            }
            if let Some(v) = v {
                if v.len() > self.opts.max_value_len {
                    return Err(Error::ValueTooLarge {
                        len: v.len(),
                        max: self.opts.max_value_len,
                    });
                }
            }
        }
        Ok(())
    }

    /// Blocks (bounded by `write_timeout`) while too many memtables await flushing.
    fn wait_for_room(&self) -> Result<()> {
        let max = self.opts.max_immutable_memtables.max(1);
        if self.inline() {
            // Nothing else will flush, and waiting would wait forever: retry the
            // flushes an earlier write could not finish, and refuse only when the
            // backlog is full.
            if self.immutables.load(Ordering::Acquire) > 0 {
                self.run_inline_logged();
            }
            if self.immutables.load(Ordering::Acquire) >= max {
                return Err(Error::Stalled {
                    what: "memtable flush",
                    waited: Duration::ZERO,
                    last_error: self.last_error(),
                });
            }
            return Ok(());
        }
        if self.immutables.load(Ordering::Acquire) < max {
            return Ok(());
        }
        let deadline = Instant::now() + self.opts.write_timeout;
        let mut bg = lock(&self.bg);
        while self.immutables.load(Ordering::Acquire) >= max {
            self.check_open()?;
            let now = Instant::now();
            if now >= deadline {
                drop(bg);
                return Err(self.stalled("memtable flush", deadline));
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            bg = self
                .bg_cv
                .wait_timeout(bg, wait)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        Ok(())
    }

    fn write(&self, ops: Vec<Op>) -> Result<()> {
        self.validate(&ops)?;
        self.wait_for_room()?;
        let mut record = Vec::with_capacity(
            ops.iter()
                .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len))
                .sum::<usize>()
                + 12,
        );
        encode_record(&ops, &mut record);
        let user: usize = ops
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        self.joining.fetch_add(1, Ordering::AcqRel);
        let seq = self.append(ops, &record);
        self.joining.fetch_sub(1, Ordering::AcqRel);
        let seq = seq?;
        self.counters.user.fetch_add(user as u64, Ordering::Relaxed);
        self.counters
            .wal
            .fetch_add(record.len() as u64, Ordering::Relaxed);
        if self.opts.sync == SyncMode::Always {
            self.sync_to(seq)?;
        }
        if self.inline() && self.immutables.load(Ordering::Acquire) > 0 {
            // The write is already durable as the log promises; a failed flush is
            // retried by the next write and reported through `Stats`.
            self.run_inline_logged();
        }
        Ok(())
    }

    fn inline(&self) -> bool {
        self.opts.background == Background::Inline
    }

    /// Under `Background::Inline`, does on the caller's thread what the threads would
    /// have done: flushes every frozen memtable, then compacts while one is due.
    fn run_inline(&self) -> Result<()> {
        while self.flush_one()? {}
        if self.opts.background_compaction && std::mem::take(&mut lock(&self.bg).compact_wanted) {
            while self.compact_once(false)? {}
        }
        Ok(())
    }

    /// [`Shared::run_inline`], recording a failure where a background thread would.
    fn run_inline_logged(&self) {
        if let Err(e) = self.run_inline() {
            self.record_error("inline flush or compaction", &e);
        }
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

    /// Appends a record to the log buffer and applies it to the memtable under the
    /// write lock, so log order equals memtable order; returns its sequence number.
    fn append(&self, ops: Vec<Op>, record: &[u8]) -> Result<u64> {
        let mut w = lock(&self.write);
        self.check_open()?;
        self.wal_failed()?;
        w.log.buf.extend_from_slice(record);
        w.appended += 1;
        let seq = w.appended;
        w.active.apply(ops);
        if w.log.buf.len() >= LOG_BUFFER {
            if let Err(e) = w.log.drain() {
                self.fail_wal(&e);
                return Err(e);
            }
        }
        if w.active.bytes() >= self.opts.memtable_bytes {
            if let Err(e) = self.freeze(&mut w) {
                // The write itself is in the log; only rotation failed (e.g. no
                // space for a new segment). It is retried on the next write.
                self.wal_failed()?;
                tracing::warn!(error = %e, "memtable freeze failed; will retry");
            }
        }
        Ok(seq)
    }

    /// Group commit: returns once record `seq` is fsynced. The first waiter to find
    /// no fsync in progress becomes leader, writes out everything buffered so far and
    /// fsyncs once for all of it; the others wait on the condvar. A record appended
    /// while a leader's fsync runs is covered by the next leader.
    fn sync_to(&self, seq: u64) -> Result<()> {
        let deadline = Instant::now() + self.opts.write_timeout;
        let mut s = lock(&self.sync);
        loop {
            if s.synced >= seq {
                return Ok(());
            }
            self.wal_failed()?;
            if !s.syncing {
                s.syncing = true;
                drop(s);
                let r = self.sync_leader();
                s = lock(&self.sync);
                s.syncing = false;
                self.sync_cv.notify_all();
                match r {
                    Ok(target) => s.synced = s.synced.max(target),
                    Err(e) => return Err(e),
                }
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                drop(s);
                return Err(self.stalled("group commit fsync", deadline));
            }
            s = self
                .sync_cv
                .wait_timeout(s, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    fn sync_leader(&self) -> Result<u64> {
        // Let writers that are about to append join this fsync (bounded: at most
        // ~100 µs), instead of leaving them for the next one; this is what makes
        // group commit scale with the number of writers.
        let gather = Instant::now();
        while self.joining.load(Ordering::Acquire) > 0
            && gather.elapsed() < Duration::from_micros(100)
        {
            std::thread::yield_now();
        }
        let (file, path, target) = {
            let mut w = lock(&self.write);
            self.wal_failed()?;
            if let Err(e) = w.log.drain() {
                self.fail_wal(&e);
                return Err(e);
            }
            (w.log.file.clone(), w.log.path.clone(), w.appended)
        };
        if let Err(e) = file.sync_data() {
            let e = Error::Io {
                path,
                op: "fsync commit log",
                source: e,
            };
            self.fail_wal(&e);
            return Err(e);
        }
        Ok(target)
    }

    /// Freezes the active memtable and starts a new log segment (caller holds the
    /// write lock). The old segment is written out and, unless `Never`, fsynced first,
    /// so group commit never has to look at an older segment.
    fn freeze(&self, w: &mut WriteState) -> Result<()> {
        if w.active.is_empty() {
            return Ok(());
        }
        let id = self.next_file.fetch_add(1, Ordering::SeqCst);
        let new_log = LogWriter::create(&*self.opts.fs, &self.dir, id)?;
        let done = w.log.drain().and_then(|()| {
            if self.opts.sync == SyncMode::Never {
                return Ok(());
            }
            w.log
                .file
                .sync_data()
                .map_err(io_err(&w.log.path, "fsync commit log"))
        });
        if let Err(e) = done {
            self.fail_wal(&e);
            let _ = self.opts.fs.remove_file(&new_log.path);
            return Err(e);
        }
        w.log = new_log;
        let frozen = std::mem::replace(&mut w.active, Arc::new(Memtable::new()));
        let _ = frozen.sealed_at.set(id);
        {
            let mut vg = self.version.write().unwrap_or_else(PoisonError::into_inner);
            let mut immutables = vec![frozen];
            immutables.extend(vg.immutables.iter().cloned());
            *vg = Arc::new(Version {
                active: w.active.clone(),
                immutables,
                tables: vg.tables.clone(),
            });
        }
        self.immutables.fetch_add(1, Ordering::AcqRel);
        self.bg_cv.notify_all();
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

    /// Flushes the oldest frozen memtable; `false` if there was none.
    fn flush_one(&self) -> Result<bool> {
        let _f = lock(&self.flush_lock);
        let v = self.version();
        let Some(mem) = v.immutables.last().cloned() else {
            return Ok(false);
        };
        let Some(&log_number) = mem.sealed_at.get() else {
            return Ok(false);
        };
        let id = self.next_file.fetch_add(1, Ordering::SeqCst);
        let table = write_memtable(&self.dir, id, &self.opts, &mem)?;
        let size = table.as_ref().map_or(0, |t| t.size);
        self.install(
            |tables| {
                table
                    .iter()
                    .cloned()
                    .chain(tables.iter().cloned())
                    .collect()
            },
            Some(&mem),
            Some(log_number),
        )?;
        self.immutables.fetch_sub(1, Ordering::AcqRel);
        self.counters.flush.fetch_add(size, Ordering::Relaxed);
        self.counters.flushes.fetch_add(1, Ordering::Relaxed);
        self.bg_cv.notify_all();
        self.remove_segments_below(log_number);
        self.request_compaction();
        Ok(true)
    }

    fn remove_segments_below(&self, log_number: u64) {
        let fs = &*self.opts.fs;
        let Ok(names) = fs.list(&self.dir) else {
            return;
        };
        for name in names {
            if let Some((id, "log")) = parse_name(&name) {
                if id < log_number {
                    let path = self.dir.join(&name);
                    if let Err(err) = fs.remove_file(&path) {
                        tracing::warn!(path = %path.display(), error = %err, "could not remove flushed segment");
                    }
                }
            }
        }
    }

    fn request_compaction(&self) {
        lock(&self.bg).compact_wanted = true;
        self.bg_cv.notify_all();
    }

    /// One compaction of the newest tables (all of them if `full`); `false` if none
    /// was due.
    fn compact_once(&self, full: bool) -> Result<bool> {
        let _c = lock(&self.compaction_lock);
        let v = self.version();
        let sizes: Vec<u64> = v.tables.iter().map(|t| t.size).collect();
        let Some(Choice { tables: k, bottom }) =
            compaction_policy::choose(&sizes, self.opts.compaction_trigger, full)
        else {
            return Ok(false);
        };
        let picked: Vec<Arc<Table>> = v.tables[..k].to_vec();
        let sources = picked
            .iter()
            .map(|t| {
                Source::Table(TableIter::new(
                    t.clone(),
                    self.cache.clone(),
                    Bound::Unbounded,
                    Bound::Unbounded,
                ))
            })
            .collect();
        let filter = self.opts.compaction_filter.clone();
        let entries = Merger::new(sources).filter_map(|r| {
            if self.closed.load(Ordering::Relaxed) {
                return Some(Err(Error::Closed));
            }
            match r {
                Err(e) => Some(Err(e)),
                Ok((key, None)) => (!bottom).then_some(Ok((key, None))),
                Ok((key, Some(val))) => {
                    if filter.as_ref().is_some_and(|f| !f(&key, &val)) {
                        (!bottom).then_some(Ok((key, None)))
                    } else {
                        Some(Ok((key, Some(val))))
                    }
                }
            }
        });
        let id = self.next_file.fetch_add(1, Ordering::SeqCst);
        let out = write_table(&self.dir, id, &self.opts, entries)?;
        let ids: HashSet<u64> = picked.iter().map(|t| t.id).collect();
        let size = out.as_ref().map_or(0, |t| t.size);
        self.install(
            |tables| {
                let mut next = Vec::with_capacity(tables.len());
                let mut placed = false;
                for t in tables {
                    if !ids.contains(&t.id) {
                        next.push(t.clone());
                    } else if !placed {
                        placed = true;
                        next.extend(out.iter().cloned());
                    }
                }
                next
            },
            None,
            None,
        )?;
        for t in &picked {
            if let Err(e) = self.opts.fs.remove_file(&t.path) {
                tracing::warn!(path = %t.path.display(), error = %e, "could not remove compacted table");
            }
        }
        self.counters.compaction.fetch_add(size, Ordering::Relaxed);
        self.counters.compactions.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    fn record_error(&self, what: &str, e: &Error) {
        tracing::error!(error = %e, "background {what} failed");
        lock(&self.bg).last_error = Some(format!("{what}: {e}"));
    }

    /// Sleeps up to `d` unless shutdown is requested; returns `false` on shutdown.
    fn pause(&self, d: Duration) -> bool {
        let bg = lock(&self.bg);
        if bg.shutdown {
            return false;
        }
        let bg = self
            .bg_cv
            .wait_timeout(bg, d)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
        !bg.shutdown
    }

    fn flush_loop(&self) {
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.immutables.load(Ordering::Acquire) == 0 {
                if !self.pause(Duration::from_millis(500)) {
                    return;
                }
                continue;
            }
            if lock(&self.bg).shutdown {
                return;
            }
            match self.flush_one() {
                Ok(_) => backoff = Duration::from_millis(50),
                Err(e) => {
                    self.record_error("flush", &e);
                    if !self.pause(backoff) {
                        return;
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    fn compact_loop(&self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            {
                let mut bg = lock(&self.bg);
                if bg.shutdown {
                    return;
                }
                if !bg.compact_wanted {
                    drop(bg);
                    if !self.pause(Duration::from_secs(1)) {
                        return;
                    }
                    continue;
                }
                bg.compact_wanted = false;
            }
            loop {
                match self.compact_once(false) {
                    Ok(true) => backoff = Duration::from_millis(100),
                    Ok(false) => break,
                    Err(Error::Closed) => return,
                    Err(e) => {
                        self.record_error("compaction", &e);
                        if !self.pause(backoff) {
                            return;
                        }
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                        break;
                    }
                }
            }
        }
    }

    fn sync_loop(&self) {
        let SyncMode::Periodic(every) = self.opts.sync else {
            return;
        };
        while self.pause(every) {
            let target = lock(&self.write).appended;
            if let Err(e) = self.sync_to(target) {
                self.record_error("periodic sync", &e);
            }
        }
    }
}
