//! What the gateway's HTTP endpoints say about the cluster.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::http::{self, Response};

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
    let request = http::request(
        "GET",
        path,
        addr,
        &[("Accept", "application/json"), ("Connection", "close")],
        b"",
    );
    stream
        .write_all(&request)
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .map_err(|e| format!("{addr}{path}: {e}"))?;
    http::parse_closed(&raw).map_err(|e| format!("{addr}{path}: malformed HTTP response: {e}"))
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
        serde_json::from_slice(&resp.body).map_err(|e| format!("/v1/cluster: {e}"))?;
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
