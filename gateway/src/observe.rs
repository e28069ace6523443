//! What the gateway counts and shows: `/metrics`, `/v1/cluster/stats` (the
//! dashboard's JSON) and `/ui` (the dashboard).
//!
//! Requests are counted by one middleware around every route, so a 401 or
//! a 404 counts like a 200; quorum failures and overload are told apart by
//! the [`ErrorCode`] an error response carries. The dashboard's request
//! history is sampled every [`SAMPLE_EVERY`] from the same counters, so
//! what the page shows is what Prometheus would compute from `/metrics`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use shoal_node::metrics::{
    Histogram, HistogramSet, HistogramSnapshot, LATENCY_BOUNDS, SIBLING_BOUNDS,
};
use shoal_node::rpc::NodeStatus;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::error::ErrorCode;
use crate::http::AppState;

/// The operations requests are counted by: bounded, whatever the paths.
pub const OPS: &[&str] = &[
    "get", "put", "delete", "list", "props", "cluster", "debug", "metrics", "ui", "health",
    "openapi", "other",
];

/// The statuses counted by name; any other is `other`.
const CODES: &[&str] = &[
    "200", "204", "300", "400", "401", "403", "404", "405", "413", "414", "500", "503",
];

/// How often the dashboard's history takes a sample.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(2);

/// Samples kept: five minutes.
const MAX_SAMPLES: usize = 150;

/// The operation of a request, from its method and path alone.
pub fn op_of(method: &Method, path: &str) -> &'static str {
    let key_route = path.starts_with("/v1/kv/")
        || (path.starts_with("/v1/buckets/") && path.contains("/keys/"));
    if key_route {
        match *method {
            Method::GET | Method::HEAD => "get",
            Method::PUT => "put",
            Method::DELETE => "delete",
            _ => "other",
        }
    } else if path.starts_with("/v1/buckets/") && path.ends_with("/keys") {
        "list"
    } else if path.starts_with("/v1/buckets/") && path.ends_with("/props") {
        "props"
    } else if path == "/v1/cluster" || path.starts_with("/v1/cluster/") {
        "cluster"
    } else if path.starts_with("/v1/debug") {
        "debug"
    } else if path == "/metrics" {
        "metrics"
    } else if path == "/ui" {
        "ui"
    } else if path == "/health" {
        "health"
    } else if path == "/v1/openapi.json" {
        "openapi"
    } else {
        "other"
    }
}

fn index(list: &[&str], name: &str) -> usize {
    list.iter()
        .position(|n| *n == name)
        .unwrap_or(list.len() - 1)
}

/// The gateway's counters.
#[derive(Debug)]
pub struct GatewayCounters {
    /// `OPS.len() x (CODES.len() + 1)` request counts.
    requests: Vec<AtomicU64>,
    durations: HistogramSet,
    quorum_failures: Vec<AtomicU64>,
    overloaded: AtomicU64,
    /// Siblings per successful read that found the key.
    pub read_siblings: Histogram,
    /// Replicas a read repair brought up to date.
    pub read_repairs: AtomicU64,
    /// Writes that used a fallback (a hint) for an owner that was down.
    pub sloppy_writes: AtomicU64,
    history: Mutex<VecDeque<Sample>>,
}

impl Default for GatewayCounters {
    fn default() -> Self {
        GatewayCounters {
            requests: (0..OPS.len() * (CODES.len() + 1))
                .map(|_| AtomicU64::new(0))
                .collect(),
            durations: HistogramSet::new(OPS, LATENCY_BOUNDS),
            quorum_failures: OPS.iter().map(|_| AtomicU64::new(0)).collect(),
            overloaded: AtomicU64::new(0),
            read_siblings: Histogram::new(SIBLING_BOUNDS),
            read_repairs: AtomicU64::new(0),
            sloppy_writes: AtomicU64::new(0),
            history: Mutex::new(VecDeque::with_capacity(MAX_SAMPLES)),
        }
    }
}

/// One history sample: totals at an instant.
#[derive(Debug, Clone)]
struct Sample {
    t_ms: u64,
    kv_requests: u64,
    quorum_failures: u64,
    latency: HistogramSnapshot,
}

impl GatewayCounters {
    /// Counts one answered request.
    pub fn request(&self, op: &str, status: StatusCode, error: Option<&str>, took: Duration) {
        let op_i = index(OPS, op);
        let code = status.as_str();
        let code_i = CODES.iter().position(|c| *c == code).unwrap_or(CODES.len());
        self.requests[op_i * (CODES.len() + 1) + code_i].fetch_add(1, Ordering::Relaxed);
        self.durations.get(OPS[op_i]).observe(took);
        match error {
            Some("quorum_failed") => {
                self.quorum_failures[op_i].fetch_add(1, Ordering::Relaxed);
            }
            Some("overloaded") => {
                self.overloaded.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }

    /// A connection refused by the listener's cap (its 503 never reaches
    /// the router).
    pub fn connection_refused(&self) {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
    }

    fn kv_totals(&self) -> (u64, u64, HistogramSnapshot) {
        let kv = ["get", "put", "delete"];
        let mut requests = 0;
        let mut failures = 0;
        for op in kv {
            let i = index(OPS, op);
            let row = &self.requests[i * (CODES.len() + 1)..(i + 1) * (CODES.len() + 1)];
            requests += row.iter().map(|c| c.load(Ordering::Relaxed)).sum::<u64>();
            failures += self.quorum_failures[i].load(Ordering::Relaxed);
        }
        let mut merged: Option<HistogramSnapshot> = None;
        for op in kv {
            let s = self.durations.get(op).snapshot();
            merged = Some(match merged {
                None => s,
                Some(mut m) => {
                    m.sum += s.sum;
                    m.count += s.count;
                    for (a, b) in m.cumulative.iter_mut().zip(s.cumulative) {
                        a.1 += b.1;
                    }
                    m
                }
            });
        }
        (
            requests,
            failures,
            merged.unwrap_or_else(|| Histogram::new(LATENCY_BOUNDS).snapshot()),
        )
    }

    fn sample(&self) {
        let (kv_requests, quorum_failures, latency) = self.kv_totals();
        let mut history = self.history.lock().expect("history lock");
        if history.len() == MAX_SAMPLES {
            history.pop_front();
        }
        history.push_back(Sample {
            t_ms: unix_ms(),
            kv_requests,
            quorum_failures,
            latency,
        });
    }

    /// Rate, p99 and quorum failures between consecutive samples.
    pub fn history(&self) -> Vec<RequestSample> {
        let history = self.history.lock().expect("history lock");
        history
            .iter()
            .zip(history.iter().skip(1))
            .map(|(a, b)| {
                let secs = (b.t_ms.saturating_sub(a.t_ms) as f64 / 1000.0).max(0.001);
                RequestSample {
                    t_ms: b.t_ms,
                    rate: b.kv_requests.saturating_sub(a.kv_requests) as f64 / secs,
                    p99_ms: b
                        .latency
                        .quantile_since(Some(&a.latency), 0.99)
                        .map(|s| s * 1000.0),
                    quorum_failures: b.quorum_failures.saturating_sub(a.quorum_failures),
                }
            })
            .collect()
    }

    /// The gateway's families.
    pub fn expose(&self, out: &mut shoal_node::metrics::Exposition<'_, '_>) -> std::fmt::Result {
        let mut series = Vec::new();
        for (op_i, op) in OPS.iter().enumerate() {
            for code_i in 0..=CODES.len() {
                let n = self.requests[op_i * (CODES.len() + 1) + code_i].load(Ordering::Relaxed);
                if n > 0 {
                    let code = CODES.get(code_i).copied().unwrap_or("other");
                    series.push((vec![("op", *op), ("code", code)], n));
                }
            }
        }
        out.counters(
            "shoal_gateway_requests",
            "HTTP requests answered, by operation and status",
            series,
        )?;
        let durations = self.durations.snapshots();
        out.histograms(
            "shoal_gateway_request_duration_seconds",
            "Time to answer an HTTP request, by operation",
            durations
                .iter()
                .map(|(op, h)| (vec![("op", op.as_str())], h.clone())),
        )?;
        out.counters(
            "shoal_quorum_failures",
            "Requests answered 503 quorum_failed, by operation",
            OPS.iter()
                .zip(&self.quorum_failures)
                .filter(|(op, _)| matches!(**op, "get" | "put" | "delete" | "list" | "props"))
                .map(|(op, c)| (vec![("op", *op)], c.load(Ordering::Relaxed))),
        )?;
        out.counter(
            "shoal_overloaded",
            "Requests or connections refused 503 overloaded (admission or connection cap)",
            self.overloaded.load(Ordering::Relaxed),
        )?;
        out.histogram(
            "shoal_read_siblings",
            "Siblings in each read that found the key",
            &self.read_siblings.snapshot(),
        )?;
        out.counter(
            "shoal_read_repairs",
            "Replicas brought up to date by read repair",
            self.read_repairs.load(Ordering::Relaxed),
        )?;
        out.counter(
            "shoal_sloppy_writes",
            "Writes that stored a hint on a fallback for an owner that was down",
            self.sloppy_writes.load(Ordering::Relaxed),
        )
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Samples the history every [`SAMPLE_EVERY`] until `stop`.
pub async fn sample_loop(counters: Arc<GatewayCounters>, mut stop: watch::Receiver<bool>) {
    counters.sample();
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(SAMPLE_EVERY) => counters.sample(),
        }
    }
}

/// The counting middleware, outermost on every route.
pub async fn count(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let op = op_of(request.method(), request.uri().path());
    let started = Instant::now();
    let response = next.run(request).await;
    let error = response.extensions().get::<ErrorCode>().map(|c| c.0);
    state
        .engine
        .counters()
        .request(op, response.status(), error, started.elapsed());
    response
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let counters = state.engine.counters().clone();
    let membership = state.engine.cluster().membership().clone();
    let connections = state.connections.clone();
    let reach = state.reach.clone();
    let in_flight = state
        .max_concurrent
        .saturating_sub(state.slots.available_permits());
    let text = shoal_node::metrics::render(move |out| {
        counters.expose(out)?;
        out.gauge(
            "shoal_gateway_requests_in_flight",
            "HTTP requests holding an admission slot now (bounded by http.max_concurrent_requests)",
            in_flight as f64,
        )?;
        connections.expose(out)?;
        shoal_node::observe::expose_gossip(out, &membership, &reach)
    });
    (
        [(header::CONTENT_TYPE, shoal_node::metrics::CONTENT_TYPE)],
        text,
    )
        .into_response()
}

/// The dashboard page: static, self-contained; it reads
/// `/v1/cluster/stats`, which needs `read`.
pub async fn ui() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
            // Nothing from elsewhere: the page has no outside asset, and a
            // policy saying so keeps an injected one from loading.
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:",
            ),
        ],
        include_str!("ui/dashboard.html"),
    )
        .into_response()
}

/// `GET /v1/cluster/stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatsBody {
    /// This gateway's id.
    pub gateway: String,
    /// When this was computed (Unix ms).
    pub generated_ms: u64,
    /// Replicas per key.
    pub n: usize,
    /// Default read quorum.
    pub r: usize,
    /// Default write quorum.
    pub w: usize,
    /// Every member this gateway knows, itself included, by id.
    pub members: Vec<MemberStats>,
    /// Hints pending in the cluster, per owner they are for (summed over
    /// the nodes that answered).
    pub hints_pending_by_owner: BTreeMap<String, u64>,
    /// The current ring.
    pub ring: RingStats,
    /// Request rate, p99 latency and quorum failures over the last minutes.
    pub requests: RequestHistory,
}

/// One member in [`StatsBody`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStats {
    /// Member id.
    pub id: String,
    /// `storage` or `gateway`.
    pub role: String,
    /// Its RPC address.
    pub addr: String,
    /// `alive`, `suspect`, `down`, `leaving` or `left`.
    pub status: String,
    /// Still receiving the ranges it joins with.
    pub joining: bool,
    /// Relative capacity.
    pub weight: u32,
    /// Failure domain (`member.zone`).
    pub zone: String,
    /// Phi as this gateway's detector reads it (`None` for itself).
    pub phi: Option<f64>,
    /// Milliseconds since its heartbeat last rose here.
    pub heartbeat_age_ms: Option<u64>,
    /// Share of all stored replicas (storage members on the ring).
    pub ownership: Option<f64>,
    /// Why this gateway cannot dial its advertised address though gossip
    /// calls it alive (a wrong `member.advertise`); `None` when it can.
    pub dial_error: Option<String>,
    /// Where it serves `/metrics`.
    pub metrics_addr: Option<String>,
    /// What the node said of itself (`None`: a gateway, or no answer).
    pub node: Option<NodeStats>,
}

/// A storage node's own counters, from its `status` RPC.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStats {
    /// Hints it holds.
    pub hints_pending: u64,
    /// The same, per owner.
    pub hints_by_owner: BTreeMap<String, u64>,
    /// Anti-entropy so far.
    pub anti_entropy: shoal_node::observe::AntiEntropyStats,
    /// Hint handoff so far.
    pub handoff: HandoffStats,
    /// Long work in progress.
    pub progress: Option<shoal_node::observe::Progress>,
}

/// Hint handoff on one node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HandoffStats {
    /// Hints handed off since the node started.
    pub delivered: u64,
}

/// The ring in [`StatsBody`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RingStats {
    /// Every range of the current ring, in ring order.
    pub arcs: Vec<RingArc>,
}

/// One ring range and its primary owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RingArc {
    /// First position (decimal u64; JSON numbers lose precision past 2^53).
    pub start: String,
    /// First position after it.
    pub end: String,
    /// `start` as a fraction of the ring.
    pub start_frac: f64,
    /// `end` as a fraction of the ring (1.0 for the ring's end).
    pub end_frac: f64,
    /// Its primary owner on the current ring.
    pub owner: String,
    /// `stable`, or `joining` / `leaving` when the future ring gives it to
    /// a joining member or takes it from a leaving one.
    pub state: String,
}

/// The request history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestHistory {
    /// Between samples.
    pub interval_ms: u64,
    /// Oldest first.
    pub samples: Vec<RequestSample>,
}

/// One interval of key requests (get, put, delete).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RequestSample {
    /// End of the interval (Unix ms).
    pub t_ms: u64,
    /// Requests per second.
    pub rate: f64,
    /// 99th percentile latency (`None`: no request in the interval).
    pub p99_ms: Option<f64>,
    /// Quorum failures in the interval.
    pub quorum_failures: u64,
}

/// How long a node has to answer the status call of a stats request.
const STATUS_TIMEOUT: Duration = Duration::from_millis(500);

/// How long a computed answer is reused: the page polls every 2 s, and
/// many open pages must not become many status calls per node.
const STATS_TTL: Duration = Duration::from_secs(1);

/// The last stats computed, for [`STATS_TTL`].
#[derive(Debug, Default)]
pub struct StatsCache(Mutex<Option<(Instant, Arc<StatsBody>)>>);

/// `GET /v1/cluster/stats`: members, ring, hints, progress and the request
/// history, for the dashboard.
pub async fn stats(State(state): State<AppState>) -> Json<Arc<StatsBody>> {
    if let Some((at, body)) = state.stats_cache.0.lock().expect("stats cache").clone() {
        if at.elapsed() < STATS_TTL {
            return Json(body);
        }
    }
    let body = Arc::new(compute_stats(&state).await);
    *state.stats_cache.0.lock().expect("stats cache") = Some((Instant::now(), body.clone()));
    Json(body)
}

fn ring_arcs(
    view: &shoal_ring::view::RingView,
    members: &[shoal_gossip::MemberInfo],
) -> Vec<RingArc> {
    let Some(ring) = view.current().or(view.future()) else {
        return Vec::new();
    };
    let joining: Vec<&str> = members
        .iter()
        .filter(|m| shoal_node::membership::split_weight(m.weight).1)
        .map(|m| m.id.as_str())
        .collect();
    let leaving: Vec<&str> = members
        .iter()
        .filter(|m| m.status == shoal_gossip::Status::Leaving)
        .map(|m| m.id.as_str())
        .collect();
    let future = view.future();
    let scale = 2f64.powi(64);
    ring.ranges()
        .into_iter()
        .map(|range| {
            let owner = ring
                .replicas_of(&range, 1)
                .first()
                .map_or_else(String::new, |s| s.to_string());
            let next = future.and_then(|f| f.replicas_of(&range, 1).first().map(|s| s.to_string()));
            let state = match next {
                Some(next) if next != owner && joining.contains(&next.as_str()) => "joining",
                _ if leaving.contains(&owner.as_str()) => "leaving",
                Some(next) if next != owner => "joining",
                _ => "stable",
            };
            RingArc {
                start: range.start.to_string(),
                end: range.end.to_string(),
                start_frac: range.start as f64 / scale,
                end_frac: if range.end == 0 {
                    1.0
                } else {
                    range.end as f64 / scale
                },
                owner,
                state: state.into(),
            }
        })
        .collect()
}

async fn compute_stats(state: &AppState) -> StatsBody {
    let engine = &state.engine;
    let cluster = engine.cluster();
    let members = crate::cluster::lock(cluster.membership()).members();
    let liveness: BTreeMap<String, (Option<f64>, Option<Duration>)> =
        shoal_node::observe::liveness(cluster.membership())
            .into_iter()
            .map(|(id, _, phi, silence)| (id, (phi, silence)))
            .collect();
    let snap = cluster.snapshot();
    let ownership = snap.replicated_shares(state.replication.n);
    let deadline = Instant::now() + STATUS_TIMEOUT;
    let asked = members
        .iter()
        .filter(|m| m.role == shoal_gossip::Role::Storage && m.status.is_up())
        .map(|m| {
            let id = m.id.as_str().to_string();
            let snap = &snap;
            async move {
                let answer = engine
                    .call(
                        snap,
                        &id,
                        deadline,
                        |c, ctx| async move { c.status(ctx).await },
                    )
                    .await;
                (id, answer.ok())
            }
        });
    let statuses: BTreeMap<String, NodeStatus> = futures::future::join_all(asked)
        .await
        .into_iter()
        .filter_map(|(id, s)| s.map(|s| (id, s)))
        .collect();
    let mut hints_pending_by_owner = BTreeMap::new();
    for s in statuses.values() {
        for (owner, n) in &s.hints_by_owner {
            *hints_pending_by_owner.entry(owner.clone()).or_insert(0) += n;
        }
    }
    let arcs = ring_arcs(&snap.view, &members);
    let undialable = state.reach.undialable();
    StatsBody {
        gateway: state.id.clone(),
        generated_ms: unix_ms(),
        n: state.replication.n,
        r: state.replication.r,
        w: state.replication.w,
        members: members
            .iter()
            .map(|m| {
                let id = m.id.as_str().to_string();
                let (weight, joining) = shoal_node::membership::split_weight(m.weight);
                let (phi, silence) = liveness.get(&id).copied().unwrap_or((None, None));
                let status = statuses.get(&id);
                MemberStats {
                    role: match m.role {
                        shoal_gossip::Role::Storage => "storage",
                        shoal_gossip::Role::Gateway => "gateway",
                    }
                    .into(),
                    addr: m.address.clone(),
                    status: crate::http::status_name(m.status).into(),
                    joining,
                    weight,
                    zone: m.zone.clone(),
                    phi: phi.filter(|p| p.is_finite()),
                    heartbeat_age_ms: silence.map(|d| d.as_millis() as u64),
                    ownership: ownership.get(&id).copied(),
                    dial_error: undialable.get(&id).map(|u| u.error.clone()),
                    metrics_addr: status.and_then(|s| s.metrics_addr.clone()),
                    node: status.map(|s| NodeStats {
                        hints_pending: s.hints_held,
                        hints_by_owner: s.hints_by_owner.iter().cloned().collect(),
                        anti_entropy: s.anti_entropy.clone(),
                        handoff: HandoffStats {
                            delivered: s.hints_delivered,
                        },
                        progress: s.progress.clone(),
                    }),
                    id,
                }
            })
            .collect(),
        hints_pending_by_owner,
        ring: RingStats { arcs },
        requests: RequestHistory {
            interval_ms: SAMPLE_EVERY.as_millis() as u64,
            samples: engine.counters().history(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_maps_to_a_bounded_op() {
        assert_eq!(op_of(&Method::GET, "/v1/kv/a/b"), "get");
        assert_eq!(op_of(&Method::PUT, "/v1/buckets/x/keys/k"), "put");
        assert_eq!(op_of(&Method::DELETE, "/v1/kv/k"), "delete");
        assert_eq!(op_of(&Method::GET, "/v1/buckets/x/keys"), "list");
        assert_eq!(op_of(&Method::PUT, "/v1/buckets/x/props"), "props");
        assert_eq!(op_of(&Method::GET, "/v1/cluster/stats"), "cluster");
        assert_eq!(op_of(&Method::GET, "/metrics"), "metrics");
        assert_eq!(op_of(&Method::GET, "/anything/else"), "other");
        assert_eq!(op_of(&Method::PATCH, "/v1/kv/k"), "other");
    }

    #[test]
    fn requests_count_by_op_and_code_and_errors_by_kind() {
        let c = GatewayCounters::default();
        c.request(
            "put",
            StatusCode::NO_CONTENT,
            None,
            Duration::from_millis(1),
        );
        c.request(
            "get",
            StatusCode::SERVICE_UNAVAILABLE,
            Some("quorum_failed"),
            Duration::from_millis(2),
        );
        c.request(
            "get",
            StatusCode::SERVICE_UNAVAILABLE,
            Some("overloaded"),
            Duration::from_millis(2),
        );
        c.request(
            "get",
            StatusCode::IM_A_TEAPOT,
            None,
            Duration::from_millis(2),
        );
        let text = shoal_node::metrics::render({
            let c = Arc::new(c);
            move |out| c.expose(out)
        });
        assert!(
            text.contains("shoal_gateway_requests_total{op=\"put\",code=\"204\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("shoal_gateway_requests_total{op=\"get\",code=\"503\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("shoal_gateway_requests_total{op=\"get\",code=\"other\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("shoal_quorum_failures_total{op=\"get\"} 1"),
            "{text}"
        );
        assert!(text.contains("shoal_overloaded_total 1"), "{text}");
    }

    #[test]
    fn the_history_gives_rates_and_p99_per_interval() {
        let c = GatewayCounters::default();
        c.sample();
        for _ in 0..100 {
            c.request("get", StatusCode::OK, None, Duration::from_micros(300));
        }
        std::thread::sleep(Duration::from_millis(20));
        c.sample();
        let h = c.history();
        assert_eq!(h.len(), 1);
        assert!(h[0].rate > 0.0);
        let p99 = h[0].p99_ms.unwrap();
        assert!(p99 > 0.25 && p99 <= 0.5, "{p99}");
        for _ in 0..MAX_SAMPLES + 5 {
            c.sample();
        }
        assert_eq!(c.history().len(), MAX_SAMPLES - 1);
    }
}
