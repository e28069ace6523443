//! The clients: read-modify-write on grow-only sets, a single writer per
//! register, and blind writes by every client to a few keys of an `lww`
//! bucket ([`LWW_BUCKET`]), recording every operation with its outcome as
//! the client saw it (ok, failed: definitely not applied, unknown: may or
//! may not be applied).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::time::Duration;

use base64::Engine as _;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::http::{Client, Reply, SendError};

/// How long a client waits for one HTTP answer (the gateway's own request
/// timeout is 2 s; this leaves room for queueing and slow links).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

pub use crate::oracle::Outcome;

/// The bucket client 0 sets to `conflict = "lww"` first thing.
pub const LWW_BUCKET: &str = "sim-lww";

/// The shared keys of [`LWW_BUCKET`] (history keys `lww/<key>`).
pub const LWW_KEYS: usize = 2;

/// The key path of a history key: `lww/<key>` is `<key>` in [`LWW_BUCKET`],
/// anything else a key of `/v1/kv`. `route` is `kv` for the key routes or
/// `debug` for the debug view.
pub fn path_of(key: &str, route: &str) -> String {
    match (key.strip_prefix("lww/"), route) {
        (Some(k), "debug") => format!("/v1/debug/replicas/{k}?bucket={LWW_BUCKET}"),
        (Some(k), _) => format!("/v1/buckets/{LWW_BUCKET}/keys/{k}"),
        (None, "debug") => format!("/v1/debug/replicas/{key}"),
        (None, _) => format!("/v1/kv/{key}"),
    }
}

/// The outcome of a write's answer as the simulation judges it: 204
/// acknowledged; a refusal before any work (4xx, 503 `overloaded`)
/// definitely not applied; anything else, a connect failure included,
/// unknown. Stricter about what counts as acknowledged, and more cautious
/// about a connect failure, than the fault suite's
/// [`crate::workload::write_outcome`]: the simulation's checks were built
/// on these rules and keep them.
pub fn write_outcome(answer: &Result<Reply, SendError>) -> Outcome {
    match answer {
        Ok(r) if r.status == 204 => Outcome::Ok,
        Ok(r) if r.status == 503 && r.error_code() == "overloaded" => Outcome::Failed,
        Ok(r) if (400..500).contains(&r.status) => Outcome::Failed,
        _ => Outcome::Unknown,
    }
}

/// One request to `gateway` on a connection of its own, closed after the
/// answer, bounded by [`CLIENT_TIMEOUT`] of simulated time.
pub async fn request(
    gateway: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Reply, SendError> {
    let mut all = headers.to_vec();
    all.push(("connection", "close"));
    Client::sim(gateway, CLIENT_TIMEOUT)
        .request(method, path, &all, body)
        .await
}

/// Everything the clients did, shared by the clients, the checker and the
/// driver (all run on the simulation's one thread).
#[derive(Debug, Default)]
pub struct History {
    /// One line per operation or fault, in simulated order: what the trace
    /// hash is computed over.
    pub trace: Vec<String>,
    /// Set elements by key: the outcome of the write that tried to add each.
    pub elements: BTreeMap<String, BTreeMap<String, Outcome>>,
    /// Register writes by key: the outcome of each sequence number.
    pub registers: BTreeMap<String, BTreeMap<u64, Outcome>>,
    /// Blind writes to the `lww` bucket by key: the outcome of each value.
    pub lww: BTreeMap<String, BTreeMap<String, Outcome>>,
    /// Writes (some with a TTL) and deletes of each client's own key, in
    /// the client's order.
    pub doomed: BTreeMap<String, Vec<DoomOp>>,
    /// Whether client 0 set [`LWW_BUCKET`] to `lww` (the `lww` checks apply
    /// only then).
    pub lww_ready: bool,
    /// Client operations (reads and writes).
    pub ops: u64,
    /// Writes acknowledged.
    pub ok: u64,
    /// Writes definitely not applied.
    pub failed: u64,
    /// Writes with an unknown outcome.
    pub unknown: u64,
    /// Reads that failed (no quorum, timeout).
    pub failed_reads: u64,
    /// Register reads that answered, and how many were stale (older than the
    /// latest acknowledged write of that key).
    pub register_reads: u64,
    /// See `register_reads`.
    pub stale_reads: u64,
    /// Broken invariants, each with its evidence.
    pub violations: Vec<String>,
}

impl History {
    /// Appends a trace line stamped with the simulated time of the host
    /// that calls it (clients and the checker).
    pub fn log(&mut self, line: String) {
        let t = turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64);
        self.log_at(t, line);
    }

    /// Appends a trace line stamped `at_ms` (the driver, which runs outside
    /// any host, passes the simulation's time).
    pub fn log_at(&mut self, at_ms: u64, line: String) {
        self.trace.push(format!("{at_ms} {line}"));
    }

    fn count_write(&mut self, outcome: Outcome) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::Failed => self.failed += 1,
            Outcome::Unknown => self.unknown += 1,
        }
    }
}

/// One write or delete of a client's doomed key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DoomOp {
    /// Its sequence number: the value written is `d<seq>` (no TTL) or
    /// `e<seq>` (a TTL of [`DOOM_TTL_S`]).
    pub seq: u64,
    /// What it did.
    pub kind: DoomKind,
    /// Its outcome as the client saw it.
    pub outcome: Outcome,
    /// Simulated time (ms) its answer arrived: a TTL value must read absent
    /// from this plus its TTL on (the gateways' clocks are not skewed; a
    /// node's skew can only purge a value early).
    pub end_ms: u64,
}

/// What a [`DoomOp`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DoomKind {
    /// A value without a TTL.
    Write,
    /// A value with a TTL.
    Expiring,
    /// A delete.
    Delete,
}

/// The TTL of the doomed key's expiring writes.
pub const DOOM_TTL_S: u64 = 1;

/// The seq of a doomed key's value and whether it had a TTL.
pub fn decode_doomed(value: &[u8]) -> Option<(u64, bool)> {
    let text = std::str::from_utf8(value).ok()?;
    let (kind, seq) = text.split_at_checked(1)?;
    let seq = seq.parse().ok()?;
    match kind {
        "d" => Some((seq, false)),
        "e" => Some((seq, true)),
        _ => None,
    }
}

/// Shared history handle.
pub type SharedHistory = Rc<RefCell<History>>;

/// What one client does.
#[derive(Debug, Clone)]
pub struct ClientPlan {
    /// Client name (also its element prefix).
    pub name: String,
    /// Operations to run.
    pub ops: usize,
    /// This client's random stream.
    pub seed: u64,
    /// Gateway HTTP addresses to spread requests over.
    pub gateways: Vec<String>,
    /// The shared set keys.
    pub set_keys: Vec<String>,
    /// Register keys this client alone writes.
    pub register_keys: Vec<String>,
    /// The key this client alone writes and deletes.
    pub doomed_key: String,
    /// No faults: a stale register read is a violation, not a statistic
    /// (W + R > N with every replica reachable).
    pub strict: bool,
}

/// A key's siblings as read (values decoded), and the context covering them.
#[derive(Debug, Clone, Default)]
pub struct ReadResult {
    /// The sibling values.
    pub values: Vec<Vec<u8>>,
    /// `X-Shoal-Context`, if any (also sent with a 404 over tombstones).
    pub context: Option<String>,
}

/// Reads `key` in the JSON form through `gateway` with `r` (default when
/// `None`); `None` when the read failed.
pub async fn read(gateway: &str, key: &str, r: Option<usize>) -> Option<ReadResult> {
    read_or_why(gateway, key, r).await.ok()
}

/// [`read`], saying why it failed.
pub async fn read_or_why(gateway: &str, key: &str, r: Option<usize>) -> Result<ReadResult, String> {
    let query = r.map(|r| format!("?r={r}")).unwrap_or_default();
    let answer = request(
        gateway,
        "GET",
        &format!("{}{query}", path_of(key, "kv")),
        &[("accept", "application/json")],
        b"",
    )
    .await
    .map_err(|e| format!("no answer: {e:?}"))?;
    let context = answer.header("x-shoal-context").map(str::to_string);
    match answer.status {
        404 => Ok(ReadResult {
            values: Vec::new(),
            context,
        }),
        200 => {
            let json = answer.json().unwrap_or_default();
            let malformed = || format!("malformed answer: {json}");
            let siblings = json["siblings"].as_array().ok_or_else(malformed)?;
            let mut values = Vec::new();
            for s in siblings {
                let v = s["value"]
                    .as_str()
                    .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                    .ok_or_else(malformed)?;
                values.push(v);
            }
            Ok(ReadResult { values, context })
        }
        status => Err(format!("{status}: {}", answer.json().unwrap_or_default())),
    }
}

/// Writes `value` to `key` with `context` through `gateway`; returns the
/// outcome and the new context on success.
pub async fn write(
    gateway: &str,
    key: &str,
    context: Option<&str>,
    value: &[u8],
) -> (Outcome, Option<String>) {
    let mut headers = vec![("content-type", "text/plain")];
    if let Some(c) = context {
        headers.push(("x-shoal-context", c));
    }
    let answer = request(gateway, "PUT", &path_of(key, "kv"), &headers, value).await;
    let outcome = write_outcome(&answer);
    let context = answer
        .ok()
        .and_then(|r| r.header("x-shoal-context").map(str::to_string));
    (outcome, context)
}

/// Set elements encoded in one value (comma-separated).
pub fn decode_set(value: &[u8]) -> BTreeSet<String> {
    String::from_utf8_lossy(value)
        .split(',')
        .filter(|e| !e.is_empty())
        .map(str::to_string)
        .collect()
}

fn encode_set(set: &BTreeSet<String>) -> Vec<u8> {
    set.iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(",")
        .into_bytes()
}

/// The sequence numbers a register read returned (`None` for a value that is
/// not one: something no client wrote).
pub fn decode_register(values: &[Vec<u8>]) -> Option<Vec<u64>> {
    values
        .iter()
        .map(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .collect()
}

#[derive(Debug, Default)]
struct Register {
    next: u64,
    last_acked: Option<u64>,
    context: Option<String>,
}

/// Runs one client's plan to the end; every operation is bounded by
/// [`CLIENT_TIMEOUT`].
pub async fn client(plan: ClientPlan, history: SharedHistory) -> turmoil::Result {
    let mut rng = StdRng::seed_from_u64(plan.seed);
    let mut registers: BTreeMap<String, Register> = plan
        .register_keys
        .iter()
        .map(|k| (k.clone(), Register::default()))
        .collect();
    let mut added = 0u64;
    // The doomed key's next seq and the context of its last acknowledged op.
    let (mut doom_seq, mut doom_context): (u64, Option<String>) = (0, None);
    if plan.name == "client-0" {
        let path = format!("/v1/buckets/{LWW_BUCKET}/props");
        for _ in 0..20 {
            let answer = request(
                &plan.gateways[0],
                "PUT",
                &path,
                &[("content-type", "application/json")],
                br#"{"conflict":"lww"}"#,
            )
            .await;
            if matches!(&answer, Ok(r) if r.status == 204) {
                let mut h = history.borrow_mut();
                h.lww_ready = true;
                h.log(format!("{} set {LWW_BUCKET} to lww", plan.name));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for _ in 0..plan.ops {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(5..150))).await;
        let gateway = plan.gateways[rng.gen_range(0..plan.gateways.len())].clone();
        history.borrow_mut().ops += 1;
        match rng.gen_range(0..6) {
            5 => {
                doom_seq += 1;
                let seq = doom_seq;
                let key = plan.doomed_key.clone();
                let kind = match rng.gen_range(0..6) {
                    0..=1 => DoomKind::Write,
                    2 => DoomKind::Expiring,
                    _ => DoomKind::Delete,
                };
                let mut headers = vec![("content-type", "text/plain")];
                if let Some(c) = &doom_context {
                    headers.push(("x-shoal-context", c.as_str()));
                }
                let path = path_of(&key, "kv");
                let answer = match kind {
                    DoomKind::Write => {
                        request(
                            &gateway,
                            "PUT",
                            &path,
                            &headers,
                            format!("d{seq}").as_bytes(),
                        )
                        .await
                    }
                    DoomKind::Expiring => {
                        let path = format!("{path}?ttl={DOOM_TTL_S}");
                        request(
                            &gateway,
                            "PUT",
                            &path,
                            &headers,
                            format!("e{seq}").as_bytes(),
                        )
                        .await
                    }
                    DoomKind::Delete => request(&gateway, "DELETE", &path, &headers, b"").await,
                };
                let outcome = write_outcome(&answer);
                if outcome == Outcome::Ok {
                    doom_context = answer
                        .ok()
                        .and_then(|r| r.header("x-shoal-context").map(str::to_string));
                }
                let end_ms = turmoil::sim_elapsed().map_or(0, |d| d.as_millis() as u64);
                let mut h = history.borrow_mut();
                h.count_write(outcome);
                h.doomed.entry(key.clone()).or_default().push(DoomOp {
                    seq,
                    kind,
                    outcome,
                    end_ms,
                });
                h.log(format!(
                    "{} doom-{kind:?} {key}#{seq} via {gateway} -> {outcome:?}",
                    plan.name
                ));
            }
            4 => {
                let key = format!("lww/shared-{}", rng.gen_range(0..LWW_KEYS));
                added += 1;
                let value = format!("{}.{added}", plan.name);
                let (outcome, _) = write(&gateway, &key, None, value.as_bytes()).await;
                let mut h = history.borrow_mut();
                h.count_write(outcome);
                h.lww
                    .entry(key.clone())
                    .or_default()
                    .insert(value.clone(), outcome);
                h.log(format!(
                    "{} lww-write {key}={value} via {gateway} -> {outcome:?}",
                    plan.name
                ));
            }
            0 | 1 => {
                let key = plan.set_keys[rng.gen_range(0..plan.set_keys.len())].clone();
                let Some(current) = read(&gateway, &key, None).await else {
                    let mut h = history.borrow_mut();
                    h.failed_reads += 1;
                    h.log(format!("{} set-read {key} failed", plan.name));
                    continue;
                };
                // Siblings are merged by union: the set only grows.
                let mut set: BTreeSet<String> =
                    current.values.iter().flat_map(|v| decode_set(v)).collect();
                added += 1;
                let element = format!("{}.{added}", plan.name);
                set.insert(element.clone());
                history.borrow_mut().ops += 1;
                let (outcome, _) = write(
                    &gateway,
                    &key,
                    current.context.as_deref(),
                    &encode_set(&set),
                )
                .await;
                let mut h = history.borrow_mut();
                h.count_write(outcome);
                h.elements
                    .entry(key.clone())
                    .or_default()
                    .insert(element.clone(), outcome);
                h.log(format!(
                    "{} set-add {key} {element} via {gateway} (read {} siblings) -> {outcome:?}",
                    plan.name,
                    current.values.len()
                ));
            }
            2 => {
                let key = plan.register_keys[rng.gen_range(0..plan.register_keys.len())].clone();
                let reg = registers.get_mut(&key).expect("own register");
                reg.next += 1;
                let seq = reg.next;
                let (outcome, context) = write(
                    &gateway,
                    &key,
                    reg.context.as_deref(),
                    seq.to_string().as_bytes(),
                )
                .await;
                if outcome == Outcome::Ok {
                    reg.last_acked = Some(seq);
                    reg.context = context;
                }
                let mut h = history.borrow_mut();
                h.count_write(outcome);
                h.registers
                    .entry(key.clone())
                    .or_default()
                    .insert(seq, outcome);
                h.log(format!(
                    "{} reg-write {key}={seq} via {gateway} -> {outcome:?}",
                    plan.name
                ));
            }
            _ => {
                let key = plan.register_keys[rng.gen_range(0..plan.register_keys.len())].clone();
                let last_acked = registers[&key].last_acked;
                let answer = read(&gateway, &key, None).await;
                let mut h = history.borrow_mut();
                let Some(answer) = answer else {
                    h.failed_reads += 1;
                    h.log(format!("{} reg-read {key} via {gateway} failed", plan.name));
                    continue;
                };
                let Some(seqs) = decode_register(&answer.values) else {
                    h.violations.push(format!(
                        "{} read {key}: a value no client wrote: {:?}",
                        plan.name, answer.values
                    ));
                    continue;
                };
                h.register_reads += 1;
                let newest = seqs.iter().max().copied();
                let stale = last_acked.is_some_and(|a| newest.is_none_or(|n| n < a));
                if stale {
                    h.stale_reads += 1;
                    if plan.strict {
                        h.violations.push(format!(
                            "{} read {key} via {gateway}: {seqs:?}, but {} was acknowledged \
                             (W+R>N, no faults)",
                            plan.name,
                            last_acked.unwrap_or_default()
                        ));
                    }
                }
                h.log(format!(
                    "{} reg-read {key} via {gateway} -> {seqs:?} (acked {last_acked:?}){}",
                    plan.name,
                    if stale { " STALE" } else { "" }
                ));
            }
        }
    }
    Ok(())
}
