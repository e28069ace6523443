//! The gateway's client tokens file (`security.tokens_file`), as tests write
//! it: one `[[token]]` per (name, token, permissions), the token kept only as
//! its SHA-256, written atomically (the gateway re-reads the file every
//! second and must never see half of it).

use std::path::Path;

use sha2::{Digest, Sha256};

/// The hex SHA-256 the tokens file keeps of a token.
pub fn hex_sha256(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `tokens` (name, token, permissions) to `path`, replacing it.
pub fn write_tokens(path: &Path, tokens: &[(&str, &str, &[&str])]) {
    let mut text = String::new();
    for (name, token, perms) in tokens {
        text.push_str(&format!(
            "[[token]]\nname = {name:?}\nsha256 = {:?}\npermissions = {perms:?}\n\n",
            hex_sha256(token)
        ));
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write the tokens file");
    std::fs::rename(&tmp, path).expect("replace the tokens file");
}
