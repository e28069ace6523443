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

mod deletes;
mod env_vars;
mod member;
mod security;
mod validate;

pub use deletes::{ExpiryConfig, TombstoneConfig};
use env_vars::EnvVars;
pub use member::{AdvertiseCheck, MemberConfig};
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
    /// `[runtime]`.
    pub runtime: RuntimeConfig,
}

/// `[runtime]`: the process's async runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    /// Threads that run requests; 0: one per CPU the process may use. Set it
    /// lower where several Shoal processes share a machine's cores (as on a
    /// one-box test cluster): each message between them wakes a thread, and
    /// with more runnable threads than cores those wake-ups become context
    /// switches and cross-thread hand-offs (BENCHMARKS.md, "Worker threads").
    pub worker_threads: usize,
}

impl RuntimeConfig {
    /// Most worker threads a config may ask for.
    pub const MAX_WORKER_THREADS: usize = 1024;

    /// A runtime as configured (all of tokio's drivers enabled).
    pub fn builder(&self) -> tokio::runtime::Builder {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.enable_all();
        if self.worker_threads > 0 {
            b.worker_threads(self.worker_threads);
        }
        b
    }
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
mod tests;
