//! The cluster secret: every node, gateway and `shoal-admin` refuses to start
//! without it, so that only processes holding it can join or command the
//! cluster. One file per cluster directory, made once and then reused, because
//! processes started with different secrets cannot talk to each other.
//!
//! The checks here are the ones the processes make themselves (at least
//! [`MIN_BYTES`], raw or hex; no group or other read bit), so a bad file is
//! reported by xtask, naming it, instead of in every process's log.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Fewer bytes than this, and the processes refuse the secret.
const MIN_BYTES: usize = 32;
/// The read bits for group and others: either one set, and the processes
/// refuse the file.
const READABLE_BY_OTHERS: u32 = 0o044;

/// Creates `path` with a fresh secret if it does not exist, otherwise checks
/// the one there. Returns whether it was created.
///
/// A bad existing file is an error, never replaced: the processes of a running
/// or restartable cluster hold the secret it had, and a new one would lock them
/// out of each other.
pub(super) fn ensure(path: &Path) -> Result<bool, String> {
    // `create_new` with the mode set at creation: the file is never briefly
    // readable by others, and two `up`s racing cannot both write one.
    let mut file = match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            check(path)?;
            return Ok(false);
        }
        Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
    };
    let written = random_bytes().and_then(|bytes| {
        file.write_all(hex(&bytes).as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", path.display()))
    });
    if let Err(e) = written {
        // A half-written file would be refused later as too short; better gone.
        drop(file);
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(true)
}

/// `Ok` when `path` holds a secret the processes accept.
pub(super) fn check(path: &Path) -> Result<(), String> {
    let shown = path.display();
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(format!(
                "the cluster secret {shown} is missing; the cluster's processes were started \
                 with the one it held, so a new one would not let this one in. \
                 `cargo xtask cluster down --wipe` and `up` start over with a new one"
            ));
        }
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    };
    if !meta.is_file() {
        return Err(format!("the cluster secret {shown} is not a file"));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & READABLE_BY_OTHERS != 0 {
        return Err(format!(
            "the cluster secret {shown} is readable by group or others (mode {mode:04o}), \
             so every process refuses it; `chmod 600 {shown}` if it has not leaked"
        ));
    }
    let bytes = fs::read(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let n = secret_len(&bytes);
    if n < MIN_BYTES {
        return Err(format!(
            "the cluster secret {shown} holds {n} bytes, fewer than the {MIN_BYTES} every \
             process requires; delete it and `cargo xtask cluster up` writes a new one"
        ));
    }
    Ok(())
}

/// How many secret bytes `file` holds: hex text (surrounding whitespace
/// aside) counts half its digits, anything else counts as raw bytes.
fn secret_len(file: &[u8]) -> usize {
    let text = file.trim_ascii();
    if !text.is_empty() && text.len().is_multiple_of(2) && text.iter().all(u8::is_ascii_hexdigit) {
        text.len() / 2
    } else {
        file.len()
    }
}

fn random_bytes() -> Result<[u8; MIN_BYTES], String> {
    let mut bytes = [0; MIN_BYTES];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(bytes)
}

/// Lower-case hex and a newline, so `cat` shows it whole.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2 + 1);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn write_with_mode(path: &Path, content: &[u8], mode: u32) {
        fs::write(path, content).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_new_secret_is_64_hex_digits_only_the_owner_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        assert_eq!(ensure(&path), Ok(true));
        assert_eq!(mode(&path), 0o600);
        let text = fs::read_to_string(&path).unwrap();
        let digits = text.strip_suffix('\n').unwrap();
        assert_eq!(digits.len(), 64);
        assert!(digits
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(check(&path), Ok(()));
    }

    #[test]
    fn an_existing_secret_is_reused_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        assert_eq!(ensure(&path), Ok(true));
        let first = fs::read(&path).unwrap();
        assert_eq!(ensure(&path), Ok(false));
        assert_eq!(fs::read(&path).unwrap(), first);
        // Two fresh secrets differ (they are random, not derived from the path).
        let other = dir.path().join("other.secret");
        assert_eq!(ensure(&other), Ok(true));
        assert_ne!(fs::read(&other).unwrap(), first);
    }

    #[test]
    fn a_secret_others_can_read_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        let content = hex(&[7; 32]);
        for bad in [0o644, 0o640, 0o604] {
            write_with_mode(&path, content.as_bytes(), bad);
            let err = ensure(&path).unwrap_err();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains("readable by group or others"), "{err}");
            assert_eq!(mode(&path), bad);
            assert_eq!(fs::read_to_string(&path).unwrap(), content);
        }
        write_with_mode(&path, content.as_bytes(), 0o400);
        assert_eq!(ensure(&path), Ok(false));
    }

    #[test]
    fn a_short_secret_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        // 62 hex digits are 31 bytes; 31 raw bytes likewise.
        let short_hex = hex(&[7; 31]);
        for (content, n) in [(short_hex.as_bytes(), 31), (&[0xff; 31][..], 31), (b"", 0)] {
            write_with_mode(&path, content, 0o600);
            let err = ensure(&path).unwrap_err();
            assert!(err.contains(&path.display().to_string()), "{err}");
            assert!(err.contains(&format!("holds {n} bytes")), "{err}");
            assert_eq!(fs::read(&path).unwrap(), content);
        }
    }

    #[test]
    fn raw_and_hex_secrets_of_32_bytes_are_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        write_with_mode(&path, &[0xa5; 32], 0o600);
        assert_eq!(check(&path), Ok(()));
        write_with_mode(&path, hex(&[1; 32]).trim_end().as_bytes(), 0o600);
        assert_eq!(check(&path), Ok(()));
    }

    #[test]
    fn a_missing_secret_is_an_error_for_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cluster.secret");
        let err = check(&path).unwrap_err();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("missing"), "{err}");
        assert!(!path.exists());
    }
}
