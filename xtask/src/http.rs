//! HTTP/1.1 for xtask, as pure functions over byte buffers: what the bench's
//! load generator speaks on its hot path (kept-alive connections, so a parser
//! that says "need more bytes" instead of reading to the close) and what
//! `cargo xtask cluster` asks the gateway. One parser for both, so a fix or a
//! stricter check reaches both.

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
    parse(buf, false)
}

/// Parses a whole `Connection: close` exchange, read to its end. Unlike on a
/// kept-alive connection, a body with neither Content-Length nor chunked
/// encoding is then well-formed: it runs to the close (RFC 9112, 6.3).
pub(crate) fn parse_closed(buf: &[u8]) -> Result<Response, String> {
    match parse(buf, true)? {
        Some((r, _)) => Ok(r),
        None => Err("connection closed before the response was complete".into()),
    }
}

fn parse(buf: &[u8], closed: bool) -> Result<Option<(Response, usize)>, String> {
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
    } else if closed {
        (rest.to_vec(), rest.len())
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

pub(crate) fn find_crlf(data: &[u8]) -> Option<usize> {
    data.windows(2).position(|w| w == b"\r\n")
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
    fn closed_connections_may_delimit_the_body() {
        let r = parse_closed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let r = parse_closed(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the end").unwrap();
        assert_eq!(r.body, b"to the end");
        let r = parse_closed(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (503, &b"abcde"[..]));
        assert!(
            parse_closed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
                .unwrap_err()
                .contains("before the response was complete")
        );
        assert!(parse_closed(b"garbage").is_err());
    }
}
