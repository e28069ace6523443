//! The cross-key checks of a loaded configuration, kept apart from the
//! schema: the rules that types cannot express (ranges, keys that must be
//! set together, bounds relative to other keys) grow with every section,
//! and one file holds the order in which they are reported.

use super::{Config, ConfigError, SyncMode};

/// A refusal of `key` for `reason`.
pub(super) fn bad(key: &str, reason: impl Into<String>) -> Result<(), ConfigError> {
    Err(ConfigError::Invalid {
        key: key.into(),
        reason: reason.into(),
    })
}

impl Config {
    /// Checks ranges and cross-key consistency that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let r = &self.replication;
        if r.n == 0 || r.n > 16 {
            return bad("replication.n", format!("{} is not in 1..=16", r.n));
        }
        if r.w == 0 || r.w > r.n {
            return bad(
                "replication.w",
                format!("{} is not in 1..=n ({})", r.w, r.n),
            );
        }
        if r.r == 0 || r.r > r.n {
            return bad(
                "replication.r",
                format!("{} is not in 1..=n ({})", r.r, r.n),
            );
        }
        if self.gossip.max_weight == 0 || self.gossip.max_weight > shoal_ring::MAX_WEIGHT {
            return bad(
                "gossip.max_weight",
                format!(
                    "{} is not in 1..={}",
                    self.gossip.max_weight,
                    shoal_ring::MAX_WEIGHT
                ),
            );
        }
        self.check_member()?;
        if self.runtime.worker_threads > super::RuntimeConfig::MAX_WORKER_THREADS {
            return bad(
                "runtime.worker_threads",
                format!(
                    "{} is not in 0..={} (0: one per CPU)",
                    self.runtime.worker_threads,
                    super::RuntimeConfig::MAX_WORKER_THREADS
                ),
            );
        }
        if self.gossip.interval_ms == 0 {
            return bad("gossip.interval_ms", "must be at least 1");
        }
        if self.gossip.failure_timeout_ms < 2 * self.gossip.interval_ms {
            return bad(
                "gossip.failure_timeout_ms",
                format!(
                    "{} is shorter than two gossip intervals ({} ms): every member would flap",
                    self.gossip.failure_timeout_ms,
                    2 * self.gossip.interval_ms
                ),
            );
        }
        if self.gossip.fanout == 0 {
            return bad("gossip.fanout", "must be at least 1");
        }
        if self.storage.sync == SyncMode::Periodic && self.storage.sync_interval_ms == 0 {
            return bad(
                "storage.sync_interval_ms",
                "must be at least 1 with sync = \"periodic\"",
            );
        }
        if self.storage.memtable_bytes < 64 << 10 {
            return bad("storage.memtable_bytes", "must be at least 65536");
        }
        if self.limits.max_key_bytes == 0 || self.limits.max_key_bytes > 64 << 10 {
            return bad("limits.max_key_bytes", "must be in 1..=65536");
        }
        if self.limits.max_value_bytes == 0 || self.limits.max_value_bytes > 64 << 20 {
            return bad("limits.max_value_bytes", "must be in 1..=67108864");
        }
        if self.http.request_timeout_ms == 0 {
            return bad("http.request_timeout_ms", "must be at least 1");
        }
        if self.http.max_concurrent_requests == 0 {
            return bad("http.max_concurrent_requests", "must be at least 1");
        }
        if self.http.header_timeout_ms == 0 {
            return bad("http.header_timeout_ms", "must be at least 1");
        }
        if self.http.idle_timeout_ms == 0 {
            return bad("http.idle_timeout_ms", "must be at least 1");
        }
        if self.http.max_connections == 0 {
            return bad("http.max_connections", "must be at least 1");
        }
        if self.limits.max_context_bytes < 64 {
            return bad(
                "limits.max_context_bytes",
                "must be at least 64 (a context of one actor takes about 40)",
            );
        }
        if self.versioning.max_clock_entries < 3 {
            return bad(
                "versioning.max_clock_entries",
                "must be at least 3: below N the coordinators of ordinary writes would be pruned",
            );
        }
        if self.gateway.tls.cert_file.is_some() != self.gateway.tls.key_file.is_some() {
            return bad(
                "gateway.tls.cert_file",
                "gateway.tls.cert_file and gateway.tls.key_file must be set together",
            );
        }
        self.check_deletes()?;
        if self.gateway.resp_idle_timeout_ms == 0 {
            return bad(
                "gateway.resp_idle_timeout_ms",
                "must be at least 1 (idle connections need a bound)",
            );
        }
        if self.handoff.max_hints_per_owner == 0 || self.handoff.max_hints == 0 {
            return bad(
                "handoff.max_hints_per_owner",
                "handoff.max_hints_per_owner and handoff.max_hints must be at least 1",
            );
        }
        if self.handoff.retry_interval_ms == 0 {
            return bad("handoff.retry_interval_ms", "must be at least 1");
        }
        if self.anti_entropy.interval_ms == 0 {
            return bad("anti_entropy.interval_ms", "must be at least 1");
        }
        if self.anti_entropy.max_keys_per_sec == 0 {
            return bad("anti_entropy.max_keys_per_sec", "must be at least 1");
        }
        if self.anti_entropy.max_bytes_per_sec < 64 << 10 {
            return bad(
                "anti_entropy.max_bytes_per_sec",
                "must be at least 65536 (one Merkle message is up to 132 KiB)",
            );
        }
        if self.rpc.max_connections == 0 {
            return bad("rpc.max_connections", "must be at least 1");
        }
        if self.rpc.handshake_timeout_ms == 0 {
            return bad("rpc.handshake_timeout_ms", "must be at least 1");
        }
        if self.rpc.idle_timeout_ms == 0 {
            return bad("rpc.idle_timeout_ms", "must be at least 1");
        }
        if self.rpc.max_in_flight == 0 {
            return bad("rpc.max_in_flight", "must be at least 1");
        }
        if !(shoal_merkle::MIN_LEAF_BITS..=shoal_merkle::MAX_LEAF_BITS)
            .contains(&self.anti_entropy.leaf_bits)
        {
            return bad(
                "anti_entropy.leaf_bits",
                format!(
                    "{} is not in {}..={}",
                    self.anti_entropy.leaf_bits,
                    shoal_merkle::MIN_LEAF_BITS,
                    shoal_merkle::MAX_LEAF_BITS
                ),
            );
        }
        Ok(())
    }
}
