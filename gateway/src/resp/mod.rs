//! The Redis protocol on the gateway (`gateway.resp_listen`): RESP2, and
//! RESP3 after `HELLO 3`, on the bucket `default`, so that `redis-cli`,
//! `redis-benchmark` and Redis client libraries work against Shoal.
//!
//! A connection reads what the client sent, runs every whole command in it
//! one after the other (pipelining: answers in order, and a `SET` then `GET`
//! of one key in one pipeline sees the `SET`), and writes the answers
//! together. The bounds are the HTTP listener's: `http.max_connections`
//! connections (one more is told `-ERR max number of clients reached`), one
//! admission slot of `http.max_concurrent_requests` per command, commands
//! of bounded size that must arrive whole within the request timeout, and
//! idle connections closed after `gateway.resp_idle_timeout_ms`. Tokens are
//! the HTTP tokens, proved with `AUTH`; TLS is `gateway.tls`, as on HTTP.

pub mod command;
pub mod frame;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use shoal_node::env::{BoxConn, Listener};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::http::AppState;
use command::Session;
use frame::{Limits, Reply};

/// Answers are written once this many bytes are waiting, even mid-pipeline,
/// so a long pipeline does not hold all its answers in memory.
const FLUSH_AT: usize = 64 << 10;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 16 << 10;

/// Bounds of the RESP listener.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Connections served at once (`http.max_connections`).
    pub max_connections: usize,
    /// A connection with no command in progress is closed after this.
    pub idle_timeout: Duration,
}

/// The frame limits for a gateway's value and key limits: room for `MSET`
/// of [`command::MAX_KEYS`] pairs, and one value a little over the limit so
/// that it is refused with a clear error rather than as a protocol error.
pub fn frame_limits(state: &AppState) -> Limits {
    let value = state.limits.max_value_bytes;
    let key = state.limits.max_key_bytes;
    Limits {
        max_args: 1 + 2 * command::MAX_KEYS,
        max_bulk: value.max(key).saturating_add(1),
        max_command: value.saturating_mul(2).saturating_add(1 << 20),
    }
}

/// Serves RESP on `listener` until `shutdown`; then stops accepting, lets
/// each connection finish the command it is on, and returns once all have
/// closed.
pub async fn serve(
    mut listener: Box<dyn Listener>,
    state: AppState,
    bounds: Bounds,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(bounds.max_connections));
    let ids = Arc::new(AtomicU64::new(1));
    let mut connections = JoinSet::new();
    let mut accepter = crate::listener::Accepter::new("RESP");
    loop {
        let Some((conn, peer)) = accepter
            .next(&mut listener, &mut shutdown, &mut connections)
            .await
        else {
            break;
        };
        let state = state.clone();
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            state.engine.counters().connection_refused();
            tracing::debug!(%peer, "RESP connection refused: http.max_connections reached");
            // Told why without TLS only: a handshake per refusal is what a
            // flood would want us to spend.
            if tls.is_none() {
                let mut conn = conn;
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(
                        Duration::from_millis(500),
                        conn.write_all(b"-ERR max number of clients reached\r\n"),
                    )
                    .await;
                });
            }
            continue;
        };
        let tls = tls.clone();
        let stop = shutdown.clone();
        let id = ids.fetch_add(1, Ordering::Relaxed);
        connections.spawn(async move {
            let _slot = slot;
            let timeout = command::command_timeout(&state);
            let conn: BoxConn = match tls {
                None => conn,
                Some(acceptor) => {
                    match tokio::time::timeout(timeout, acceptor.accept(conn)).await {
                        Ok(Ok(stream)) => Box::new(stream),
                        _ => {
                            tracing::debug!(%peer, "RESP TLS handshake failed or timed out");
                            return;
                        }
                    }
                }
            };
            if let Err(why) = serve_connection(conn, &state, bounds, id, stop).await {
                tracing::debug!(%peer, reason = %why, "RESP connection closed");
            }
        });
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

/// Why a connection ended other than by the client closing it.
#[derive(Debug, thiserror::Error)]
enum Closed {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("idle for longer than gateway.resp_idle_timeout_ms")]
    Idle,
    #[error("a command did not arrive whole in time")]
    Slow,
    #[error("the client does not read its answers")]
    NotReading,
    #[error("{0}")]
    Protocol(frame::ProtocolError),
}

async fn serve_connection(
    mut conn: BoxConn,
    state: &AppState,
    bounds: Bounds,
    id: u64,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Closed> {
    let limits = frame_limits(state);
    let timeout = command::command_timeout(state);
    let mut session = Session::new(id);
    let mut input: Vec<u8> = Vec::with_capacity(READ_CHUNK);
    let mut output: Vec<u8> = Vec::new();
    // When the command now partly in `input` began to arrive.
    let mut partial_since: Option<Instant> = None;
    loop {
        let mut start = 0;
        let mut close = false;
        while !close {
            match frame::parse(&input[start..], &limits) {
                Ok(Some((args, used))) => {
                    start += used;
                    partial_since = None;
                    if args.is_empty() {
                        continue;
                    }
                    let step = command::run(state, &mut session, args).await;
                    step.reply.write(&mut output, session.resp3);
                    close = step.close;
                    if output.len() >= FLUSH_AT {
                        flush(&mut conn, &mut output, timeout).await?;
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    Reply::error("ERR", &e).write(&mut output, session.resp3);
                    flush(&mut conn, &mut output, timeout).await?;
                    return Err(Closed::Protocol(e));
                }
            }
        }
        input.drain(..start);
        flush(&mut conn, &mut output, timeout).await?;
        let stopping = *shutdown.borrow();
        if close || stopping {
            let _ = conn.shutdown().await;
            return Ok(());
        }
        let wait = if input.is_empty() {
            bounds.idle_timeout
        } else {
            let since = *partial_since.get_or_insert_with(Instant::now);
            timeout.saturating_sub(since.elapsed())
        };
        input.reserve(READ_CHUNK);
        let read = tokio::select! {
            read = tokio::time::timeout(wait, conn.read_buf(&mut input)) => Some(read),
            _ = shutdown.wait_for(|s| *s) => None,
        };
        let Some(read) = read else {
            let _ = conn.shutdown().await;
            return Ok(());
        };
        match read {
            Err(_) if input.is_empty() => return Err(Closed::Idle),
            Err(_) => return Err(Closed::Slow),
            Ok(Ok(0)) => return Ok(()),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

async fn flush(conn: &mut BoxConn, output: &mut Vec<u8>, timeout: Duration) -> Result<(), Closed> {
    if output.is_empty() {
        return Ok(());
    }
    match tokio::time::timeout(timeout, conn.write_all(output)).await {
        Ok(result) => result?,
        Err(_) => return Err(Closed::NotReading),
    }
    output.clear();
    // A pipeline's answers can be large; do not keep their buffer for an
    // idle connection.
    if output.capacity() > FLUSH_AT * 2 {
        output.shrink_to(FLUSH_AT);
    }
    Ok(())
}
