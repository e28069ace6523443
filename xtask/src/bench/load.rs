//! The load generator: closed-loop clients over keep-alive TCP connections.
//!
//! Closed loop (each client sends its next request when the previous answer
//! arrives) because it is what the reference tools (`redis-benchmark`, `etcd
//! benchmark`) do, so the ratios compare like with like; the price is that
//! latency under overload is understated (coordinated omission), which is why
//! the report also gives throughput and the idle figures.
//!
//! Writes must not pile up siblings in Shoal (a PUT without a context keeps
//! what is there), so every client owns the keys `i` with `i % clients == id`,
//! writes only those, and sends back the context its last PUT of that key
//! returned: each write supersedes the previous one, as a Redis SET or an etcd
//! put does. Reads pick any key.

use std::collections::BTreeMap;
use std::io::IsTerminal as _;
use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::hist::Histogram;
use super::proto::{self, Reply};
use crate::http;

/// Bound on one request, connect included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on opening a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Pause after a failed connect, so a dead server is not spun on.
const RECONNECT_PAUSE: Duration = Duration::from_millis(20);

/// What the clients talk to.
#[derive(Clone)]
pub(crate) enum LoadTarget {
    /// Shoal's gateway; the queries (`?w=..`, `?r=..`) follow PUT and GET paths.
    Shoal {
        addr: SocketAddr,
        put_query: String,
        get_query: String,
        /// `Authorization` header value sent on every request, if any.
        auth: Option<String>,
        /// Where keys live: `/v1/kv/`, or `/v1/buckets/{bucket}/keys/`.
        base: String,
    },
    /// One Redis server.
    Redis { addr: SocketAddr },
    /// etcd members' client URLs; client `i` talks to member `i % len`, as
    /// etcd's own client balances over its endpoints.
    Etcd { addrs: Vec<SocketAddr> },
}

/// The key space and values every system gets.
pub(crate) struct Keys {
    names: Vec<String>,
    value: Vec<u8>,
    /// `value` in base64, for etcd's JSON gateway.
    value_b64: String,
}

impl Keys {
    pub(crate) fn new(prefix: &str, count: usize, value_size: usize) -> Self {
        let names = (0..count).map(|i| format!("{prefix}{i:08}")).collect();
        // Printable and not all one byte, so no layer can special-case it.
        let value: Vec<u8> = (0..value_size)
            .map(|i| b'a' + u8::try_from(i % 26).unwrap_or(0))
            .collect();
        let value_b64 = base64::engine::general_purpose::STANDARD.encode(&value);
        Self {
            names,
            value,
            value_b64,
        }
    }
}

/// xorshift64*: enough randomness for key choice, no dependency.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is below 2^-40 for our n.
    fn below(&mut self, n: usize) -> usize {
        let n = n as u64;
        usize::try_from(self.next() % n).unwrap_or(0)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        #[allow(
            clippy::cast_precision_loss,
            reason = "53 random bits are plenty for a probability"
        )]
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        u < p
    }
}

/// A wire-format parser from `proto`: the value and the bytes it took, or
/// `None` for "need more bytes".
type Parser<T> = fn(&[u8]) -> Result<Option<(T, usize)>, String>;

/// A keep-alive connection that reconnects after any failure.
struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
}

impl Conn {
    fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(8192),
        }
    }

    async fn connect(&mut self) -> Result<(), String> {
        if self.stream.is_some() {
            return Ok(());
        }
        let s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr))
            .await
            .map_err(|_| "connect timeout".to_string())?
            .map_err(|e| format!("connect: {}", e.kind()))?;
        s.set_nodelay(true)
            .map_err(|e| format!("connect: {}", e.kind()))?;
        self.stream = Some(s);
        self.buf.clear();
        Ok(())
    }

    /// Sends `req` and parses one answer with `parse`; any failure drops the
    /// connection so the next call starts clean.
    async fn roundtrip<T>(&mut self, req: &[u8], parse: Parser<T>) -> Result<T, String> {
        let out = tokio::time::timeout(REQUEST_TIMEOUT, self.roundtrip_inner(req, parse)).await;
        let out = out.unwrap_or_else(|_| Err("timeout".into()));
        if out.is_err() {
            self.stream = None;
        }
        out
    }

    async fn roundtrip_inner<T>(&mut self, req: &[u8], parse: Parser<T>) -> Result<T, String> {
        if self.stream.is_none() {
            if let Err(e) = self.connect().await {
                tokio::time::sleep(RECONNECT_PAUSE).await;
                return Err(e);
            }
        }
        let stream = self.stream.as_mut().ok_or("not connected")?;
        stream
            .write_all(req)
            .await
            .map_err(|e| format!("write: {}", e.kind()))?;
        self.buf.clear();
        loop {
            if let Some((value, used)) = parse(&self.buf).map_err(|e| format!("protocol: {e}"))? {
                if used != self.buf.len() {
                    return Err("protocol: bytes after the answer".into());
                }
                return Ok(value);
            }
            let n = stream
                .read_buf(&mut self.buf)
                .await
                .map_err(|e| format!("read: {}", e.kind()))?;
            if n == 0 {
                return Err("connection closed by server".into());
            }
        }
    }
}

/// One simulated client: its connection, key share and (for Shoal) contexts.
pub(crate) struct Client {
    id: usize,
    clients: usize,
    target: LoadTarget,
    conn: Conn,
    keys: Arc<Keys>,
    /// Context of the last successful PUT of owned key `id + clients * j`, at `j`.
    contexts: Vec<Option<String>>,
    rng: Rng,
}

/// Per-operation outcome of one phase.
#[derive(Default)]
pub(crate) struct Stats {
    pub(crate) put: Histogram,
    pub(crate) get: Histogram,
    /// "PUT 503 overloaded" -> count.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Shoal GETs answered 300 (siblings): successes, counted apart.
    pub(crate) siblings: u64,
    pub(crate) elapsed: Duration,
    /// CPU time the servers under test used during the phase.
    pub(crate) server_cpu: Duration,
    /// CPU time the load generator used during the phase.
    pub(crate) client_cpu: Duration,
    /// With `--instructions`: what the servers executed during the phase.
    pub(crate) instructions: Option<super::callgrind::Counts>,
}

impl Stats {
    fn merge(&mut self, o: &Self) {
        self.put.merge(&o.put);
        self.get.merge(&o.get);
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
        self.siblings += o.siblings;
    }

    pub(crate) fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
}

impl Client {
    pub(crate) fn new(id: usize, clients: usize, target: LoadTarget, keys: Arc<Keys>) -> Self {
        let addr = match &target {
            LoadTarget::Shoal { addr, .. } | LoadTarget::Redis { addr } => *addr,
            LoadTarget::Etcd { addrs } => addrs[id % addrs.len()],
        };
        let owned = owned_count(keys.names.len(), clients, id);
        Self {
            id,
            clients,
            target,
            conn: Conn::new(addr),
            keys,
            contexts: vec![None; owned],
            rng: Rng::new(id as u64 + 1),
        }
    }

    /// One operation; `Ok(true)` when a Shoal GET found siblings.
    async fn op(&mut self, op: Op, key: usize) -> Result<bool, String> {
        let name = &self.keys.names[key];
        match (&self.target, op) {
            (
                LoadTarget::Shoal {
                    put_query,
                    auth,
                    base,
                    ..
                },
                Op::Put,
            ) => {
                let path = format!("{base}{name}{put_query}");
                let slot = key / self.clients;
                let mut headers = vec![("Content-Type", "application/octet-stream")];
                if let Some(auth) = auth {
                    headers.push(("Authorization", auth));
                }
                if let Some(ctx) = &self.contexts[slot] {
                    headers.push(("X-Shoal-Context", ctx));
                }
                let req = http::request("PUT", &path, "bench", &headers, &self.keys.value);
                let r = self.conn.roundtrip(&req, http::parse_response).await?;
                if r.close {
                    self.conn.stream = None;
                }
                if r.status == 204 {
                    self.contexts[slot] = r.context;
                    Ok(false)
                } else {
                    Err(http_error(r.status, &r.body))
                }
            }
            (
                LoadTarget::Shoal {
                    get_query,
                    auth,
                    base,
                    ..
                },
                Op::Get,
            ) => {
                let path = format!("{base}{name}{get_query}");
                let headers: Vec<(&str, &str)> =
                    auth.iter().map(|a| ("Authorization", a.as_str())).collect();
                let req = http::request("GET", &path, "bench", &headers, b"");
                let r = self.conn.roundtrip(&req, http::parse_response).await?;
                if r.close {
                    self.conn.stream = None;
                }
                match r.status {
                    200 => Ok(false),
                    300 => Ok(true),
                    s => Err(http_error(s, &r.body)),
                }
            }
            (LoadTarget::Redis { .. }, op) => {
                let req = if op == Op::Put {
                    proto::command(&[b"SET", name.as_bytes(), &self.keys.value])
                } else {
                    proto::command(&[b"GET", name.as_bytes()])
                };
                match self.conn.roundtrip(&req, proto::parse_reply).await? {
                    Reply::Simple(s) if op == Op::Put && s == "OK" => Ok(false),
                    Reply::Bulk(Some(_)) if op == Op::Get => Ok(false),
                    Reply::Bulk(None) => Err("nil (key absent)".into()),
                    Reply::Error(e) => Err(format!(
                        "redis {}",
                        e.split_whitespace().next().unwrap_or("error")
                    )),
                    other => Err(format!("unexpected reply {other:?}")),
                }
            }
            (LoadTarget::Etcd { .. }, op) => {
                let key = base64::engine::general_purpose::STANDARD.encode(name);
                let (path, body) = if op == Op::Put {
                    (
                        "/v3/kv/put",
                        format!(r#"{{"key":"{key}","value":"{}"}}"#, self.keys.value_b64),
                    )
                } else {
                    ("/v3/kv/range", format!(r#"{{"key":"{key}"}}"#))
                };
                let req = http::request(
                    "POST",
                    path,
                    "bench",
                    &[("Content-Type", "application/json")],
                    body.as_bytes(),
                );
                let r = self.conn.roundtrip(&req, http::parse_response).await?;
                if r.close {
                    self.conn.stream = None;
                }
                if r.status != 200 {
                    return Err(http_error(r.status, &r.body));
                }
                if op == Op::Get && !r.body.windows(6).any(|w| w == b"\"kvs\":") {
                    return Err("range: key absent".into());
                }
                Ok(false)
            }
        }
    }

    /// Writes every key this client owns once, so reads find them.
    async fn preload(mut self) -> (Self, Stats) {
        let mut stats = Stats::default();
        let owned = self.contexts.len();
        let start = Instant::now();
        for j in 0..owned {
            if super::interrupted() {
                break;
            }
            let key = self.id + self.clients * j;
            if let Err(e) = self.op(Op::Put, key).await {
                *stats.errors.entry(format!("PUT {e}")).or_default() += 1;
            }
        }
        stats.elapsed = start.elapsed();
        (self, stats)
    }

    async fn run(mut self, mix: Mix, until: Instant, live: Arc<Live>) -> (Self, Stats) {
        let mut stats = Stats::default();
        let total = self.keys.names.len();
        let owned = self.contexts.len();
        let start = Instant::now();
        while Instant::now() < until && !super::interrupted() {
            let op = if self.rng.chance(mix.read_ratio) {
                Op::Get
            } else {
                Op::Put
            };
            let key = match op {
                Op::Get => self.rng.below(total),
                Op::Put => self.id + self.clients * self.rng.below(owned),
            };
            let t = Instant::now();
            let out = self.op(op, key).await;
            let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            match out {
                Ok(siblings) => {
                    if op == Op::Put {
                        stats.put.record(nanos);
                        live.puts.fetch_add(1, Ordering::Relaxed);
                    } else {
                        stats.get.record(nanos);
                        stats.siblings += u64::from(siblings);
                        live.gets.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    let name = if op == Op::Put { "PUT" } else { "GET" };
                    *stats.errors.entry(format!("{name} {e}")).or_default() += 1;
                    live.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        stats.elapsed = start.elapsed();
        (self, stats)
    }
}

fn owned_count(keys: usize, clients: usize, id: usize) -> usize {
    keys.saturating_sub(id).div_ceil(clients)
}

fn http_error(status: u16, body: &[u8]) -> String {
    match proto::error_code(body) {
        Some(code) => format!("{status} {code}"),
        None => format!("{status}"),
    }
}

/// The operation mix of a phase.
#[derive(Clone, Copy)]
pub(crate) struct Mix {
    /// Fraction of GETs, 0..=1.
    pub(crate) read_ratio: f64,
}

/// Counters the progress line reads while the clients run.
#[derive(Default)]
pub(crate) struct Live {
    puts: AtomicU64,
    gets: AtomicU64,
    errors: AtomicU64,
}

/// Opens one connection per client, so connection set-up is outside the timing.
pub(crate) async fn connect_all(clients: &mut [Client]) -> Result<(), String> {
    for c in clients.iter_mut() {
        c.conn
            .connect()
            .await
            .map_err(|e| format!("client {} to {}: {e}", c.id, c.conn.addr))?;
    }
    Ok(())
}

/// Every client writes its keys once, concurrently.
pub(crate) async fn preload(clients: Vec<Client>) -> (Vec<Client>, Stats) {
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(c.preload()))
        .collect();
    gather(tasks).await
}

/// One timed phase: every client runs `mix` for `duration`, with a progress line
/// on stderr labelled `label`.
pub(crate) async fn phase(
    clients: Vec<Client>,
    mix: Mix,
    duration: Duration,
    label: &str,
) -> (Vec<Client>, Stats) {
    let live = Arc::new(Live::default());
    let start = Instant::now();
    let until = start + duration;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|c| tokio::spawn(c.run(mix, until, live.clone())))
        .collect();
    let progress = tokio::spawn(progress(label.to_string(), live, start, duration));
    let (clients, mut stats) = gather(tasks).await;
    progress.abort();
    let _ = progress.await;
    stats.elapsed = start.elapsed();
    (clients, stats)
}

async fn gather(tasks: Vec<tokio::task::JoinHandle<(Client, Stats)>>) -> (Vec<Client>, Stats) {
    let mut clients = Vec::with_capacity(tasks.len());
    let mut stats = Stats::default();
    for t in tasks {
        match t.await {
            Ok((c, s)) => {
                stats.merge(&s);
                stats.elapsed = stats.elapsed.max(s.elapsed);
                clients.push(c);
            }
            Err(e) => {
                *stats
                    .errors
                    .entry(format!("client task failed: {e}"))
                    .or_default() += 1;
            }
        }
    }
    (clients, stats)
}

/// Prints ops/s of the last second once a second: one line redrawn on a
/// terminal, one line per second otherwise (logs).
async fn progress(label: String, live: Arc<Live>, start: Instant, duration: Duration) {
    let tty = std::io::stderr().is_terminal();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    let (mut puts, mut gets, mut last) = (0u64, 0u64, Instant::now());
    loop {
        tick.tick().await;
        let (p, g, e) = (
            live.puts.load(Ordering::Relaxed),
            live.gets.load(Ordering::Relaxed),
            live.errors.load(Ordering::Relaxed),
        );
        let secs = last.elapsed().as_secs_f64().max(1e-3);
        let line = format!(
            "  {label}: {:>3}/{} s  writes {:>8.0}/s  reads {:>8.0}/s  errors {e}",
            start.elapsed().as_secs(),
            duration.as_secs(),
            p.saturating_sub(puts) as f64 / secs,
            g.saturating_sub(gets) as f64 / secs,
        );
        (puts, gets, last) = (p, g, Instant::now());
        let mut err = std::io::stderr().lock();
        if tty {
            let _ = write!(err, "\r{line}\x1b[K");
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }
}

/// Clears the progress line on a terminal.
pub(crate) fn end_progress() {
    if std::io::stderr().is_terminal() {
        eprint!("\r\x1b[K");
    }
}

// ---------------------------------------------------------------- idle latency

/// Round trips of a 100-byte message through an in-process TCP echo server on
/// loopback: the floor under any request over the same path.
pub(crate) async fn loopback_rtt(samples: usize) -> Result<Histogram, String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| format!("loopback echo: bind: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("loopback echo: {e}"))?;
    let server = tokio::spawn(async move {
        let Ok((mut s, _)) = listener.accept().await else {
            return;
        };
        let _ = s.set_nodelay(true);
        let mut buf = [0u8; 4096];
        while let Ok(n) = s.read(&mut buf).await {
            if n == 0 || s.write_all(&buf[..n]).await.is_err() {
                return;
            }
        }
    });
    let out = async {
        let mut s = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| "loopback echo: connect timeout".to_string())?
            .map_err(|e| format!("loopback echo: connect: {e}"))?;
        s.set_nodelay(true)
            .map_err(|e| format!("loopback echo: {e}"))?;
        let msg = [b'x'; 100];
        let mut back = [0u8; 100];
        let mut h = Histogram::default();
        for _ in 0..samples {
            let t = Instant::now();
            tokio::time::timeout(REQUEST_TIMEOUT, async {
                s.write_all(&msg).await?;
                s.read_exact(&mut back).await
            })
            .await
            .map_err(|_| "loopback echo: timeout".to_string())?
            .map_err(|e| format!("loopback echo: {e}"))?;
            h.record(u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX));
        }
        Ok(h)
    }
    .await;
    server.abort();
    out
}

/// Sequential single-client PUTs, then GETs of the same keys: latency with
/// nothing else running. Keys are the bench's own `idle-*` keys, written with
/// contexts like the load phase.
pub(crate) async fn idle_latency(target: LoadTarget, samples: usize) -> (Stats, Stats) {
    let keys = Arc::new(Keys::new("idle-", 100, 100));
    let mut c = Client::new(0, 1, target, keys);
    let _ = c.conn.connect().await;
    let mut out = [Stats::default(), Stats::default()];
    for (i, op) in [Op::Put, Op::Get].into_iter().enumerate() {
        let stats = &mut out[i];
        let start = Instant::now();
        for s in 0..samples {
            let t = Instant::now();
            let r = c.op(op, s % 100).await;
            let nanos = u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX);
            match r {
                Ok(_) if op == Op::Put => stats.put.record(nanos),
                Ok(_) => stats.get.record(nanos),
                Err(e) => *stats.errors.entry(e).or_default() += 1,
            }
        }
        stats.elapsed = start.elapsed();
    }
    let [puts, gets] = out;
    (puts, gets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_keys_partition_the_key_space() {
        for (keys, clients) in [(10, 3), (10_000, 50), (7, 7), (50, 1)] {
            let total: usize = (0..clients).map(|id| owned_count(keys, clients, id)).sum();
            assert_eq!(total, keys, "{keys} keys over {clients} clients");
            for id in 0..clients {
                let n = owned_count(keys, clients, id);
                assert!(n >= 1);
                assert!(id + clients * (n - 1) < keys, "last owned key in range");
            }
        }
    }

    #[test]
    fn rng_choices_stay_in_range_and_follow_the_ratio() {
        let mut r = Rng::new(7);
        let mut reads = 0;
        for _ in 0..100_000 {
            assert!(r.below(13) < 13);
            reads += usize::from(r.chance(0.3));
        }
        assert!((28_000..32_000).contains(&reads), "{reads}");
        assert!(!Rng::new(1).chance(0.0));
        assert!(Rng::new(1).chance(1.0));
    }

    #[tokio::test]
    async fn loopback_rtt_measures_every_sample() {
        let h = loopback_rtt(50).await.unwrap();
        assert_eq!(h.count(), 50);
        assert!(h.quantile(0.5) > 0);
    }
}
