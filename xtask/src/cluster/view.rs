//! What the gateway's HTTP endpoints say about the cluster.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

pub(super) struct Response {
    pub(super) status: u16,
    pub(super) body: String,
}

/// A minimal HTTP/1.1 GET with `Connection: close` (enough for the gateway's
/// JSON endpoints; keeps xtask free of an HTTP client's dependency tree).
pub(super) fn http_get(addr: &str, path: &str) -> Result<Response, String> {
    let sock: SocketAddr = addr
        .to_socket_addrs()
        .map_err(|e| format!("{addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr}: no address"))?;
    let timeout = Duration::from_secs(3);
    let mut stream =
        TcpStream::connect_timeout(&sock, timeout).map_err(|e| format!("{addr}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).ok();
    stream.set_write_timeout(Some(timeout)).ok();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    parse_response(&raw).ok_or_else(|| format!("{addr}{path}: malformed HTTP response"))
}

fn parse_response(raw: &[u8]) -> Option<Response> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    if chunked {
        body = dechunk(&body)?;
    }
    Some(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// What the gateway's `/v1/cluster` says, reduced to what xtask shows.
pub(super) struct ClusterView {
    /// id -> (addr, role, status)
    pub(super) members: BTreeMap<String, (String, String, String)>,
    pub(super) ownership: BTreeMap<String, f64>,
    /// Members still receiving their ranges (no share of reads yet).
    pub(super) joining: std::collections::BTreeSet<String>,
}

pub(super) fn cluster_view(http: &str) -> Result<ClusterView, String> {
    let resp = http_get(http, "/v1/cluster")?;
    if resp.status != 200 {
        return Err(format!("/v1/cluster answered {}", resp.status));
    }
    let v: serde_json::Value =
        serde_json::from_str(&resp.body).map_err(|e| format!("/v1/cluster: {e}"))?;
    let text = |m: &serde_json::Value, k: &str| {
        m.get(k)
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let members = v
        .get("members")
        .and_then(serde_json::Value::as_array)
        .map(|ms| {
            ms.iter()
                .map(|m| {
                    (
                        text(m, "id"),
                        (text(m, "addr"), text(m, "role"), text(m, "status")),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let ownership = v
        .get("ownership")
        .and_then(serde_json::Value::as_object)
        .map(|o| {
            o.iter()
                .filter_map(|(k, s)| Some((k.clone(), s.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let joining = v
        .get("members")
        .and_then(serde_json::Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter(|m| m.get("joining").and_then(serde_json::Value::as_bool) == Some(true))
                .map(|m| text(m, "id"))
                .collect()
        })
        .unwrap_or_default();
    Ok(ClusterView {
        members,
        ownership,
        joining,
    })
}

pub(super) fn member_alive(view: &ClusterView, id: &str) -> bool {
    view.members
        .get(id)
        .is_some_and(|(_, _, status)| status == "alive")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        let r = parse_response(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_str()), (503, "abcde"));
        assert!(parse_response(b"garbage").is_none());
    }
}
