//! The client workload every scenario runs, and the final check.
//!
//! Clients write unique keys blindly (each write must survive on its own) and
//! read-modify-write a few shared keys with the context of their read (so
//! concurrent writers create siblings and later writes supersede earlier
//! ones). Every operation goes into the [`History`] with the outcome the
//! client saw; [`verify`] reads every key back on the healed cluster and
//! applies the oracle.
//!
//! A share of the writes go to a second bucket, [`REGISTER_BUCKET`], set to
//! `conflict = "lww"` when the run starts: blind writes to a few register
//! keys, judged by the oracle's register rule (one value, the last write
//! or one that overlapped it). Their keys are `@registers/...` in the
//! history ([`path_of`]).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::http::{encode_key, sibling_values, Client, Reply, SendError};
use crate::oracle::{now_ms, History, Outcome, Verdict};

/// The `lww` bucket of every run.
pub const REGISTER_BUCKET: &str = "registers";

/// The request path of a history key: `@bucket/key` is `key` in `bucket`,
/// anything else a key of `/v1/kv`.
pub fn path_of(key: &str) -> String {
    match key.strip_prefix('@').and_then(|k| k.split_once('/')) {
        Some((bucket, key)) => format!("/v1/buckets/{bucket}/keys/{}", encode_key(key.as_bytes())),
        None => format!("/v1/kv/{}", encode_key(key.as_bytes())),
    }
}

/// What the clients do.
#[derive(Debug, Clone)]
pub struct Spec {
    /// Concurrent clients, each with its own keep-alive connection.
    pub clients: usize,
    /// How long they run.
    pub duration: Duration,
    /// Shared keys read-modify-written by every client (0: none).
    pub shared_keys: usize,
    /// Share of operations on shared keys, 0.0..=1.0.
    pub shared_ratio: f64,
    /// `w` query parameter on writes (`None`: the cluster default).
    pub w: Option<usize>,
    /// `r` query parameter on reads.
    pub r: Option<usize>,
    /// Bound on each request.
    pub timeout: Duration,
    /// Prefix of every key, so scenarios sharing a cluster never collide.
    pub prefix: String,
    /// Ends the run early when set (each client finishes its operation, so
    /// every operation issued gets its outcome recorded).
    pub stop: Option<Arc<AtomicBool>>,
    /// Keys of the `lww` bucket written blindly (0: none).
    pub register_keys: usize,
    /// Share of operations on them, 0.0..=1.0.
    pub register_ratio: f64,
}

impl Default for Spec {
    fn default() -> Self {
        Self {
            clients: 8,
            duration: Duration::from_secs(10),
            shared_keys: 8,
            shared_ratio: 0.3,
            w: None,
            r: None,
            timeout: Duration::from_secs(5),
            prefix: "k".into(),
            stop: None,
            register_keys: 4,
            register_ratio: 0.15,
        }
    }
}

/// Latencies of the operations that ended `Ok`.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    /// Acknowledged writes.
    pub writes: Vec<Duration>,
    /// Successful reads.
    pub reads: Vec<Duration>,
}

impl Latencies {
    fn extend(&mut self, other: Latencies) {
        self.writes.extend(other.writes);
        self.reads.extend(other.reads);
    }
}

/// The outcome of a write answer: 2xx acknowledged; a refusal before any
/// work (4xx, 503 `overloaded`) definitely not applied; anything else (503
/// `quorum_failed` may have reached some replicas, 500) unknown.
pub fn write_outcome(result: &Result<Reply, SendError>) -> Outcome {
    match result {
        Ok(r) if (200..300).contains(&r.status) => Outcome::Ok,
        Ok(r) if (400..500).contains(&r.status) => Outcome::Failed,
        Ok(r) if r.status == 503 && r.error_code() == "overloaded" => Outcome::Failed,
        Ok(_) => Outcome::Unknown,
        Err(SendError::NotSent(_)) => Outcome::Failed,
        Err(SendError::Indeterminate(_)) => Outcome::Unknown,
    }
}

/// The outcome of a read answer (`404` is a successful read of nothing).
pub fn read_outcome(result: &Result<Reply, SendError>) -> Outcome {
    match result {
        Ok(r) if r.status == 200 || r.status == 300 || r.status == 404 => Outcome::Ok,
        other => match write_outcome(other) {
            Outcome::Ok => Outcome::Unknown,
            o => o,
        },
    }
}

fn query(name: &str, value: Option<usize>) -> String {
    value.map(|v| format!("?{name}={v}")).unwrap_or_default()
}

/// Reads `key` in JSON form: `Some((values, context))` on a successful read
/// (empty for 404), `None` otherwise.
pub async fn read(
    client: &mut Client,
    history: &History,
    key: &str,
    r: Option<usize>,
) -> Option<(Vec<Vec<u8>>, Option<String>)> {
    let path = format!("{}{}", path_of(key), query("r", r));
    let result = client
        .request("GET", &path, &[("Accept", "application/json")], b"")
        .await;
    history.read(read_outcome(&result));
    let reply = result.ok()?;
    let context = reply.header("x-shoal-context").map(str::to_string);
    match reply.status {
        200 | 300 => Some((sibling_values(&reply.json()?), context)),
        404 => Some((Vec::new(), context)),
        _ => None,
    }
}

/// Writes `value` to `key` with `context` (which had seen `covers`) and
/// records the outcome.
pub async fn write(
    client: &mut Client,
    history: &History,
    key: &str,
    value: &[u8],
    context: Option<&str>,
    covers: Vec<Vec<u8>>,
    w: Option<usize>,
) -> Outcome {
    let path = format!("{}{}", path_of(key), query("w", w));
    let mut headers = vec![("Content-Type", "application/octet-stream")];
    if let Some(c) = context {
        headers.push(("X-Shoal-Context", c));
    }
    let started = now_ms();
    let result = client.request("PUT", &path, &headers, value).await;
    let outcome = write_outcome(&result);
    if key.starts_with('@') {
        history.register_write(key, value, started, outcome);
    } else {
        history.write(key, value, covers, outcome);
    }
    outcome
}

/// Sets [`REGISTER_BUCKET`] to `lww`, retrying for up to `bound`; whether
/// it took.
pub async fn make_registers(gateway: SocketAddr, bound: Duration) -> bool {
    let path = format!("/v1/buckets/{REGISTER_BUCKET}/props");
    crate::wait::within(bound, || {
        let path = &path;
        async move {
            let mut c = Client::new(gateway, Duration::from_secs(2));
            let body = br#"{"conflict":"lww"}"#;
            let headers = [("Content-Type", "application/json")];
            matches!(c.request("PUT", path, &headers, body).await, Ok(r) if r.status == 204)
        }
    })
    .await
    .is_some()
}

/// Read-modify-write: reads `key`, writes `make(values read)` with the
/// read's context. A failed read falls back to a blind write (covering
/// nothing), as a real client would rather than give up.
#[allow(clippy::too_many_arguments)]
pub async fn read_modify_write(
    client: &mut Client,
    history: &History,
    key: &str,
    make: impl FnOnce(&[Vec<u8>]) -> Vec<u8>,
    w: Option<usize>,
    r: Option<usize>,
    latencies: &mut Latencies,
) -> Outcome {
    let start = Instant::now();
    let (seen, context) = match read(client, history, key, r).await {
        Some(read) => {
            latencies.reads.push(start.elapsed());
            read
        }
        None => (Vec::new(), None),
    };
    let value = make(&seen);
    let start = Instant::now();
    let outcome = write(client, history, key, &value, context.as_deref(), seen, w).await;
    if outcome == Outcome::Ok {
        latencies.writes.push(start.elapsed());
    }
    outcome
}

/// Runs `spec.clients` clients against `gateway` for `spec.duration`,
/// recording into `history`; returns the latencies of successful operations.
/// The future owns a copy of `spec`, so it can be spawned.
pub fn run(
    spec: &Spec,
    gateway: SocketAddr,
    history: Arc<History>,
    seed: u64,
) -> impl std::future::Future<Output = Latencies> + Send + 'static {
    let spec = spec.clone();
    async move { run_owned(spec, gateway, history, seed).await }
}

async fn run_owned(
    mut spec: Spec,
    gateway: SocketAddr,
    history: Arc<History>,
    seed: u64,
) -> Latencies {
    if spec.register_keys > 0
        && spec.register_ratio > 0.0
        && !make_registers(gateway, Duration::from_secs(10)).await
    {
        println!(
            "workload: the {REGISTER_BUCKET} bucket could not be set to lww; no register writes"
        );
        spec.register_ratio = 0.0;
    }
    let deadline = Instant::now() + spec.duration;
    let tasks: Vec<_> = (0..spec.clients)
        .map(|c| {
            let (spec, history) = (spec.clone(), history.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed ^ (c as u64).wrapping_mul(0x9E37_79B9));
                let mut client = Client::new(gateway, spec.timeout);
                let mut latencies = Latencies::default();
                let mut seq = 0u64;
                let stopped = || spec.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
                while Instant::now() < deadline && !stopped() {
                    seq += 1;
                    let value = format!("{}c{c}-{seq}", spec.prefix).into_bytes();
                    let outcome = if spec.register_ratio > 0.0 && rng.gen_bool(spec.register_ratio)
                    {
                        let key = format!(
                            "@{REGISTER_BUCKET}/{}reg-{}",
                            spec.prefix,
                            rng.gen_range(0..spec.register_keys)
                        );
                        let start = Instant::now();
                        let o = write(
                            &mut client,
                            &history,
                            &key,
                            &value,
                            None,
                            Vec::new(),
                            spec.w,
                        )
                        .await;
                        if o == Outcome::Ok {
                            latencies.writes.push(start.elapsed());
                        }
                        o
                    } else if spec.shared_keys > 0 && rng.gen_bool(spec.shared_ratio) {
                        let key = format!(
                            "{}shared-{}",
                            spec.prefix,
                            rng.gen_range(0..spec.shared_keys)
                        );
                        read_modify_write(
                            &mut client,
                            &history,
                            &key,
                            |_| value,
                            spec.w,
                            spec.r,
                            &mut latencies,
                        )
                        .await
                    } else {
                        let key = format!("{}u-c{c}-{seq}", spec.prefix);
                        let start = Instant::now();
                        let o = write(
                            &mut client,
                            &history,
                            &key,
                            &value,
                            None,
                            Vec::new(),
                            spec.w,
                        )
                        .await;
                        if o == Outcome::Ok {
                            latencies.writes.push(start.elapsed());
                        }
                        o
                    };
                    if outcome != Outcome::Ok {
                        // Refused or failed fast (quorum lost, overload):
                        // back off a little instead of spinning.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Latencies::default();
    for t in tasks {
        // Each client stops by the deadline plus one request timeout.
        if let Ok(Ok(l)) = tokio::time::timeout(spec.duration + spec.timeout * 3, t).await {
            all.extend(l);
        }
    }
    all
}

/// The end of every scenario: [`verify`] at r = 3 within `bound`, and the
/// verdict printed as `{name}: <summary> (wall <since started>)`. The caller
/// asserts on it.
pub async fn final_check(
    name: &str,
    gateway: SocketAddr,
    history: &History,
    bound: Duration,
    started: Instant,
) -> Verdict {
    let verdict = verify(gateway, history, 3, bound).await;
    println!(
        "{name}: {} (wall {:?})",
        verdict.summary(),
        started.elapsed()
    );
    verdict
}

/// Reads every key of `history` through `gateway` with `r` (use N on a healed
/// cluster), retrying keys that still miss acknowledged writes until `bound`
/// passes (hints and repair may still be moving), then applies the oracle.
pub async fn verify(gateway: SocketAddr, history: &History, r: usize, bound: Duration) -> Verdict {
    let started = Instant::now();
    let mut present: HashMap<String, HashSet<Vec<u8>>> = HashMap::new();
    let mut todo = history.keys();
    let mut rounds = 0;
    loop {
        rounds += 1;
        let results = read_all(gateway, &todo, r).await;
        let mut unreadable = Vec::new();
        for (key, values) in results {
            match values {
                Some(v) => {
                    present.insert(key, v.into_iter().collect());
                }
                None => unreadable.push(key),
            }
        }
        let mut again: HashSet<String> = history
            .missing(&present)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        again.extend(unreadable.iter().cloned());
        if again.is_empty() || started.elapsed() >= bound {
            if !unreadable.is_empty() {
                println!(
                    "verify: {} keys unreadable at the end (first: {:?})",
                    unreadable.len(),
                    &unreadable[..unreadable.len().min(5)]
                );
            }
            break;
        }
        todo = again.into_iter().collect();
        todo.sort();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!(
        "verify: {} keys read back in {:?} ({rounds} rounds)",
        present.len(),
        started.elapsed()
    );
    history.check(&present)
}

/// Reads `keys` with 8 parallel clients; `None` for keys that did not read.
async fn read_all(
    gateway: SocketAddr,
    keys: &[String],
    r: usize,
) -> Vec<(String, Option<Vec<Vec<u8>>>)> {
    let keys = Arc::new(keys.to_vec());
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let (keys, next) = (keys.clone(), next.clone());
            tokio::spawn(async move {
                let mut client = Client::new(gateway, Duration::from_secs(5));
                let scratch = History::new();
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(key) = keys.get(i) else { break };
                    let got = read(&mut client, &scratch, key, Some(r))
                        .await
                        .map(|(v, _)| v);
                    out.push((key.clone(), got));
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for w in workers {
        if let Ok(part) = w.await {
            all.extend(part);
        }
    }
    all
}
