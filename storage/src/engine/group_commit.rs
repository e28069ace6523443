//! Group commit: one fsync of the commit log for every writer waiting on it, so
//! `SyncMode::Always` costs one fsync per group of concurrent writes rather than per
//! write.

use std::sync::atomic::Ordering;
use std::sync::PoisonError;
use std::time::{Duration, Instant};

use super::{lock, Shared};
use crate::error::{Error, Result};

impl Shared {
    /// Group commit: returns once record `seq` is fsynced. The first waiter to find
    /// no fsync in progress becomes leader, writes out everything buffered so far and
    /// fsyncs once for all of it; the others wait on the condvar. A record appended
    /// while a leader's fsync runs is covered by the next leader.
    pub(super) fn sync_to(&self, seq: u64) -> Result<()> {
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
}
