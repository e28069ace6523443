//! The crate's one error type.

use std::path::PathBuf;
use std::time::Duration;

/// Every way an engine call can fail.
///
/// Corruption variants carry the file and byte offset so an operator can find the
/// damage; they are returned for the damaged record or block only, and reads of intact
/// data go on. I/O variants carry the path and the operation so "disk full" or
/// "read-only file system" is readable from the message alone.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The operating system refused an operation (full disk, read-only mount, ...).
    #[error("I/O error during {op} on {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the engine was doing, e.g. "append to commit log".
        op: &'static str,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A commit log record failed its checksum or could not be decoded, and it is not
    /// a torn tail (valid bytes follow it), so dropping it silently could lose
    /// acknowledged writes.
    #[error("corrupt commit log record in {path} at offset {offset}: {reason}")]
    CorruptRecord {
        /// The commit log segment.
        path: PathBuf,
        /// Byte offset of the record header.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// An SSTable block (data, index, filter or footer) failed its checksum or could
    /// not be decoded.
    #[error("corrupt SSTable block in {path} at offset {offset}: {reason}")]
    CorruptBlock {
        /// The table file.
        path: PathBuf,
        /// Byte offset of the block.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The manifest, which names the live tables, failed its checksum or is malformed.
    #[error("corrupt manifest {path}: {reason}")]
    CorruptManifest {
        /// The manifest file.
        path: PathBuf,
        /// What check failed.
        reason: String,
    },
    /// A key is longer than `Options::max_key_len` (or empty).
    #[error("key of {len} bytes is outside 1..={max}")]
    InvalidKey {
        /// Length of the rejected key.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A value is longer than `Options::max_value_len`.
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// Length of the rejected value.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// An earlier append or fsync of the commit log failed. After a failed fsync the
    /// kernel may have dropped dirty pages, so the log's contents are unknown; the
    /// engine refuses writes rather than acknowledge on top of a hole. Reads keep
    /// working. The engine resumes by itself once it can start a fresh segment and
    /// write every memtable to tables (the flush thread retries, or the next write
    /// under `Background::Inline`); reopening recovers from the log on disk too.
    #[error(
        "commit log unusable after an earlier failure ({reason}); writes resume once there is room"
    )]
    WalFailed {
        /// The first failure.
        reason: String,
    },
    /// A write waited too long: for memtable flushes to catch up (usually because
    /// flushes fail, e.g. on a full disk) or for a group commit fsync.
    #[error(
        "write stalled for {waited:?} waiting for {what} (last background error: {last_error})"
    )]
    Stalled {
        /// What the write waited for.
        what: &'static str,
        /// How long it waited.
        waited: Duration,
        /// The most recent background flush or compaction error, or "none".
        last_error: String,
    },
    /// The options cannot work together, e.g. `SyncMode::Periodic` with
    /// `Background::Inline` (no thread to sync on).
    #[error("invalid options: {0}")]
    InvalidOptions(String),
    /// Another engine (in this process or another) has the data directory open.
    #[error("{path} is locked: another engine has this data directory open")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The engine was closed; no further calls are accepted.
    #[error("the engine is closed")]
    Closed,
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error::Io`] from a path and operation; used with `map_err`.
pub(crate) fn io_err(
    path: &std::path::Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.to_path_buf();
    move |source| Error::Io { path, op, source }
}
