//! What can go wrong: every error the gateway answers, each its own
//! variant so that callers match on meaning rather than on status codes,
//! and the failures of the exchange itself, kept apart by whether the
//! request may have been acted on.

use std::time::Duration;

use serde::Deserialize;

use crate::read::Context;

/// Why a request failed.
///
/// The first group is the gateway's answer (its `error` code, see the
/// gateway README's error table); the rest happened on the way. The split
/// that matters for retrying is [`Error::is_retryable`]; a write that failed
/// with [`QuorumFailed`](Error::QuorumFailed), [`Timeout`](Error::Timeout)
/// or [`Transport`](Error::Transport) may still have reached some replicas.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// 414 `key_too_long`: the key is over the gateway's
    /// `limits.max_key_bytes` (2048 by default).
    #[error("key_too_long: {message}")]
    KeyTooLong {
        /// The gateway's explanation.
        message: String,
    },
    /// 413 `value_too_large`: the value is over `limits.max_value_bytes`.
    #[error("value_too_large: {message}")]
    ValueTooLarge {
        /// The gateway's explanation.
        message: String,
    },
    /// 400 `bad_request`: `r`/`w` outside 1..=N, a `ttl` out of range, a
    /// context the cluster refuses (altered, or read from another key).
    #[error("bad_request: {message}")]
    BadRequest {
        /// The gateway's explanation.
        message: String,
    },
    /// 404 `not_found` from a route that is not a key read (a key read that
    /// finds nothing is not an error: see [`Read::is_found`](crate::Read::is_found)).
    #[error("not_found: {message}")]
    NotFound {
        /// The gateway's explanation.
        message: String,
        /// The tombstones' context, when the key was deleted.
        context: Option<Context>,
    },
    /// 503 `quorum_failed`: fewer than W (or R) replicas answered in time.
    /// A failed write may still have reached some replicas.
    #[error("quorum_failed: {message}")]
    QuorumFailed {
        /// The gateway's explanation, with the counts.
        message: String,
    },
    /// 503 `overloaded`: every request slot (or connection) of the gateway
    /// was taken; the request was not acted on.
    #[error("overloaded: {message} (retry after {retry_after:?})")]
    Overloaded {
        /// The gateway's explanation.
        message: String,
        /// The gateway's `Retry-After` (1 s when it gave none).
        retry_after: Duration,
    },
    /// 401 `unauthorized`: no token, or one the gateway does not know.
    #[error("unauthorized: {message}")]
    Unauthorized {
        /// The gateway's explanation.
        message: String,
    },
    /// 403 `forbidden`: the token lacks the permission (`read`, `write`,
    /// `admin`) the route needs.
    #[error("forbidden: {message}")]
    Forbidden {
        /// The gateway's explanation.
        message: String,
    },
    /// 500 `internal`: the gateway failed unexpectedly (and logged why).
    #[error("internal: {message}")]
    Internal {
        /// The gateway's explanation.
        message: String,
    },
    /// 405 `method_not_allowed`: the route exists but not with this method
    /// (a gateway older than this client, or a path it serves differently).
    #[error("method_not_allowed: {message}")]
    MethodNotAllowed {
        /// The gateway's explanation.
        message: String,
    },
    /// An answer this client does not know: a status or `error` code that
    /// is not in the API (a proxy in between, a newer gateway).
    #[error("unexpected answer {status}{}: {message}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    Unexpected {
        /// The HTTP status.
        status: u16,
        /// The `error` code, when the body had one.
        code: Option<String>,
        /// The message, or the start of the body.
        message: String,
    },
    /// No connection could be made (refused, unreachable, DNS, the TLS
    /// handshake): the request never reached the gateway.
    #[error("cannot connect to {gateway}: {message}")]
    Connect {
        /// The gateway's address.
        gateway: String,
        /// The cause, with its chain.
        message: String,
    },
    /// The connection failed after the request may have been written: the
    /// gateway may or may not have acted on it.
    #[error("exchange with {gateway} failed (the request may have been applied): {message}")]
    Transport {
        /// The gateway's address.
        gateway: String,
        /// The cause, with its chain.
        message: String,
    },
    /// No whole answer within the request timeout; like
    /// [`Transport`](Error::Transport), the request may have been applied.
    #[error("no answer from {gateway} within {after:?} (the request may have been applied)")]
    Timeout {
        /// The gateway's address.
        gateway: String,
        /// The timeout that passed.
        after: Duration,
    },
    /// The gateway answered something this client cannot use: a missing
    /// context, malformed JSON, a body over `max_response_bytes`.
    #[error("bad answer from {gateway}: {message}")]
    InvalidResponse {
        /// The gateway's address.
        gateway: String,
        /// What is wrong with it.
        message: String,
    },
    /// The request was not sent: an empty key, a bad bucket name or
    /// context, a value that cannot be a header.
    #[error("invalid request: {message}")]
    InvalidInput {
        /// What is wrong.
        message: String,
    },
    /// The client could not be built from its settings.
    #[error("invalid client configuration: {message}")]
    Config {
        /// What is wrong.
        message: String,
    },
}

/// The `Retry-After` assumed when an overloaded gateway gives none (the
/// gateway's own value).
pub(crate) const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Largest `Retry-After` taken at its word: a wait longer than this is a
/// misconfigured server, and [`crate::RetryPolicy`] bounds the wait anyway.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How much of a non-JSON error body goes into a message.
const MAX_MESSAGE_BYTES: usize = 512;

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    #[serde(default)]
    message: String,
}

impl Error {
    /// The error of a non-success answer: by its JSON `error` code when it
    /// has one (two different 503s need telling apart), else [`Unexpected`](Error::Unexpected).
    pub(crate) fn from_answer(
        status: u16,
        retry_after: Option<&str>,
        context: Option<Context>,
        body: &[u8],
    ) -> Error {
        let Ok(ErrorBody { error, message }) = serde_json::from_slice::<ErrorBody>(body) else {
            return Error::Unexpected {
                status,
                code: None,
                message: snippet(body),
            };
        };
        match (status, error.as_str()) {
            (414, "key_too_long") => Error::KeyTooLong { message },
            (413, "value_too_large") => Error::ValueTooLarge { message },
            (400, "bad_request") => Error::BadRequest { message },
            (404, "not_found") => Error::NotFound { message, context },
            (503, "quorum_failed") => Error::QuorumFailed { message },
            (503, "overloaded") => Error::Overloaded {
                message,
                retry_after: parse_retry_after(retry_after),
            },
            (401, "unauthorized") => Error::Unauthorized { message },
            (403, "forbidden") => Error::Forbidden { message },
            (500, "internal") => Error::Internal { message },
            (405, "method_not_allowed") => Error::MethodNotAllowed { message },
            _ => Error::Unexpected {
                status,
                code: Some(error),
                message,
            },
        }
    }

    /// The HTTP status of a gateway's answer (`None` when there was none).
    pub fn status(&self) -> Option<u16> {
        Some(match self {
            Error::KeyTooLong { .. } => 414,
            Error::ValueTooLarge { .. } => 413,
            Error::BadRequest { .. } => 400,
            Error::NotFound { .. } => 404,
            Error::QuorumFailed { .. } | Error::Overloaded { .. } => 503,
            Error::Unauthorized { .. } => 401,
            Error::Forbidden { .. } => 403,
            Error::Internal { .. } => 500,
            Error::MethodNotAllowed { .. } => 405,
            Error::Unexpected { status, .. } => *status,
            Error::Connect { .. }
            | Error::Transport { .. }
            | Error::Timeout { .. }
            | Error::InvalidResponse { .. }
            | Error::InvalidInput { .. }
            | Error::Config { .. } => return None,
        })
    }

    /// The gateway's `error` code (`"overloaded"`, ...), when it answered one.
    pub fn code(&self) -> Option<&str> {
        Some(match self {
            Error::KeyTooLong { .. } => "key_too_long",
            Error::ValueTooLarge { .. } => "value_too_large",
            Error::BadRequest { .. } => "bad_request",
            Error::NotFound { .. } => "not_found",
            Error::QuorumFailed { .. } => "quorum_failed",
            Error::Overloaded { .. } => "overloaded",
            Error::Unauthorized { .. } => "unauthorized",
            Error::Forbidden { .. } => "forbidden",
            Error::Internal { .. } => "internal",
            Error::MethodNotAllowed { .. } => "method_not_allowed",
            Error::Unexpected { code, .. } => return code.as_deref(),
            _ => return None,
        })
    }

    /// How long the gateway asked to be left alone, for an overloaded one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Overloaded { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// Whether trying again later can succeed: the cluster or the network
    /// was short of something, not the request wrong. Blind retries of a
    /// write are still the caller's call (it may have been applied);
    /// [`Client::update`](crate::Client::update) retries by reading again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Overloaded { .. }
            | Error::QuorumFailed { .. }
            | Error::Connect { .. }
            | Error::Transport { .. }
            | Error::Timeout { .. } => true,
            Error::Unexpected { status, .. } => matches!(status, 502..=504),
            _ => false,
        }
    }

    /// Whether the request certainly did nothing, so that any other gateway
    /// may be sent it, even a write.
    pub(crate) fn not_acted_on(&self) -> bool {
        matches!(self, Error::Connect { .. } | Error::Overloaded { .. })
    }
}

/// A `Retry-After` in seconds; its HTTP-date form (which the gateway never
/// sends) and nonsense fall back to the gateway's 1 s.
fn parse_retry_after(value: Option<&str>) -> Duration {
    value
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
        .map_or(DEFAULT_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER))
}

/// The start of a body, as text, for a message.
fn snippet(body: &[u8]) -> String {
    let end = body.len().min(MAX_MESSAGE_BYTES);
    let mut text = String::from_utf8_lossy(&body[..end]).into_owned();
    if body.len() > end {
        text.push_str("...");
    }
    text
}

/// An error with every cause in its chain, `a: b: c`, since hyper's own
/// messages ("client error (Connect)") say nothing without their sources.
pub(crate) fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str) -> Error {
        let body = format!(r#"{{"error":"{code}","message":"why"}}"#);
        Error::from_answer(status, None, None, body.as_bytes())
    }

    #[test]
    fn every_gateway_code_has_its_variant_status_and_code() {
        let table = [
            (414, "key_too_long"),
            (413, "value_too_large"),
            (400, "bad_request"),
            (404, "not_found"),
            (503, "quorum_failed"),
            (503, "overloaded"),
            (401, "unauthorized"),
            (403, "forbidden"),
            (500, "internal"),
            (405, "method_not_allowed"),
        ];
        for (status, code) in table {
            let e = answer(status, code);
            assert!(!matches!(e, Error::Unexpected { .. }), "{status} {code}");
            assert_eq!(e.status(), Some(status), "{e}");
            assert_eq!(e.code(), Some(code), "{e}");
            assert!(e.to_string().contains("why"), "{e}");
        }
        assert!(
            matches!(answer(503, "overloaded"), Error::Overloaded { retry_after, .. } if retry_after == DEFAULT_RETRY_AFTER)
        );
    }

    #[test]
    fn unknown_answers_are_unexpected_not_guessed() {
        // A code with the wrong status is not trusted either.
        let e = answer(500, "overloaded");
        assert!(
            matches!(&e, Error::Unexpected { status: 500, code: Some(c), .. } if c == "overloaded"),
            "{e:?}"
        );
        assert_eq!(e.code(), Some("overloaded"));
        let e = Error::from_answer(502, None, None, b"<html>Bad Gateway</html>");
        assert!(
            matches!(&e, Error::Unexpected { status: 502, code: None, message } if message.contains("Bad Gateway")),
            "{e:?}"
        );
        assert!(e.is_retryable());
        let long = vec![b'x'; 10_000];
        let Error::Unexpected { message, .. } = Error::from_answer(418, None, None, &long) else {
            panic!("unexpected");
        };
        assert!(message.len() < 600 && message.ends_with("..."));
        // Invalid UTF-8 and empty bodies are messages too, not panics.
        assert!(matches!(
            Error::from_answer(400, None, None, &[0xff, 0xfe]),
            Error::Unexpected { .. }
        ));
        assert!(matches!(
            Error::from_answer(503, None, None, b""),
            Error::Unexpected { .. }
        ));
    }

    #[test]
    fn retry_after_is_read_and_bounded() {
        let body = br#"{"error":"overloaded","message":"full"}"#;
        let after = |h: Option<&str>| Error::from_answer(503, h, None, body).retry_after();
        assert_eq!(after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(after(Some(" 2 ")), Some(Duration::from_secs(2)));
        assert_eq!(after(None), Some(DEFAULT_RETRY_AFTER));
        assert_eq!(
            after(Some("Wed, 21 Oct 2015 07:28:00 GMT")),
            Some(DEFAULT_RETRY_AFTER)
        );
        assert_eq!(after(Some("-1")), Some(DEFAULT_RETRY_AFTER));
        assert_eq!(after(Some("99999999999")), Some(MAX_RETRY_AFTER));
    }

    #[test]
    fn not_found_keeps_the_tombstones_context() {
        let ctx = Context::new("abc").unwrap();
        let e = Error::from_answer(
            404,
            None,
            Some(ctx.clone()),
            br#"{"error":"not_found","message":"deleted"}"#,
        );
        assert_eq!(
            e,
            Error::NotFound {
                message: "deleted".into(),
                context: Some(ctx)
            }
        );
    }

    #[test]
    fn retryable_and_not_acted_on() {
        let gw = || "http://g".to_string();
        let retryable = [
            answer(503, "overloaded"),
            answer(503, "quorum_failed"),
            Error::Connect {
                gateway: gw(),
                message: "refused".into(),
            },
            Error::Timeout {
                gateway: gw(),
                after: Duration::from_secs(1),
            },
            Error::Transport {
                gateway: gw(),
                message: "reset".into(),
            },
        ];
        for e in &retryable {
            assert!(e.is_retryable(), "{e}");
        }
        for code in ["bad_request", "unauthorized", "forbidden", "internal"] {
            let status = match code {
                "bad_request" => 400,
                "unauthorized" => 401,
                "forbidden" => 403,
                _ => 500,
            };
            assert!(!answer(status, code).is_retryable(), "{code}");
        }
        assert!(retryable[0].not_acted_on() && retryable[2].not_acted_on());
        assert!(!retryable[1].not_acted_on() && !retryable[3].not_acted_on());
    }

    #[test]
    fn chains_name_every_cause_once() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("client error (Connect)")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ));
        assert_eq!(chain(&e), "client error (Connect): connection refused");
    }
}
