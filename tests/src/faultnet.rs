//! A fault-injecting [`Net`]: real TCP on 127.0.0.1 with partitions, added
//! latency and refused connections per pair of hosts, switched by the test
//! while the cluster runs.
//!
//! Each in-process node and gateway gets its own [`FaultNet`] naming the host
//! it belongs to. `bind` records which host owns each listening address, so
//! `connect` knows both ends of every connection it opens; the connecting
//! side's stream is wrapped, and each read and write looks up the link's
//! current state. Wrapping only the connecting side is enough because every
//! connection between hosts is opened through some host's `FaultNet`.
//!
//! - **Blackhole** (partition): reads and writes stall, new connects hang.
//!   That is what a cut cable looks like to TCP: callers see timeouts, not
//!   errors, and bytes already queued flow again after healing.
//! - **Reject**: connects are refused and open connections reset at their
//!   next read or write (a process that is gone, a firewall answering RST).
//! - **Delay**: bytes the connecting side reads (the peer's answers) are held
//!   back for the delay in a delay line, so every round trip over the link
//!   gets slower while throughput does not collapse.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use shoal_node::env::{BoxConn, BoxFuture, Env, Listener, Net, TcpNet};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// How often a stalled connection looks at its link again.
const RECHECK: Duration = Duration::from_millis(20);

/// Longest a connect waits on a blackholed link before failing; the
/// caller's own connect timeout is usually shorter.
const CONNECT_STALL: Duration = Duration::from_secs(5);

/// What the test has set up between two hosts right now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Link {
    /// Bytes do not move.
    pub blackhole: bool,
    /// Connections are refused or reset.
    pub reject: bool,
    /// Added to every answer read over the link.
    pub delay: Duration,
}

#[derive(Debug, Default)]
struct State {
    hosts: HashMap<SocketAddr, String>,
    isolated: HashSet<String>,
    rejected: HashSet<String>,
    cut: HashSet<(String, String)>,
    delay: HashMap<String, Duration>,
}

/// The switchboard shared by every [`FaultNet`] of one test cluster.
#[derive(Debug, Default)]
pub struct Faults {
    state: Mutex<State>,
}

impl Faults {
    /// A switchboard with every link open.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The environment for `host`: real clock, sockets through this
    /// switchboard. Built from [`Env::real`] so fields the node crate adds to
    /// `Env` keep their real defaults.
    pub fn env(self: &Arc<Self>, host: &str) -> Env {
        let mut env = Env::real();
        env.net = Arc::new(FaultNet {
            host: host.to_string(),
            faults: self.clone(),
        });
        env
    }

    /// Cuts `host` off from every other host (both directions), until
    /// [`Faults::heal`].
    pub fn isolate(&self, host: &str) {
        self.lock().isolated.insert(host.to_string());
    }

    /// Cuts the link between `a` and `b` only.
    pub fn cut(&self, a: &str, b: &str) {
        self.lock().cut.insert(pair(a, b));
    }

    /// Refuses and resets every connection to or from `host`.
    pub fn reject(&self, host: &str) {
        self.lock().rejected.insert(host.to_string());
    }

    /// Adds `delay` to every round trip with `host` (zero removes it).
    pub fn set_delay(&self, host: &str, delay: Duration) {
        let mut s = self.lock();
        if delay.is_zero() {
            s.delay.remove(host);
        } else {
            s.delay.insert(host.to_string(), delay);
        }
    }

    /// Removes every partition and rejection (delays stay).
    pub fn heal(&self) {
        let mut s = self.lock();
        s.isolated.clear();
        s.cut.clear();
        s.rejected.clear();
    }

    /// The host that bound `addr`, if any did through this switchboard.
    pub fn host_of(&self, addr: &SocketAddr) -> Option<String> {
        self.lock().hosts.get(addr).cloned()
    }

    /// The current state of the link between hosts `a` and `b`.
    pub fn link(&self, a: &str, b: &str) -> Link {
        let s = self.lock();
        if a == b {
            return Link::default();
        }
        let delay = [a, b]
            .iter()
            .filter_map(|h| s.delay.get(*h).copied())
            .max()
            .unwrap_or_default();
        Link {
            blackhole: s.isolated.contains(a)
                || s.isolated.contains(b)
                || s.cut.contains(&pair(a, b)),
            reject: s.rejected.contains(a) || s.rejected.contains(b),
            delay,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock already failed; the
        // state itself is always consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn pair(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// One host's sockets, through the shared [`Faults`].
#[derive(Debug, Clone)]
pub struct FaultNet {
    host: String,
    faults: Arc<Faults>,
}

impl FaultNet {
    /// The host these sockets belong to.
    pub fn host(&self) -> &str {
        &self.host
    }
}

impl Net for FaultNet {
    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        let (host, faults) = (self.host.clone(), self.faults.clone());
        Box::pin(async move {
            let listener = TcpNet.bind(addr).await?;
            let local = listener.local_addr()?;
            faults.lock().hosts.insert(local, host);
            Ok(listener)
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<BoxConn>> {
        let (host, faults) = (self.host.clone(), self.faults.clone());
        Box::pin(async move {
            let peer = addr
                .parse::<SocketAddr>()
                .ok()
                .and_then(|a| faults.host_of(&a))
                .unwrap_or_else(|| format!("unregistered {addr}"));
            let give_up = Instant::now() + CONNECT_STALL;
            loop {
                let link = faults.link(&host, &peer);
                if link.reject {
                    return Err(io::Error::new(
                        io::ErrorKind::ConnectionRefused,
                        format!("fault injection: {host} -> {peer} refused"),
                    ));
                }
                if !link.blackhole {
                    break;
                }
                if Instant::now() >= give_up {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("fault injection: {host} -> {peer} partitioned"),
                    ));
                }
                tokio::time::sleep(RECHECK).await;
            }
            let inner = TcpNet.connect(addr).await?;
            Ok(Box::new(FaultConn {
                inner,
                faults,
                local: host,
                peer,
                pending: VecDeque::new(),
                eof: false,
                timer: None,
            }) as BoxConn)
        })
    }
}

/// The connecting side of a connection between two hosts.
struct FaultConn {
    inner: BoxConn,
    faults: Arc<Faults>,
    local: String,
    peer: String,
    /// Bytes read from the socket, each with the instant it may be handed on.
    pending: VecDeque<(Instant, Vec<u8>)>,
    eof: bool,
    timer: Option<Pin<Box<Sleep>>>,
}

impl FaultConn {
    /// Arms the timer for `at` and polls it, so the task wakes then.
    fn wait_until(&mut self, cx: &mut Context<'_>, at: Instant) -> Poll<()> {
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if timer.deadline() != at {
            timer.as_mut().reset(at);
        }
        timer.as_mut().poll(cx)
    }

    fn reset_error(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::ConnectionReset,
            format!("fault injection: {} <-> {} reset", self.local, self.peer),
        )
    }
}

impl AsyncRead for FaultConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let link = this.faults.link(&this.local, &this.peer);
            if link.reject {
                return Poll::Ready(Err(this.reset_error()));
            }
            if link.blackhole {
                let at = Instant::now() + RECHECK;
                if this.wait_until(cx, at).is_ready() {
                    continue;
                }
                return Poll::Pending;
            }
            if link.delay.is_zero() && this.pending.is_empty() {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            // Drain the socket into the delay line, stamping each chunk.
            while !this.eof {
                let mut chunk = vec![0u8; 16 * 1024];
                let mut rb = ReadBuf::new(&mut chunk);
                match Pin::new(&mut this.inner).poll_read(cx, &mut rb) {
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            this.eof = true;
                        } else {
                            chunk.truncate(n);
                            this.pending.push_back((Instant::now() + link.delay, chunk));
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        if this.pending.is_empty() {
                            return Poll::Ready(Err(e));
                        }
                        this.eof = true;
                    }
                    Poll::Pending => break,
                }
            }
            let Some((release, _)) = this.pending.front() else {
                // Nothing buffered: end of stream, or the socket registered
                // the waker above.
                return if this.eof {
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                };
            };
            let release = *release;
            if release <= Instant::now() {
                let (_, chunk) = this.pending.front_mut().expect("front exists");
                let n = chunk.len().min(buf.remaining());
                buf.put_slice(&chunk[..n]);
                chunk.drain(..n);
                if chunk.is_empty() {
                    this.pending.pop_front();
                }
                return Poll::Ready(Ok(()));
            }
            if this.wait_until(cx, release).is_ready() {
                continue;
            }
            return Poll::Pending;
        }
    }
}

impl AsyncWrite for FaultConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        loop {
            let link = this.faults.link(&this.local, &this.peer);
            if link.reject {
                return Poll::Ready(Err(this.reset_error()));
            }
            if !link.blackhole {
                return Pin::new(&mut this.inner).poll_write(cx, buf);
            }
            let at = Instant::now() + RECHECK;
            if this.wait_until(cx, at).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            let link = this.faults.link(&this.local, &this.peer);
            if link.reject {
                return Poll::Ready(Err(this.reset_error()));
            }
            if !link.blackhole {
                return Pin::new(&mut this.inner).poll_flush(cx);
            }
            let at = Instant::now() + RECHECK;
            if this.wait_until(cx, at).is_pending() {
                return Poll::Pending;
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An echo server bound through `faults` as host `b`; returns its address.
    async fn echo(faults: &Arc<Faults>) -> String {
        let mut listener = faults
            .env("b")
            .net
            .bind("127.0.0.1:0".into())
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    while let Ok(n) = conn.read(&mut buf).await {
                        if n == 0 || conn.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    async fn round_trip(conn: &mut BoxConn) -> io::Result<Duration> {
        let start = Instant::now();
        conn.write_all(b"ping").await?;
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await?;
        assert_eq!(&buf, b"ping");
        Ok(start.elapsed())
    }

    #[tokio::test]
    async fn partition_stalls_and_heal_resumes() {
        let faults = Faults::new();
        let addr = echo(&faults).await;
        let net = faults.env("a").net;
        let mut conn = net.connect(addr.clone()).await.unwrap();
        round_trip(&mut conn).await.unwrap();
        faults.isolate("b");
        let stalled = tokio::time::timeout(Duration::from_millis(300), round_trip(&mut conn)).await;
        assert!(stalled.is_err(), "a partitioned link must stall");
        let refused =
            tokio::time::timeout(Duration::from_millis(300), net.connect(addr.clone())).await;
        assert!(refused.is_err(), "connects across a partition hang");
        faults.heal();
        // The stalled ping is still queued; the echo of both arrives.
        let mut conn = net.connect(addr).await.unwrap();
        round_trip(&mut conn).await.unwrap();
    }

    #[tokio::test]
    async fn delay_slows_round_trips_and_reject_resets() {
        let faults = Faults::new();
        let addr = echo(&faults).await;
        let net = faults.env("a").net;
        let mut conn = net.connect(addr.clone()).await.unwrap();
        faults.set_delay("b", Duration::from_millis(150));
        let rtt = round_trip(&mut conn).await.unwrap();
        assert!(rtt >= Duration::from_millis(150), "{rtt:?}");
        faults.set_delay("b", Duration::ZERO);
        let rtt = round_trip(&mut conn).await.unwrap();
        assert!(rtt < Duration::from_millis(150), "{rtt:?}");
        faults.reject("b");
        assert!(round_trip(&mut conn).await.is_err());
        assert!(net.connect(addr).await.is_err());
    }
}
