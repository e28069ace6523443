//! The Redis wire format (RESP) the load generator speaks, as pure functions
//! over byte buffers, and Shoal's error bodies; HTTP itself is in
//! [`crate::http`]. Parsers return `Ok(None)` for "need more bytes", as
//! mini-redis's frame parser does, so the caller reads again; malformed input is
//! an `Err` that names what was wrong.

use crate::http::find_crlf;

/// A `{"error": "<code>"}` body's code (Shoal's error shape), for error tallies.
pub(crate) fn error_code(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    Some(v.get("error")?.as_str()?.to_string())
}

// ---------------------------------------------------------------- RESP

/// One Redis reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Reply {
    Simple(String),
    Error(String),
    Integer(i64),
    /// `None` is the null bulk string (`$-1`): key absent.
    Bulk(Option<Vec<u8>>),
    Array(Option<Vec<Reply>>),
}

/// A command as a RESP array of bulk strings.
pub(crate) fn command(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + args.iter().map(|a| a.len() + 16).sum::<usize>());
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Parses one reply from the start of `buf`: `Ok(Some((reply, bytes consumed)))`,
/// `Ok(None)` when more bytes are needed.
pub(crate) fn parse_reply(buf: &[u8]) -> Result<Option<(Reply, usize)>, String> {
    parse_reply_depth(buf, 0)
}

fn parse_reply_depth(buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>, String> {
    if depth > 8 {
        return Err("RESP arrays nested deeper than 8".into());
    }
    let Some(eol) = find_crlf(buf) else {
        return Ok(None);
    };
    let Some((&kind, line)) = buf[..eol].split_first() else {
        return Err("empty RESP line".into());
    };
    let line = std::str::from_utf8(line).map_err(|_| "RESP line is not UTF-8")?;
    let after = eol + 2;
    let int = |s: &str| {
        s.parse::<i64>()
            .map_err(|_| format!("bad RESP integer {s:?}"))
    };
    let reply = match kind {
        b'+' => (Reply::Simple(line.to_string()), after),
        b'-' => (Reply::Error(line.to_string()), after),
        b':' => (Reply::Integer(int(line)?), after),
        b'$' => {
            let n = int(line)?;
            if n < 0 {
                (Reply::Bulk(None), after)
            } else {
                let n = usize::try_from(n).map_err(|_| "bulk length too large")?;
                let end = after.checked_add(n).ok_or("bulk length overflows")?;
                if buf.len() < end + 2 {
                    return Ok(None);
                }
                if &buf[end..end + 2] != b"\r\n" {
                    return Err("bulk string not followed by CRLF".into());
                }
                (Reply::Bulk(Some(buf[after..end].to_vec())), end + 2)
            }
        }
        b'*' => {
            let n = int(line)?;
            if n < 0 {
                (Reply::Array(None), after)
            } else {
                let mut items = Vec::new();
                let mut at = after;
                for _ in 0..n {
                    match parse_reply_depth(&buf[at..], depth + 1)? {
                        Some((item, used)) => {
                            items.push(item);
                            at += used;
                        }
                        None => return Ok(None),
                    }
                }
                (Reply::Array(Some(items)), at)
            }
        }
        other => return Err(format!("unknown RESP type byte {:?}", char::from(other))),
    };
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_from_bodies() {
        assert_eq!(
            error_code(br#"{"error":"overloaded","message":"m"}"#).as_deref(),
            Some("overloaded")
        );
        assert_eq!(error_code(b"not json"), None);
    }

    #[track_caller]
    fn check_resp(raw: &[u8], expect: Result<Option<(Reply, usize)>, &str>) {
        match (parse_reply(raw), expect) {
            (Ok(g), Ok(e)) => assert_eq!(g, e),
            (Err(g), Err(e)) => assert!(g.contains(e), "{g:?} lacks {e:?}"),
            (g, e) => panic!("got {g:?}, expected {e:?}"),
        }
    }

    #[test]
    fn resp_replies() {
        check_resp(b"+OK\r\n", Ok(Some((Reply::Simple("OK".into()), 5))));
        check_resp(
            b"-ERR no\r\n+x",
            Ok(Some((Reply::Error("ERR no".into()), 9))),
        );
        check_resp(b":-42\r\n", Ok(Some((Reply::Integer(-42), 6))));
        check_resp(
            b"$3\r\nabc\r\n",
            Ok(Some((Reply::Bulk(Some(b"abc".to_vec())), 9))),
        );
        check_resp(b"$0\r\n\r\n", Ok(Some((Reply::Bulk(Some(Vec::new())), 6))));
        check_resp(b"$-1\r\n", Ok(Some((Reply::Bulk(None), 5))));
        check_resp(
            b"*2\r\n+a\r\n$1\r\nb\r\n",
            Ok(Some((
                Reply::Array(Some(vec![
                    Reply::Simple("a".into()),
                    Reply::Bulk(Some(b"b".to_vec())),
                ])),
                15,
            ))),
        );
        check_resp(b"*-1\r\n", Ok(Some((Reply::Array(None), 5))));
    }

    #[test]
    fn resp_incomplete_and_malformed() {
        check_resp(b"", Ok(None));
        check_resp(b"+OK\r", Ok(None));
        check_resp(b"$3\r\nab", Ok(None));
        check_resp(b"*2\r\n+a\r\n", Ok(None));
        check_resp(b"?x\r\n", Err("unknown RESP type"));
        check_resp(b":1x\r\n", Err("bad RESP integer"));
        check_resp(b"$3\r\nabcd\r\n", Err("not followed by CRLF"));
        check_resp(b"\r\n", Err("empty RESP line"));
    }

    #[test]
    fn resp_commands() {
        assert_eq!(command(&[b"GET", b"k"]), b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
    }
}
