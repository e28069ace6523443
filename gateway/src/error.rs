//! Errors: what the HTTP API answers ([`ApiError`]) and why a gateway could not
//! start ([`GatewayError`]).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use shoal_coordinator::QuorumFailure;

use crate::model::ErrorBody;
use crate::CONTEXT_HEADER;

/// Which kind of request missed its quorum (the message differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// PUT or DELETE: W acknowledgements.
    Write,
    /// GET: R answers.
    Read,
}

/// A request the gateway answers with an error status and a JSON body
/// `{"error": code, "message": ...}` (the README's error table).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    /// The key is longer than `limits.max_key_bytes`.
    #[error("key is {len} bytes, over the limit of {max} bytes")]
    KeyTooLong {
        /// Its length after percent-decoding.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The body is larger than `limits.max_value_bytes`.
    #[error("value is over the limit of {max} bytes")]
    ValueTooLarge {
        /// The limit.
        max: usize,
    },
    /// Malformed request: empty key, bad percent-encoding, `r`/`w` out of
    /// range, malformed context.
    #[error("{message}")]
    BadRequest {
        /// What is wrong.
        message: String,
    },
    /// Nothing stored (or only tombstones); `context` is the encoded
    /// context of the tombstones, sent back in `X-Shoal-Context`.
    #[error("{message}")]
    NotFound {
        /// What was not found.
        message: String,
        /// Context header value, when tombstones exist.
        context: Option<String>,
    },
    /// Fewer than W (R) replicas answered in time.
    #[error("{} quorum not reached: {failure}{}", match .operation { Operation::Write => "write", Operation::Read => "read" }, match .operation { Operation::Write => "; the write may still have reached some replicas", Operation::Read => "" })]
    QuorumFailed {
        /// Read or write.
        operation: Operation,
        /// The counts.
        failure: QuorumFailure,
    },
    /// Every request slot is taken.
    #[error("the gateway is serving its limit of {limit} concurrent requests; retry after {retry_after_secs} s")]
    Overloaded {
        /// `http.max_concurrent_requests`.
        limit: usize,
        /// Value of the `Retry-After` header.
        retry_after_secs: u64,
    },
    /// No token, or one this gateway does not know (401, with
    /// `WWW-Authenticate: Bearer`).
    #[error("{message}")]
    Unauthorized {
        /// Why the request is not authenticated.
        message: String,
    },
    /// A known token without the permission the route needs.
    #[error("token {token:?} lacks the {needed:?} permission")]
    Forbidden {
        /// The token's name (never the token).
        token: String,
        /// What the route needs, e.g. `"write"`.
        needed: &'static str,
    },
    /// Anything unexpected; logged with its cause.
    #[error("internal error: {message}")]
    Internal {
        /// The cause.
        message: String,
    },
}

impl ApiError {
    /// Shorthand for [`ApiError::BadRequest`].
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            message: message.into(),
        }
    }

    /// The `error` code of the JSON body.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::KeyTooLong { .. } => "key_too_long",
            ApiError::ValueTooLarge { .. } => "value_too_large",
            ApiError::BadRequest { .. } => "bad_request",
            ApiError::NotFound { .. } => "not_found",
            ApiError::QuorumFailed { .. } => "quorum_failed",
            ApiError::Overloaded { .. } => "overloaded",
            ApiError::Unauthorized { .. } => "unauthorized",
            ApiError::Forbidden { .. } => "forbidden",
            ApiError::Internal { .. } => "internal",
        }
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::KeyTooLong { .. } => StatusCode::URI_TOO_LONG,
            ApiError::ValueTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::QuorumFailed { .. } | ApiError::Overloaded { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: self.code().to_string(),
            message: self.to_string(),
        }
    }
}

/// The `error` code of an error response, left in its extensions for the
/// metrics layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorCode(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal { message } = &self {
            tracing::error!(cause = %message, "internal error answering a request");
        }
        let mut response = (self.status(), axum::Json(self.body())).into_response();
        // What the metrics layer counts by (a 503 is either of two things).
        response.extensions_mut().insert(ErrorCode(self.code()));
        let headers = response.headers_mut();
        match &self {
            ApiError::NotFound {
                context: Some(context),
                ..
            } => {
                if let Ok(v) = HeaderValue::from_str(context) {
                    headers.insert(CONTEXT_HEADER, v);
                }
            }
            ApiError::Overloaded {
                retry_after_secs, ..
            } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
            }
            ApiError::Unauthorized { .. } => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"shoal\""),
                );
            }
            _ => {}
        }
        response
    }
}

/// Why a gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// `member.id` is empty; every gossip member needs a unique id.
    #[error("invalid configuration: key `member.id` must be set (a unique name for this gateway)")]
    MissingId,
    /// A listener could not be bound.
    #[error("cannot bind {what} listener on {addr}: {source}")]
    Bind {
        /// `"http"` or `"rpc"`.
        what: &'static str,
        /// The configured address.
        addr: String,
        /// The cause.
        source: std::io::Error,
    },
    /// No cluster secret, the RPC port taken, or an identity gossip refuses.
    #[error(transparent)]
    Member(#[from] shoal_node::member::MemberError),
    /// The tokens file cannot be read or parsed, or the anonymous rule
    /// forbids this listener.
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    /// The TLS certificate or key cannot be loaded.
    #[error("TLS: {0}")]
    Tls(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(e: ApiError, status: u16, code: &str, message_has: &str) {
        assert_eq!(e.status().as_u16(), status);
        assert_eq!(e.code(), code);
        let m = e.to_string();
        assert!(m.contains(message_has), "{m:?} lacks {message_has:?}");
    }

    #[test]
    fn mapping() {
        check(
            ApiError::KeyTooLong {
                len: 5000,
                max: 2048,
            },
            414,
            "key_too_long",
            "5000",
        );
        check(
            ApiError::ValueTooLarge { max: 10 },
            413,
            "value_too_large",
            "10",
        );
        check(
            ApiError::bad_request("empty key"),
            400,
            "bad_request",
            "empty key",
        );
        check(
            ApiError::NotFound {
                message: "no value".into(),
                context: None,
            },
            404,
            "not_found",
            "no value",
        );
        let failure = QuorumFailure {
            succeeded: 1,
            needed: 2,
            failed: 1,
            unknown: 1,
            total: 3,
        };
        check(
            ApiError::QuorumFailed {
                operation: Operation::Write,
                failure: failure.clone(),
            },
            503,
            "quorum_failed",
            "1 of 2 required replicas answered",
        );
        assert!(ApiError::QuorumFailed {
            operation: Operation::Write,
            failure: failure.clone()
        }
        .to_string()
        .contains("may still have reached"));
        assert!(!ApiError::QuorumFailed {
            operation: Operation::Read,
            failure
        }
        .to_string()
        .contains("may still"));
        check(
            ApiError::Overloaded {
                limit: 4,
                retry_after_secs: 1,
            },
            503,
            "overloaded",
            "4",
        );
        check(
            ApiError::Unauthorized {
                message: "no token".into(),
            },
            401,
            "unauthorized",
            "no token",
        );
        check(
            ApiError::Forbidden {
                token: "app".into(),
                needed: "admin",
            },
            403,
            "forbidden",
            "admin",
        );
        check(
            ApiError::Internal {
                message: "boom".into(),
            },
            500,
            "internal",
            "boom",
        );
    }

    #[test]
    fn response_headers() {
        let r = ApiError::Overloaded {
            limit: 1,
            retry_after_secs: 1,
        }
        .into_response();
        assert_eq!(r.headers().get(header::RETRY_AFTER).unwrap(), "1");
        let r = ApiError::NotFound {
            message: "deleted".into(),
            context: Some("abc".into()),
        }
        .into_response();
        assert_eq!(r.headers().get(CONTEXT_HEADER).unwrap(), "abc");
        let r = ApiError::Unauthorized {
            message: "no token".into(),
        }
        .into_response();
        assert!(r.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        assert_eq!(
            r.headers().get(header::CONTENT_TYPE).unwrap(),
            "application/json"
        );
    }
}
