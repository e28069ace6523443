//! `shoal-storage` is the single-node LSM engine under every Shoal replica: a
//! commit log, memtables, SSTables with a block index and Bloom filter, a manifest,
//! and compaction. It is thread-safe (`Engine: Send + Sync`) and has no runtime of
//! its own: reads and [`Engine::append`] do their work on the caller's thread, and
//! the durability of an append is a [`Commit`], a plain `Future` that the engine's
//! commit thread wakes after the fsync covering it, so an async caller awaits the
//! fsync without parking a thread. Keys and values are opaque bytes;
//! Dynamo-level versions and tombstones are ordinary values to this crate.
//!
//! The cluster is tested in a deterministic simulation, so the engine reaches files
//! only through the [`Fs`] trait ([`Options::fs`]): the simulation substitutes a file
//! system that loses whatever was not fsynced when a host crashes, which turns the
//! durability contract below into something a test can break. For the same reason
//! [`Background::Inline`] runs flushes and compactions on the caller's thread instead
//! of background threads, which would run outside the simulator's control.
//!
//! ```
//! use shoal_storage::{Engine, Options, SyncMode, WriteBatch};
//!
//! let dir = tempfile::tempdir()?;
//! let opts = Options { sync: SyncMode::Always, ..Options::default() };
//! let engine = Engine::open(dir.path(), opts.clone())?;
//! engine.put(b"apple", b"red")?;
//! let mut batch = WriteBatch::new();
//! batch.put(b"banana", b"yellow").delete(b"apple");
//! engine.write(batch)?;
//! assert_eq!(engine.get(b"apple")?, None);
//!
//! // Ordered range scans: the node prefixes keys with their ring position, so a
//! // token range is one scan.
//! let keys: Vec<Vec<u8>> = engine.scan(b"a".as_slice()..b"c".as_slice())?
//!     .map(|r| r.map(|(k, _)| k))
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(keys, vec![b"banana".to_vec()]);
//! engine.close()?;
//!
//! // Everything acknowledged survives a reopen (and, under `Always`, a crash).
//! let engine = Engine::open(dir.path(), opts)?;
//! assert_eq!(engine.get(b"banana")?, Some(b"yellow".to_vec()));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout
//!
//! - `engine`: [`Engine`], the write and read paths, flush and compaction (on
//!   threads, or inline under [`Background::Inline`]).
//! - [`fs`]: the file system seam: [`Fs`], the real [`StdFs`], and [`MemFs`], an
//!   in-memory file system with crash semantics for tests and simulations.
//! - `wal`: commit log segments and their recovery.
//! - `memtable`: the in-memory sorted write buffer.
//! - `sstable`: the table format, its reader and the shared block cache.
//! - `bloom`: per-table Bloom filters.
//! - `manifest`: the atomically replaced list of live tables.
//! - `iter`: merging scans; [`Iter`].
//! - `options`, `error`: [`Options`], [`SyncMode`], [`Error`].
//!
//! Files in the directory: `<id>.log` commit log segments, `<id>.sst` tables and
//! `MANIFEST`; ids come from one counter and are never reused. A data directory
//! that open has to create is made durable (its parent fsynced) before anything is
//! written into it.
//!
//! # Durability contract
//!
//! A write (put, delete or batch) becomes durable in this order:
//!
//! 1. It is encoded as one checksummed record and appended to the in-memory log
//!    buffer, then inserted in the active memtable (both under one lock, so log order
//!    equals memtable order). It is visible to readers from here on, before it is
//!    durable.
//! 2. Under [`SyncMode::Always`] the write's [`Commit`] resolves (and the blocking
//!    `put`/`delete`/`write` return) only after the commit thread has written the
//!    buffer to the segment and `fdatasync`ed it: one fsync for everything appended
//!    by then, waking only the commits it covered. A failed fsync fails every
//!    pending commit ([`Error::WalFailed`]). Under `Background::Inline` the append
//!    fsyncs before it returns. Under `Periodic`
//!    a background thread does that every interval; under `Never` the buffer is
//!    written when it reaches 256 KiB and never fsynced.
//! 3. When the memtable is full, a new segment is created and the directory
//!    fsynced; the old segment is written out and (unless `Never`) fsynced; the
//!    memtable is frozen.
//! 4. A background thread (under `Inline`, the writer that froze it, before its
//!    call returns) writes the frozen memtable to a new table file, fsyncs it and
//!    the directory.
//! 5. The manifest naming the new table set and the oldest segment still needed is
//!    written to `MANIFEST.tmp`, fsynced, renamed over `MANIFEST`, and the directory
//!    fsynced. This rename is the commit point of flushes and compactions.
//! 6. Only then are segments and compacted tables that the manifest no longer needs
//!    deleted.
//!
//! Open first takes an exclusive lock on the directory's `LOCK` file ([`Fs::lock`],
//! an `flock`; [`Error::Locked`] if another engine holds it) and keeps it until
//! `close`: two engines replaying one log would delete each other's files.
//!
//! After a crash, open reads `MANIFEST`, deletes tables it does not name, and replays
//! every segment it does not cover, truncating a torn record at the end of a segment
//! (one that was being written at the crash and so never acknowledged under
//! `Always`). Segments are zero-filled ahead of their appends
//! ([`Options::log_preallocate_bytes`], so an fsync writes no inode): replay ends
//! where only zeros remain, and a damaged record with only zeros after it and no
//! intact record past it is a torn one too. What survives:
//!
//! - `Always`: every acknowledged write, after a process or machine crash.
//! - `Periodic(i)`: everything after a process crash, except at most 256 KiB of
//!   writes still in the engine's buffer; after a machine crash, writes acknowledged
//!   up to about `i` before it may be lost.
//! - `Never`: after a process crash, the same as `Periodic`; after a machine crash,
//!   anything since the last memtable flush may be lost.
//! - A batch is all-or-nothing in every mode. [`Engine::flush`] and
//!   [`Engine::close`] make everything written before them durable in any mode
//!   (close fsyncs every segment whose memtable is not in a table yet).
//!
//! Corruption is detected by checksums on every log record, table block, footer and
//! the manifest, and is reported as [`Error::CorruptRecord`] or
//! [`Error::CorruptBlock`] with file and offset; reads of intact data go on. After a
//! failed log append or fsync the engine refuses writes ([`Error::WalFailed`]) but
//! keeps serving reads; a write whose call failed may or may not be applied.

mod bloom;
mod engine;
mod error;
pub mod fs;
mod iter;
mod manifest;
mod memtable;
mod options;
mod sstable;
mod wal;

pub use engine::{Commit, Engine, RecoveryReport, Stats, WriteBatch};
pub use error::{Error, Result};
pub use fs::{Fs, LockGuard, MemFs, OpenMode, ReadableFile, StdFs, WritableFile};
pub use iter::Iter;
pub use options::{
    Background, CompactionFilter, Options, SyncMode, SyncObserver, Verdict, WalRecovery,
};
pub use wal::Damage;
