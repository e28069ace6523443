//! Recovery: what `Engine::open` does before the engine exists. It runs alone (the
//! directory lock is taken first), so none of the engine's locks are involved.

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::files::{parse_name, write_memtable};
use crate::error::{io_err, Error, Result};
use crate::fs::LockGuard;
use crate::manifest::Manifest;
use crate::memtable::Memtable;
use crate::options::Options;
use crate::sstable::{table_path, Table};
use crate::wal::{self, segment_path, Damage, LogWriter};

/// The file whose lock marks the directory as in use by one engine.
const LOCK_FILE: &str = "LOCK";

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

/// A recovered directory, ready for `Engine::open` to build the engine on: the
/// replayed log is in `tables` and committed in `manifest`, and `log` is a fresh,
/// empty segment.
pub(super) struct Recovered {
    /// Held until `close`.
    pub(super) dir_lock: Box<dyn LockGuard>,
    pub(super) manifest: Manifest,
    /// Newest first.
    pub(super) tables: Vec<Arc<Table>>,
    pub(super) next_file: AtomicU64,
    pub(super) log: LogWriter,
    pub(super) report: RecoveryReport,
}

/// Locks `dir` (created if needed), deletes what a crash left uncommitted, replays
/// every commit log segment the manifest does not cover into a table, and starts a
/// fresh segment. The errors are the ones `Engine::open` documents.
pub(super) fn recover(dir: &Path, opts: &Options) -> Result<Recovered> {
    let fs = opts.fs.clone();
    fs.create_dir_all(dir)
        .map_err(io_err(dir, "create data directory"))?;
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
    let mut man = Manifest::load(&*fs, dir)?.unwrap_or_default();
    let mut report = RecoveryReport::default();
    let live: HashSet<u64> = man.tables.iter().copied().collect();
    let mut segments = Vec::new();
    let mut max_id = 0;
    for name in fs.list(dir).map_err(io_err(dir, "list data directory"))? {
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
        tables.push(Arc::new(Table::open(&*fs, table_path(dir, id), id)?));
    }
    let next_file = AtomicU64::new(man.next_file.max(max_id + 1));

    let mem = Memtable::new();
    let mut replayed = Vec::new();
    for &id in &segments {
        let path = segment_path(dir, id);
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
    let log = LogWriter::create(&*fs, dir, log_id, opts.log_preallocate_bytes)?;
    if !mem.is_empty() {
        let id = next_file.fetch_add(1, Ordering::SeqCst);
        if let Some(t) = write_memtable(dir, id, opts, &mem)? {
            tables.insert(0, t);
        }
    }
    man = Manifest {
        next_file: next_file.load(Ordering::SeqCst),
        log_number: log_id,
        tables: tables.iter().map(|t| t.id).collect(),
    };
    man.store(&*fs, dir)?;
    for p in replayed {
        if let Err(e) = fs.remove_file(&p) {
            tracing::warn!(path = %p.display(), error = %e, "could not remove replayed segment");
        }
    }
    report.tables = tables.len();
    Ok(Recovered {
        dir_lock,
        manifest: man,
        tables,
        next_file,
        log,
        report,
    })
}
