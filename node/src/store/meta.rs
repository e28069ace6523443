//! Every name under which the node keeps metadata in its store (`0x00` +
//! name), in one place: a name used by two modules, or reused for another
//! meaning, would silently corrupt one of them.

/// Rises on every open; gossip's incarnation (u64, big-endian).
pub(crate) const INCARNATION: &str = "incarnation";
/// The data directory's actor epoch (u64, big-endian): the vclock actor is
/// `id#epoch`.
pub(crate) const EPOCH: &str = "epoch";
/// Set by a graceful close, cleared at open: its absence at open means the
/// last run crashed.
pub(crate) const CLEAN_STOP: &str = "clean-stop";
/// The highest counter this actor had minted for any key whose state a
/// tombstone GC removed (u64, big-endian): a write to such a key mints
/// above it, so no clock that still remembers the purged state covers it.
pub(crate) const MINT_FLOOR: &str = "mint-floor";
/// A finished join: the node serves reads for the ranges it gained.
pub(crate) const JOINED: &str = "joined";
/// A finished decommission: this directory's copy is stale, so the node
/// refuses to start on it.
pub(crate) const DECOMMISSIONED: &str = "decommissioned";

/// A join's streaming progress for one gained range: the last key received,
/// or `done`.
pub(crate) fn join_progress(range: &shoal_ring::TokenRange) -> String {
    format!("join/{:016x}-{:016x}", range.start, range.end)
}

/// A bucket's properties with their version (bincode of
/// [`crate::buckets::VersionedProps`]), one entry per bucket that has any.
pub(crate) const BUCKET_PROPS: &str = "bucket-props/";
