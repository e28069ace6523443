//! The config sections of trust (secret, tokens, anonymous access, TLS) and
//! of clock bounds, apart from the operational ones.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::SecretText;

/// Who may talk to this process: the cluster secret for RPC peers (see
/// [`crate::secure`]), tokens for HTTP clients.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// A file of at least 32 random bytes, raw or hex, readable by its owner
    /// only.
    pub cluster_secret_file: Option<PathBuf>,
    /// The secret itself, as hex (`SHOAL_SECURITY__CLUSTER_SECRET`); wins
    /// over the file. Never printed.
    pub cluster_secret: Option<SecretText>,
    /// Client tokens (TOML `[[token]]` entries of `name`, `sha256`,
    /// `permissions`). Re-read while the gateway runs, so that adding or
    /// revoking a token needs no restart. Absent, or holding no token:
    /// requests carry no token, and only the anonymous rule admits them.
    pub tokens_file: Option<PathBuf>,
    /// Lets a gateway without tokens listen on a non-loopback address. Off
    /// by default: an open, writable store reachable from a network is the
    /// mistake this key makes explicit.
    pub allow_anonymous: bool,
}

/// The gateway's own section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// TLS on the client listeners.
    pub tls: TlsConfig,
    /// `host:port` of the Redis protocol listener; empty: none.
    pub resp_listen: String,
    /// A RESP connection with no command in progress is closed after this.
    /// Long by default: Redis clients keep pooled connections open and
    /// idle, and Redis itself never closes them.
    pub resp_idle_timeout_ms: u64,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            tls: TlsConfig::default(),
            resp_listen: String::new(),
            resp_idle_timeout_ms: 3_600_000,
        }
    }
}

/// PEM files for the client listeners; both or neither. With them the
/// listener speaks TLS only, so a misconfigured client fails at once rather
/// than sending a token in the clear.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// The leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
}

impl TlsConfig {
    /// True when the listener must speak TLS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some() || self.key_file.is_some()
    }
}

/// Bounds on the causal metadata a key carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VersioningConfig {
    /// Clock entries a key keeps before the oldest ones that back no sibling
    /// are pruned (Riak's `big_vclock`, 50). Pruning forgets history, so it
    /// can make a superseded version come back as a sibling, never lose one.
    pub max_clock_entries: usize,
}

impl Default for VersioningConfig {
    fn default() -> Self {
        Self {
            max_clock_entries: 50,
        }
    }
}
