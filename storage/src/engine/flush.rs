//! Flushing a frozen memtable to a table, and deleting the log segments that only it
//! still needed.

use std::sync::atomic::Ordering;

use super::files::{parse_name, write_memtable};
use super::{lock, Shared};
use crate::error::Result;

impl Shared {
    /// Flushes the oldest frozen memtable; `false` if there was none.
    pub(super) fn flush_one(&self) -> Result<bool> {
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
}
