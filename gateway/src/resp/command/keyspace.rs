//! The key commands, kept apart from the connection commands: each becomes
//! quorum reads and writes of the bucket `default`, and the rules they share
//! (a Redis write supersedes what its coordinator holds, a read answers the
//! newest live version) are checked side by side here.

use futures::future::join_all;
use shoal_node::keys;
use shoal_vclock::{Content, Context, Sibling, SiblingSet};
use tokio::time::Instant;

use super::{arity, err, integer, not_integer, syntax, upper, Refusal, Session, MAX_KEYS};
use crate::error::ApiError;
use crate::http::{AppState, DEFAULT_CONTENT_TYPE, RETRY_AFTER_SECS};
use crate::kv::MAX_TTL_S;
use crate::resp::frame::Reply;

/// The key commands.
pub(super) async fn data(
    state: &AppState,
    session: &Session,
    name: &str,
    rest: &[Vec<u8>],
) -> Result<Reply, Refusal> {
    let _ = session;
    let deadline = Instant::now() + state.request_timeout;
    // One admission slot per command, shared with HTTP: a pipeline cannot
    // take more of the gateway than its connection's one command at a time.
    let _slot = state.slots.clone().try_acquire_owned().map_err(|_| {
        Refusal::Api(ApiError::Overloaded {
            limit: state.max_concurrent,
            retry_after_secs: RETRY_AFTER_SECS,
        })
    })?;
    match name {
        "get" => {
            let [key] = rest else { return Err(arity(name)) };
            let set = read(state, key, deadline).await?;
            let now = state.engine.now_ms();
            Ok(newest_live(set.as_ref(), now)
                .and_then(Sibling::value)
                .map_or(Reply::Nil, |v| Reply::Bulk(v.to_vec())))
        }
        "mget" => {
            if rest.is_empty() {
                return Err(arity(name));
            }
            let sets = read_many(state, rest, deadline).await?;
            let now = state.engine.now_ms();
            let budget = state.limits.max_value_bytes.saturating_mul(16);
            let mut size = 0usize;
            let mut out = Vec::with_capacity(sets.len());
            for set in &sets {
                let value = newest_live(set.as_ref(), now).and_then(Sibling::value);
                size += value.map_or(0, <[u8]>::len);
                if size > budget {
                    return Err(err(format!(
                        "MGET answer over {budget} bytes; ask for fewer keys"
                    )));
                }
                out.push(value.map_or(Reply::Nil, |v| Reply::Bulk(v.to_vec())));
            }
            Ok(Reply::Array(out))
        }
        "exists" => {
            if rest.is_empty() {
                return Err(arity(name));
            }
            let sets = read_many(state, rest, deadline).await?;
            let now = state.engine.now_ms();
            let n = sets
                .iter()
                .filter(|s| newest_live(s.as_ref(), now).is_some())
                .count();
            Ok(Reply::Int(n as i64))
        }
        "set" => set(state, rest, deadline).await,
        "mset" => {
            if rest.is_empty() || !rest.len().is_multiple_of(2) {
                return Err(arity(name));
            }
            if rest.len() / 2 > MAX_KEYS {
                return Err(too_many_keys());
            }
            let writes = rest.chunks(2).map(|pair| {
                let content = Content::value(pair[1].clone(), DEFAULT_CONTENT_TYPE);
                write(state, &pair[0], Base::Supersede, content, deadline)
            });
            for result in join_all(writes).await {
                result?;
            }
            Ok(Reply::Simple("OK"))
        }
        "del" | "unlink" => {
            if rest.is_empty() {
                return Err(arity(name));
            }
            // Redis answers how many keys existed: read first, then delete
            // those (a delete of an absent key would only add a tombstone).
            let sets = read_many(state, rest, deadline).await?;
            let now = state.engine.now_ms();
            let present: Vec<&Vec<u8>> = rest
                .iter()
                .zip(&sets)
                .filter(|(_, s)| newest_live(s.as_ref(), now).is_some())
                .map(|(k, _)| k)
                .collect();
            let deletes = present
                .iter()
                .map(|key| write(state, key, Base::Supersede, Content::Tombstone, deadline));
            for result in join_all(deletes).await {
                result?;
            }
            Ok(Reply::Int(present.len() as i64))
        }
        "expire" | "pexpire" => expire(state, name, rest, deadline).await,
        "persist" => {
            let [key] = rest else { return Err(arity(name)) };
            let set = read(state, key, deadline).await?;
            let now = state.engine.now_ms();
            match newest_live(set.as_ref(), now) {
                Some(s) if s.content.expires_at().is_some() => {
                    let content = Content::value(
                        s.value().unwrap_or_default().to_vec(),
                        s.content_type().unwrap_or(DEFAULT_CONTENT_TYPE),
                    );
                    write(state, key, Base::Supersede, content, deadline).await?;
                    Ok(Reply::Int(1))
                }
                _ => Ok(Reply::Int(0)),
            }
        }
        "ttl" | "pttl" => {
            let [key] = rest else { return Err(arity(name)) };
            let set = read(state, key, deadline).await?;
            let now = state.engine.now_ms();
            Ok(Reply::Int(
                match newest_live(set.as_ref(), now).map(|s| s.content.expires_at()) {
                    None => -2,
                    Some(None) => -1,
                    Some(Some(at)) => {
                        let ms = at.saturating_sub(now);
                        // Rounded as Redis rounds TTL.
                        (if name == "ttl" { (ms + 500) / 1000 } else { ms }) as i64
                    }
                },
            ))
        }
        "shoal.get" => {
            let [key] = rest else { return Err(arity(name)) };
            let set = read(state, key, deadline).await?;
            let now = state.engine.now_ms();
            let context = set.as_ref().map_or_else(String::new, |s| {
                state.seal.seal(keys::DEFAULT_BUCKET, key, &s.context())
            });
            let values = set
                .iter()
                .flat_map(|s| s.values())
                .filter(|s| s.is_live(now))
                .filter_map(|s| s.value().map(|v| Reply::Bulk(v.to_vec())))
                .collect();
            Ok(Reply::Array(vec![
                Reply::text(context),
                Reply::Array(values),
            ]))
        }
        "shoal.put" => {
            let [key, context, value] = rest else {
                return Err(arity(name));
            };
            let context = state
                .seal
                .open(keys::DEFAULT_BUCKET, key, Some(context.as_slice()))?;
            let content = Content::value(value.clone(), DEFAULT_CONTENT_TYPE);
            let set = write(state, key, Base::Context(context), content, deadline).await?;
            Ok(Reply::text(state.seal.seal(
                keys::DEFAULT_BUCKET,
                key,
                &set.context(),
            )))
        }
        _ => Err(err(format!(
            "unknown command '{}', with args beginning with: {}",
            name,
            rest.iter()
                .take(3)
                .map(|a| format!("'{}' ", String::from_utf8_lossy(a)))
                .collect::<String>()
        ))),
    }
}

fn too_many_keys() -> Refusal {
    err(format!("at most {MAX_KEYS} keys per command"))
}

/// `SET key value [EX s | PX ms | EXAT t | PXAT t]`.
async fn set(state: &AppState, rest: &[Vec<u8>], deadline: Instant) -> Result<Reply, Refusal> {
    let [key, value, options @ ..] = rest else {
        return Err(arity("set"));
    };
    let now = state.engine.now_ms();
    let mut expires_at = None;
    let mut i = 0;
    while i < options.len() {
        let option = upper(&options[i]);
        match option.as_str() {
            "EX" | "PX" | "EXAT" | "PXAT" if expires_at.is_none() && i + 1 < options.len() => {
                let n = integer(&options[i + 1])?;
                if n <= 0 {
                    return Err(err("invalid expire time in 'set' command"));
                }
                let n = n as u64;
                let at = match option.as_str() {
                    "EX" if n <= MAX_TTL_S => now + n * 1000,
                    "PX" if n <= MAX_TTL_S * 1000 => now + n,
                    "EXAT" if n <= u64::MAX / 1000 => n * 1000,
                    "PXAT" => n,
                    _ => return Err(err("invalid expire time in 'set' command")),
                };
                expires_at = Some(at);
                i += 2;
            }
            "NX" | "XX" | "GET" | "KEEPTTL" => {
                return Err(err(format!(
                    "SET {option} is not supported: it needs a compare-and-set, which a \
                     Dynamo-style store cannot give"
                )))
            }
            _ => return Err(syntax()),
        }
    }
    let content = match expires_at {
        None => Content::value(value.clone(), DEFAULT_CONTENT_TYPE),
        Some(at) => Content::expiring(value.clone(), DEFAULT_CONTENT_TYPE, at),
    };
    write(state, key, Base::Supersede, content, deadline).await?;
    Ok(Reply::Simple("OK"))
}

/// `EXPIRE key seconds [NX | XX | GT | LT]` (and `PEXPIRE` in ms): writes
/// the newest value again with the new expiry; 0 when the key is absent or
/// the condition does not hold.
async fn expire(
    state: &AppState,
    name: &str,
    rest: &[Vec<u8>],
    deadline: Instant,
) -> Result<Reply, Refusal> {
    let (key, amount, condition) = match rest {
        [key, amount] => (key, amount, None),
        [key, amount, condition] => (key, amount, Some(upper(condition))),
        _ => return Err(arity(name)),
    };
    let amount = integer(amount)?;
    let ms = if name == "expire" {
        amount.checked_mul(1000).ok_or_else(not_integer)?
    } else {
        amount
    };
    if ms > (MAX_TTL_S * 1000) as i64 {
        return Err(err(format!("invalid expire time in '{name}' command")));
    }
    let set = read(state, key, deadline).await?;
    let now = state.engine.now_ms();
    let Some(current) = newest_live(set.as_ref(), now) else {
        return Ok(Reply::Int(0));
    };
    let old = current.content.expires_at();
    let new = now.saturating_add_signed(ms);
    let holds = match condition.as_deref() {
        None => true,
        Some("NX") => old.is_none(),
        Some("XX") => old.is_some(),
        // No expiry counts as infinite, as in Redis.
        Some("GT") => old.is_some_and(|o| new > o),
        Some("LT") => old.is_none_or(|o| new < o),
        Some(_) => {
            return Err(err(format!(
                "Unsupported option {}",
                condition.unwrap_or_default()
            )))
        }
    };
    if !holds {
        return Ok(Reply::Int(0));
    }
    let content = if ms <= 0 {
        Content::Tombstone
    } else {
        Content::expiring(
            current.value().unwrap_or_default().to_vec(),
            current.content_type().unwrap_or(DEFAULT_CONTENT_TYPE),
            new,
        )
    };
    write(state, key, Base::Supersede, content, deadline).await?;
    Ok(Reply::Int(1))
}

/// What a write supersedes.
enum Base {
    /// Every version its coordinator holds (Redis's writes).
    Supersede,
    /// What a context covers (`SHOAL.PUT`).
    Context(Context),
}

fn checked_key(state: &AppState, key: &[u8]) -> Result<(), Refusal> {
    if key.is_empty() {
        return Err(err("empty keys are not supported"));
    }
    if key.len() > state.limits.max_key_bytes {
        return Err(ApiError::KeyTooLong {
            len: key.len(),
            max: state.limits.max_key_bytes,
        }
        .into());
    }
    Ok(())
}

async fn write(
    state: &AppState,
    key: &[u8],
    base: Base,
    content: Content,
    deadline: Instant,
) -> Result<SiblingSet, Refusal> {
    checked_key(state, key)?;
    if let Content::Value { bytes, .. } = &content {
        if bytes.len() > state.limits.max_value_bytes {
            return Err(ApiError::ValueTooLarge {
                max: state.limits.max_value_bytes,
            }
            .into());
        }
    }
    let (context, supersede) = match base {
        Base::Supersede => (Context::empty(), true),
        Base::Context(context) => (context, false),
    };
    Ok(state
        .engine
        .write(
            keys::wire(keys::DEFAULT_BUCKET, key),
            context,
            supersede,
            content,
            state.replication.w,
            deadline,
        )
        .await?)
}

async fn read(
    state: &AppState,
    key: &[u8],
    deadline: Instant,
) -> Result<Option<SiblingSet>, Refusal> {
    checked_key(state, key)?;
    let reconciled = state
        .engine
        .read(
            keys::wire(keys::DEFAULT_BUCKET, key),
            state.replication.r,
            deadline,
        )
        .await?;
    Ok(reconciled.merged)
}

async fn read_many(
    state: &AppState,
    keys: &[Vec<u8>],
    deadline: Instant,
) -> Result<Vec<Option<SiblingSet>>, Refusal> {
    if keys.len() > MAX_KEYS {
        return Err(too_many_keys());
    }
    join_all(keys.iter().map(|k| read(state, k, deadline)))
        .await
        .into_iter()
        .collect()
}

/// The version a Redis reader sees: the newest, if it is a live value.
fn newest_live(set: Option<&SiblingSet>, now: u64) -> Option<&Sibling> {
    set?.newest().filter(|s| s.is_live(now))
}
