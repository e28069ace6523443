//! What the gateway's HTTP endpoints say about the cluster.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::http::{self, Response};

/// A minimal HTTP/1.1 GET with `Connection: close` (enough for the gateway's
/// JSON endpoints; keeps xtask free of an HTTP client's dependency tree).
pub(super) fn http_get(addr: &str, path: &str) -> Result<Response, String> {
    http_get_as(addr, path, None)
}

/// [`http_get`] with a bearer token when one is given.
pub(super) fn http_get_as(addr: &str, path: &str, token: Option<&str>) -> Result<Response, String> {
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
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Accept", "application/json"), ("Connection", "close")];
    if let Some(b) = &bearer {
        headers.push(("Authorization", b.as_str()));
    }
    let request = http::request("GET", path, addr, &headers, b"");
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

/// What `/v1/cluster/stats` says of one storage node, for `status`.
#[derive(Debug, Default, Clone, PartialEq)]
pub(super) struct NodeRow {
    /// Hints the node holds for others (`None`: it did not answer).
    pub(super) hints: Option<u64>,
    /// Seconds since its last finished anti-entropy exchange.
    pub(super) last_exchange_s: Option<f64>,
    /// Where it serves `/metrics`.
    pub(super) metrics: Option<String>,
    /// The long work it runs: `join 3/8 ranges`.
    pub(super) progress: Option<String>,
}

/// Each storage node's row from the gateway's `/v1/cluster/stats`.
pub(super) fn node_rows(http: &str) -> Result<BTreeMap<String, NodeRow>, String> {
    let resp = http_get(http, "/v1/cluster/stats")?;
    if resp.status != 200 {
        return Err(format!("/v1/cluster/stats answered {}", resp.status));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&resp.body).map_err(|e| format!("/v1/cluster/stats: {e}"))?;
    Ok(rows_of(&v))
}

fn rows_of(v: &serde_json::Value) -> BTreeMap<String, NodeRow> {
    let Some(members) = v.get("members").and_then(serde_json::Value::as_array) else {
        return BTreeMap::new();
    };
    members
        .iter()
        .filter(|m| m.get("role").and_then(serde_json::Value::as_str) == Some("storage"))
        .filter_map(|m| {
            let id = m.get("id")?.as_str()?.to_string();
            let node = m.get("node").filter(|n| !n.is_null());
            let progress = node
                .and_then(|n| n.get("progress"))
                .filter(|p| !p.is_null());
            Some((
                id,
                NodeRow {
                    hints: node.and_then(|n| n.get("hints_pending")?.as_u64()),
                    last_exchange_s: node.and_then(|n| {
                        n.get("anti_entropy")?
                            .get("last_exchange_age_ms")?
                            .as_u64()
                            .map(|ms| ms as f64 / 1000.0)
                    }),
                    metrics: m
                        .get("metrics_addr")
                        .and_then(serde_json::Value::as_str)
                        .map(str::to_string),
                    progress: progress.map(|p| {
                        let field =
                            |k: &str| p.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                        format!(
                            "{} {}/{} ranges",
                            p.get("kind")
                                .and_then(serde_json::Value::as_str)
                                .unwrap_or("work"),
                            field("ranges_done"),
                            field("ranges_total")
                        )
                    }),
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_rows_read_what_status_prints() {
        let v = serde_json::json!({"members": [
            {"id": "gateway-1", "role": "gateway", "node": null},
            {"id": "node-1", "role": "storage", "metrics_addr": "127.0.0.1:9101",
             "node": {"hints_pending": 4, "anti_entropy": {"last_exchange_age_ms": 2500},
                      "progress": {"kind": "join", "ranges_done": 3, "ranges_total": 8}}},
            {"id": "node-2", "role": "storage", "metrics_addr": null, "node": null}
        ]});
        let rows = rows_of(&v);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            rows["node-1"],
            NodeRow {
                hints: Some(4),
                last_exchange_s: Some(2.5),
                metrics: Some("127.0.0.1:9101".into()),
                progress: Some("join 3/8 ranges".into()),
            }
        );
        assert_eq!(rows["node-2"], NodeRow::default());
    }
}
