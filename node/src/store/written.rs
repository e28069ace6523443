//! [`Written`]: a store write that is applied and awaits its fsync.

use std::time::Duration;

use shoal_storage::Commit;

use super::StoreError;

/// A write that is applied (readers see it) and whose durability is pending:
/// acknowledge `T` only after [`Written::durable`] or [`Written::wait`].
///
/// The stripe was released before this was handed out, so a later write to
/// the same key may read this state and build on it; that is safe because the
/// later write's own commit covers this one (the log is fsynced in order), and
/// a failed fsync fails both.
#[must_use = "nothing may be acknowledged before the write is durable"]
#[derive(Debug)]
pub struct Written<T> {
    value: T,
    commit: Commit,
    timeout: Duration,
}

impl<T> Written<T> {
    pub(super) fn new(value: T, commit: Commit, timeout: Duration) -> Self {
        Self {
            value,
            commit,
            timeout,
        }
    }

    /// What was written, readable before it is durable: a forwarded write
    /// sends it to the replicas while its own fsync runs (a crash before
    /// that fsync starts a new actor epoch, so its dots are never reused).
    pub fn value(&self) -> &T {
        &self.value
    }

    /// Whether the write is durable (or failed) already, so that awaiting
    /// it returns at once: always so under `Background::Inline`.
    pub fn is_resolved(&self) -> bool {
        self.commit.is_resolved()
    }

    /// Waits on the runtime for the commit, at most the engine's write timeout
    /// (the commit thread could be stuck in an fsync that never returns).
    pub async fn durable(self) -> Result<T, StoreError> {
        if self.commit.is_resolved() {
            // No timer: the simulation's schedule stays the same.
            self.commit.await?;
            return Ok(self.value);
        }
        match tokio::time::timeout(self.timeout, self.commit).await {
            Ok(done) => done?,
            Err(_) => {
                return Err(StoreError::Engine(shoal_storage::Error::Stalled {
                    what: "group commit fsync",
                    waited: self.timeout,
                    last_error: "none".into(),
                }))
            }
        }
        Ok(self.value)
    }

    /// Blocks the thread for the commit (bounded by the engine).
    pub fn wait(self) -> Result<T, StoreError> {
        self.commit.wait()?;
        Ok(self.value)
    }
}
