//! Parsing what a client sends: percent-encoded keys, `r`/`w` query
//! parameters. Pure functions, unit-tested. (Contexts are opened by
//! [`crate::seal`], which checks their MAC.)

use crate::error::ApiError;

/// Decodes a percent-encoded path segment into the key's bytes. Every byte
/// other than `%XX` stands for itself (`+` is a plus, not a space); a `%` not
/// followed by two hex digits is an error.
pub fn decode_key(raw: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "bad percent-encoding in key: truncated escape at byte {i}"
                ))
            })?;
            match (hex_value(hex[0]), hex_value(hex[1])) {
                (Some(hi), Some(lo)) => out.push(hi << 4 | lo),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "bad percent-encoding in key: `%{}{}` at byte {i} is not an escape",
                        hex[0] as char, hex[1] as char
                    )))
                }
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Ok(out)
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes and checks a key from the raw (still percent-encoded) path
/// segment: non-empty and at most `max` bytes.
pub fn parse_key(raw: &str, max: usize) -> Result<Vec<u8>, ApiError> {
    let key = decode_key(raw)?;
    if key.is_empty() {
        return Err(ApiError::bad_request("the key is empty"));
    }
    if key.len() > max {
        return Err(ApiError::KeyTooLong {
            len: key.len(),
            max,
        });
    }
    Ok(key)
}

/// Reads the quorum parameter `name` (`r` or `w`) from a raw query string:
/// `default` when absent, else an integer in `1..=n`.
pub fn parse_quorum(
    query: Option<&str>,
    name: &str,
    n: usize,
    default: usize,
) -> Result<usize, ApiError> {
    let Some(query) = query else {
        return Ok(default);
    };
    let mut found = None;
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if k == name {
            found = Some(v);
        }
    }
    let Some(value) = found else {
        return Ok(default);
    };
    match value.parse::<usize>() {
        Ok(q) if (1..=n).contains(&q) => Ok(q),
        _ => Err(ApiError::bad_request(format!(
            "`{name}` must be an integer in 1..={n}, got {value:?}"
        ))),
    }
}

/// Whether an `Accept` header asks for the JSON form of a read.
pub fn wants_json(accept: Option<&[u8]>) -> bool {
    accept
        .and_then(|a| std::str::from_utf8(a).ok())
        .is_some_and(|a| {
            a.split(',')
                .any(|part| part.split(';').next().unwrap_or("").trim() == "application/json")
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode::{encode_key, rfc3339};

    #[track_caller]
    fn key_ok(raw: &str, expected: &[u8]) {
        assert_eq!(decode_key(raw).unwrap(), expected);
    }

    #[track_caller]
    fn key_bad(raw: &str) {
        let e = decode_key(raw).unwrap_err();
        assert_eq!(e.code(), "bad_request", "{raw}");
    }

    #[test]
    fn keys() {
        key_ok("user:42", b"user:42");
        key_ok("a%2Fb", b"a/b");
        key_ok("%00%ff%FE", &[0, 255, 254]);
        key_ok("a+b", b"a+b");
        key_ok("%25", b"%");
        key_ok("caf%C3%A9", "café".as_bytes());
        key_bad("%");
        key_bad("abc%4");
        key_bad("%zz");
        key_bad("%%41");
        assert_eq!(parse_key("", 10).unwrap_err().code(), "bad_request");
        assert_eq!(parse_key("abc", 2).unwrap_err().code(), "key_too_long");
        // The limit applies to decoded bytes, not the encoded path.
        assert_eq!(parse_key("%00%01", 2).unwrap(), vec![0, 1]);
        for key in [&b"plain"[..], &[0, 1, 2, 255], b"a/b c%d"] {
            assert_eq!(decode_key(&encode_key(key)).unwrap(), key);
        }
    }

    #[test]
    fn quorums() {
        let check = |q: Option<&str>, expected: Result<usize, ()>| {
            assert_eq!(
                parse_quorum(q, "w", 3, 2).map_err(|_| ()),
                expected,
                "{q:?}"
            );
        };
        check(None, Ok(2));
        check(Some(""), Ok(2));
        check(Some("r=3"), Ok(2));
        check(Some("w=1"), Ok(1));
        check(Some("x=y&w=3"), Ok(3));
        check(Some("w=0"), Err(()));
        check(Some("w=4"), Err(()));
        check(Some("w=-1"), Err(()));
        check(Some("w=two"), Err(()));
        check(Some("w="), Err(()));
        check(Some("w"), Err(()));
    }

    #[test]
    fn accept_and_time() {
        assert!(wants_json(Some(b"application/json")));
        assert!(wants_json(Some(b"text/html, application/json;q=0.9")));
        assert!(!wants_json(Some(b"*/*")));
        assert!(!wants_json(None));
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_795_554_000_000), "2026-11-24T21:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
