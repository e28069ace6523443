//! What each Redis command does on Shoal: the key commands become quorum
//! reads and writes of the bucket `default`; the connection commands answer
//! what Redis clients expect to hear at connect time.
//!
//! Redis has one value per key and no contexts, so its writes (`SET`,
//! `DEL`, `MSET`, `EXPIRE`) supersede every version their coordinator
//! holds (a last-writer-wins write), and its reads answer the newest
//! version: a tombstone or an expired value there reads as nil. `SHOAL.GET`
//! and `SHOAL.PUT` give the causal view (every sibling, the context) to
//! clients that want it.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode};
use futures::future::join_all;
use shoal_node::keys;
use shoal_vclock::{Content, Context, Sibling, SiblingSet};
use tokio::time::Instant;

use super::frame::Reply;
use crate::auth::{Need, Permission};
use crate::error::ApiError;
use crate::http::{AppState, DEFAULT_CONTENT_TYPE, RETRY_AFTER_SECS};
use crate::kv::MAX_TTL_S;

/// Keys one multi-key command (`MGET`, `MSET`, `DEL`, `EXISTS`) may name.
pub const MAX_KEYS: usize = 1000;

/// One connection's state.
#[derive(Debug)]
pub struct Session {
    /// `HELLO 3` was sent.
    pub resp3: bool,
    /// The token `AUTH` (or `HELLO ... AUTH`) proved.
    token: Option<HeaderValue>,
    /// `CLIENT SETNAME`.
    name: Option<Vec<u8>>,
    /// `CLIENT ID`.
    id: u64,
}

impl Session {
    /// A new connection, numbered `id`.
    pub fn new(id: u64) -> Self {
        Session {
            resp3: false,
            token: None,
            name: None,
            id,
        }
    }
}

/// The answer to one command, and whether the connection ends after it.
#[derive(Debug)]
pub struct Step {
    /// The reply.
    pub reply: Reply,
    /// `QUIT`.
    pub close: bool,
}

impl From<Reply> for Step {
    fn from(reply: Reply) -> Self {
        Step {
            reply,
            close: false,
        }
    }
}

/// What a command is counted as in `shoal_gateway_requests_total`.
fn op_of(name: &str) -> &'static str {
    match name {
        "get" | "mget" | "exists" | "ttl" | "pttl" | "shoal.get" => "get",
        "set" | "mset" | "expire" | "pexpire" | "persist" | "shoal.put" => "put",
        "del" | "unlink" => "delete",
        _ => "other",
    }
}

/// What a command needs of the caller's token.
fn need_of(op: &str) -> Need {
    match op {
        "get" => Need::Permission(Permission::Read),
        "put" | "delete" => Need::Permission(Permission::Write),
        _ => Need::Nothing,
    }
}

/// Runs one command (`args[0]` is its name).
pub async fn run(state: &AppState, session: &mut Session, args: Vec<Vec<u8>>) -> Step {
    let name = String::from_utf8_lossy(&args[0]).to_ascii_lowercase();
    let op = op_of(&name);
    let started = Instant::now();
    let result = dispatch(state, session, &name, op, &args).await;
    let (status, code) = match &result {
        Ok(step) => (
            match (&step.reply, op) {
                (Reply::Nil, _) => StatusCode::NOT_FOUND,
                (_, "put" | "delete") => StatusCode::NO_CONTENT,
                _ => StatusCode::OK,
            },
            None,
        ),
        Err(Refusal::Api(e)) => (e.status(), Some(e.code())),
        Err(Refusal::Redis(_)) => (StatusCode::BAD_REQUEST, None),
    };
    state
        .engine
        .counters()
        .request(op, status, code, started.elapsed());
    match result {
        Ok(step) => step,
        Err(refusal) => refusal.reply(&name).into(),
    }
}

/// Why a command was not done.
#[derive(Debug)]
enum Refusal {
    /// The same refusal HTTP would give.
    Api(ApiError),
    /// A Redis-style error reply, whole.
    Redis(Reply),
}

impl From<ApiError> for Refusal {
    fn from(e: ApiError) -> Self {
        Refusal::Api(e)
    }
}

impl Refusal {
    fn reply(self, name: &str) -> Reply {
        let e = match self {
            Refusal::Redis(reply) => return reply,
            Refusal::Api(e) => e,
        };
        match e {
            ApiError::Unauthorized { .. } => Reply::error("NOAUTH", "Authentication required."),
            ApiError::Forbidden { token, needed } => Reply::error(
                "NOPERM",
                format!("token {token:?} lacks the {needed:?} permission needed by '{name}'"),
            ),
            // Both pass if tried again later; Redis Cluster clients retry
            // TRYAGAIN.
            ApiError::Overloaded { .. } | ApiError::QuorumFailed { .. } => {
                Reply::error("TRYAGAIN", e)
            }
            other => Reply::error("ERR", other),
        }
    }
}

fn err(message: impl std::fmt::Display) -> Refusal {
    Refusal::Redis(Reply::error("ERR", message))
}

fn arity(name: &str) -> Refusal {
    err(format!("wrong number of arguments for '{name}' command"))
}

fn syntax() -> Refusal {
    err("syntax error")
}

fn not_integer() -> Refusal {
    err("value is not an integer or out of range")
}

fn integer(arg: &[u8]) -> Result<i64, Refusal> {
    std::str::from_utf8(arg)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(not_integer)
}

fn upper(arg: &[u8]) -> String {
    String::from_utf8_lossy(arg).to_ascii_uppercase()
}

async fn dispatch(
    state: &AppState,
    session: &mut Session,
    name: &str,
    op: &str,
    args: &[Vec<u8>],
) -> Result<Step, Refusal> {
    let rest = &args[1..];
    // Connection commands that work before authentication, as in Redis.
    match name {
        "auth" => return auth(state, session, rest).map(Step::from),
        "hello" => return hello(state, session, rest).map(Step::from),
        "quit" => {
            return Ok(Step {
                reply: Reply::Simple("OK"),
                close: true,
            })
        }
        _ => {}
    }
    // Every other command needs a token once the gateway has any: Redis
    // answers NOAUTH even to PING.
    let need = match need_of(op) {
        Need::Nothing => Need::AnyToken,
        need => need,
    };
    state.auth.check(session.token.as_ref(), need)?;
    let reply = match name {
        "ping" => match rest {
            [] => Reply::Simple("PONG"),
            [message] => Reply::Bulk(message.clone()),
            _ => return Err(arity(name)),
        },
        "echo" => match rest {
            [message] => Reply::Bulk(message.clone()),
            _ => return Err(arity(name)),
        },
        "select" => match rest {
            [db] if integer(db)? == 0 => Reply::Simple("OK"),
            [_] => return Err(err("DB index is out of range")),
            _ => return Err(arity(name)),
        },
        "client" => client(session, rest)?,
        "command" => command(rest)?,
        "config" => match rest.first().map(|a| upper(a)).as_deref() {
            Some("GET") if rest.len() >= 2 => config_get(&rest[1..]),
            Some("GET") => return Err(arity("config|get")),
            _ => return Err(err("only CONFIG GET is served (and answers nothing)")),
        },
        "info" => info(state, session),
        "multi" | "exec" | "watch" | "discard" => {
            return Err(err(format!(
                "{} is not supported: Shoal has no transactions; pipeline without MULTI \
                 (redis-py: pipeline(transaction=False))",
                name.to_ascii_uppercase()
            )))
        }
        _ => data(state, session, name, rest).await?,
    };
    Ok(reply.into())
}

/// `CONFIG GET name...`: the two settings `redis-benchmark` reads at start,
/// as they describe Shoal (no snapshots; every write goes to a commit log,
/// as with Redis's append-only file); nothing for any other name.
fn config_get(names: &[Vec<u8>]) -> Reply {
    let mut pairs = Vec::new();
    for name in names {
        let value = match String::from_utf8_lossy(name).to_ascii_lowercase().as_str() {
            "save" => "",
            "appendonly" => "yes",
            _ => continue,
        };
        pairs.push((Reply::Bulk(name.clone()), Reply::text(value)));
    }
    Reply::Map(pairs)
}

/// `AUTH [user] token`: the user name is not looked at (tokens are named in
/// the tokens file, not by the client).
fn auth(state: &AppState, session: &mut Session, rest: &[Vec<u8>]) -> Result<Reply, Refusal> {
    let token = match rest {
        [token] | [_, token] => token,
        _ => return Err(arity("auth")),
    };
    prove(state, session, token)?;
    Ok(Reply::Simple("OK"))
}

fn prove(state: &AppState, session: &mut Session, token: &[u8]) -> Result<(), Refusal> {
    let wrong = || {
        Refusal::Redis(Reply::error(
            "WRONGPASS",
            "invalid username-password pair or user is disabled.",
        ))
    };
    if state.auth.token_count() == 0 {
        return Err(err(
            "AUTH <password> called without any password configured for the default user. \
             Are you sure your configuration is correct?",
        ));
    }
    let mut header = b"Bearer ".to_vec();
    header.extend_from_slice(token);
    let header = HeaderValue::from_bytes(&header).map_err(|_| wrong())?;
    match state.auth.check(Some(&header), Need::AnyToken) {
        Ok(()) => {
            session.token = Some(header);
            Ok(())
        }
        Err(_) => Err(wrong()),
    }
}

/// `HELLO [protover [AUTH user token] [SETNAME name]]`.
fn hello(state: &AppState, session: &mut Session, rest: &[Vec<u8>]) -> Result<Reply, Refusal> {
    let mut resp3 = session.resp3;
    let mut i = 0;
    if let Some(version) = rest.first() {
        resp3 = match integer(version) {
            Ok(2) => false,
            Ok(3) => true,
            _ => {
                return Err(Refusal::Redis(Reply::error(
                    "NOPROTO",
                    "unsupported protocol version",
                )))
            }
        };
        i = 1;
    }
    let mut name = None;
    while i < rest.len() {
        match upper(&rest[i]).as_str() {
            "AUTH" if i + 2 < rest.len() => {
                prove(state, session, &rest[i + 2])?;
                i += 3;
            }
            "SETNAME" if i + 1 < rest.len() => {
                name = Some(rest[i + 1].clone());
                i += 2;
            }
            _ => return Err(syntax()),
        }
    }
    state.auth.check(session.token.as_ref(), Need::AnyToken)?;
    session.resp3 = resp3;
    if name.is_some() {
        session.name = name;
    }
    Ok(Reply::Map(vec![
        (Reply::text("server"), Reply::text("shoal")),
        (Reply::text("version"), Reply::text(REDIS_VERSION)),
        (Reply::text("proto"), Reply::Int(if resp3 { 3 } else { 2 })),
        (Reply::text("id"), Reply::Int(session.id as i64)),
        (Reply::text("mode"), Reply::text("standalone")),
        (Reply::text("role"), Reply::text("master")),
        (Reply::text("modules"), Reply::Array(Vec::new())),
    ]))
}

/// The Redis version Shoal answers as: clients gate features (RESP3,
/// `CLIENT SETINFO`) on it, and every command served here behaves as in
/// that version.
const REDIS_VERSION: &str = "7.2.0";

fn client(session: &mut Session, rest: &[Vec<u8>]) -> Result<Reply, Refusal> {
    let sub = rest.first().map(|a| upper(a)).unwrap_or_default();
    Ok(match (sub.as_str(), rest.len()) {
        ("SETNAME", 2) => {
            session.name = Some(rest[1].clone());
            Reply::Simple("OK")
        }
        ("SETINFO", 3) => Reply::Simple("OK"),
        ("GETNAME", 1) => session.name.clone().map_or(Reply::Nil, Reply::Bulk),
        ("ID", 1) => Reply::Int(session.id as i64),
        ("SETNAME" | "SETINFO" | "GETNAME" | "ID", _) => return Err(arity("client")),
        _ => {
            return Err(err(format!(
                "unknown subcommand '{}'. Try CLIENT SETNAME, SETINFO, GETNAME or ID.",
                String::from_utf8_lossy(rest.first().map_or(&b""[..], |a| a))
            )))
        }
    })
}

/// `(name, arity, flags)` of every command, as `COMMAND` lists them (arity
/// negative: at least that many arguments, the name included).
const COMMANDS: &[(&str, i64, &[&str])] = &[
    ("auth", -2, &["noscript", "loading", "stale", "fast"]),
    ("client", -2, &["noscript", "loading", "stale"]),
    ("command", -1, &["loading", "stale"]),
    ("config", -2, &["admin", "noscript", "loading", "stale"]),
    ("del", -2, &["write"]),
    ("echo", 2, &["fast"]),
    ("exists", -2, &["readonly", "fast"]),
    ("expire", -3, &["write", "fast"]),
    ("get", 2, &["readonly", "fast"]),
    ("hello", -1, &["noscript", "loading", "stale", "fast"]),
    ("info", -1, &["loading", "stale"]),
    ("mget", -2, &["readonly", "fast"]),
    ("mset", -3, &["write"]),
    ("persist", 2, &["write", "fast"]),
    ("pexpire", -3, &["write", "fast"]),
    ("ping", -1, &["fast"]),
    ("pttl", 2, &["readonly", "fast"]),
    ("quit", -1, &["loading", "stale", "fast"]),
    ("select", 2, &["loading", "stale", "fast"]),
    ("set", -3, &["write"]),
    ("shoal.get", 2, &["readonly"]),
    ("shoal.put", 4, &["write"]),
    ("ttl", 2, &["readonly", "fast"]),
    ("unlink", -2, &["write", "fast"]),
];

fn command_row(name: &str, arity: i64, flags: &[&str]) -> Reply {
    let keyed = !matches!(
        name,
        "auth"
            | "client"
            | "command"
            | "config"
            | "echo"
            | "hello"
            | "info"
            | "ping"
            | "quit"
            | "select"
    );
    let (first, last, step) = match name {
        _ if !keyed => (0, 0, 0),
        "mset" => (1, -1, 2),
        "mget" | "del" | "exists" | "unlink" => (1, -1, 1),
        _ => (1, 1, 1),
    };
    Reply::Array(vec![
        Reply::text(name),
        Reply::Int(arity),
        Reply::Array(flags.iter().map(|f| Reply::text(*f)).collect()),
        Reply::Int(first),
        Reply::Int(last),
        Reply::Int(step),
    ])
}

fn command(rest: &[Vec<u8>]) -> Result<Reply, Refusal> {
    let sub = rest.first().map(|a| upper(a)).unwrap_or_default();
    Ok(match sub.as_str() {
        "" => Reply::Array(
            COMMANDS
                .iter()
                .map(|(n, a, f)| command_row(n, *a, f))
                .collect(),
        ),
        "COUNT" => Reply::Int(COMMANDS.len() as i64),
        "INFO" => Reply::Array(
            rest[1..]
                .iter()
                .map(|n| {
                    let n = String::from_utf8_lossy(n).to_ascii_lowercase();
                    COMMANDS
                        .iter()
                        .find(|(c, _, _)| *c == n)
                        .map_or(Reply::Nil, |(c, a, f)| command_row(c, *a, f))
                })
                .collect(),
        ),
        // redis-cli asks for the docs to show hints; it works without them.
        "DOCS" => Reply::Map(Vec::new()),
        _ => {
            return Err(err(format!(
                "unknown subcommand '{sub}'. Try COMMAND COUNT, DOCS or INFO."
            )))
        }
    })
}

fn info(state: &AppState, session: &Session) -> Reply {
    let text = format!(
        "# Server\r\nredis_version:{REDIS_VERSION}\r\nredis_mode:standalone\r\n\
         shoal_version:{}\r\nshoal_gateway:{}\r\nproto:{}\r\n\r\n\
         # Replication\r\nrole:master\r\nshoal_n:{}\r\nshoal_r:{}\r\nshoal_w:{}\r\n\r\n\
         # Keyspace\r\n",
        env!("CARGO_PKG_VERSION"),
        state.id,
        if session.resp3 { 3 } else { 2 },
        state.replication.n,
        state.replication.r,
        state.replication.w,
    );
    Reply::Text(text)
}

/// The key commands.
async fn data(
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

/// How long a client may take to send the rest of a command it began (as
/// an HTTP body must arrive within the request timeout).
pub fn command_timeout(state: &AppState) -> Duration {
    state.request_timeout.max(Duration::from_secs(1))
}
