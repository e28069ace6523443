//! The write path: validation, back-pressure, the append to the log buffer and the
//! memtable, and the freeze that rotates both when the memtable is full.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use super::commit::{Commit, Slot};
use super::{lock, Shared, Version, WriteState};
use crate::error::{io_err, Error, Result};
use crate::memtable::Memtable;
use crate::options::SyncMode;
use crate::wal::{encode_record, LogWriter, Op};

/// Bytes buffered in memory before the log buffer is written to the OS even when no
/// fsync is due; bounds what a process crash loses under `Never`/`Periodic`.
const LOG_BUFFER: usize = 256 << 10;

/// What `append` did.
enum Appended {
    /// Appended and applied, with its commit slot when one was queued.
    Done(Option<Arc<Slot>>),
    /// The commit queue is full; nothing was touched and the ops come back.
    QueueFull(Vec<Op>),
}

impl Shared {
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

    /// Validates, appends and applies `ops`, and returns their [`Commit`]: resolved
    /// already unless `SyncMode::Always` with background threads, where the commit
    /// thread resolves it after the fsync that covers it. Under `Inline` the fsync
    /// runs here, and a failed one is this call's error.
    pub(super) fn write(self: &Arc<Self>, ops: Vec<Op>) -> Result<Commit> {
        self.validate(&ops)?;
        if self.inline() {
            // No flush thread retries a failed commit log here; the writer does.
            if let Err(e) = self.try_resume() {
                self.record_error("commit log resume", &e);
            }
        }
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
        let queued = self.opts.sync == SyncMode::Always && !self.inline();
        let deadline = Instant::now() + self.opts.write_timeout;
        let mut ops = ops;
        let slot = loop {
            self.joining.fetch_add(1, Ordering::AcqRel);
            let appended = self.append(ops, &record, queued);
            self.joining.fetch_sub(1, Ordering::AcqRel);
            match appended? {
                Appended::Done(slot) => break slot,
                Appended::QueueFull(back) => {
                    ops = back;
                    self.wait_for_commit_room(deadline)?;
                }
            }
        };
        self.counters.user.fetch_add(user as u64, Ordering::Relaxed);
        self.counters
            .wal
            .fetch_add(record.len() as u64, Ordering::Relaxed);
        if let Some(slot) = slot {
            return Ok(Commit::waiting(slot, self.clone()));
        }
        if self.opts.sync == SyncMode::Always {
            self.sync_round()?;
        }
        if self.inline() && self.immutables.load(Ordering::Acquire) > 0 {
            // The write is already durable as the log promises; a failed flush is
            // retried by the next write and reported through `Stats`.
            self.run_inline_logged();
        }
        Ok(Commit::ready(Ok(())))
    }

    /// A [`Commit`] that resolves once every write appended before it is durable;
    /// see `Engine::barrier`.
    pub(super) fn barrier(self: &Arc<Self>) -> Result<Commit> {
        if self.opts.sync != SyncMode::Always || self.inline() {
            // Nothing to wait for: under Always+Inline every append fsynced before
            // it returned (or the log is failed, checked here).
            self.check_open()?;
            self.wal_failed()?;
            return Ok(Commit::ready(Ok(())));
        }
        let deadline = Instant::now() + self.opts.write_timeout;
        loop {
            {
                let w = lock(&self.write);
                self.check_open()?;
                self.wal_failed()?;
                if self.synced.load(Ordering::Acquire) >= w.appended
                    || lock(&self.commits).queue.is_empty()
                {
                    // Every earlier write was resolved: durable, or failed and
                    // since written to tables by `try_resume` (the log is not
                    // failed now), so durable as well.
                    return Ok(Commit::ready(Ok(())));
                }
                if let Some(slot) = self.enqueue(w.appended) {
                    return Ok(Commit::waiting(slot, self.clone()));
                }
            }
            self.wait_for_commit_room(deadline)?;
        }
    }

    /// Appends a record to the log buffer and applies it to the memtable under the
    /// write lock, so log order equals memtable order; with `queued`, also queues
    /// its commit slot there, so the queue is in sequence order. Hands the ops back,
    /// touching nothing, when the commit queue is full.
    fn append(&self, ops: Vec<Op>, record: &[u8], queued: bool) -> Result<Appended> {
        let mut w = lock(&self.write);
        self.check_open()?;
        self.wal_failed()?;
        let seq = w.appended + 1;
        let slot = if queued {
            match self.enqueue(seq) {
                Some(slot) => Some(slot),
                None => return Ok(Appended::QueueFull(ops)),
            }
        } else {
            None
        };
        w.log.buf.extend_from_slice(record);
        w.appended = seq;
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
        Ok(Appended::Done(slot))
    }

    /// Freezes the active memtable and starts a new log segment (caller holds the
    /// write lock). The old segment is written out and, unless `Never`, fsynced first,
    /// so group commit never has to look at an older segment.
    pub(super) fn freeze(&self, w: &mut WriteState) -> Result<()> {
        if w.active.is_empty() {
            return Ok(());
        }
        let id = self.next_file.fetch_add(1, Ordering::SeqCst);
        let new_log = LogWriter::create(
            &*self.opts.fs,
            &self.dir,
            id,
            self.opts.log_preallocate_bytes,
        )?;
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
        self.seal_active(w, id);
        self.bg_cv.notify_all();
        Ok(())
    }

    /// Swaps in a fresh memtable and publishes the full one as the newest
    /// frozen memtable, sealed at log segment `id` (the segments below it are
    /// deleted once it is in a table). The caller holds the write lock.
    pub(super) fn seal_active(&self, w: &mut WriteState, id: u64) {
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
    }
}
