//! A minimal HTTP/1.1 client over tokio (enough for these tests, with no
//! extra dependency) and gateway start-up helpers.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every network wait in these tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(10);

/// A parsed response.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn error_code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
}

/// Sends one request (`Connection: close`) and reads the whole answer.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    tokio::time::timeout(WAIT, async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        let mut head = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        s.write_all(head.as_bytes()).await.expect("write head");
        s.write_all(body).await.expect("write body");
        read_reply(&mut s).await
    })
    .await
    .expect("request timed out")
}

/// Reads and parses a response until the server closes.
pub async fn read_reply(s: &mut TcpStream) -> Reply {
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.expect("read");
    parse(&raw)
}

fn parse(raw: &[u8]) -> Reply {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    Reply {
        status,
        headers,
        body,
    }
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = data.windows(2).position(|w| w == b"\r\n") {
        let size_text = String::from_utf8_lossy(&data[..eol]).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("0").trim(), 16)
            .unwrap_or(0);
        data = &data[eol + 2..];
        if size == 0 || data.len() < size {
            break;
        }
        out.extend_from_slice(&data[..size]);
        data = &data[(size + 2).min(data.len())..];
    }
    out
}

/// The cluster secret every member of this test process shares.
pub fn secret() -> shoal_node::config::SecretText {
    static SECRET: std::sync::OnceLock<shoal_node::config::SecretText> = std::sync::OnceLock::new();
    SECRET
        .get_or_init(shoal_node::config::SecretText::random)
        .clone()
}

/// A client pool on real sockets that proves [`secret`].
pub fn pool(max_frame_bytes: usize) -> shoal_node::pool::Pool {
    let mut c = shoal_node::config::Config::default();
    c.security.cluster_secret = Some(secret());
    let transport = c.transport().expect("the test secret is valid");
    shoal_node::pool::Pool::new(
        shoal_node::env::Env::real().net,
        transport,
        Duration::from_secs(2),
        max_frame_bytes,
    )
}

/// Config of a gateway on 127.0.0.1 port 0, with extra TOML appended
/// section by section.
pub fn gateway_config(id: &str, seeds: &[String], extra: &str) -> shoal_node::config::Config {
    let seeds: Vec<String> = seeds.iter().map(|s| format!("\"{s}\"")).collect();
    let text = format!(
        "[member]\nid = \"{id}\"\nlisten = \"127.0.0.1:0\"\nseeds = [{}]\n\
         [gossip]\ninterval_ms = 50\nfailure_timeout_ms = 1000\n\
         [http]\nlisten = \"127.0.0.1:0\"\nrequest_timeout_ms = 2000\n{extra}",
        seeds.join(", ")
    );
    let mut c = shoal_node::config::Config::from_toml(&text).expect("valid test config");
    c.security.cluster_secret = Some(secret());
    c
}

/// Config of a storage node on 127.0.0.1 port 0 with its data under `dir`,
/// fast gossip and handoff so tests converge in milliseconds, no fsync.
pub fn node_config(
    id: &str,
    dir: &std::path::Path,
    seeds: &[String],
) -> shoal_node::config::Config {
    let mut c = shoal_node::config::Config::default();
    c.member.id = id.into();
    c.member.listen = "127.0.0.1:0".into();
    c.member.seeds = seeds.to_vec();
    c.member.data_dir = dir.join(id);
    c.security.cluster_secret = Some(secret());
    c.gossip.interval_ms = 50;
    c.gossip.failure_timeout_ms = 1000;
    c.handoff.retry_interval_ms = 50;
    c.storage.sync = shoal_node::config::SyncMode::Never;
    c.storage.memtable_bytes = 1 << 20;
    c
}
