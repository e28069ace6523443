//! The `[tombstones]` and `[expiry]` sections and their checks, kept apart
//! from the other sections: both decide when a node may forget data, and a
//! change to one is weighed against the other (a purged tombstone and an
//! expired value must never bring an older version back).

use serde::{Deserialize, Serialize};

use super::validate::bad;
use super::{Config, ConfigError};

/// Delete semantics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TombstoneConfig {
    /// A safety net, off by default (0): purge tombstones older than this
    /// many seconds even when the GC could not confirm that every replica
    /// holds them. It bounds the disk tombstones take while a member stays
    /// away for good (never decommissioned), at the price of what the GC
    /// exists to prevent: when that member returns, a version it holds that
    /// the purged tombstones superseded comes back. Set it only longer than
    /// any member may be away (Cassandra's `gc_grace_seconds`, 10 days).
    pub grace_secs: u64,
    /// A tombstone is a GC candidate once its latest write is this old: the
    /// longest a write, a read repair or a range stream may still be in
    /// flight carrying an older version of the key.
    pub settle_ms: u64,
    /// How often each node runs a GC pass over the keys it is the first
    /// replica of.
    pub gc_interval_ms: u64,
}

/// When a node purges expired values (their bytes; what a version must
/// remember stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpiryConfig {
    /// The clock skew between members allowed for: a value is purged only
    /// this long after its expiry instant on the node's clock, so no
    /// reader whose clock is behind by less still expects it.
    pub max_skew_ms: u64,
    /// How often the node checks whether expired values are due a purge.
    pub check_interval_ms: u64,
    /// Least time between two purges (each is a full compaction of the
    /// node's store).
    pub min_compact_interval_ms: u64,
}

impl Default for ExpiryConfig {
    fn default() -> Self {
        Self {
            max_skew_ms: 5_000,
            check_interval_ms: 5_000,
            min_compact_interval_ms: 60_000,
        }
    }
}

impl Default for TombstoneConfig {
    fn default() -> Self {
        Self {
            grace_secs: 0,
            // Twice the longest forwarded write budget (60 s).
            settle_ms: 120_000,
            gc_interval_ms: 30_000,
        }
    }
}

impl Config {
    /// The `[tombstones]` and `[expiry]` checks of [`Config::validate`], in
    /// its order.
    pub(super) fn check_deletes(&self) -> Result<(), ConfigError> {
        if self.tombstones.gc_interval_ms == 0 {
            return bad(
                "tombstones.gc_interval_ms",
                "must be at least 1 (it paces a loop)",
            );
        }
        if self.expiry.check_interval_ms == 0 {
            return bad(
                "expiry.check_interval_ms",
                "must be at least 1 (it paces a loop)",
            );
        }
        Ok(())
    }
}
