//! The connection commands (`AUTH`, `HELLO`, `CLIENT`, `COMMAND`, `CONFIG
//! GET`, `INFO`), kept apart from the key commands: they touch only the
//! session and what Redis clients expect to hear at connect time, never the
//! cluster, so their compatibility details do not crowd the data paths.

use axum::http::HeaderValue;

use super::{arity, err, integer, syntax, upper, Refusal, Session};
use crate::auth::Need;
use crate::http::AppState;
use crate::resp::frame::Reply;

/// `CONFIG GET name...`: the two settings `redis-benchmark` reads at start,
/// as they describe Shoal (no snapshots; every write goes to a commit log,
/// as with Redis's append-only file); nothing for any other name.
pub(super) fn config_get(names: &[Vec<u8>]) -> Reply {
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
pub(super) fn auth(
    state: &AppState,
    session: &mut Session,
    rest: &[Vec<u8>],
) -> Result<Reply, Refusal> {
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
pub(super) fn hello(
    state: &AppState,
    session: &mut Session,
    rest: &[Vec<u8>],
) -> Result<Reply, Refusal> {
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

pub(super) fn client(session: &mut Session, rest: &[Vec<u8>]) -> Result<Reply, Refusal> {
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

pub(super) fn command(rest: &[Vec<u8>]) -> Result<Reply, Refusal> {
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

pub(super) fn info(state: &AppState, session: &Session) -> Reply {
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
