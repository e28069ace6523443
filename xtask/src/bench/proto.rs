//! The two wire formats the load generator speaks, as pure functions over byte
//! buffers: HTTP/1.1 responses (Shoal's gateway, etcd's v3 JSON gateway) and
//! RESP replies (Redis). Parsers return `Ok(None)` for "need more bytes", as
//! mini-redis's frame parser does, so the caller reads again; malformed input is
//! an `Err` that names what was wrong.

/// Largest response head accepted (status line plus headers).
const MAX_HEAD: usize = 64 * 1024;

/// One HTTP response, body decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    /// Shoal's `X-Shoal-Context` header, when present.
    pub(crate) context: Option<String>,
    /// The server said `Connection: close`: open a new connection next time.
    pub(crate) close: bool,
}

/// An HTTP/1.1 request with keep-alive (the default in 1.1, so no header).
pub(crate) fn request(
    method: &str,
    path: &str,
    host: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(128 + path.len() + body.len());
    out.extend_from_slice(method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
    out.extend_from_slice(host.as_bytes());
    for (k, v) in headers {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(v.as_bytes());
    }
    out.extend_from_slice(b"\r\nContent-Length: ");
    out.extend_from_slice(body.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body);
    out
}

/// Parses one response from the start of `buf`: `Ok(Some((response, bytes
/// consumed)))`, `Ok(None)` when more bytes are needed.
pub(crate) fn parse_response(buf: &[u8]) -> Result<Option<(Response, usize)>, String> {
    let Some(split) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(format!("response head longer than {MAX_HEAD} bytes"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..split]).map_err(|_| "response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.split(' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1.x status line: {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or_else(|| format!("bad status in {status_line:?}"))?;
    let mut length = None;
    let mut chunked = false;
    let mut context = None;
    let mut close = version == "HTTP/1.0";
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("header line without a colon: {line:?}"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if name.eq_ignore_ascii_case("x-shoal-context") {
            context = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        }
    }
    let start = split + 4;
    let rest = &buf[start..];
    let no_body = status < 200 || status == 204 || status == 304;
    let (body, used) = if no_body {
        (Vec::new(), 0)
    } else if chunked {
        match dechunk(rest)? {
            Some(x) => x,
            None => return Ok(None),
        }
    } else if let Some(n) = length {
        if rest.len() < n {
            return Ok(None);
        }
        (rest[..n].to_vec(), n)
    } else {
        return Err(format!(
            "status {status} response has neither Content-Length nor chunked encoding"
        ));
    };
    Ok(Some((
        Response {
            status,
            body,
            context,
            close,
        },
        start + used,
    )))
}

/// Decodes a chunked body at the start of `data`: the body and the bytes it took,
/// or `None` when incomplete. Trailers are skipped.
fn dechunk(data: &[u8]) -> Result<Option<(Vec<u8>, usize)>, String> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        let Some(eol) = find_crlf(&data[at..]) else {
            return Ok(None);
        };
        let line = std::str::from_utf8(&data[at..at + eol]).map_err(|_| "bad chunk size line")?;
        let size_text = line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        at += eol + 2;
        if size == 0 {
            // Trailer lines until an empty line.
            loop {
                let Some(eol) = find_crlf(&data[at..]) else {
                    return Ok(None);
                };
                at += eol + 2;
                if eol == 0 {
                    return Ok(Some((out, at)));
                }
            }
        }
        let end = at.checked_add(size).ok_or("chunk size overflows")?;
        if data.len() < end + 2 {
            return Ok(None);
        }
        if &data[end..end + 2] != b"\r\n" {
            return Err("chunk not followed by CRLF".into());
        }
        out.extend_from_slice(&data[at..end]);
        at = end + 2;
    }
}

fn find_crlf(data: &[u8]) -> Option<usize> {
    data.windows(2).position(|w| w == b"\r\n")
}

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

    fn ok(status: u16, body: &[u8], context: Option<&str>, close: bool) -> Response {
        Response {
            status,
            body: body.to_vec(),
            context: context.map(str::to_string),
            close,
        }
    }

    #[track_caller]
    fn check_http(raw: &[u8], expect: Result<Option<(Response, usize)>, &str>) {
        let got = parse_response(raw);
        match (got, expect) {
            (Ok(g), Ok(e)) => assert_eq!(g, e),
            (Err(g), Err(e)) => assert!(g.contains(e), "{g:?} lacks {e:?}"),
            (g, e) => panic!("got {g:?}, expected {e:?}"),
        }
    }

    #[test]
    fn http_responses() {
        let put = b"HTTP/1.1 204 No Content\r\nx-shoal-context: abc_-\r\ndate: x\r\n\r\n";
        check_http(
            put,
            Ok(Some((ok(204, b"", Some("abc_-"), false), put.len()))),
        );
        let get = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nhey";
        check_http(get, Ok(Some((ok(200, b"hey", None, true), get.len()))));
        // Pipelined bytes after the response are not consumed.
        let two = b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\n\r\naHTTP/1.1";
        check_http(two, Ok(Some((ok(200, b"a", None, false), two.len() - 8))));
        let chunked = b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: v\r\n\r\n";
        check_http(
            chunked,
            Ok(Some((ok(503, b"abcde", None, false), chunked.len()))),
        );
        check_http(
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            Ok(Some((ok(200, b"", None, true), 38))),
        );
    }

    #[test]
    fn http_incomplete_needs_more_bytes() {
        check_http(b"", Ok(None));
        check_http(b"HTTP/1.1 200 OK\r\nContent-Le", Ok(None));
        check_http(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", Ok(None));
        check_http(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nab",
            Ok(None),
        );
        check_http(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
            Ok(None),
        );
    }

    #[test]
    fn http_malformed_is_an_error() {
        check_http(b"SSH-2.0\r\n\r\n", Err("not an HTTP/1.x"));
        check_http(b"HTTP/1.1 abc OK\r\n\r\n", Err("bad status"));
        check_http(
            b"HTTP/1.1 200 OK\r\nnocolon\r\n\r\n",
            Err("without a colon"),
        );
        check_http(
            b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            Err("bad Content-Length"),
        );
        check_http(
            b"HTTP/1.1 200 OK\r\n\r\nbody",
            Err("neither Content-Length"),
        );
        check_http(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            Err("bad chunk size"),
        );
        check_http(&vec![b'a'; MAX_HEAD + 1], Err("longer than"));
    }

    #[test]
    fn http_request_bytes() {
        let r = request("PUT", "/v1/kv/k", "h:1", &[("X-Shoal-Context", "c")], b"v");
        assert_eq!(
            r,
            b"PUT /v1/kv/k HTTP/1.1\r\nHost: h:1\r\nX-Shoal-Context: c\r\nContent-Length: 1\r\n\r\nv"
        );
    }

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
