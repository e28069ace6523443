//! The HTTP API: routes, handlers, limits and the generated
//! OpenAPI document.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use axum::{Json, Router};
use shoal_node::config::{LimitsConfig, ReplicationConfig};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use utoipa::OpenApi;

use crate::auth::{need_for, Auth};
use crate::buckets::ListCursor;
use crate::cluster::lock;
use crate::encode::encode_key;
use crate::error::ApiError;
use crate::kv;
use crate::model::{
    ClusterBody, ErrorBody, HealthBody, ListBody, MemberBody, PreflistBody, PropsBody, ReadBody,
    ReplicaBody, ReplicaSibling, ReplicasBody, SiblingBody,
};
use crate::ops::Dispatcher;
use crate::request::{parse_key, parse_quorum};
use crate::seal::ContextSeal;
use shoal_node::advertise::SelfCheck;
use shoal_node::buckets::BucketProps;
use shoal_node::keys;

/// Content type stored when a PUT names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Seconds a client is told to wait (`Retry-After`) when the gateway is full.
pub const RETRY_AFTER_SECS: u64 = 1;

/// Everything the handlers share. One `Arc`: axum clones the state for every
/// extractor and middleware layer of every request (about 24 clones per
/// GET), and a clone of the fields themselves cost a `String` allocation
/// each time.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

/// What [`AppState`] shares.
pub struct Shared {
    pub(crate) engine: Arc<Dispatcher>,
    pub(crate) id: String,
    pub(crate) limits: LimitsConfig,
    pub(crate) replication: ReplicationConfig,
    pub(crate) request_timeout: Duration,
    pub(crate) slots: Arc<Semaphore>,
    pub(crate) max_concurrent: usize,
    openapi: Arc<String>,
    pub(crate) seal: ContextSeal,
    pub(crate) auth: Arc<Auth>,
    /// The RPC port's connections (for `/metrics`).
    pub(crate) connections: Arc<shoal_node::observe::ConnStats>,
    /// Whether this gateway and its peers can be dialed where they say (for
    /// `/metrics` and `/v1/cluster`).
    pub(crate) reach: Arc<shoal_node::advertise::Reachability>,
    pub(crate) stats_cache: Arc<crate::observe::StatsCache>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    /// State for the gateway `id`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        engine: Arc<Dispatcher>,
        id: String,
        limits: LimitsConfig,
        replication: ReplicationConfig,
        request_timeout: Duration,
        max_concurrent: usize,
        seal: ContextSeal,
        auth: Arc<Auth>,
        connections: Arc<shoal_node::observe::ConnStats>,
        reach: Arc<shoal_node::advertise::Reachability>,
    ) -> Self {
        Self(Arc::new(Shared {
            seal,
            auth,
            connections,
            reach,
            stats_cache: Arc::default(),
            engine,
            id,
            limits,
            replication,
            request_timeout,
            slots: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            openapi: Arc::new(openapi_json()),
        }))
    }
}

/// The OpenAPI 3 document of the HTTP API, generated from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Shoal gateway",
        description = "HTTP API of Shoal, a Dynamo-style key-value store: tunable quorums, vector-clock contexts, siblings."
    ),
    paths(
        kv::put_key, kv::get_key, kv::delete_key, kv::put_bucket_key, kv::get_bucket_key,
        kv::delete_bucket_key,
        list_keys, get_props, put_props, cluster, preflist, replicas, health, openapi
    ),
    components(schemas(
        ErrorBody, ReadBody, SiblingBody, ClusterBody, MemberBody, PreflistBody,
        ReplicasBody, ReplicaBody, ReplicaSibling, HealthBody, ListBody, PropsBody
    )),
    tags((name = "kv", description = "Keys and values"), (name = "cluster", description = "Membership and placement"))
)]
pub struct ApiDoc;

/// The OpenAPI document as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"internal\",\"message\":\"{e}\"}}"))
}

/// The router of the whole API.
pub fn router(state: AppState) -> Router {
    let limited = Router::new()
        .route(
            "/v1/kv/{*key}",
            get(kv::get_key).put(kv::put_key).delete(kv::delete_key),
        )
        .route("/v1/kv", any(empty_key))
        .route("/v1/kv/", any(empty_key))
        .route(
            "/v1/buckets/{bucket}/keys/{*key}",
            get(kv::get_bucket_key)
                .put(kv::put_bucket_key)
                .delete(kv::delete_bucket_key),
        )
        .route("/v1/buckets/{bucket}/keys/", any(empty_key))
        .route("/v1/buckets/{bucket}/keys", get(list_keys))
        .route("/v1/buckets/{bucket}/props", get(get_props).put(put_props))
        .route("/v1/cluster", get(cluster))
        .route("/v1/cluster/stats", get(crate::observe::stats))
        .route("/v1/cluster/preflist/{*key}", get(preflist))
        .route("/v1/debug/replicas/{*key}", get(replicas))
        .route_layer(middleware::from_fn_with_state(state.clone(), admit));
    Router::new()
        .route("/health", get(health))
        .route("/v1/openapi.json", get(openapi))
        // Outside admission: a scrape and the dashboard must work while
        // the gateway is overloaded, which is when they are wanted.
        .route("/metrics", get(crate::observe::metrics))
        .route("/ui", get(crate::observe::ui))
        .merge(limited)
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::observe::count,
        ))
        .with_state(state)
}

/// Tokens first, before admission or any body is read: a stranger costs a
/// hash and a table walk, nothing more.
async fn authorize(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let need = need_for(request.method(), request.uri().path());
    match state
        .auth
        .check(request.headers().get(header::AUTHORIZATION), need)
    {
        Ok(()) => next.run(request).await,
        Err(e) => e.into_response(),
    }
}

/// Admission control: a request takes a slot or is refused at once.
async fn admit(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match state.slots.clone().try_acquire_owned() {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(_) => ApiError::Overloaded {
            limit: state.max_concurrent,
            retry_after_secs: RETRY_AFTER_SECS,
        }
        .into_response(),
    }
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::NotFound {
        message: format!("no such endpoint: {}", uri.path()),
        context: None,
    }
}

/// A known path with a method it does not serve: 405 with the JSON error
/// body every other refusal has, so clients parse one shape of error.
async fn wrong_method(method: axum::http::Method, uri: Uri) -> Response {
    let body = serde_json::json!({
        "error": "method_not_allowed",
        "message": format!("{method} is not served on {}", uri.path()),
    });
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

async fn empty_key() -> ApiError {
    ApiError::bad_request("the key is empty")
}

pub(crate) fn checked_bucket(name: &str) -> Result<String, ApiError> {
    keys::check_bucket(name).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(name.to_string())
}

/// The `bucket` query parameter of the debug and placement routes
/// (`default` when absent).
fn bucket_param(query: Option<&str>) -> Result<String, ApiError> {
    match query_param(query, "bucket") {
        None => Ok(keys::DEFAULT_BUCKET.to_string()),
        Some(name) => checked_bucket(name),
    }
}

/// The last value of `name` in a raw query string.
pub(crate) fn query_param<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?
        .split('&')
        .rev()
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The still percent-encoded key: the path after `prefix`.
fn raw_key<'a>(uri: &'a Uri, prefix: &str) -> &'a str {
    uri.path().strip_prefix(prefix).unwrap_or("")
}

/// Default and largest page of a listing.
const LIST_DEFAULT: usize = 1000;
const LIST_MAX: usize = 10_000;

/// Lists a bucket's live keys in ring order, a page at a time.
#[utoipa::path(
    get, path = "/v1/buckets/{bucket}/keys", tag = "kv",
    params(
        ("bucket" = String, Path, description = "1 to 64 bytes of [a-z0-9_-]"),
        ("limit" = Option<u32>, Query, description = "Most keys in this page, 1..=10000 (default 1000)"),
        ("cursor" = Option<String>, Query, description = "The cursor of the previous page"),
        ("r" = Option<u32>, Query, description = "Owners of every position that must answer, 1..=N"),
    ),
    responses(
        (status = 200, description = "A page of keys; `cursor` is null when the listing is done", body = ListBody),
        (status = 400, description = "Bad bucket, limit or cursor", body = ErrorBody),
        (status = 503, description = "Fewer than r owners of some position answered, or overloaded", body = ErrorBody),
    )
)]
async fn list_keys(
    State(state): State<AppState>,
    axum::extract::Path(bucket): axum::extract::Path<String>,
    uri: Uri,
) -> Result<Json<ListBody>, ApiError> {
    let deadline = Instant::now() + state.request_timeout;
    let bucket = checked_bucket(&bucket)?;
    let limit = match query_param(uri.query(), "limit") {
        None => LIST_DEFAULT,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|l| (1..=LIST_MAX).contains(l))
            .ok_or_else(|| ApiError::bad_request(format!("limit must be in 1..={LIST_MAX}")))?,
    };
    let cursor = match query_param(uri.query(), "cursor") {
        None | Some("") => ListCursor::default(),
        Some(token) => ListCursor::decode(token, state.limits.max_key_bytes)?,
    };
    let r = parse_quorum(uri.query(), "r", state.replication.n, state.replication.r)?;
    let page = state
        .engine
        .list(&bucket, cursor, limit, r, deadline)
        .await?;
    Ok(Json(ListBody {
        keys: page.keys.iter().map(|k| encode_key(k)).collect(),
        cursor: page.next.map(|c| c.encode()),
    }))
}

fn props_body(props: &BucketProps) -> PropsBody {
    PropsBody {
        conflict: match props.conflict {
            shoal_vclock::Policy::Siblings => "siblings",
            shoal_vclock::Policy::Lww => "lww",
        }
        .into(),
        ttl_s: props.ttl_s,
    }
}

/// A bucket's properties (the defaults for a bucket never set).
#[utoipa::path(
    get, path = "/v1/buckets/{bucket}/props", tag = "kv",
    params(("bucket" = String, Path, description = "1 to 64 bytes of [a-z0-9_-]")),
    responses(
        (status = 200, description = "The bucket's properties", body = PropsBody),
        (status = 400, description = "Bad bucket name", body = ErrorBody),
    )
)]
async fn get_props(
    State(state): State<AppState>,
    axum::extract::Path(bucket): axum::extract::Path<String>,
) -> Result<Json<PropsBody>, ApiError> {
    let bucket = checked_bucket(&bucket)?;
    Ok(Json(props_body(&state.engine.props().get(&bucket))))
}

/// Sets some of a bucket's properties; the fields not named keep their
/// value. Every gateway and node applies the change within 5 s.
#[utoipa::path(
    put, path = "/v1/buckets/{bucket}/props", tag = "kv",
    params(("bucket" = String, Path, description = "1 to 64 bytes of [a-z0-9_-]")),
    request_body(content = PropsBody, content_type = "application/json", description = "Any of `conflict` (`siblings` or `lww`) and `ttl_s` (seconds, or null)"),
    responses(
        (status = 204, description = "Stored durably on W nodes"),
        (status = 400, description = "Bad bucket name or body", body = ErrorBody),
        (status = 503, description = "Fewer than W nodes stored it", body = ErrorBody),
    )
)]
async fn put_props(
    State(state): State<AppState>,
    axum::extract::Path(bucket): axum::extract::Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let deadline = Instant::now() + state.request_timeout;
    let bucket = checked_bucket(&bucket)?;
    let body = kv::read_body(&headers, body, 64 << 10, deadline).await?;
    let props = crate::buckets::apply_props_body(state.engine.props().get(&bucket), &body)?;
    shoal_node::buckets::check(&bucket, &props)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    state
        .engine
        .set_props(
            &bucket,
            props,
            &state.id,
            now_ms,
            state.replication.w,
            deadline,
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Members, quorums and ring ownership.
#[utoipa::path(
    get, path = "/v1/cluster", tag = "cluster",
    responses((status = 200, description = "The membership as this gateway sees it", body = ClusterBody))
)]
async fn cluster(State(state): State<AppState>) -> Json<ClusterBody> {
    let cluster = state.engine.cluster();
    let (members, me) = {
        let m = lock(cluster.membership());
        (m.members(), m.local_id().as_str().to_string())
    };
    let undialable = state.reach.undialable();
    let own = state.reach.own();
    let snap = cluster.snapshot();
    let ownership = snap.replicated_shares(state.replication.n);
    Json(ClusterBody {
        n: state.replication.n,
        r: state.replication.r,
        w: state.replication.w,
        members: members
            .into_iter()
            .map(|m| {
                let (weight, joining) = shoal_node::membership::split_weight(m.weight);
                let id = m.id.as_str().to_string();
                let (dialable, dial_error) = if id == me {
                    let checked = own != SelfCheck::Unchecked;
                    (
                        checked.then_some(own == SelfCheck::Reachable),
                        own.problem(),
                    )
                } else if let Some(u) = undialable.get(&id) {
                    (Some(false), Some(u.error.clone()))
                } else {
                    let alive = m.status == shoal_gossip::Status::Alive;
                    (alive.then_some(true), None)
                };
                MemberBody {
                    id,
                    addr: m.address,
                    role: role_name(m.role).into(),
                    status: status_name(m.status).into(),
                    weight,
                    zone: m.zone,
                    joining,
                    heartbeat: m.heartbeat,
                    incarnation: m.incarnation,
                    dialable,
                    dial_error,
                }
            })
            .collect(),
        ownership,
    })
}

fn role_name(role: shoal_gossip::Role) -> &'static str {
    match role {
        shoal_gossip::Role::Storage => "storage",
        shoal_gossip::Role::Gateway => "gateway",
    }
}

pub(crate) fn status_name(status: shoal_gossip::Status) -> &'static str {
    match status {
        shoal_gossip::Status::Alive => "alive",
        shoal_gossip::Status::Suspect => "suspect",
        shoal_gossip::Status::Down => "down",
        shoal_gossip::Status::Leaving => "leaving",
        shoal_gossip::Status::Left => "left",
    }
}

/// A key's token, owners and fallbacks in use.
#[utoipa::path(
    get, path = "/v1/cluster/preflist/{key}", tag = "cluster",
    params(("key" = String, Path, description = "The key, percent-encoded")),
    responses(
        (status = 200, description = "Where the key lives", body = PreflistBody),
        (status = 400, description = "Bad key", body = ErrorBody),
        (status = 414, description = "Key over the limit", body = ErrorBody),
    )
)]
async fn preflist(State(state): State<AppState>, uri: Uri) -> Result<Json<PreflistBody>, ApiError> {
    let key = parse_key(
        raw_key(&uri, "/v1/cluster/preflist/"),
        state.limits.max_key_bytes,
    )?;
    let bucket = bucket_param(uri.query())?;
    let mut body = state.engine.preflist(&keys::wire(&bucket, &key));
    body.key = String::from_utf8_lossy(&key).into_owned();
    Ok(Json(body))
}

/// What each replica stores for a key, without repairing anything.
#[utoipa::path(
    get, path = "/v1/debug/replicas/{key}", tag = "cluster",
    params(("key" = String, Path, description = "The key, percent-encoded")),
    responses(
        (status = 200, description = "Per-replica local state", body = ReplicasBody),
        (status = 400, description = "Bad key", body = ErrorBody),
        (status = 414, description = "Key over the limit", body = ErrorBody),
    )
)]
async fn replicas(State(state): State<AppState>, uri: Uri) -> Result<Json<ReplicasBody>, ApiError> {
    let deadline = Instant::now() + state.request_timeout;
    let key = parse_key(
        raw_key(&uri, "/v1/debug/replicas/"),
        state.limits.max_key_bytes,
    )?;
    let wire = keys::wire(&bucket_param(uri.query())?, &key);
    let replicas = state.engine.inspect(&wire, deadline).await;
    Ok(Json(ReplicasBody {
        key: String::from_utf8_lossy(&key).into_owned(),
        token: keys::position(&wire),
        replicas,
    }))
}

/// Whether the gateway sees at least W live storage nodes.
#[utoipa::path(
    get, path = "/health", tag = "cluster",
    responses(
        (status = 200, description = "At least W storage nodes are live", body = HealthBody),
        (status = 503, description = "Fewer than W storage nodes are live", body = HealthBody),
    )
)]
async fn health(State(state): State<AppState>) -> Response {
    let snap = state.engine.cluster().snapshot();
    let live = snap.live_count();
    let ok = live >= state.replication.w;
    let body = HealthBody {
        status: if ok { "ok" } else { "unavailable" }.into(),
        id: state.id.clone(),
        live_nodes: live,
        ring_nodes: snap.nodes.len(),
        w: state.replication.w,
    };
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

/// This document.
#[utoipa::path(
    get, path = "/v1/openapi.json", tag = "cluster",
    responses((status = 200, description = "The OpenAPI 3 document of this API", content_type = "application/json"))
)]
async fn openapi(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        state.openapi.as_str().to_owned(),
    )
        .into_response()
}
