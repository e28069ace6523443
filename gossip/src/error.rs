//! The crate's one error type.

use thiserror::Error;

/// Why a message or a configuration was refused.
///
/// Every variant is a problem with input the caller handed in (a message from the
/// network, a config value); the membership state is never left half-updated by a
/// refused message, because messages are validated before anything is merged.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum GossipError {
    /// The peer speaks a protocol version this build does not understand; it is
    /// probably newer, so the message is dropped rather than misread.
    #[error("gossip protocol version {got} is not supported (this build speaks {supported})")]
    UnsupportedVersion {
        /// Version carried by the message.
        got: u16,
        /// Version this build speaks.
        supported: u16,
    },
    /// A member id or address is empty or longer than the limit; such a field would
    /// break the message-size bound every other member relies on.
    #[error("{field} is {len} bytes long; it must be between 1 and {max} bytes")]
    BadFieldLength {
        /// Which field (`"id"` or `"address"`).
        field: &'static str,
        /// Its length in bytes.
        len: usize,
        /// The largest length accepted.
        max: usize,
    },
    /// A message holds more entries than any honest peer would put in one message
    /// of the configured size, so it is refused before any work is done on it.
    #[error("message carries {count} entries, more than the {max} that fit in one message")]
    TooManyEntries {
        /// Entries in the message.
        count: usize,
        /// Upper bound derived from `Config::max_message_bytes`.
        max: usize,
    },
    /// Digest entries must be sorted by id without duplicates: the receiver merges
    /// them against its own sorted list in a single pass.
    #[error("digest is not sorted by id: {id:?} follows {previous:?}")]
    UnsortedDigest {
        /// The id that came out of order.
        id: String,
        /// The id before it.
        previous: String,
    },
    /// A record or digest entry claims its metadata changed at a heartbeat later
    /// than its current heartbeat, which the owner can never produce.
    #[error("entry for {id:?} has meta version {meta_version} above its heartbeat {heartbeat}")]
    InconsistentEntry {
        /// The member the entry describes.
        id: String,
        /// Claimed heartbeat of the last metadata change.
        meta_version: u64,
        /// Claimed current heartbeat.
        heartbeat: u64,
    },
    /// A configuration value is out of range.
    #[error("invalid gossip config: {field} {reason}")]
    InvalidConfig {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}
