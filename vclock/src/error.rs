//! The crate's one error type.

/// Why an operation of this crate was refused.
///
/// Decoding is the main source: contexts arrive from clients (base64 over HTTP)
/// and sibling sets from disk and the network, so every malformed byte string is
/// reported here instead of panicking. `what` names the thing being decoded
/// (`"context"`, `"sibling set"`, `"vector clock"`) so a log line says which
/// input was bad.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The input stopped in the middle of a field.
    #[error(
        "cannot decode {what}: input ends at byte {offset} but {needed} more bytes are needed"
    )]
    Truncated {
        /// The kind of thing being decoded.
        what: &'static str,
        /// Where the missing bytes should have started.
        offset: usize,
        /// How many bytes were still needed.
        needed: usize,
    },
    /// The first byte is not a format this build understands (a newer writer, or
    /// a different kind of token passed by mistake).
    #[error("cannot decode {what}: format byte {found:#04x} is not the supported {expected:#04x}")]
    UnsupportedFormat {
        /// The kind of thing being decoded.
        what: &'static str,
        /// The format byte that was found.
        found: u8,
        /// The format byte this build reads.
        expected: u8,
    },
    /// The bytes are well-framed but violate an invariant (unsorted actors, a
    /// zero counter, a dot the clock does not cover, bad UTF-8, ...). Only the
    /// canonical form is accepted, so equal states always have equal bytes.
    #[error("cannot decode {what}: {reason} at byte {offset}")]
    Malformed {
        /// The kind of thing being decoded.
        what: &'static str,
        /// Where the offending field starts.
        offset: usize,
        /// Which invariant was violated.
        reason: &'static str,
    },
    /// A complete value was read but bytes are left over; accepting them would
    /// let two different byte strings stand for one state.
    #[error("cannot decode {what}: {count} unexpected trailing bytes at byte {offset}")]
    TrailingBytes {
        /// The kind of thing being decoded.
        what: &'static str,
        /// Where the complete value ended.
        offset: usize,
        /// How many bytes were left.
        count: usize,
    },
    /// A list of clock entries given to a constructor breaks an invariant.
    #[error("invalid clock entry for actor {actor:?}: {reason}")]
    InvalidClock {
        /// The actor of the offending entry.
        actor: String,
        /// Which invariant was violated.
        reason: &'static str,
    },
    /// Minting the next counter for `actor` would overflow `u64`. No honest
    /// replica gets there; a forged or corrupt context claiming a huge counter
    /// does, and wrapping would reuse a dot and lose an update.
    #[error("counter of actor {actor:?} cannot advance past {counter}: it would overflow u64 (forged or corrupt context?)")]
    CounterOverflow {
        /// The actor whose counter is exhausted.
        actor: String,
        /// The counter that cannot be incremented.
        counter: u64,
    },
}
