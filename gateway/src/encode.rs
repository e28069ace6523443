//! What the gateway writes back to clients: percent-encoded keys, the
//! base64 values and RFC 3339 times (contexts are sealed by `seal`). Apart from parsing
//! (`request`) and errors (`error`), so that the response models depend on
//! these and nothing depends back on them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Percent-encodes a key for display in URLs (unreserved bytes stay as is).
pub fn encode_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len());
    for &b in key {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b':') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Standard base64 of a value, as the JSON forms carry it.
pub fn encode_value(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// RFC 3339 UTC timestamp (`2026-11-24T21:00:00Z`) of milliseconds since
/// the Unix epoch.
pub fn rfc3339(millis: u64) -> String {
    let secs = millis / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days` for days since 1970-01-01 (non-negative).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}
