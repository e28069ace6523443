//! The key routes: `PUT`, `GET` and `DELETE` of `/v1/kv/{key}` (the bucket
//! `default`) and of `/v1/buckets/{bucket}/keys/{key}`, with their contexts,
//! quorums and TTLs; the body is read bounded. Everything else the API
//! serves is in [`crate::http`].

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::StreamExt;
use shoal_node::keys;
use shoal_vclock::Content;
use tokio::time::Instant;

use crate::error::ApiError;
use crate::http::{checked_bucket, query_param, AppState, DEFAULT_CONTENT_TYPE};
use crate::model::{ErrorBody, ReadBody};
use crate::request::{parse_key, parse_quorum, wants_json};
use crate::CONTEXT_HEADER;

/// Body bytes reserved before any arrive, whatever `Content-Length` says.
const INITIAL_BODY_BYTES: usize = 64 << 10;

/// The bucket and key a key route names: `/v1/kv/{key}` is the bucket
/// `default`, `/v1/buckets/{bucket}/keys/{key}` any other.
pub(crate) fn target(uri: &Uri, max_key: usize) -> Result<(String, Vec<u8>), ApiError> {
    let path = uri.path();
    if let Some(raw) = path.strip_prefix("/v1/kv/") {
        return Ok((keys::DEFAULT_BUCKET.to_string(), parse_key(raw, max_key)?));
    }
    let rest = path.strip_prefix("/v1/buckets/").unwrap_or_default();
    let (bucket, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let bucket = checked_bucket(bucket)?;
    let raw = tail.strip_prefix("keys/").unwrap_or_default();
    Ok((bucket, parse_key(raw, max_key)?))
}

pub(crate) fn header_bytes<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    headers.get(name).map(HeaderValue::as_bytes)
}

pub(crate) fn context_value(context: String) -> Result<HeaderValue, ApiError> {
    HeaderValue::from_str(&context).map_err(|e| ApiError::Internal {
        message: format!("context is not a header value: {e}"),
    })
}

/// Reads at most `max` bytes of body, refusing more without reading it all.
pub(crate) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    max: usize,
    deadline: Instant,
) -> Result<Vec<u8>, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > max as u64) {
        return Err(ApiError::ValueTooLarge { max });
    }
    // Grown as chunks arrive: a declared length is a claim, and reserving it
    // up front would let idle requests pin megabytes each.
    let capacity = declared
        .map_or(0, |len| len as usize)
        .min(INITIAL_BODY_BYTES);
    let mut out = Vec::with_capacity(capacity);
    let mut stream = body.into_data_stream();
    loop {
        let chunk = match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => {
                return Err(ApiError::bad_request(
                    "the request body did not arrive within the request timeout",
                ))
            }
            Ok(None) => break,
            Ok(Some(Err(e))) => {
                return Err(ApiError::bad_request(format!(
                    "cannot read the request body: {e}"
                )))
            }
            Ok(Some(Ok(chunk))) => chunk,
        };
        if out.len() + chunk.len() > max {
            return Err(ApiError::ValueTooLarge { max });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Stores a value.
#[utoipa::path(
    put, path = "/v1/kv/{key}", tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded (any non-empty bytes)"),
        ("w" = Option<u32>, Query, description = "Write quorum for this request, 1..=N"),
        ("ttl" = Option<u32>, Query, description = "Seconds until the version expires, 1..=2^31 (default: the bucket's ttl_s, else never)"),
        ("X-Shoal-Context" = Option<String>, Header, description = "Context of the versions this write supersedes (from a read)"),
    ),
    request_body(content = String, content_type = "application/octet-stream", description = "The value; its Content-Type is stored and returned"),
    responses(
        (status = 204, description = "Stored on W replicas", headers(("X-Shoal-Context" = String, description = "Context of the new version"))),
        (status = 400, description = "Bad key encoding, w out of range or malformed context", body = ErrorBody),
        (status = 413, description = "Value over the limit", body = ErrorBody),
        (status = 414, description = "Key over the limit", body = ErrorBody),
        (status = 503, description = "Quorum not reached, or overloaded", body = ErrorBody),
    )
)]
pub(crate) async fn put_key(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + state.request_timeout;
    let (bucket, key) = target(&uri, state.limits.max_key_bytes)?;
    let w = parse_quorum(uri.query(), "w", state.replication.n, state.replication.w)?;
    let context = state
        .seal
        .open(&bucket, &key, header_bytes(&headers, CONTEXT_HEADER))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .unwrap_or(DEFAULT_CONTENT_TYPE)
        .to_string();
    let ttl_s = match query_param(uri.query(), "ttl") {
        Some(raw) => Some(parse_ttl(raw)?),
        None => state.engine.props().get(&bucket).ttl_s,
    };
    let value = read_body(&headers, body, state.limits.max_value_bytes, deadline).await?;
    let content = match ttl_s {
        None => Content::value(value, content_type),
        Some(s) => Content::expiring(value, content_type, expiry_after(&state, s)),
    };
    write(&state, &bucket, key, context, content, w, deadline).await
}

/// Largest `?ttl=` (seconds): 2^31, about 68 years.
pub(crate) const MAX_TTL_S: u64 = 1 << 31;

/// A `?ttl=` value: whole seconds in `1..=2^31`.
pub(crate) fn parse_ttl(raw: &str) -> Result<u64, ApiError> {
    raw.parse::<u64>()
        .ok()
        .filter(|s| (1..=MAX_TTL_S).contains(s))
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "ttl must be whole seconds in 1..={MAX_TTL_S}, not {raw:?}"
            ))
        })
}

/// The expiry instant of a write made now with a TTL of `ttl_s` seconds,
/// on the gateway's clock.
pub(crate) fn expiry_after(state: &AppState, ttl_s: u64) -> u64 {
    state
        .engine
        .now_ms()
        .saturating_add(ttl_s.saturating_mul(1000))
}

/// Deletes a key (writes a tombstone).
#[utoipa::path(
    delete, path = "/v1/kv/{key}", tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded"),
        ("w" = Option<u32>, Query, description = "Write quorum for this request, 1..=N"),
        ("X-Shoal-Context" = Option<String>, Header, description = "Context of the versions this delete supersedes"),
    ),
    responses(
        (status = 204, description = "Tombstone stored on W replicas", headers(("X-Shoal-Context" = String, description = "Context of the tombstone"))),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 414, description = "Key over the limit", body = ErrorBody),
        (status = 503, description = "Quorum not reached, or overloaded", body = ErrorBody),
    )
)]
pub(crate) async fn delete_key(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + state.request_timeout;
    let (bucket, key) = target(&uri, state.limits.max_key_bytes)?;
    let w = parse_quorum(uri.query(), "w", state.replication.n, state.replication.w)?;
    let context = state
        .seal
        .open(&bucket, &key, header_bytes(&headers, CONTEXT_HEADER))?;
    write(
        &state,
        &bucket,
        key,
        context,
        Content::Tombstone,
        w,
        deadline,
    )
    .await
}

#[allow(clippy::too_many_arguments)]
async fn write(
    state: &AppState,
    bucket: &str,
    key: Vec<u8>,
    context: shoal_vclock::Context,
    content: Content,
    w: usize,
    deadline: Instant,
) -> Result<Response, ApiError> {
    let set = state
        .engine
        .write(
            keys::wire(bucket, &key),
            context,
            false,
            content,
            w,
            deadline,
        )
        .await?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    response.headers_mut().insert(
        CONTEXT_HEADER,
        context_value(state.seal.seal(bucket, &key, &set.context()))?,
    );
    Ok(response)
}

/// Reads a key.
#[utoipa::path(
    get, path = "/v1/kv/{key}", tag = "kv",
    params(
        ("key" = String, Path, description = "The key, percent-encoded"),
        ("r" = Option<u32>, Query, description = "Read quorum for this request, 1..=N"),
        ("Accept" = Option<String>, Header, description = "`application/json` for the JSON form whatever the sibling count"),
    ),
    responses(
        (status = 200, description = "One value, served with its own Content-Type (whatever the writer gave); the JSON form with Accept: application/json",
         content((String = "application/octet-stream"), (ReadBody = "application/json")),
         headers(("X-Shoal-Context" = String, description = "Context covering what was read"))),
        (status = 300, description = "Concurrent values (siblings)", body = ReadBody,
         headers(("X-Shoal-Context" = String, description = "Context covering every sibling"))),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 404, description = "Absent or deleted; X-Shoal-Context present when tombstones exist", body = ErrorBody),
        (status = 414, description = "Key over the limit", body = ErrorBody),
        (status = 503, description = "Quorum not reached, or overloaded", body = ErrorBody),
    )
)]
pub(crate) async fn get_key(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let deadline = Instant::now() + state.request_timeout;
    let (bucket, key) = target(&uri, state.limits.max_key_bytes)?;
    let r = parse_quorum(uri.query(), "r", state.replication.n, state.replication.r)?;
    let json = wants_json(header_bytes(&headers, "accept"));
    let reconciled = state
        .engine
        .read(keys::wire(&bucket, &key), r, deadline)
        .await?;
    let Some(merged) = reconciled.merged else {
        return Err(ApiError::NotFound {
            message: "no value stored for this key".into(),
            context: None,
        });
    };
    let context = state.seal.seal(&bucket, &key, &merged.context());
    let now = state.engine.now_ms();
    let live: Vec<&shoal_vclock::Sibling> =
        merged.values().iter().filter(|s| s.is_live(now)).collect();
    if live.is_empty() {
        let why = if merged.values().iter().any(|s| !s.is_tombstone()) {
            "the key's value has expired"
        } else {
            "the key was deleted"
        };
        return Err(ApiError::NotFound {
            message: why.into(),
            context: Some(context),
        });
    }
    let context_header = context_value(context.clone())?;
    let mut response = match (json, live.as_slice()) {
        (false, [one]) => {
            let content_type = one
                .content_type()
                .filter(|t| !t.is_empty())
                .unwrap_or(DEFAULT_CONTENT_TYPE);
            let mut r = one.value().unwrap_or_default().to_vec().into_response();
            let ct = HeaderValue::from_str(content_type)
                .unwrap_or(HeaderValue::from_static(DEFAULT_CONTENT_TYPE));
            r.headers_mut().insert(header::CONTENT_TYPE, ct);
            r
        }
        (true, _) => Json(ReadBody::new(&key, context, &merged, now)).into_response(),
        (false, _) => (
            StatusCode::MULTIPLE_CHOICES,
            Json(ReadBody::new(&key, context, &merged, now)),
        )
            .into_response(),
    };
    response
        .headers_mut()
        .insert(CONTEXT_HEADER, context_header);
    Ok(response)
}

/// Stores a value in a bucket: every semantics of `PUT /v1/kv/{key}`.
#[utoipa::path(
    put, path = "/v1/buckets/{bucket}/keys/{key}", tag = "kv",
    params(
        ("bucket" = String, Path, description = "1 to 64 bytes of [a-z0-9_-]"),
        ("key" = String, Path, description = "The key, percent-encoded (any non-empty bytes)"),
        ("w" = Option<u32>, Query, description = "Write quorum for this request, 1..=N"),
        ("X-Shoal-Context" = Option<String>, Header, description = "Context of the versions this write supersedes (from a read of this bucket and key)"),
    ),
    request_body(content = String, content_type = "application/octet-stream", description = "The value; its Content-Type is stored and returned"),
    responses(
        (status = 204, description = "Stored on W replicas", headers(("X-Shoal-Context" = String, description = "Context of the new version"))),
        (status = 400, description = "Bad bucket name, key encoding, w or context", body = ErrorBody),
        (status = 413, description = "Value over the limit", body = ErrorBody),
        (status = 414, description = "Key over the limit", body = ErrorBody),
        (status = 503, description = "Quorum not reached, or overloaded", body = ErrorBody),
    )
)]
pub(crate) async fn put_bucket_key(
    state: State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    put_key(state, uri, headers, body).await
}

/// Reads a key of a bucket: every semantics of `GET /v1/kv/{key}`; in an
/// `lww` bucket never 300.
#[utoipa::path(
    get, path = "/v1/buckets/{bucket}/keys/{key}", tag = "kv",
    params(
        ("bucket" = String, Path, description = "1 to 64 bytes of [a-z0-9_-]"),
        ("key" = String, Path, description = "The key, percent-encoded"),
        ("r" = Option<u32>, Query, description = "Read quorum for this request, 1..=N"),
        ("Accept" = Option<String>, Header, description = "`application/json` for the JSON form whatever the sibling count"),
    ),
    responses(
        (status = 200, description = "One value, served with its own Content-Type; the JSON form with Accept: application/json",
         content((String = "application/octet-stream"), (ReadBody = "application/json")),
         headers(("X-Shoal-Context" = String, description = "Context covering what was read"))),
        (status = 300, description = "Concurrent values (siblings; never in an lww bucket)", body = ReadBody,
         headers(("X-Shoal-Context" = String, description = "Context covering every sibling"))),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 404, description = "Absent or deleted", body = ErrorBody),
        (status = 414, description = "Key over the limit", body = ErrorBody),
        (status = 503, description = "Quorum not reached, or overloaded", body = ErrorBody),
    )
)]
pub(crate) async fn get_bucket_key(
    state: State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    get_key(state, uri, headers).await
}

/// Deletes a key of a bucket: every semantics of `DELETE /v1/kv/{key}`.
#[utoipa::path(
    delete, path = "/v1/buckets/{bucket}/keys/{key}", tag = "kv",
    params(
        ("bucket" = String, Path, description = "1 to 64 bytes of [a-z0-9_-]"),
        ("key" = String, Path, description = "The key, percent-encoded"),
        ("w" = Option<u32>, Query, description = "Write quorum for this request, 1..=N"),
        ("X-Shoal-Context" = Option<String>, Header, description = "Context of the versions this delete supersedes"),
    ),
    responses(
        (status = 204, description = "Tombstone stored on W replicas", headers(("X-Shoal-Context" = String, description = "Context of the tombstone"))),
        (status = 400, description = "Bad request", body = ErrorBody),
        (status = 414, description = "Key over the limit", body = ErrorBody),
        (status = 503, description = "Quorum not reached, or overloaded", body = ErrorBody),
    )
)]
pub(crate) async fn delete_bucket_key(
    state: State<AppState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete_key(state, uri, headers).await
}
