//! Configuration of a Shoal process: TOML file plus `SHOAL_` environment overrides.
//!
//! One schema serves both binaries (`shoal-node` and `shoal-gateway`): a cluster
//! started with `SHOAL_REPLICATION__W=1` passes that variable to every process,
//! and with one schema no process ever mistakes another's key for an unknown one.
//! Each binary reads the sections it needs; `[member]` is the process's identity
//! in gossip, `[storage]`, `[handoff]`, `[anti_entropy]` and `[tombstones]` only
//! matter to nodes, `[http]` only to gateways.
//!
//! Keys map to the environment as `SHOAL_` + the key path upper-cased, sections
//! joined by `__`: `replication.w` is `SHOAL_REPLICATION__W`. Unknown keys (in the
//! file or the environment) and invalid values are rejected at start-up with a
//! message that names the key.

use std::path::{Path, PathBuf};

use figment::providers::{Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

mod env_vars;
mod security;

use env_vars::EnvVars;
pub use security::{GatewayConfig, SecurityConfig, TlsConfig, VersioningConfig};

/// Why a configuration was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The file or environment did not parse into the schema (unknown key,
    /// wrong type, unknown enum value); figment's message names the key.
    #[error("invalid configuration: {message}")]
    Parse {
        /// What figment reported, including the key and its source.
        message: String,
    },
    /// A value parsed but is out of range or inconsistent with another.
    #[error("invalid configuration: key `{key}`: {reason}")]
    Invalid {
        /// Dotted key path, e.g. `replication.w`.
        key: String,
        /// Why the value is rejected.
        reason: String,
    },
    /// `--config FILE` named a file that does not exist.
    #[error("config file {path:?} does not exist")]
    MissingFile {
        /// The path given.
        path: PathBuf,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// This process's identity in the cluster.
    pub member: MemberConfig,
    /// N, W and R.
    pub replication: ReplicationConfig,
    /// Gossip timing.
    pub gossip: GossipConfig,
    /// The node's LSM engine.
    pub storage: StorageConfig,
    /// Sloppy quorum hints.
    pub handoff: HandoffConfig,
    /// Merkle-tree repair between replicas.
    pub anti_entropy: AntiEntropyConfig,
    /// Delete semantics.
    pub tombstones: TombstoneConfig,
    /// Purging expired values.
    pub expiry: ExpiryConfig,
    /// Key and value sizes.
    pub limits: LimitsConfig,
    /// The gateway's HTTP side.
    pub http: HttpConfig,
    /// Logging.
    pub log: LogConfig,
    /// The cluster secret every RPC connection proves.
    pub security: SecurityConfig,
    /// Bounds on the RPC port.
    pub rpc: RpcConfig,
    /// `[gateway]`.
    pub gateway: GatewayConfig,
    /// `[versioning]`.
    pub versioning: VersioningConfig,
    /// `[metrics]`.
    pub metrics: MetricsConfig,
}

/// `[metrics]`: where a storage node serves `GET /metrics` (a gateway
/// serves it on its HTTP port, behind the `metrics` permission).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// `host:port` of the node's metrics listener; empty: none.
    pub listen: String,
    /// The listener takes no token (it serves no data), so a non-loopback
    /// address must be asked for explicitly.
    pub allow_remote: bool,
}

/// Secret text whose `Debug` never shows it, so a logged config leaks nothing.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretText(pub String);

impl SecretText {
    /// 32 fresh random bytes as hex: a new cluster's secret (tests and
    /// examples; `cargo xtask cluster up` writes its own file).
    pub fn random() -> Self {
        use rand::RngCore;
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        Self(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }
}

impl std::fmt::Debug for SecretText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Bounds on the RPC port, so that no peer (with or without the secret) can
/// exhaust a node's sockets, memory or threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RpcConfig {
    /// Connections served at once; a new one past it is closed at once.
    pub max_connections: usize,
    /// A connection that has not completed the handshake in this time is closed.
    pub handshake_timeout_ms: u64,
    /// A connection with no request in flight and none received for this
    /// long is closed (pooled clients dial again on their next call).
    pub idle_timeout_ms: u64,
    /// Requests in flight on the whole node; past it a request is answered
    /// `overloaded` at once (the gateway then tries another replica or
    /// answers 503).
    pub max_in_flight: usize,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            max_connections: 1_024,
            handshake_timeout_ms: 5_000,
            idle_timeout_ms: 600_000,
            max_in_flight: 4_096,
        }
    }
}

/// Identity of this process in gossip and on the ring.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MemberConfig {
    /// Unique, stable id; tokens derive from it, so renaming moves data.
    pub id: String,
    /// Where the tarpc server listens (`host:port`; port 0 picks one).
    pub listen: String,
    /// The address others should dial; defaults to the bound listen address.
    pub advertise: Option<String>,
    /// Addresses to join through (any live member; may include this one).
    pub seeds: Vec<String>,
    /// Relative capacity on the ring (storage nodes only).
    pub weight: u32,
    /// Failure domain (rack, availability zone): with at least N zones among
    /// the storage members, the N owners of every key lie in N distinct
    /// zones; with fewer, in all of them. Letters, digits, `-`, `_`, `.`; at
    /// most 64 bytes. Every member in one zone (the default) places keys as
    /// without zones.
    pub zone: String,
    /// Where a node keeps its data (storage nodes only).
    pub data_dir: PathBuf,
    /// Whether this node joins a running cluster: it announces itself as
    /// joining, receives the ranges it gains from their current replicas
    /// (resumably, across restarts), and only then takes its share of reads.
    /// Leave it `false` for the nodes that bootstrap a cluster together, and
    /// for a node restarting (even with a wiped disk: anti-entropy refills it).
    pub join: bool,
}

/// Replication factors: the cluster-wide defaults that requests may override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ReplicationConfig {
    /// Copies of each key.
    pub n: usize,
    /// Acknowledgements a write waits for.
    pub w: usize,
    /// Answers a read waits for.
    pub r: usize,
}

/// Gossip timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GossipConfig {
    /// Milliseconds between gossip rounds.
    pub interval_ms: u64,
    /// A member whose heartbeat has not risen for this long is down.
    pub failure_timeout_ms: u64,
    /// Peers contacted per round.
    pub fanout: usize,
    /// Largest storage weight any member may announce: gossip refuses a
    /// record above it (or of weight 0), so that one bad record cannot make
    /// a member own nearly every key or stop every ring from building.
    pub max_weight: u32,
}

/// When the commit log is fsynced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    /// fsync before every acknowledgement (group commit across writers).
    Always,
    /// fsync every `storage.sync_interval_ms`.
    Periodic,
    /// Leave it to the OS.
    Never,
}

/// The node's LSM engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Durability of acknowledged writes.
    pub sync: SyncMode,
    /// Interval for `sync = "periodic"`.
    pub sync_interval_ms: u64,
    /// Memtable size that triggers a flush to an SSTable.
    pub memtable_bytes: usize,
}

/// Sloppy quorum hints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HandoffConfig {
    /// Whether writes for down owners go to fallbacks with hints.
    pub enabled: bool,
    /// Hints older than this are dropped (anti-entropy repairs the rest).
    pub hint_ttl_secs: u64,
    /// How often the node tries to deliver the hints it holds.
    pub retry_interval_ms: u64,
    /// Hints held for one owner at most; past it a new hint for that owner
    /// is refused and the gateway tries another fallback.
    pub max_hints_per_owner: u64,
    /// Hints held in all at most (same refusal).
    pub max_hints: u64,
}

/// Merkle-tree repair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AntiEntropyConfig {
    /// Whether the periodic exchange runs.
    pub enabled: bool,
    /// Milliseconds between exchanges.
    pub interval_ms: u64,
    /// Upper bound on keys repaired per second, so repair never starves clients.
    pub max_keys_per_sec: u64,
    /// Upper bound on anti-entropy bytes (hashes, listings, values) per second.
    pub max_bytes_per_sec: u64,
    /// The Merkle tree has 2^`leaf_bits` leaves (16..=24). Replicas compare
    /// trees only of equal shape, so every node of a cluster must agree. One
    /// leaf costs 40 bytes of memory: 20 (the default) is 40 MiB per node;
    /// 16 is 2.5 MiB, for small clusters and tests.
    pub leaf_bits: u8,
}

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

/// Size limits, enforced by gateways and again by nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest accepted key.
    pub max_key_bytes: usize,
    /// Largest accepted value.
    pub max_value_bytes: usize,
    /// Largest accepted `X-Shoal-Context` header (as sent, base64), so that
    /// a client cannot make a key carry a huge clock for good.
    pub max_context_bytes: usize,
}

/// The gateway's HTTP side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Where the HTTP API listens.
    pub listen: String,
    /// How long a request may wait for its quorum. Nodes read it too: a join
    /// or decommission waits this long (plus five gossip rounds) for writes
    /// planned before the change to finish, so give nodes the gateways' value.
    pub request_timeout_ms: u64,
    /// Requests served at once; beyond it the gateway answers 503 `overloaded`.
    pub max_concurrent_requests: usize,
    /// A connection that has not sent a whole request head in this time is
    /// closed (slowloris). Also bounds a TLS handshake.
    pub header_timeout_ms: u64,
    /// A keep-alive connection with no request in flight and no bytes moving
    /// for this long is closed.
    pub idle_timeout_ms: u64,
    /// Connections open at once; past it a new one is answered 503
    /// `overloaded` and closed, so that sockets left open cannot starve the
    /// gateway of the file descriptors it needs to reach nodes.
    pub max_connections: usize,
}

/// Output format of logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One human-readable line per event.
    Human,
    /// One JSON object per line.
    Json,
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `RUST_LOG`-style filter (`RUST_LOG` itself wins when set).
    pub filter: String,
    /// Output format.
    pub format: LogFormat,
}

impl Default for MemberConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            listen: "127.0.0.1:7001".into(),
            advertise: None,
            seeds: Vec::new(),
            weight: 1,
            zone: shoal_ring::DEFAULT_ZONE.to_string(),
            data_dir: PathBuf::from("data"),
            join: false,
        }
    }
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self { n: 3, w: 2, r: 2 }
    }
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            interval_ms: 200,
            failure_timeout_ms: 3_000,
            fanout: 3,
            max_weight: 100,
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            sync: SyncMode::Always,
            sync_interval_ms: 100,
            memtable_bytes: 16 << 20,
        }
    }
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            hint_ttl_secs: 3 * 3600,
            retry_interval_ms: 500,
            max_hints_per_owner: 1_000_000,
            max_hints: 4_000_000,
        }
    }
}

impl Default for AntiEntropyConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_ms: 30_000,
            max_keys_per_sec: 10_000,
            max_bytes_per_sec: 32 << 20,
            leaf_bits: 20,
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

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_key_bytes: 2048,
            max_value_bytes: 4 << 20,
            max_context_bytes: 4096,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            request_timeout_ms: 2_000,
            max_concurrent_requests: 1_024,
            header_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_connections: 1_024,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            filter: "info".into(),
            format: LogFormat::Human,
        }
    }
}

impl Config {
    /// Loads `file` (if given) and then `SHOAL_*` variables from the process
    /// environment, over the defaults, and validates the result.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, std::env::vars())
    }

    /// [`Config::load`] with an explicit environment, so tests never touch the
    /// process's global one.
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::MissingFile {
                    path: path.to_path_buf(),
                });
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        // figment's Env provider reads the process environment; we give it the
        // variables through a TOML-free provider built from the iterator instead.
        let vars: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX))
            .collect();
        figment = figment.merge(EnvVars(vars));
        let config: Config = figment.extract().map_err(|e| ConfigError::Parse {
            message: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML string (no environment); for tests and examples.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Parse {
                message: e.to_string(),
            })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and cross-key consistency that types cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        fn bad(key: &str, reason: impl Into<String>) -> Result<(), ConfigError> {
            Err(ConfigError::Invalid {
                key: key.into(),
                reason: reason.into(),
            })
        }
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
        if self.member.weight == 0 || self.member.weight > self.gossip.max_weight {
            return bad(
                "member.weight",
                format!(
                    "{} is not in 1..={} (gossip.max_weight)",
                    self.member.weight, self.gossip.max_weight
                ),
            );
        }
        let zone = &self.member.zone;
        if zone.is_empty()
            || zone.len() > shoal_gossip::MAX_ZONE_LEN
            || !zone
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return bad(
                "member.zone",
                format!(
                    "{zone:?} is not 1..={} letters, digits, '-', '_' or '.'",
                    shoal_gossip::MAX_ZONE_LEN
                ),
            );
        }
        if self.member.listen.parse::<std::net::SocketAddr>().is_err() {
            return bad(
                "member.listen",
                format!("{:?} is not an ip:port address", self.member.listen),
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

    /// The cluster secret, from `security.cluster_secret` or else
    /// `security.cluster_secret_file`. Every Shoal process refuses to start
    /// without one.
    pub fn cluster_secret(
        &self,
    ) -> Result<crate::secure::ClusterSecret, crate::secure::SecretError> {
        use crate::secure::{ClusterSecret, SecretError};
        match (
            &self.security.cluster_secret,
            &self.security.cluster_secret_file,
        ) {
            (Some(hex), _) => ClusterSecret::from_hex(&hex.0),
            (None, Some(path)) => ClusterSecret::from_file(path),
            (None, None) => Err(SecretError::Missing),
        }
    }

    /// The RPC transport of this process: its secret and handshake limit.
    pub fn transport(&self) -> Result<crate::secure::Transport, crate::secure::SecretError> {
        Ok(crate::secure::Transport::new(
            self.cluster_secret()?,
            std::time::Duration::from_millis(self.rpc.handshake_timeout_ms),
        ))
    }

    /// Largest RPC frame a node accepts: a full value plus its key, clock and
    /// framing, so that an oversized or garbage length prefix is refused
    /// before anything is allocated for it.
    pub fn max_frame_bytes(&self) -> usize {
        self.limits.max_value_bytes + self.limits.max_key_bytes + (1 << 20)
    }
}

/// Environment variables that belong to Shoal.
pub const ENV_PREFIX: &str = "SHOAL_";

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        assert_eq!(Config::from_toml("").unwrap(), Config::default());
    }

    #[test]
    fn env_overrides_file_and_maps_sections() {
        let dir = std::env::temp_dir().join(format!("shoal-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(
            &file,
            "[member]\nid = \"node-1\"\n[replication]\nw = 2\n[storage]\nsync = \"never\"\n",
        )
        .unwrap();
        let c = Config::load_with_env(
            Some(&file),
            env(&[
                ("SHOAL_REPLICATION__W", "1"),
                ("SHOAL_MEMBER__SEEDS", "[\"127.0.0.1:7001\"]"),
                ("SHOAL_STORAGE__SYNC", "periodic"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.member.id, "node-1");
        assert_eq!(c.replication.w, 1);
        assert_eq!(c.storage.sync, SyncMode::Periodic);
        assert_eq!(c.member.seeds, vec!["127.0.0.1:7001".to_string()]);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[track_caller]
    fn check_rejected(toml: &str, env_vars: &[(&str, &str)], names: &str) {
        let dir = std::env::temp_dir().join(format!(
            "shoal-config-rej-{}-{}",
            std::process::id(),
            names.replace('.', "_")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, toml).unwrap();
        let err = Config::load_with_env(Some(&file), env(env_vars)).unwrap_err();
        std::fs::remove_dir_all(&dir).ok();
        let message = err.to_string();
        assert!(
            message.contains(names),
            "{message:?} does not name {names:?}"
        );
    }

    #[test]
    fn rejects_unknown_keys_and_bad_values_naming_them() {
        check_rejected("[replication]\nwrites = 2\n", &[], "writes");
        check_rejected("[replicaton]\nw = 2\n", &[], "replicaton");
        check_rejected("", &[("SHOAL_GOSSIP__FANOUTT", "3")], "fanoutt");
        check_rejected("[replication]\nw = 4\n", &[], "replication.w");
        check_rejected("[replication]\nr = 0\n", &[], "replication.r");
        check_rejected("[storage]\nsync = \"sometimes\"\n", &[], "sometimes");
        check_rejected("[member]\nweight = 0\n", &[], "member.weight");
        check_rejected("[member]\nlisten = \"nowhere\"\n", &[], "member.listen");
        check_rejected("[replication]\nn = \"three\"\n", &[], "replication.n");
        check_rejected("", &[("SHOAL_REPLICATION__W", "lots")], "replication.w");
        check_rejected(
            "[anti_entropy]\nleaf_bits = 12\n",
            &[],
            "anti_entropy.leaf_bits",
        );
        check_rejected(
            "[anti_entropy]\nmax_bytes_per_sec = 10\n",
            &[],
            "anti_entropy.max_bytes_per_sec",
        );
    }

    #[test]
    fn the_commented_example_config_is_every_default() {
        let text = include_str!("../../shoal.example.toml");
        assert_eq!(Config::from_toml(text).unwrap(), Config::default());
    }

    #[test]
    fn missing_file_is_named() {
        let err = Config::load_with_env(Some(Path::new("/nonexistent/shoal.toml")), env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/shoal.toml"));
    }
}
