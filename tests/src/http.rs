//! A small HTTP/1.1 keep-alive client for the gateway API.
//!
//! Hand-written rather than pulled in (hyper, reqwest) because the fault tests
//! need to know exactly one thing a full client hides: whether a request left
//! this process before it failed. A connect error means the gateway never saw
//! the request (the write definitely did not happen); an error or timeout after
//! the request bytes were written means it may have happened. The oracle turns
//! that into `failed` versus `unknown`.

use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Largest response body this client accepts; larger means a broken server.
const MAX_BODY: usize = 64 << 20;

/// A parsed response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// Status code.
    pub status: u16,
    /// Headers in order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl Reply {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The `error` code of a JSON error body, or `""`.
    pub fn error_code(&self) -> String {
        self.json()
            .and_then(|j| j["error"].as_str().map(str::to_string))
            .unwrap_or_default()
    }

    /// The body as lossy text, for messages.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request produced no response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// The connection could not be opened: the request never left.
    NotSent(String),
    /// The request was (at least partly) written, then the connection failed
    /// or the deadline passed: the server may or may not have acted on it.
    Indeterminate(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NotSent(m) => write!(f, "not sent: {m}"),
            SendError::Indeterminate(m) => write!(f, "indeterminate: {m}"),
        }
    }
}

/// One keep-alive connection to a gateway, reopened after any failure.
#[derive(Debug)]
pub struct Client {
    addr: SocketAddr,
    timeout: Duration,
    conn: Option<BufReader<TcpStream>>,
}

impl Client {
    /// A client for the gateway at `addr`; every request is bounded by
    /// `timeout` (connect included).
    pub fn new(addr: SocketAddr, timeout: Duration) -> Self {
        Self {
            addr,
            timeout,
            conn: None,
        }
    }

    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Points the client at another gateway (a restarted one).
    pub fn set_addr(&mut self, addr: SocketAddr) {
        self.addr = addr;
        self.conn = None;
    }

    /// Sends one request and reads its response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Reply, SendError> {
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            self.addr,
            body.len()
        );
        for (k, v) in headers {
            head.push_str(k);
            head.push_str(": ");
            head.push_str(v);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut raw = head.into_bytes();
        raw.extend_from_slice(body);
        self.send(&raw, method == "HEAD").await
    }

    /// Sends `raw` bytes as a request (for malformed-input tests) and reads
    /// one response.
    pub async fn request_raw(&mut self, raw: &[u8]) -> Result<Reply, SendError> {
        self.send(raw, raw.starts_with(b"HEAD ")).await
    }

    async fn send(&mut self, raw: &[u8], head: bool) -> Result<Reply, SendError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        // A pooled connection the server closed while idle fails on first
        // use; that request was never processed, so one fresh retry is safe
        // only if nothing at all came back.
        let reused = self.conn.is_some();
        match self.attempt(raw, head, deadline).await {
            Ok(r) => Ok(r),
            Err(Attempt::StaleConn) if reused => {
                self.conn = None;
                match self.attempt(raw, head, deadline).await {
                    Ok(r) => Ok(r),
                    // The first attempt may have been processed after all
                    // (a server that died before answering looks the same),
                    // so a retry that never left is still indeterminate.
                    Err(Attempt::NotSent(m)) => Err(SendError::Indeterminate(format!(
                        "retry not sent ({m}) after the connection closed"
                    ))),
                    Err(e) => Err(e.into_send_error()),
                }
            }
            Err(e) => Err(e.into_send_error()),
        }
    }

    async fn attempt(
        &mut self,
        raw: &[u8],
        head: bool,
        deadline: tokio::time::Instant,
    ) -> Result<Reply, Attempt> {
        if self.conn.is_none() {
            let connect = TcpStream::connect(self.addr);
            let stream = match tokio::time::timeout_at(deadline, connect).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return Err(Attempt::NotSent(format!("connect: {e}"))),
                Err(_) => return Err(Attempt::NotSent("connect timed out".into())),
            };
            let _ = stream.set_nodelay(true);
            self.conn = Some(BufReader::new(stream));
        }
        let result = tokio::time::timeout_at(deadline, async {
            let conn = self.conn.as_mut().expect("connection just opened");
            if let Err(e) = conn.get_mut().write_all(raw).await {
                return Err(Attempt::from_write_error(e));
            }
            read_response(conn, head).await
        })
        .await;
        match result {
            Ok(Ok((reply, keep))) => {
                if !keep {
                    self.conn = None;
                }
                Ok(reply)
            }
            Ok(Err(e)) => {
                self.conn = None;
                Err(e)
            }
            Err(_) => {
                self.conn = None;
                Err(Attempt::Indeterminate("timed out".into()))
            }
        }
    }
}

/// The outcome of one attempt on one connection.
#[derive(Debug)]
enum Attempt {
    NotSent(String),
    /// The connection was closed before any byte of a response: on a reused
    /// connection, the server closed it while idle.
    StaleConn,
    Indeterminate(String),
}

impl Attempt {
    fn from_write_error(e: std::io::Error) -> Attempt {
        match e.kind() {
            std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset => {
                Attempt::StaleConn
            }
            _ => Attempt::Indeterminate(format!("write: {e}")),
        }
    }

    fn into_send_error(self) -> SendError {
        match self {
            Attempt::NotSent(m) => SendError::NotSent(m),
            Attempt::StaleConn => SendError::Indeterminate("connection closed".into()),
            Attempt::Indeterminate(m) => SendError::Indeterminate(m),
        }
    }
}

/// Reads one response (to a `HEAD` request: headers only); returns it and
/// whether the connection may be reused.
async fn read_response(
    conn: &mut BufReader<TcpStream>,
    head: bool,
) -> Result<(Reply, bool), Attempt> {
    let mut status_line = String::new();
    match conn.read_line(&mut status_line).await {
        Ok(0) => return Err(Attempt::StaleConn),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
            return Err(Attempt::StaleConn)
        }
        Err(e) => return Err(Attempt::Indeterminate(format!("read: {e}"))),
    }
    let bad = |what: &str| Attempt::Indeterminate(format!("malformed response: {what}"));
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| bad(&format!("status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        let n = conn
            .read_line(&mut line)
            .await
            .map_err(|e| Attempt::Indeterminate(format!("read headers: {e}")))?;
        if n == 0 {
            return Err(bad("eof in headers"));
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
        if headers.len() > 256 {
            return Err(bad("too many headers"));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let close = find("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
    let chunked = find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    let io = |e: std::io::Error| Attempt::Indeterminate(format!("read body: {e}"));
    let body = if head {
        Vec::new()
    } else if chunked {
        let mut body = Vec::new();
        loop {
            let mut size_line = String::new();
            conn.read_line(&mut size_line).await.map_err(io)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| bad(&format!("chunk size {size_line:?}")))?;
            if body.len() + size > MAX_BODY {
                return Err(bad("body too large"));
            }
            let start = body.len();
            body.resize(start + size, 0);
            conn.read_exact(&mut body[start..]).await.map_err(io)?;
            let mut crlf = String::new();
            conn.read_line(&mut crlf).await.map_err(io)?;
            if size == 0 {
                break;
            }
        }
        body
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().map_err(|_| bad("content-length"))?;
        if len > MAX_BODY {
            return Err(bad("body too large"));
        }
        let mut body = vec![0; len];
        conn.read_exact(&mut body).await.map_err(io)?;
        body
    } else if status == 204 || status == 304 || (100..200).contains(&status) {
        Vec::new()
    } else {
        // No length: the body runs to the end of the connection.
        let mut body = Vec::new();
        conn.take(MAX_BODY as u64)
            .read_to_end(&mut body)
            .await
            .map_err(io)?;
        return Ok((
            Reply {
                status,
                headers,
                body,
            },
            false,
        ));
    };
    Ok((
        Reply {
            status,
            headers,
            body,
        },
        !close,
    ))
}

/// The gateway's own key encoding, so tests and gateway agree on every key.
pub use shoal_gateway::encode::encode_key;

/// The values of a read's JSON form (`siblings[].value`, base64-decoded).
pub fn sibling_values(json: &serde_json::Value) -> Vec<Vec<u8>> {
    json["siblings"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s["value"].as_str())
                .filter_map(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Decodes a standard-base64 value from a debug or read body.
pub fn decode_value(v: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(v).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// A server answering each request on a connection with the next of
    /// `answers` (raw bytes); `None` closes the connection without answering.
    async fn server(answers: Vec<Option<&'static [u8]>>) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let answers = answers.clone();
                tokio::spawn(async move {
                    for answer in answers {
                        let mut seen = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                            match s.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => seen.extend_from_slice(&buf[..n]),
                            }
                        }
                        match answer {
                            Some(bytes) => s.write_all(bytes).await.unwrap(),
                            None => return,
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn keep_alive_content_length_chunked_and_head() {
        let addr = server(vec![
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello"),
            Some(b"HTTP/1.1 300 Multiple Choices\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            Some(b"HTTP/1.1 200 OK\r\ncontent-length: 99\r\n\r\n"),
            Some(b"HTTP/1.1 204 No Content\r\n\r\n"),
        ])
        .await;
        let mut c = Client::new(addr, Duration::from_secs(2));
        let r = c.request("GET", "/a", &[], b"").await.unwrap();
        assert_eq!(
            (r.status, r.body.as_slice(), r.header("X-A")),
            (200, &b"hello"[..], Some("1"))
        );
        let r = c.request("GET", "/b", &[], b"").await.unwrap();
        assert_eq!((r.status, r.body.as_slice()), (300, &b"abcde"[..]));
        let r = c.request("HEAD", "/c", &[], b"").await.unwrap();
        assert_eq!((r.status, r.body.len()), (200, 0));
        let r = c.request("PUT", "/d", &[], b"").await.unwrap();
        assert_eq!(r.status, 204);
    }

    #[tokio::test]
    async fn refused_is_not_sent_and_a_silent_close_is_indeterminate() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = free.local_addr().unwrap();
        drop(free);
        let mut c = Client::new(closed, Duration::from_secs(2));
        assert!(matches!(
            c.request("PUT", "/k", &[], b"v").await,
            Err(SendError::NotSent(_))
        ));
        let addr = server(vec![None]).await;
        let mut c = Client::new(addr, Duration::from_secs(2));
        assert!(matches!(
            c.request("PUT", "/k", &[], b"v").await,
            Err(SendError::Indeterminate(_))
        ));
    }
}
