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
use tokio::time::Instant;

use super::frame::Reply;
use crate::auth::{Need, Permission};
use crate::error::ApiError;
use crate::http::AppState;

mod connection;
mod keyspace;

use connection::{auth, client, command, config_get, hello, info};
use keyspace::data;

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

/// How long a client may take to send the rest of a command it began (as
/// an HTTP body must arrive within the request timeout).
pub fn command_timeout(state: &AppState) -> Duration {
    state.request_timeout.max(Duration::from_secs(1))
}
