//! RESP framing: commands in (arrays of bulk strings, or inline lines), replies
//! out (RESP2, or RESP3 after `HELLO 3`).
//!
//! The parser works on the connection's buffer as it is and allocates only
//! once a whole command is there, and then only what the command holds: a
//! header that claims a million arguments, or a gigabyte bulk string, costs
//! nothing until the bytes arrive, and is refused by [`Limits`] before then.
//! An incomplete command is scanned again when more bytes come; the scan
//! skips bulk bodies by their length, so it costs a few steps per argument,
//! not per byte.

/// What one command may hold.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Arguments of one command, its name included.
    pub max_args: usize,
    /// Bytes of one argument.
    pub max_bulk: usize,
    /// Bytes of one command on the wire.
    pub max_command: usize,
}

/// Longest inline command line (Redis's own limit).
pub const MAX_INLINE: usize = 64 << 10;

/// A command the peer sent that cannot be parsed: Redis answers
/// `-ERR Protocol error: ...` and closes the connection, since nothing after
/// it can be framed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Protocol error: {0}")]
pub struct ProtocolError(pub String);

fn protocol(message: impl Into<String>) -> ProtocolError {
    ProtocolError(message.into())
}

/// One parsed command and how many bytes of the buffer it took.
pub type Parsed = (Vec<Vec<u8>>, usize);

/// Parses the command at the start of `buf`: `Ok(None)` while it is
/// incomplete. An empty command (`*0`, a blank inline line) parses as no
/// arguments, which the caller skips, as Redis does.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_array(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

/// The integer of a `<prefix><digits>\r\n` line starting at `at`, and where
/// the next line starts; `None` if the line is not all there yet.
fn header(buf: &[u8], at: usize, what: &str) -> Result<Option<(i64, usize)>, ProtocolError> {
    // 20 digits and a sign are the most an i64 needs.
    let window = &buf[at + 1..buf.len().min(at + 1 + 24)];
    let Some(end) = window.iter().position(|&b| b == b'\r') else {
        if window.len() >= 23 {
            return Err(protocol(format!("invalid {what} length")));
        }
        return Ok(None);
    };
    let digits = &window[..end];
    let after = at + 1 + end;
    if buf.len() < after + 2 {
        return Ok(None);
    }
    if buf[after + 1] != b'\n' {
        return Err(protocol(format!("invalid {what} length")));
    }
    let n = std::str::from_utf8(digits)
        .ok()
        .and_then(|d| d.parse::<i64>().ok())
        .ok_or_else(|| protocol(format!("invalid {what} length")))?;
    Ok(Some((n, after + 2)))
}

fn parse_array(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
    let Some((count, mut at)) = header(buf, 0, "multibulk")? else {
        return Ok(None);
    };
    if count <= 0 {
        return Ok(Some((Vec::new(), at)));
    }
    if count as u64 > limits.max_args as u64 {
        return Err(protocol(format!(
            "invalid multibulk length: {count} arguments, at most {}",
            limits.max_args
        )));
    }
    let count = count as usize;
    // First find the end without copying, so an incomplete command costs no
    // allocation however often it is looked at.
    let mut spans = Vec::new();
    for _ in 0..count {
        if at >= buf.len() {
            return Ok(None);
        }
        if buf[at] != b'$' {
            return Err(protocol(format!(
                "expected '$', got '{}'",
                (buf[at] as char).escape_default()
            )));
        }
        let Some((len, body)) = header(buf, at, "bulk")? else {
            return Ok(None);
        };
        if len < 0 || len as u64 > limits.max_bulk as u64 {
            return Err(protocol(format!(
                "invalid bulk length: {len} bytes, at most {}",
                limits.max_bulk
            )));
        }
        let end = body + len as usize;
        if end > limits.max_command {
            return Err(protocol(format!(
                "command over {} bytes",
                limits.max_command
            )));
        }
        if buf.len() < end + 2 {
            return Ok(None);
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Err(protocol("bulk string not followed by CRLF"));
        }
        spans.push((body, end));
        at = end + 2;
    }
    let args = spans.iter().map(|&(a, b)| buf[a..b].to_vec()).collect();
    Ok(Some((args, at)))
}

/// A line of space-separated words (telnet, health checks); double quotes
/// group words, as redis-cli's inline form does, with `\"` and `\\` escapes.
fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Option<Parsed>, ProtocolError> {
    let max = MAX_INLINE.min(limits.max_command);
    let Some(nl) = buf.iter().take(max + 1).position(|&b| b == b'\n') else {
        if buf.len() > max {
            return Err(protocol("too big inline request"));
        }
        return Ok(None);
    };
    let line = buf[..nl].strip_suffix(b"\r").unwrap_or(&buf[..nl]);
    let mut args: Vec<Vec<u8>> = Vec::new();
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b' ' | b'\t' => i += 1,
            b'"' => {
                let mut word = Vec::new();
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(protocol("unbalanced quotes in request")),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') if i + 1 < line.len() => {
                            word.push(line[i + 1]);
                            i += 2;
                        }
                        Some(&b) => {
                            word.push(b);
                            i += 1;
                        }
                    }
                }
                args.push(word);
            }
            _ => {
                let start = i;
                while i < line.len() && !matches!(line[i], b' ' | b'\t') {
                    i += 1;
                }
                args.push(line[start..i].to_vec());
            }
        }
        if args.len() > limits.max_args {
            return Err(protocol("too many arguments in inline request"));
        }
    }
    Ok(Some((args, nl + 1)))
}

/// An answer, written in the connection's protocol version.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// `+OK`.
    Simple(&'static str),
    /// `-KIND message`; the text holds both.
    Error(String),
    /// `:n`.
    Int(i64),
    /// `$len bytes`.
    Bulk(Vec<u8>),
    /// RESP3's verbatim text (`=`), a bulk string in RESP2 (`INFO`).
    Text(String),
    /// A missing value: `$-1` (RESP2) or `_` (RESP3).
    Nil,
    /// `*n` items.
    Array(Vec<Reply>),
    /// RESP3's `%n` pairs; a flat array of 2n items in RESP2.
    Map(Vec<(Reply, Reply)>),
}

impl Reply {
    /// An error reply from its kind (`ERR`, `NOAUTH`...) and message.
    pub fn error(kind: &str, message: impl std::fmt::Display) -> Reply {
        // One line: a CR or LF inside would end the reply early.
        let text = format!("{kind} {message}").replace(['\r', '\n'], " ");
        Reply::Error(text)
    }

    /// A bulk string of text.
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Bulk(s.into().into_bytes())
    }

    /// Appends the wire form to `out`; `resp3` after `HELLO 3`.
    pub fn write(&self, out: &mut Vec<u8>, resp3: bool) {
        match self {
            Reply::Simple(s) => line(out, b'+', s.as_bytes()),
            Reply::Error(e) => line(out, b'-', e.as_bytes()),
            Reply::Int(n) => line(out, b':', n.to_string().as_bytes()),
            Reply::Bulk(b) => bulk(out, b'$', b),
            Reply::Text(t) if resp3 => {
                let mut body = b"txt:".to_vec();
                body.extend_from_slice(t.as_bytes());
                bulk(out, b'=', &body);
            }
            Reply::Text(t) => bulk(out, b'$', t.as_bytes()),
            Reply::Nil if resp3 => out.extend_from_slice(b"_\r\n"),
            Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
            Reply::Array(items) => {
                line(out, b'*', items.len().to_string().as_bytes());
                for item in items {
                    item.write(out, resp3);
                }
            }
            Reply::Map(pairs) => {
                if resp3 {
                    line(out, b'%', pairs.len().to_string().as_bytes());
                } else {
                    line(out, b'*', (pairs.len() * 2).to_string().as_bytes());
                }
                for (k, v) in pairs {
                    k.write(out, resp3);
                    v.write(out, resp3);
                }
            }
        }
    }
}

fn line(out: &mut Vec<u8>, prefix: u8, body: &[u8]) {
    out.push(prefix);
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

fn bulk(out: &mut Vec<u8>, prefix: u8, body: &[u8]) {
    line(out, prefix, body.len().to_string().as_bytes());
    out.extend_from_slice(body);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: Limits = Limits {
        max_args: 16,
        max_bulk: 64,
        max_command: 512,
    };

    fn encode(args: &[&[u8]]) -> Vec<u8> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a);
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn arrays_parse_and_pipelined_commands_follow() {
        let mut buf = encode(&[b"SET", b"k", b"v\r\n"]);
        buf.extend_from_slice(&encode(&[b"GET", b"k"]));
        let (args, used) = parse(&buf, &LIMITS).unwrap().unwrap();
        assert_eq!(
            args,
            vec![b"SET".to_vec(), b"k".to_vec(), b"v\r\n".to_vec()]
        );
        let (args, rest) = parse(&buf[used..], &LIMITS).unwrap().unwrap();
        assert_eq!(args, vec![b"GET".to_vec(), b"k".to_vec()]);
        assert_eq!(used + rest, buf.len());
    }

    #[test]
    fn every_prefix_of_a_command_is_incomplete() {
        let buf = encode(&[b"MSET", b"a", b"1", b"b", b""]);
        for cut in 0..buf.len() {
            assert_eq!(parse(&buf[..cut], &LIMITS), Ok(None), "prefix {cut}");
        }
    }

    #[test]
    fn huge_headers_are_refused_before_any_allocation() {
        // Nothing but the header: refused on the count alone.
        assert!(parse(b"*1000000\r\n", &LIMITS).is_err());
        assert!(parse(b"*1\r\n$1000000000\r\n", &LIMITS).is_err());
        assert!(parse(b"*1\r\n$-5\r\n", &LIMITS).is_err());
        assert!(parse(b"*99999999999999999999999999\r\n", &LIMITS).is_err());
        assert!(parse(b"*2\r\n$3\r\nGET\r\n:1\r\n", &LIMITS).is_err());
        assert!(parse(b"*1\r\n$3\r\nGETX\r\n", &LIMITS).is_err());
        // Within each limit, but the whole over max_command.
        let big = [b'x'; 60];
        let args: Vec<&[u8]> = std::iter::repeat_n(&big[..], 10).collect();
        assert!(parse(&encode(&args), &LIMITS).is_err());
    }

    #[test]
    fn empty_arrays_and_inline_lines() {
        assert_eq!(parse(b"*0\r\nrest", &LIMITS), Ok(Some((vec![], 4))));
        assert_eq!(
            parse(b"PING\r\n", &LIMITS),
            Ok(Some((vec![b"PING".to_vec()], 6)))
        );
        assert_eq!(
            parse(b"set  k \"a b\\\"c\"\n", &LIMITS),
            Ok(Some((
                vec![b"set".to_vec(), b"k".to_vec(), b"a b\"c".to_vec()],
                16
            )))
        );
        assert_eq!(parse(b"GET k", &LIMITS), Ok(None));
        assert!(parse(b"GET \"k\r\n", &LIMITS).is_err());
        assert!(parse(&[b'a'; MAX_INLINE + 2], &LIMITS).is_err());
    }

    #[test]
    fn replies_in_both_protocols() {
        let mut two = Vec::new();
        let mut three = Vec::new();
        let reply = Reply::Map(vec![(Reply::text("proto"), Reply::Int(3))]);
        reply.write(&mut two, false);
        reply.write(&mut three, true);
        assert_eq!(two, b"*2\r\n$5\r\nproto\r\n:3\r\n");
        assert_eq!(three, b"%1\r\n$5\r\nproto\r\n:3\r\n");
        let mut nil = Vec::new();
        Reply::Nil.write(&mut nil, false);
        Reply::Nil.write(&mut nil, true);
        assert_eq!(nil, b"$-1\r\n_\r\n");
        let mut e = Vec::new();
        Reply::error("ERR", "bad\r\nthing").write(&mut e, false);
        assert_eq!(e, b"-ERR bad  thing\r\n");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes: an answer or a clean error, never a panic, and a
        /// parsed command never claims more bytes than it was given.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(Some((_, used))) = parse(&bytes, &LIMITS) {
                prop_assert!(used <= bytes.len());
            }
        }

        /// Commands survive a round trip, and splitting them anywhere only
        /// delays the answer.
        #[test]
        fn round_trip(
            args in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
            let wire = encode(&refs);
            let (parsed, used) = parse(&wire, &LIMITS).unwrap().unwrap();
            prop_assert_eq!(parsed, args);
            prop_assert_eq!(used, wire.len());
            let cut = cut.index(wire.len());
            prop_assert_eq!(parse(&wire[..cut], &LIMITS), Ok(None));
        }
    }
}
