//! `cargo xtask cluster token`: the gateway's client tokens, in
//! `target/cluster/tokens.toml` (the gateway config names it as
//! `security.tokens_file` and reloads it within seconds of a change).
//!
//! The file holds only SHA-256 hashes: a token is printed once, when it is
//! made, and cannot be recovered from the file, so a leaked file does not
//! leak access. It is still written with mode 0600 and replaced atomically
//! (a temp file in the same directory, fsynced, renamed over), because the
//! gateway may read it at any moment and must never see half a file.
//!
//! An existing file that does not parse, or breaks a rule below, is refused
//! and left as it is: rewriting it from what could be understood would
//! silently revoke or change the tokens it held.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use sha2::{Digest, Sha256};

/// What a token may be allowed, in the order the file lists them.
pub(super) const PERMISSIONS: [&str; 4] = ["read", "write", "admin", "metrics"];
/// Prefix of every token, so a leaked one is recognisable (secret scanners,
/// logs) and cannot be mistaken for some other credential.
const TOKEN_PREFIX: &str = "shoal_";
/// Random bytes per token: 256 bits, beyond guessing.
const TOKEN_BYTES: usize = 32;
/// Longest accepted token name: names show in logs and metrics labels.
const MAX_NAME_LEN: usize = 64;
/// More tokens than this and the file is refused: the gateway checks every
/// request against them, and nobody manages that many by hand.
const MAX_TOKENS: usize = 1024;
/// Bigger than this and the file is refused unread (1024 tokens take ~150 KB).
const MAX_FILE_BYTES: u64 = 1 << 20;

/// One `[[token]]` entry.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Token {
    pub(super) name: String,
    /// Lowercase hex SHA-256 of the token string.
    pub(super) sha256: String,
    pub(super) permissions: Vec<String>,
}

/// The file as the gateway reads it. Unknown keys are refused rather than
/// ignored, since a rewrite would drop them.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokensFile {
    #[serde(default)]
    token: Vec<Token>,
}

/// `Ok(())` for a name the file may hold: 1..=64 of `[A-Za-z0-9_.-]`.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a token name cannot be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "token name {name:?} is {} bytes long; at most {MAX_NAME_LEN} are allowed",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(format!(
            "token name {name:?} contains {c:?}; only letters, digits, '_', '.' and '-' are allowed"
        ));
    }
    Ok(())
}

/// Parses `read,write`: a comma-separated, non-empty subset of
/// [`PERMISSIONS`], returned without duplicates in that order.
pub(super) fn parse_permissions(list: &str) -> Result<Vec<String>, String> {
    let mut chosen = BTreeSet::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let Some(i) = PERMISSIONS.iter().position(|p| *p == item) else {
            return Err(format!(
                "unknown permission {item:?}; choose from {}",
                PERMISSIONS.join(", ")
            ));
        };
        chosen.insert(i);
    }
    if chosen.is_empty() {
        return Err(format!(
            "a token needs at least one permission (any of {})",
            PERMISSIONS.join(", ")
        ));
    }
    Ok(chosen
        .into_iter()
        .map(|i| PERMISSIONS[i].to_owned())
        .collect())
}

/// The tokens in `path`; none when it does not exist. Refuses a file that
/// does not parse or breaks a rule, naming the file and the entry.
pub(super) fn load(path: &Path) -> Result<Vec<Token>, String> {
    let shown = path.display();
    let meta = match fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("cannot read {shown}: {e}")),
    };
    if !meta.is_file() {
        return Err(format!("the tokens file {shown} is not a file"));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(format!(
            "the tokens file {shown} is {} bytes, more than the {MAX_FILE_BYTES} allowed; \
             it was left as it is",
            meta.len()
        ));
    }
    let text = fs::read_to_string(path).map_err(|e| format!("cannot read {shown}: {e}"))?;
    let file: TokensFile = toml::from_str(&text).map_err(|e| {
        format!(
            "the tokens file {shown} is not valid (it was left as it is; fix or delete it): {e}"
        )
    })?;
    check_all(&file.token).map_err(|e| {
        format!(
            "the tokens file {shown} is not valid (it was left as it is; fix or delete it): {e}"
        )
    })?;
    Ok(file.token)
}

fn check_all(tokens: &[Token]) -> Result<(), String> {
    if tokens.len() > MAX_TOKENS {
        return Err(format!(
            "it holds {} tokens, more than the {MAX_TOKENS} allowed",
            tokens.len()
        ));
    }
    let mut names = BTreeSet::new();
    for (i, t) in tokens.iter().enumerate() {
        let at = format!("token {} ({:?})", i + 1, t.name);
        check_name(&t.name).map_err(|e| format!("{at}: {e}"))?;
        if !names.insert(t.name.as_str()) {
            return Err(format!("{at}: the name appears twice"));
        }
        if t.sha256.len() != 64
            || !t
                .sha256
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(format!(
                "{at}: sha256 must be 64 lowercase hex digits, found {:?}",
                t.sha256
            ));
        }
        if t.permissions.is_empty() {
            return Err(format!(
                "{at}: a token needs at least one permission (any of {})",
                PERMISSIONS.join(", ")
            ));
        }
        let mut seen = BTreeSet::new();
        for p in &t.permissions {
            if !PERMISSIONS.contains(&p.as_str()) {
                return Err(format!(
                    "{at}: unknown permission {p:?}; choose from {}",
                    PERMISSIONS.join(", ")
                ));
            }
            if !seen.insert(p.as_str()) {
                return Err(format!("{at}: permission {p:?} is listed twice"));
            }
        }
    }
    Ok(())
}

/// The file's text for `tokens`, in the shape the gateway reads.
fn render(tokens: &[Token]) -> String {
    let mut out = String::from(
        "# Written by `cargo xtask cluster token`; read by the gateway (security.tokens_file).\n\
         # Only SHA-256 hashes of the tokens are kept: a token is shown once, when it is made.\n\
         # No [[token]] entries means no tokens configured.\n",
    );
    for t in tokens {
        let perms: Vec<String> = t.permissions.iter().map(|p| format!("{p:?}")).collect();
        // Names and hashes are checked to be plain ASCII, so Debug quoting
        // is exactly a TOML basic string.
        let _ = write!(
            out,
            "\n[[token]]\nname = {:?}\nsha256 = {:?}\npermissions = [{}]\n",
            t.name,
            t.sha256,
            perms.join(", ")
        );
    }
    out
}

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// What the file stores for `token`.
pub(super) fn hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

/// A fresh token: [`TOKEN_PREFIX`] and 64 hex digits of OS randomness.
fn new_token() -> Result<String, String> {
    let mut bytes = [0u8; TOKEN_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| format!("cannot get random bytes from the OS: {e}"))?;
    Ok(format!("{TOKEN_PREFIX}{}", hex(&bytes)))
}

/// Replaces `path` with `text`: a 0600 temp file in the same directory,
/// fsynced, renamed over `path`, then the directory fsynced, so a reader
/// sees the old file or the new one and a crash leaves one of them.
fn write_atomically(path: &Path, text: &str) -> Result<(), String> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let file_name = path
        .file_name()
        .ok_or_else(|| format!("{} names no file", path.display()))?
        .to_string_lossy();
    let tmp: PathBuf = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&tmp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()));
    drop(file);
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("cannot sync {}: {e}", dir.display()))
}

/// Adds a token called `name` with `permissions` (`read,write`) to `path`;
/// returns the token, which exists nowhere else afterwards.
pub(super) fn add(path: &Path, name: &str, permissions: &str) -> Result<String, String> {
    check_name(name)?;
    let permissions = parse_permissions(permissions)?;
    let mut tokens = load(path)?;
    if tokens.iter().any(|t| t.name == name) {
        return Err(format!(
            "a token named {name:?} already exists in {}; remove it first or pick another name",
            path.display()
        ));
    }
    if tokens.len() >= MAX_TOKENS {
        return Err(format!(
            "{} already holds {MAX_TOKENS} tokens, the most allowed",
            path.display()
        ));
    }
    let token = new_token()?;
    tokens.push(Token {
        name: name.to_owned(),
        sha256: hash(&token),
        permissions,
    });
    store(path, &tokens)?;
    Ok(token)
}

/// Removes the token called `name` from `path`.
pub(super) fn remove(path: &Path, name: &str) -> Result<(), String> {
    let mut tokens = load(path)?;
    let before = tokens.len();
    tokens.retain(|t| t.name != name);
    if tokens.len() == before {
        return Err(format!("no token named {name:?} in {}", path.display()));
    }
    store(path, &tokens)
}

fn store(path: &Path, tokens: &[Token]) -> Result<(), String> {
    let text = render(tokens);
    // What the gateway will parse must be what was meant.
    let back: TokensFile = toml::from_str(&text)
        .map_err(|e| format!("internal error: rendered tokens do not parse: {e}"))?;
    if back.token != tokens {
        return Err("internal error: rendered tokens do not read back the same".into());
    }
    write_atomically(path, &text)
}

/// One line per token for `token list`: name, permissions and the start of
/// the hash (enough to tell entries apart, useless for anything else).
pub(super) fn list_lines(tokens: &[Token]) -> Vec<String> {
    let width = tokens
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut lines = vec![format!("{:width$}  {:<26}  sha256", "name", "permissions")];
    for t in tokens {
        lines.push(format!(
            "{:width$}  {:<26}  {}…",
            t.name,
            t.permissions.join(","),
            &t.sha256[..12]
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn add_two_remove_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        assert_eq!(load(&path), Ok(vec![]), "a missing file holds no tokens");
        let app = add(&path, "app", "read,write").unwrap();
        let ops = add(&path, "ops.team-1", "metrics, admin,read").unwrap();
        assert_ne!(app, ops);
        for t in [&app, &ops] {
            let hex_part = t.strip_prefix("shoal_").unwrap();
            assert_eq!(hex_part.len(), 64);
            assert!(hex_part
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        }
        assert_eq!(mode(&path), 0o600);
        let tokens = load(&path).unwrap();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].name, "app");
        assert_eq!(tokens[0].permissions, ["read", "write"]);
        assert_eq!(tokens[1].permissions, ["read", "admin", "metrics"]);
        // The file stores the hash of exactly the printed token, and never
        // the token itself.
        assert_eq!(tokens[0].sha256, hex(&Sha256::digest(app.as_bytes())));
        assert_eq!(tokens[1].sha256, hash(&ops));
        let text = fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&app) && !text.contains(&app["shoal_".len()..]));
        assert!(text.contains("[[token]]\nname = \"app\"\nsha256 = \""));
        assert!(text.contains("permissions = [\"read\", \"write\"]"));

        remove(&path, "app").unwrap();
        assert_eq!(mode(&path), 0o600);
        let left = load(&path).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].name, "ops.team-1");
        assert_eq!(left[0].sha256, hash(&ops));
        assert!(remove(&path, "app")
            .unwrap_err()
            .contains("no token named \"app\""));
        remove(&path, "ops.team-1").unwrap();
        assert_eq!(load(&path), Ok(vec![]));
        // No temp file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tokens.toml"]);
    }

    #[test]
    fn the_mode_is_0600_even_if_the_old_file_was_wider() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        add(&path, "a", "read").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        add(&path, "b", "write").unwrap();
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn duplicate_names_are_refused_and_the_file_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        add(&path, "app", "read").unwrap();
        let before = fs::read(&path).unwrap();
        let err = add(&path, "app", "write").unwrap_err();
        assert!(err.contains("already exists"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), before);
    }

    #[test]
    fn names_and_permissions_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        for bad in ["", "a b", "é", "x/y", "quote\"", &"n".repeat(65)] {
            assert!(add(&path, bad, "read").is_err(), "name {bad:?}");
        }
        for good in ["A", "app_1.v2-x", &"n".repeat(64)] {
            assert_eq!(check_name(good), Ok(()), "name {good:?}");
        }
        for bad in ["", ",", "READ", "read,delete", "rw"] {
            let err = add(&path, "app", bad).unwrap_err();
            assert!(err.contains("permission"), "{bad:?}: {err}");
        }
        assert!(!path.exists(), "a refused add writes nothing");
        assert_eq!(
            parse_permissions("write,read,write"),
            Ok(vec!["read".to_owned(), "write".to_owned()])
        );
    }

    #[test]
    fn a_malformed_file_is_refused_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let good_hash = "ab".repeat(32);
        let cases = [
            ("not toml at all [[[".to_owned(), "not valid"),
            (
                format!("[[token]]\nname = \"a\"\nsha256 = \"{good_hash}\"\npermissions = [\"read\"]\ncomment = \"x\"\n"),
                "unknown field",
            ),
            (
                format!("[[token]]\nname = \"a\"\nsha256 = \"{}\"\npermissions = [\"read\"]\n", "AB".repeat(32)),
                "64 lowercase hex",
            ),
            (
                format!("[[token]]\nname = \"a\"\nsha256 = \"{good_hash}\"\npermissions = [\"root\"]\n"),
                "unknown permission",
            ),
            (
                format!("[[token]]\nname = \"a\"\nsha256 = \"{good_hash}\"\npermissions = []\n"),
                "at least one permission",
            ),
            (
                format!(
                    "[[token]]\nname = \"a\"\nsha256 = \"{good_hash}\"\npermissions = [\"read\"]\n\
                     [[token]]\nname = \"a\"\nsha256 = \"{good_hash}\"\npermissions = [\"write\"]\n"
                ),
                "appears twice",
            ),
            ("[[token]]\nname = \"a\"\n".to_owned(), "missing field"),
        ];
        for (text, why) in cases {
            fs::write(&path, &text).unwrap();
            for err in [
                add(&path, "new", "read").unwrap_err(),
                remove(&path, "a").unwrap_err(),
                load(&path).unwrap_err(),
            ] {
                assert!(err.contains(&path.display().to_string()), "{err}");
                assert!(err.contains(why), "expected {why:?} in: {err}");
            }
            assert_eq!(fs::read_to_string(&path).unwrap(), text, "left as it was");
        }
    }

    #[test]
    fn a_file_without_entries_holds_no_tokens() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        fs::write(&path, "# nothing yet\n").unwrap();
        assert_eq!(load(&path), Ok(vec![]));
        add(&path, "app", "read").unwrap();
        assert_eq!(load(&path).unwrap().len(), 1);
    }

    #[test]
    fn list_shows_names_and_permissions_but_not_whole_hashes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        add(&path, "app", "read,write").unwrap();
        let tokens = load(&path).unwrap();
        let lines = list_lines(&tokens);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].starts_with("app "), "{lines:?}");
        assert!(lines[1].contains("read,write"));
        assert!(lines[1].contains(&tokens[0].sha256[..12]));
        assert!(!lines[1].contains(&tokens[0].sha256));
    }
}
