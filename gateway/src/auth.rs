//! Client tokens: who may read, write, administer or scrape a gateway.
//!
//! Tokens live in `security.tokens_file` as SHA-256 hashes only, so the file
//! (and any backup of it) grants nothing. A request's bearer token is hashed
//! and compared with every entry in constant time. The file is re-read every
//! [`RELOAD_INTERVAL`] while the gateway runs: adding or revoking a token
//! needs no restart, and a revoked token stops working within seconds.
//!
//! With no token configured (no file, or a file without entries), the
//! anonymous rule decides: a loopback listener admits everyone (a developer's
//! cluster), any other listener only with `security.allow_anonymous = true`,
//! and without it the gateway refuses to start unless a tokens file is named
//! (whose tokens may come later: until then every request is refused).

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::{HeaderValue, Method};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use shoal_node::config::SecurityConfig;
use subtle::ConstantTimeEq;
use tokio::sync::watch;

use crate::error::ApiError;

/// How often the tokens file is re-read (API: a change is seen within 5 s).
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// A tokens file larger than this is refused: it is a list of hashes, and a
/// million of them is a mistake, not a configuration.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// Longest bearer token looked at; longer ones are refused unhashed.
pub const MAX_TOKEN_BYTES: usize = 1024;

/// What a token may do. Independent of each other, as the README lists them:
/// `admin` does not imply `write`, so an operator's debugging token cannot
/// overwrite data by mistake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// GET of keys, `/v1/cluster*`.
    Read,
    /// PUT and DELETE of keys.
    Write,
    /// `/v1/debug/*` and (later) bucket properties.
    Admin,
    /// `/metrics`.
    Metrics,
}

impl Permission {
    fn bit(self) -> u8 {
        match self {
            Permission::Read => 1,
            Permission::Write => 2,
            Permission::Admin => 4,
            Permission::Metrics => 8,
        }
    }

    /// The name used in the tokens file and in errors.
    pub fn name(self) -> &'static str {
        match self {
            Permission::Read => "read",
            Permission::Write => "write",
            Permission::Admin => "admin",
            Permission::Metrics => "metrics",
        }
    }

    fn parse(name: &str) -> Option<Self> {
        [
            Permission::Read,
            Permission::Write,
            Permission::Admin,
            Permission::Metrics,
        ]
        .into_iter()
        .find(|p| p.name() == name)
    }
}

/// What a route requires of the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Open to everyone (`/health`, the OpenAPI document).
    Nothing,
    /// A token with this permission.
    Permission(Permission),
    /// `metrics` or `admin`.
    Metrics,
    /// Any known token (unknown paths: a stranger learns nothing from a 404).
    AnyToken,
}

/// What `method path` requires (the README's "Security: clients" table).
pub fn need_for(method: &Method, path: &str) -> Need {
    if path == "/health" || path == "/v1/openapi.json" || path == "/ui" {
        // `/ui` is a static page; the data it shows comes from
        // `/v1/cluster/stats`, which needs `read`.
        Need::Nothing
    } else if path == "/v1/kv" || path.starts_with("/v1/kv/") {
        if method == Method::GET || method == Method::HEAD {
            Need::Permission(Permission::Read)
        } else {
            Need::Permission(Permission::Write)
        }
    } else if path.starts_with("/v1/buckets/") {
        if method == Method::GET || method == Method::HEAD {
            Need::Permission(Permission::Read)
        } else if path.ends_with("/props") && !path.contains("/keys/") {
            // A bucket's policy decides how every key in it merges.
            Need::Permission(Permission::Admin)
        } else {
            Need::Permission(Permission::Write)
        }
    } else if path == "/v1/cluster" || path.starts_with("/v1/cluster/") {
        Need::Permission(Permission::Read)
    } else if path.starts_with("/v1/debug/") || path == "/v1/debug" {
        Need::Permission(Permission::Admin)
    } else if path == "/metrics" {
        Need::Metrics
    } else {
        Need::AnyToken
    }
}

/// Why the tokens could not be loaded, or the gateway may not start.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file exists but cannot be read.
    #[error("cannot read security.tokens_file {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a valid tokens file.
    #[error("security.tokens_file {path:?} is invalid: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the entry.
        reason: String,
    },
    /// No tokens and a non-loopback listener without `allow_anonymous`.
    #[error(
        "refusing to serve {addr} to anyone without a token: set security.tokens_file \
         (cargo xtask cluster token add), or security.allow_anonymous = true to mean it"
    )]
    AnonymousOnNetwork {
        /// The listener's address.
        addr: std::net::SocketAddr,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<TokenEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenEntry {
    name: String,
    sha256: String,
    permissions: Vec<String>,
}

#[derive(Debug, Clone)]
struct Token {
    name: String,
    hash: [u8; 32],
    permissions: u8,
}

/// The parsed contents of a tokens file.
#[derive(Debug, Clone, Default)]
struct Table {
    tokens: Vec<Token>,
    /// The file's bytes, to tell a changed file from an unchanged one.
    source: Vec<u8>,
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Table, AuthError> {
    let invalid = |reason: String| AuthError::Invalid {
        path: path.to_path_buf(),
        reason,
    };
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(format!("not UTF-8: {e}")))?;
    let file: TokensFile = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
    let mut tokens: Vec<Token> = Vec::with_capacity(file.token.len());
    for (i, entry) in file.token.into_iter().enumerate() {
        let at = format!("token #{} ({:?})", i + 1, entry.name);
        if entry.name.is_empty() {
            return Err(invalid(format!("{at}: empty name")));
        }
        let hash = decode_hash(&entry.sha256)
            .ok_or_else(|| invalid(format!("{at}: sha256 is not 64 hex digits")))?;
        let mut permissions = 0u8;
        for p in &entry.permissions {
            let p = Permission::parse(p).ok_or_else(|| {
                invalid(format!(
                    "{at}: unknown permission {p:?} (read, write, admin, metrics)"
                ))
            })?;
            permissions |= p.bit();
        }
        if permissions == 0 {
            return Err(invalid(format!("{at}: no permissions")));
        }
        if tokens.iter().any(|t| t.name == entry.name) {
            return Err(invalid(format!("{at}: the name is used twice")));
        }
        if tokens.iter().any(|t| t.hash == hash) {
            return Err(invalid(format!("{at}: the same token is listed twice")));
        }
        tokens.push(Token {
            name: entry.name,
            hash,
            permissions,
        });
    }
    Ok(Table {
        tokens,
        source: bytes.to_vec(),
    })
}

fn decode_hash(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.as_bytes();
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

/// Reads the file; a missing file is an empty table (tokens may be added
/// later), anything else unreadable is an error.
fn read(path: &Path) -> Result<Table, AuthError> {
    let read_err = |source| AuthError::Read {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Table::default()),
        Err(e) => return Err(read_err(e)),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(AuthError::Invalid {
            path: path.to_path_buf(),
            reason: format!(
                "{} bytes is over the {MAX_FILE_BYTES}-byte limit",
                meta.len()
            ),
        });
    }
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Table::default()),
        Err(e) => return Err(read_err(e)),
    };
    parse(path, &bytes)
}

/// The gateway's access rules: the current token table and the anonymous
/// rule. Shared by every request; the reload task swaps the table.
#[derive(Debug)]
pub struct Auth {
    file: Option<PathBuf>,
    table: RwLock<Arc<Table>>,
    anonymous: bool,
}

impl Auth {
    /// The rules for a client listener bound on `addr`.
    pub fn load(config: &SecurityConfig, addr: std::net::SocketAddr) -> Result<Self, AuthError> {
        let table = match &config.tokens_file {
            Some(path) => read(path)?,
            None => Table::default(),
        };
        let anonymous = addr.ip().is_loopback() || config.allow_anonymous;
        if config.tokens_file.is_none() && !anonymous {
            return Err(AuthError::AnonymousOnNetwork { addr });
        }
        Ok(Self {
            file: config.tokens_file.clone(),
            table: RwLock::new(Arc::new(table)),
            anonymous,
        })
    }

    fn current(&self) -> Arc<Table> {
        // A poisoned lock still holds a whole table (swaps are one store).
        self.table
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// How many tokens are configured now.
    pub fn token_count(&self) -> usize {
        self.current().tokens.len()
    }

    /// Re-reads the tokens file. Returns whether the table changed. On an
    /// invalid file the last good table stays (as a web server keeps its
    /// config on a bad reload) and the error is returned for the log.
    pub fn reload(&self) -> Result<bool, AuthError> {
        let Some(path) = &self.file else {
            return Ok(false);
        };
        let fresh = read(path)?;
        if fresh.source == self.current().source {
            return Ok(false);
        }
        *self
            .table
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(fresh);
        Ok(true)
    }

    /// Re-reads the file every [`RELOAD_INTERVAL`] until `shutdown`.
    pub async fn watch(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        if self.file.is_none() {
            return;
        }
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                _ = shutdown.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(RELOAD_INTERVAL) => {}
            }
            let auth = self.clone();
            // File reads block; keep them off the request threads.
            let result = tokio::task::spawn_blocking(move || auth.reload()).await;
            match result {
                Ok(Ok(changed)) => {
                    if changed {
                        tracing::info!(tokens = self.token_count(), "tokens file reloaded");
                    }
                    last_error = None;
                }
                Ok(Err(e)) => {
                    let message = e.to_string();
                    // Once per distinct error, not once a second.
                    if last_error.as_deref() != Some(message.as_str()) {
                        tracing::error!(error = %message, "tokens file not reloaded; the previous tokens stay in force");
                        last_error = Some(message);
                    }
                }
                Err(e) => tracing::error!(error = %e, "tokens reload task failed"),
            }
        }
    }

    /// Decides a request: `Ok` to serve it, or the 401/403 to answer.
    pub fn check(&self, authorization: Option<&HeaderValue>, need: Need) -> Result<(), ApiError> {
        if need == Need::Nothing {
            return Ok(());
        }
        let table = self.current();
        if table.tokens.is_empty() {
            return if self.anonymous {
                Ok(())
            } else {
                Err(ApiError::Unauthorized {
                    message: "no client token is configured yet on this gateway; \
                              add one with `cargo xtask cluster token add`"
                        .into(),
                })
            };
        }
        let presented = bearer(authorization)?;
        let hash: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        // Compare with every entry, whatever matched, so timing tells nothing.
        let mut found: Option<&Token> = None;
        for token in &table.tokens {
            if bool::from(token.hash.ct_eq(&hash)) {
                found = Some(token);
            }
        }
        let Some(token) = found else {
            return Err(ApiError::Unauthorized {
                message: "unknown token".into(),
            });
        };
        let allowed = match need {
            Need::Nothing | Need::AnyToken => true,
            Need::Permission(p) => token.permissions & p.bit() != 0,
            Need::Metrics => {
                token.permissions & (Permission::Metrics.bit() | Permission::Admin.bit()) != 0
            }
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::Forbidden {
                token: token.name.clone(),
                needed: match need {
                    Need::Permission(p) => p.name(),
                    _ => "metrics",
                },
            })
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(header: Option<&HeaderValue>) -> Result<&str, ApiError> {
    let unauthorized = |message: &str| ApiError::Unauthorized {
        message: message.into(),
    };
    let header = header.ok_or_else(|| {
        unauthorized("this gateway needs a token: send Authorization: Bearer <token>")
    })?;
    if header.len() > MAX_TOKEN_BYTES + 7 {
        return Err(unauthorized("the Authorization header is too long"));
    }
    let value = header
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| unauthorized("the Authorization header is not `Bearer <token>`"))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(unauthorized(
            "the Authorization header is not `Bearer <token>`",
        ));
    }
    Ok(token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash_hex(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn file_with(dir: &Path, entries: &[(&str, &str, &[&str])]) -> PathBuf {
        let mut text = String::new();
        for (name, token, perms) in entries {
            text.push_str(&format!(
                "[[token]]\nname = {name:?}\nsha256 = {:?}\npermissions = {perms:?}\n\n",
                hash_hex(token)
            ));
        }
        let path = dir.join("tokens.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn config(path: Option<PathBuf>, allow_anonymous: bool) -> SecurityConfig {
        SecurityConfig {
            tokens_file: path,
            allow_anonymous,
            ..SecurityConfig::default()
        }
    }

    fn bearer_of(token: &str) -> HeaderValue {
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap()
    }

    const LOOPBACK: &str = "127.0.0.1:8080";
    const NETWORK: &str = "10.1.2.3:8080";

    #[test]
    fn routes_need_what_the_api_says() {
        let cases = [
            (Method::GET, "/health", Need::Nothing),
            (Method::GET, "/v1/openapi.json", Need::Nothing),
            (Method::GET, "/v1/kv/a", Need::Permission(Permission::Read)),
            (Method::HEAD, "/v1/kv/a", Need::Permission(Permission::Read)),
            (Method::PUT, "/v1/kv/a", Need::Permission(Permission::Write)),
            (
                Method::DELETE,
                "/v1/kv/a",
                Need::Permission(Permission::Write),
            ),
            (Method::POST, "/v1/kv", Need::Permission(Permission::Write)),
            (
                Method::GET,
                "/v1/cluster",
                Need::Permission(Permission::Read),
            ),
            (
                Method::GET,
                "/v1/cluster/preflist/a",
                Need::Permission(Permission::Read),
            ),
            (
                Method::GET,
                "/v1/debug/replicas/a",
                Need::Permission(Permission::Admin),
            ),
            (Method::GET, "/metrics", Need::Metrics),
            (Method::GET, "/nope", Need::AnyToken),
        ];
        for (method, path, need) in cases {
            assert_eq!(need_for(&method, path), need, "{method} {path}");
        }
    }

    #[test]
    fn each_permission_against_each_need() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(
            dir.path(),
            &[
                ("reader", "t-read", &["read"]),
                ("writer", "t-write", &["write"]),
                ("admin", "t-admin", &["admin"]),
                ("scraper", "t-metrics", &["metrics"]),
            ],
        );
        let auth = Auth::load(&config(Some(path), false), NETWORK.parse().unwrap()).unwrap();
        let needs = [
            Need::Permission(Permission::Read),
            Need::Permission(Permission::Write),
            Need::Permission(Permission::Admin),
            Need::Metrics,
            Need::AnyToken,
        ];
        // token → which of `needs` it passes
        let expect: [(&str, [bool; 5]); 4] = [
            ("t-read", [true, false, false, false, true]),
            ("t-write", [false, true, false, false, true]),
            ("t-admin", [false, false, true, true, true]),
            ("t-metrics", [false, false, false, true, true]),
        ];
        for (token, passes) in expect {
            for (need, pass) in needs.iter().zip(passes) {
                let r = auth.check(Some(&bearer_of(token)), *need);
                if pass {
                    assert!(r.is_ok(), "{token} {need:?}: {r:?}");
                } else {
                    assert_eq!(r.unwrap_err().code(), "forbidden", "{token} {need:?}");
                }
            }
        }
        for bad in [
            None,
            Some(bearer_of("t-unknown")),
            Some(HeaderValue::from_static("Basic abc")),
        ] {
            let e = auth
                .check(bad.as_ref(), Need::Permission(Permission::Read))
                .unwrap_err();
            assert_eq!(e.code(), "unauthorized", "{bad:?}");
        }
        assert!(auth.check(None, Need::Nothing).is_ok());
    }

    #[test]
    fn the_anonymous_rule() {
        let dir = tempfile::tempdir().unwrap();
        // No file on loopback: everyone.
        let auth = Auth::load(&config(None, false), LOOPBACK.parse().unwrap()).unwrap();
        assert!(auth
            .check(None, Need::Permission(Permission::Write))
            .is_ok());
        // No file on a network address: refused at start-up unless meant.
        assert!(matches!(
            Auth::load(&config(None, false), NETWORK.parse().unwrap()),
            Err(AuthError::AnonymousOnNetwork { .. })
        ));
        let open = Auth::load(&config(None, true), NETWORK.parse().unwrap()).unwrap();
        assert!(open
            .check(None, Need::Permission(Permission::Admin))
            .is_ok());
        // A named file not written yet, on a network address: starts,
        // refuses everyone until a token exists.
        let later = dir.path().join("tokens.toml");
        let auth = Auth::load(
            &config(Some(later.clone()), false),
            NETWORK.parse().unwrap(),
        )
        .unwrap();
        assert_eq!(
            auth.check(None, Need::Permission(Permission::Read))
                .unwrap_err()
                .code(),
            "unauthorized"
        );
        file_with(dir.path(), &[("app", "t1", &["read"])]);
        assert!(auth.reload().unwrap());
        assert!(auth
            .check(Some(&bearer_of("t1")), Need::Permission(Permission::Read))
            .is_ok());
    }

    #[test]
    fn reload_adds_and_revokes_and_keeps_the_last_good_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with(
            dir.path(),
            &[("a", "ta", &["read"]), ("b", "tb", &["read"])],
        );
        let auth = Auth::load(
            &config(Some(path.clone()), false),
            LOOPBACK.parse().unwrap(),
        )
        .unwrap();
        let read = Need::Permission(Permission::Read);
        assert!(auth.check(Some(&bearer_of("tb")), read).is_ok());
        assert!(!auth.reload().unwrap(), "unchanged file");
        file_with(dir.path(), &[("a", "ta", &["read"])]);
        assert!(auth.reload().unwrap());
        assert_eq!(
            auth.check(Some(&bearer_of("tb")), read).unwrap_err().code(),
            "unauthorized"
        );
        std::fs::write(&path, "[[token]]\nname = \"x\"\n").unwrap();
        assert!(auth.reload().is_err());
        assert!(
            auth.check(Some(&bearer_of("ta")), read).is_ok(),
            "last good table"
        );
    }

    #[test]
    fn invalid_files_name_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.toml");
        let good = hash_hex("x");
        for (text, says) in [
            ("[[token]]\nname = \"a\"\nsha256 = \"abc\"\npermissions = [\"read\"]\n".to_string(), "64 hex"),
            (format!("[[token]]\nname = \"a\"\nsha256 = \"{good}\"\npermissions = [\"root\"]\n"), "unknown permission"),
            (format!("[[token]]\nname = \"a\"\nsha256 = \"{good}\"\npermissions = []\n"), "no permissions"),
            (format!("[[token]]\nname = \"a\"\nsha256 = \"{good}\"\npermissions = [\"read\"]\nextra = 1\n"), "unknown field"),
            (format!("[[token]]\nname = \"a\"\nsha256 = \"{good}\"\npermissions = [\"read\"]\n[[token]]\nname = \"a\"\nsha256 = \"{}\"\npermissions = [\"read\"]\n", hash_hex("y")), "twice"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Auth::load(&config(Some(path.clone()), false), LOOPBACK.parse().unwrap())
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{e:?} lacks {says:?}");
        }
    }
}
