//! What a read gives back: the values (one, or several concurrent
//! siblings) and the causal context that a later write must carry to
//! supersede them.

use std::fmt;
use std::str::FromStr;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use crate::error::Error;

/// The `Content-Type` the gateway stores when a write names none.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

/// Largest context this client accepts from a caller; the gateway's own
/// limit (`limits.max_context_bytes`) is 4096 by default, so anything near
/// this is not a context at all.
const MAX_CONTEXT_BYTES: usize = 64 << 10;

/// An opaque causal context (`X-Shoal-Context`): what a write says it has
/// seen, so that it replaces those versions instead of standing beside
/// them as a sibling.
///
/// It is sealed by the cluster and bound to its bucket and key; sending it
/// with another key gets a 400. It can be stored as text
/// ([`Context::as_str`]) and parsed back ([`Context::new`]), e.g. to finish
/// a read-modify-write in another process.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Context(String);

impl Context {
    /// A context from its text form, refused when it could not be a header
    /// value (so that a corrupted one fails here, not as a confusing 400).
    pub fn new(text: impl Into<String>) -> Result<Context, Error> {
        let text = text.into();
        let valid = !text.is_empty()
            && text.len() <= MAX_CONTEXT_BYTES
            && text.bytes().all(|b| b.is_ascii_graphic());
        if valid {
            Ok(Context(text))
        } else {
            Err(Error::InvalidInput {
                message: format!(
                    "a context is 1 to {MAX_CONTEXT_BYTES} printable ASCII characters, not {} bytes starting {:?}",
                    text.len(),
                    text.chars().take(16).collect::<String>()
                ),
            })
        }
    }

    /// The text form, as the gateway sent it.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Context {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Context::new(s)
    }
}

impl fmt::Display for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Contexts run to hundreds of characters; the start tells them apart.
        let shown: String = self.0.chars().take(24).collect();
        if shown.len() < self.0.len() {
            write!(f, "Context({shown}...)")
        } else {
            write!(f, "Context({shown})")
        }
    }
}

/// One stored value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sibling {
    /// The value's bytes.
    pub value: Bytes,
    /// The `Content-Type` it was written with.
    pub content_type: String,
    /// When its coordinator accepted it (RFC 3339, UTC). The gateway says
    /// so only in the JSON form of a read, which it sends when there are
    /// siblings; a lone value comes as raw bytes without it.
    pub written_at: Option<String>,
    /// When it expires (RFC 3339, UTC), for a value written with a TTL, in
    /// the JSON form likewise.
    pub expires_at: Option<String>,
}

impl Sibling {
    /// A value with its content type (e.g. to test an
    /// [`update`](crate::Client::update) closure).
    pub fn new(value: impl Into<Bytes>, content_type: impl Into<String>) -> Sibling {
        Sibling {
            value: value.into(),
            content_type: content_type.into(),
            written_at: None,
            expires_at: None,
        }
    }
}

/// The result of a read.
///
/// Dynamo-style stores keep concurrent writes instead of picking one, so a
/// read holds zero, one or several [`Sibling`]s, and the [`Context`] that
/// covers them all: writing with it replaces every sibling it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    context: Option<Context>,
    siblings: Vec<Sibling>,
}

impl Read {
    /// The context to write with. `None` only when the key was never
    /// written (or its history was purged); a deleted key still has one,
    /// covering its tombstones, so that a later write supersedes them.
    pub fn context(&self) -> Option<&Context> {
        self.context.as_ref()
    }

    /// Every live value: empty when the key is absent, deleted or
    /// expired; more than one when writes were concurrent.
    pub fn siblings(&self) -> &[Sibling] {
        &self.siblings
    }

    /// Whether any value is stored.
    pub fn is_found(&self) -> bool {
        !self.siblings.is_empty()
    }

    /// Whether concurrent values wait to be resolved.
    pub fn has_siblings(&self) -> bool {
        self.siblings.len() > 1
    }

    /// The value, when there is exactly one: the common case, without
    /// forgetting that there may be several.
    pub fn value(&self) -> Option<&Bytes> {
        match self.siblings.as_slice() {
            [one] => Some(&one.value),
            _ => None,
        }
    }

    /// The siblings and the context, taken apart.
    pub fn into_parts(self) -> (Vec<Sibling>, Option<Context>) {
        (self.siblings, self.context)
    }
}

/// The JSON form of a read (gateway `model::ReadBody`); extra fields are
/// ignored, so a newer gateway's additions do not break this client.
#[derive(Deserialize)]
struct ReadBody {
    context: String,
    siblings: Vec<SiblingBody>,
}

#[derive(Deserialize)]
struct SiblingBody {
    value: String,
    content_type: String,
    #[serde(default)]
    written_at: Option<String>,
    #[serde(default)]
    expires_at: Option<String>,
}

/// A read from a 200 answer: the raw value with its content type.
pub(crate) fn single(
    context: Option<Context>,
    content_type: Option<&str>,
    body: Bytes,
) -> Result<Read, String> {
    let context = context.ok_or("a 200 read without an X-Shoal-Context header")?;
    let content_type = content_type
        .filter(|t| !t.is_empty())
        .unwrap_or(DEFAULT_CONTENT_TYPE);
    Ok(Read {
        context: Some(context),
        siblings: vec![Sibling::new(body, content_type)],
    })
}

/// A read from a 300 answer: the JSON form, values base64-decoded.
pub(crate) fn multiple(body: &[u8]) -> Result<Read, String> {
    let body: ReadBody =
        serde_json::from_slice(body).map_err(|e| format!("the siblings' JSON: {e}"))?;
    let context = Context::new(body.context).map_err(|e| e.to_string())?;
    let siblings = body
        .siblings
        .into_iter()
        .map(|s| {
            let value = STANDARD
                .decode(s.value.as_bytes())
                .map_err(|e| format!("a sibling's base64 value: {e}"))?;
            Ok(Sibling {
                value: Bytes::from(value),
                content_type: s.content_type,
                written_at: s.written_at,
                expires_at: s.expires_at,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Read {
        context: Some(context),
        siblings,
    })
}

/// The read of an absent or deleted key.
pub(crate) fn absent(context: Option<Context>) -> Read {
    Read {
        context,
        siblings: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_are_checked_text() {
        let c = Context::new("AbC-_09").unwrap();
        assert_eq!(c.as_str(), "AbC-_09");
        assert_eq!("AbC-_09".parse::<Context>().unwrap(), c);
        assert_eq!(c.to_string(), "AbC-_09");
        for bad in ["", "a b", "a\nb", "é"] {
            assert!(
                matches!(Context::new(bad), Err(Error::InvalidInput { .. })),
                "{bad:?}"
            );
        }
        assert!(Context::new("x".repeat(MAX_CONTEXT_BYTES + 1)).is_err());
        let long = Context::new("y".repeat(100)).unwrap();
        assert!(format!("{long:?}").ends_with("...)"));
    }

    #[test]
    fn a_lone_value_needs_its_context() {
        let ctx = Context::new("c1").unwrap();
        let r = single(Some(ctx.clone()), Some("text/plain"), Bytes::from("hi")).unwrap();
        assert_eq!(r.value().map(|v| &v[..]), Some(&b"hi"[..]));
        assert_eq!(r.siblings()[0].content_type, "text/plain");
        assert_eq!(r.context(), Some(&ctx));
        assert!(r.is_found() && !r.has_siblings());
        let r = single(Some(ctx), None, Bytes::new()).unwrap();
        assert_eq!(r.siblings()[0].content_type, DEFAULT_CONTENT_TYPE);
        assert_eq!(r.value().map(|v| v.len()), Some(0));
        assert!(single(None, None, Bytes::from("x")).is_err());
    }

    #[test]
    fn siblings_from_the_json_form() {
        let body = br#"{"key":"k","key_encoded":"k","context":"ctx",
            "siblings":[{"value":"aGk=","content_type":"text/plain","written_at":"2026-11-24T21:00:00Z"},
                        {"value":"","content_type":"application/octet-stream","written_at":"2026-11-24T21:00:01Z",
                         "expires_at":"2026-11-24T22:00:01Z","later_field":1}]}"#;
        let r = multiple(body).unwrap();
        assert!(r.has_siblings() && r.value().is_none());
        assert_eq!(r.context().unwrap().as_str(), "ctx");
        let s = r.siblings();
        assert_eq!(&s[0].value[..], b"hi");
        assert_eq!(s[0].written_at.as_deref(), Some("2026-11-24T21:00:00Z"));
        assert_eq!(s[0].expires_at, None);
        assert_eq!(s[1].value.len(), 0);
        assert_eq!(s[1].expires_at.as_deref(), Some("2026-11-24T22:00:01Z"));
        let (siblings, context) = r.into_parts();
        assert_eq!((siblings.len(), context.is_some()), (2, true));
    }

    #[test]
    fn broken_json_forms_are_errors_not_panics() {
        for body in [
            &b""[..],
            b"{",
            b"[]",
            br#"{"context":"c"}"#,
            br#"{"context":"","siblings":[]}"#,
            br#"{"context":"c","siblings":[{"value":"!!","content_type":"t"}]}"#,
        ] {
            assert!(multiple(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn absent_keys() {
        let r = absent(None);
        assert!(!r.is_found() && r.context().is_none() && r.value().is_none());
        let r = absent(Some(Context::new("tomb").unwrap()));
        assert_eq!(r.context().unwrap().as_str(), "tomb");
    }
}
