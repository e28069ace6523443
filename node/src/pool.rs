//! Pooled tarpc clients, one connection per peer address, reconnected after
//! failures.
//!
//! tarpc multiplexes concurrent calls over one connection, so one client per
//! peer is enough. A call that fails at the transport level drops the pooled
//! client so the next call dials again; dialing has its own timeout, so a
//! partitioned peer costs a bounded wait, never a hang.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;

use crate::env::Net;
use crate::rpc::ReplicaClient;
use crate::secure::Transport;

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Could not connect in time.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The peer.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// The call failed in transit or timed out.
    #[error("call to {addr} failed: {source}")]
    Rpc {
        /// The peer.
        addr: String,
        /// The cause.
        source: tarpc::client::RpcError,
    },
}

impl CallError {
    /// Whether the peer can have acted on the request. Only a failed connect
    /// and a request that never left this process are certain misses; a
    /// timeout or a connection lost mid-call may have been served, and a
    /// caller that retries a non-idempotent request elsewhere must know.
    pub fn may_have_arrived(&self) -> bool {
        !matches!(
            self,
            CallError::Connect { .. }
                | CallError::Rpc {
                    source: tarpc::client::RpcError::Send(_),
                    ..
                }
        )
    }

    /// Whether the peer may never have seen the request (vs. an answered error).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self,
            CallError::Rpc {
                source: tarpc::client::RpcError::DeadlineExceeded,
                ..
            }
        )
    }
}

/// Added to tarpc's real-time deadline so that the call's own tokio timeout
/// (simulated time in a simulation) always decides first.
const DEADLINE_SLACK: Duration = Duration::from_secs(5);

/// Added to the call's own timeout: a caller that bounds the call by the
/// same duration (the gateway's per-request deadline) then always decides
/// first, instead of two equal timers racing.
const TIE_BREAK: Duration = Duration::from_millis(1);

/// A pooled client and whether its connection has ended.
struct Pooled {
    client: ReplicaClient,
    /// Set when the connection's dispatch ends (the peer closed it, or it
    /// broke). Such a client is dialed again before use instead of being
    /// handed out: a call on it would fail after the request was queued,
    /// which the caller could not tell from a call the peer received.
    closed: Arc<AtomicBool>,
}

impl Pooled {
    fn live(&self) -> Option<ReplicaClient> {
        (!self.closed.load(Ordering::Acquire)).then(|| self.client.clone())
    }
}

/// Most addresses whose failing dials are remembered at once.
const MAX_FAILING: usize = 1_024;

/// Dials to one address that have failed since its last successful one:
/// what tells a peer that is down (gossip soon says so) from one that is
/// alive but announces an address nobody can dial (see
/// [`crate::advertise`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DialFailures {
    /// When the first of them failed.
    pub since: tokio::time::Instant,
    /// How many failed.
    pub count: u64,
    /// The last one's error.
    pub last_error: String,
}

/// Clients by peer address.
pub struct Pool {
    net: Arc<dyn Net>,
    transport: Transport,
    connect_timeout: Duration,
    max_frame_bytes: usize,
    clients: Mutex<HashMap<String, Pooled>>,
    /// One dial at a time per address: concurrent first calls to a peer
    /// wait for one connection instead of each dialing and handshaking its
    /// own (and all but one being thrown away).
    dialing: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Addresses whose dials fail, until one succeeds.
    failing: Mutex<HashMap<String, DialFailures>>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("connect_timeout", &self.connect_timeout)
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool dialing through `net`, proving the cluster secret of
    /// `transport` on every new connection.
    pub fn new(
        net: Arc<dyn Net>,
        transport: Transport,
        connect_timeout: Duration,
        max_frame_bytes: usize,
    ) -> Self {
        Self {
            net,
            transport,
            connect_timeout,
            max_frame_bytes,
            clients: Mutex::new(HashMap::new()),
            dialing: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashMap::new()),
        }
    }

    /// The dials to `addr` that failed since the last one that succeeded
    /// (`None`: the last dial succeeded, or none was made).
    pub fn dial_failures(&self, addr: &str) -> Option<DialFailures> {
        self.failing.lock().expect("pool lock").get(addr).cloned()
    }

    fn dialed(&self, addr: &str, outcome: Result<(), &CallError>) {
        let mut failing = self.failing.lock().expect("pool lock");
        match outcome {
            Ok(()) => {
                failing.remove(addr);
            }
            Err(e) => {
                if failing.len() >= MAX_FAILING && !failing.contains_key(addr) {
                    // Addresses of members long gone pile up here otherwise;
                    // forgetting them costs at most a late report.
                    failing.clear();
                }
                let entry = failing
                    .entry(addr.to_string())
                    .or_insert_with(|| DialFailures {
                        since: tokio::time::Instant::now(),
                        count: 0,
                        last_error: String::new(),
                    });
                entry.count += 1;
                entry.last_error = match e {
                    CallError::Connect { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
            }
        }
    }

    /// The client for `addr`, dialing if there is none.
    pub async fn client(&self, addr: &str) -> Result<ReplicaClient, CallError> {
        if let Some(c) = self.live(addr) {
            return Ok(c);
        }
        let dial_lock = self
            .dialing
            .lock()
            .expect("pool lock")
            .entry(addr.to_string())
            .or_default()
            .clone();
        let _dialing = dial_lock.lock().await;
        if let Some(c) = self.live(addr) {
            return Ok(c);
        }
        // One bound for dialing and the handshake together: a peer that
        // accepts but never answers the handshake costs no more than one
        // that never accepts.
        let dial = async {
            let conn = self.net.connect(addr.to_string()).await?;
            self.transport.connect(conn).await
        };
        let conn = tokio::time::timeout(self.connect_timeout, dial)
            .await
            .map_err(|_| CallError::Connect {
                addr: addr.to_string(),
                source: io::Error::new(io::ErrorKind::TimedOut, "connect timed out"),
            })
            .and_then(|dialed| {
                dialed.map_err(|source| CallError::Connect {
                    addr: addr.to_string(),
                    source,
                })
            });
        self.dialed(addr, conn.as_ref().map(|_| ()));
        let conn = conn?;
        let framed = LengthDelimitedCodec::builder()
            .max_frame_length(self.max_frame_bytes)
            .new_framed(Box::new(conn) as crate::env::BoxConn);
        let transport = tarpc::serde_transport::new(framed, Bincode::default());
        let tarpc::client::NewClient { client, dispatch } =
            ReplicaClient::new(tarpc::client::Config::default(), transport);
        let closed = Arc::new(AtomicBool::new(false));
        let on_end = closed.clone();
        let peer = addr.to_string();
        tokio::spawn(async move {
            if let Err(e) = dispatch.await {
                tracing::debug!(%peer, error = %e, "connection broken");
            }
            on_end.store(true, Ordering::Release);
        });
        self.clients.lock().expect("pool lock").insert(
            addr.to_string(),
            Pooled {
                client: client.clone(),
                closed,
            },
        );
        Ok(client)
    }

    /// The pooled client for `addr` if its connection is still open.
    fn live(&self, addr: &str) -> Option<ReplicaClient> {
        let mut clients = self.clients.lock().expect("pool lock");
        match clients.get(addr).map(Pooled::live) {
            Some(Some(c)) => Some(c),
            Some(None) => {
                clients.remove(addr);
                None
            }
            None => None,
        }
    }

    /// Forgets the client for `addr` (after a transport failure).
    pub fn invalidate(&self, addr: &str) {
        self.clients.lock().expect("pool lock").remove(addr);
    }

    /// Runs `f` with the client for `addr` and a context whose deadline is
    /// `timeout` from now; transport failures drop the pooled client.
    pub async fn call<T, F, Fut>(&self, addr: &str, timeout: Duration, f: F) -> Result<T, CallError>
    where
        F: FnOnce(ReplicaClient, tarpc::context::Context) -> Fut,
        Fut: std::future::Future<Output = Result<T, tarpc::client::RpcError>>,
    {
        let client = match self.live(addr) {
            Some(client) => client,
            // Dialing is rare and its future (the handshake's state) is
            // large: inline, it made every call's future 4.8 KiB instead of
            // 1.4, and that future is moved whole into each spawn and each
            // `FuturesUnordered` a request fans out into.
            None => Box::pin(self.client(addr)).await?,
        };
        let mut ctx = tarpc::context::current();
        // tarpc's deadline is a `std::time::Instant` (real time), which a
        // simulation cannot control; the tokio timeout below is what bounds
        // the call, on tokio's (possibly simulated) clock. The slack keeps
        // tarpc's own real-time deadline from firing first.
        ctx.deadline = std::time::Instant::now() + timeout + DEADLINE_SLACK;
        // Boxed for the same reason: tarpc's call future is 4.5 KiB.
        let call = Box::pin(f(client, ctx));
        let outcome = match tokio::time::timeout(timeout + TIE_BREAK, call).await {
            Ok(outcome) => outcome,
            Err(_) => Err(tarpc::client::RpcError::DeadlineExceeded),
        };
        match outcome {
            Ok(v) => Ok(v),
            Err(source) => {
                // A timeout too: a connection whose peer crashed or whose
                // bytes a partition swallowed may never report an error
                // (no RST arrives), and every later call on it would time
                // out as well. Dialing again costs one connect.
                self.invalidate(addr);
                Err(CallError::Rpc {
                    addr: addr.to_string(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_future_stays_small() {
        // Every replica call's future is moved whole into spawned tasks and
        // `FuturesUnordered`s; with tarpc's call (4.5 KiB) and the dial
        // (3.4 KiB) inline it was 4.8 KiB, copied several times per RPC.
        let secret = crate::secure::ClusterSecret::from_bytes(&[7u8; 32]).expect("secret");
        let transport = crate::secure::Transport::new(secret, Duration::from_secs(1));
        let pool = Pool::new(
            crate::env::Env::real().net,
            transport,
            Duration::from_secs(1),
            1 << 20,
        );
        let call = pool.call("127.0.0.1:1", Duration::from_secs(1), |c, ctx| async move {
            c.read(ctx, b"k".to_vec()).await
        });
        let size = std::mem::size_of_val(&call);
        assert!(size <= 512, "a call's future is {size} bytes");
    }
}
