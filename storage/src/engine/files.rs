//! The directory's file names, and writing a table file: shared by recovery (which
//! writes the replayed log), flushes and compactions.

use std::path::Path;
use std::sync::Arc;

use crate::error::{io_err, Result};
use crate::manifest;
use crate::memtable::Memtable;
use crate::options::Options;
use crate::sstable::{table_path, Entry, Table, TableBuilder};

/// The id and extension of one of the engine's `<id>.<ext>` files; `None` for any
/// other name, which the engine then leaves alone.
pub(super) fn parse_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    if stem.len() != 16 {
        return None;
    }
    Some((stem.parse().ok()?, ext))
}

/// Writes `entries` (ascending) to table `id`; `None` if there were none. A partial
/// file is removed on failure.
pub(super) fn write_table(
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
pub(super) fn write_memtable(
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
