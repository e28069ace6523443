//! The cluster secret: what every member must hold to speak to another.
//!
//! It comes from `security.cluster_secret_file` or, for containers and tests,
//! from `security.cluster_secret` (hex; `SHOAL_SECURITY__CLUSTER_SECRET`). A
//! file is refused when group or others may read it, as ssh refuses a private
//! key: a secret every local user can read protects nothing.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Shortest secret accepted, in bytes (before hex decoding, a hex secret
/// needs twice as many characters).
pub const MIN_SECRET_BYTES: usize = 32;

/// Longest secret file read: a secret is a few dozen bytes, so anything
/// larger is the wrong file.
const MAX_SECRET_FILE_BYTES: u64 = 64 << 10;

/// Why no cluster secret could be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Neither key is set.
    #[error(
        "no cluster secret: set security.cluster_secret_file (a file of at least {MIN_SECRET_BYTES} \
         random bytes, raw or hex, mode 0600) or SHOAL_SECURITY__CLUSTER_SECRET (hex)"
    )]
    Missing,
    /// The file could not be read.
    #[error("cannot read the cluster secret file {path:?}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file's mode lets group or others read it.
    #[error(
        "the cluster secret file {path:?} has mode {mode:o}: group and others must not be \
         able to read it (chmod 600 it)"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Shorter than [`MIN_SECRET_BYTES`].
    #[error(
        "the cluster secret from {source_name} is {len} bytes; at least {MIN_SECRET_BYTES} random \
         bytes are needed"
    )]
    TooShort {
        /// Where it came from (a file name or the config key).
        source_name: String,
        /// Its decoded length.
        len: usize,
    },
    /// `security.cluster_secret` is not hex.
    #[error("security.cluster_secret is not hex: {0}")]
    NotHex(String),
}

/// The cluster secret, reduced to the 32-byte pre-shared key of the handshake.
///
/// Only the digest is kept: the raw secret may be any length, and the Noise
/// PSK is exactly 32 bytes. The label binds the key to this use, so the same
/// secret reused elsewhere yields an unrelated key.
#[derive(Clone)]
pub struct ClusterSecret {
    psk: [u8; 32],
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(<redacted>)")
    }
}

impl ClusterSecret {
    /// A secret from its raw bytes (at least [`MIN_SECRET_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SecretError> {
        Self::checked(bytes, "the given bytes")
    }

    /// A secret from hex text, as `security.cluster_secret` holds it.
    pub fn from_hex(text: &str) -> Result<Self, SecretError> {
        let bytes = decode_hex(text.trim()).map_err(SecretError::NotHex)?;
        Self::checked(&bytes, "security.cluster_secret")
    }

    /// Reads a secret file: hex text if it is all hex digits (around
    /// whitespace), raw bytes otherwise.
    pub fn from_file(path: &Path) -> Result<Self, SecretError> {
        let read_err = |source| SecretError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o044 != 0 {
                return Err(SecretError::Permissions {
                    path: path.to_path_buf(),
                    mode,
                });
            }
        }
        if meta.len() > MAX_SECRET_FILE_BYTES {
            return Err(read_err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{} bytes is not a secret file", meta.len()),
            )));
        }
        let raw = std::fs::read(path).map_err(read_err)?;
        let name = path.display().to_string();
        match std::str::from_utf8(&raw).ok().map(str::trim) {
            Some(text) if !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) => {
                let bytes = decode_hex(text).map_err(SecretError::NotHex)?;
                Self::checked(&bytes, &name)
            }
            _ => Self::checked(&raw, &name),
        }
    }

    fn checked(bytes: &[u8], source_name: &str) -> Result<Self, SecretError> {
        if bytes.len() < MIN_SECRET_BYTES {
            return Err(SecretError::TooShort {
                source_name: source_name.to_string(),
                len: bytes.len(),
            });
        }
        let mut hasher = Sha256::new();
        hasher.update(b"shoal cluster psk v1\0");
        hasher.update(bytes);
        Ok(Self {
            psk: hasher.finalize().into(),
        })
    }

    /// The handshake's pre-shared key.
    pub(crate) fn psk(&self) -> &[u8; 32] {
        &self.psk
    }

    /// A 32-byte key for one other use of the secret (e.g. the gateway's
    /// context MAC): HMAC-SHA256 keyed by the handshake key over `purpose`,
    /// so that keys for different purposes are unrelated and none of them
    /// reveals the handshake key.
    pub fn derive_key(&self, purpose: &str) -> [u8; 32] {
        use hmac::{Hmac, Mac};
        // HMAC takes keys of any length, so this cannot fail.
        let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.psk)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(b"shoal derived key v1\0");
        mac.update(purpose.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

fn decode_hex(text: &str) -> Result<Vec<u8>, String> {
    if !text.len().is_multiple_of(2) {
        return Err(format!("odd number of hex digits ({})", text.len()));
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|pair| u8::from_str_radix(pair, 16).ok())
                .ok_or_else(|| format!("not a hex digit pair at offset {i}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    #[test]
    fn a_hex_file_and_the_same_raw_bytes_give_the_same_key() {
        let dir = tempfile::tempdir().unwrap();
        let raw = [7u8; 32];
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        let a = ClusterSecret::from_file(&write(
            dir.path(),
            "hex",
            format!("{hex}\n").as_bytes(),
            0o600,
        ))
        .unwrap();
        let b = ClusterSecret::from_file(&write(dir.path(), "raw", &raw, 0o400)).unwrap();
        let c = ClusterSecret::from_hex(&hex).unwrap();
        assert_eq!(a.psk(), b.psk());
        assert_eq!(a.psk(), c.psk());
        assert_ne!(a.psk(), &raw, "the key is derived, not the secret itself");
        assert_eq!(a.derive_key("context"), b.derive_key("context"));
        assert_ne!(a.derive_key("context"), a.derive_key("tokens"));
        assert_ne!(&a.derive_key("context"), a.psk());
    }

    #[test]
    fn short_readable_and_non_hex_secrets_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let short = write(dir.path(), "short", &[1u8; 31], 0o600);
        assert!(matches!(
            ClusterSecret::from_file(&short),
            Err(SecretError::TooShort { len: 31, .. })
        ));
        let shared = write(dir.path(), "shared", &[1u8; 32], 0o640);
        assert!(matches!(
            ClusterSecret::from_file(&shared),
            Err(SecretError::Permissions { mode: 0o640, .. })
        ));
        assert!(matches!(
            ClusterSecret::from_file(&dir.path().join("absent")),
            Err(SecretError::Read { .. })
        ));
        assert!(matches!(
            ClusterSecret::from_hex("zz"),
            Err(SecretError::NotHex(_))
        ));
        assert!(matches!(
            ClusterSecret::from_hex(&"ab".repeat(31)),
            Err(SecretError::TooShort { len: 31, .. })
        ));
        assert_eq!(
            format!("{:?}", ClusterSecret::from_bytes(&[9; 40]).unwrap()),
            "ClusterSecret(<redacted>)"
        );
    }
}
