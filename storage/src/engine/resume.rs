//! Taking writes again after the commit log failed (a full disk, usually),
//! without reopening the engine.
//!
//! After a failed append or fsync the failed segment's contents are unknown
//! (the kernel may have dropped dirty pages), so nothing may be acknowledged
//! on top of it. But every write it was meant to hold, acknowledged or not,
//! is still in a memtable. Resuming therefore starts a fresh segment, seals
//! the active memtable to it, and writes every frozen memtable to tables
//! (fsynced, in the manifest): then the tables hold what the failed segment
//! should have, the segments below the fresh one are deleted, and writes go
//! to the fresh one. Until all of that succeeds the engine keeps refusing
//! writes, and the next attempt starts over.

use std::sync::atomic::Ordering;

use super::{lock, Shared};
use crate::error::Result;
use crate::wal::LogWriter;

impl Shared {
    /// Resumes a failed commit log; `Ok(false)` when it had not failed.
    /// Takes `write` (then `version`), releases them, then flushes: the
    /// caller holds no engine lock.
    pub(super) fn try_resume(&self) -> Result<bool> {
        if !self.wal_broken.load(Ordering::Acquire) {
            return Ok(false);
        }
        {
            let mut w = lock(&self.write);
            self.check_open()?;
            let id = self.next_file.fetch_add(1, Ordering::SeqCst);
            // The failed segment is left as it is: neither drained nor fsynced
            // again (its buffer's records are in the memtable being sealed).
            w.log = LogWriter::create(
                &*self.opts.fs,
                &self.dir,
                id,
                self.opts.log_preallocate_bytes,
            )?;
            if !w.active.is_empty() {
                self.seal_active(&mut w, id);
            }
        }
        while self.flush_one()? {}
        let mut failed = lock(&self.wal_failed);
        if let Some(reason) = failed.take() {
            tracing::info!(earlier = %reason, "commit log resumed: memtables are in tables, writes go to a fresh segment");
        }
        self.wal_broken.store(false, Ordering::Release);
        self.bg_cv.notify_all();
        Ok(true)
    }
}
