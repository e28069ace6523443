//! Group commit: one fsync of the commit log for every write appended before it,
//! so `SyncMode::Always` costs one fsync per group of concurrent writes rather than
//! per write.
//!
//! With background threads one commit thread per engine does the fsyncs: it sleeps
//! while no write waits, and otherwise syncs whatever has been appended and
//! resolves the [`super::commit::Commit`]s that fsync covered. Writers never take
//! part: they append and then await (or block on) their commit, so a waiting writer
//! is a parked future or thread that is woken once, when its own write is durable.
//! Under `Background::Inline` the writer runs the same round itself, inline.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::commit::Outcome;
use super::{lock, Shared};
use crate::error::{Error, Result};

/// How long the sleeping commit thread waits before it looks at the queue
/// again by itself; a wakeup is never missed (appenders notify under the queue
/// lock), so this only bounds the wait.
const IDLE_CHECK: Duration = Duration::from_secs(1);

impl Shared {
    /// The commit thread's loop (`SyncMode::Always` with background threads).
    /// It exits on shutdown; `close` resolves whatever it left.
    pub(super) fn commit_loop(&self) {
        loop {
            {
                let mut p = lock(&self.commits);
                loop {
                    if p.shutdown {
                        return;
                    }
                    if !p.queue.is_empty() {
                        break;
                    }
                    p.sleeping = true;
                    p = self
                        .commits_cv
                        .wait_timeout(p, IDLE_CHECK)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0;
                    p.sleeping = false;
                }
            }
            if let Err(e) = self.sync_round() {
                // The failed commits have their error; this is for `Stats`.
                self.record_error("group commit fsync", &e);
            }
        }
    }

    /// One group commit: writes out the log buffer, fsyncs it, and resolves the
    /// queued commits it covered. Any failure fails every queued commit (through
    /// `fail_wal`) and puts the log in the `WalFailed` state, as before a commit
    /// was ever acknowledged on top of an unknown log.
    ///
    /// Rounds are serialised by `sync` (taken before `write`): on Linux only the
    /// first fsync of a file after a write-back error reports it, so two
    /// concurrent fsyncs could let one acknowledge what the other saw lost.
    pub(super) fn sync_round(&self) -> Result<()> {
        let _round = lock(&self.sync);
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
            if self.closed.load(Ordering::Acquire) {
                // `close` fsynced and decided every commit.
                return Ok(());
            }
            if let Err(e) = self.wal_failed() {
                // Appended between the failure and its `fail_pending`, or
                // queued by a barrier: they cannot be acknowledged either.
                self.resolve_pending(None, &Outcome::Failed(e.to_string()));
                return Err(e);
            }
            if let Err(e) = w.log.drain() {
                self.fail_wal(&e);
                return Err(e);
            }
            (w.log.file.clone(), w.log.path.clone(), w.appended)
        };
        if self.synced.load(Ordering::Acquire) >= target {
            // A barrier queued just after the round that covered it.
            self.resolve_pending(Some(target), &Outcome::Durable);
            return Ok(());
        }
        let started = std::time::Instant::now();
        let synced = file.sync_data();
        if let Some(observe) = &self.sync_observer {
            observe(started.elapsed());
        }
        if let Err(e) = synced {
            let e = Error::Io {
                path,
                op: "fsync commit log",
                source: e,
            };
            self.fail_wal(&e);
            return Err(e);
        }
        // A freeze fsyncs this same file under the write lock and marks the log
        // failed before releasing it; if that fsync took a write-back error, ours
        // may have returned success for lost pages, so check under the lock.
        {
            let _w = lock(&self.write);
            self.wal_failed()?;
        }
        self.synced.fetch_max(target, Ordering::AcqRel);
        self.counters.commit_syncs.fetch_add(1, Ordering::Relaxed);
        self.resolve_pending(Some(target), &Outcome::Durable);
        Ok(())
    }
}
