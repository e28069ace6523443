//! Background work: the flush, compaction and periodic-sync threads, and their
//! stand-in under `Background::Inline`, which does the same work on the caller's
//! thread so that a deterministic simulation controls all of it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{lock, Shared};
use crate::error::{io_err, Error, Result};
use crate::options::SyncMode;

/// Starts the threads the options ask for: flushing always (writers would stall
/// without it), compaction when configured, and the thread that fsyncs the log:
/// the commit thread under `Always`, the periodic one under `Periodic`.
pub(super) fn spawn(inner: &Arc<Shared>) -> Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::new();
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
    match inner.opts.sync {
        SyncMode::Periodic(_) => threads.push(spawn("shoal-sync", Shared::sync_loop)?),
        SyncMode::Always => threads.push(spawn("shoal-commit", Shared::commit_loop)?),
        SyncMode::Never => {}
    }
    Ok(threads)
}

impl Shared {
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
    pub(super) fn run_inline_logged(&self) {
        if let Err(e) = self.run_inline() {
            self.record_error("inline flush or compaction", &e);
        }
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
        let mut resume_backoff = Duration::from_millis(200);
        loop {
            // A failed commit log is retried here, so that a node whose disk
            // was full takes writes again once there is room, with no restart.
            if let Err(e) = self.try_resume() {
                self.record_error("commit log resume", &e);
                if !self.pause(resume_backoff) {
                    return;
                }
                resume_backoff = (resume_backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            resume_backoff = Duration::from_millis(200);
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
            if let Err(e) = self.sync_round() {
                self.record_error("periodic sync", &e);
            }
        }
    }
}
