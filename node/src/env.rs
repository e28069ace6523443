//! The seams between Shoal's services and the outside world: sockets, the
//! wall clock, the file system and where blocking work runs.
//!
//! `node` and `gateway` never call `TcpStream::connect` or `SystemTime::now`
//! directly; they receive an [`Env`] at construction. The real one ([`Env::real`])
//! uses tokio's TCP and the system clock; a deterministic simulation passes its
//! own (simulated network, skewed clocks) and runs the very same service code.
//! Timers go through `tokio::time`, which simulators already control.
//! Blocking work (the storage engine) goes through [`Env::spawn_blocking`],
//! which a simulation runs inline: real threads finish in real-time order,
//! and that order would leak into the simulated schedule.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncWrite};

/// A boxed future, so the traits stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A bidirectional byte stream (a TCP connection or a simulated one).
pub trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

/// A boxed connection.
pub type BoxConn = Box<dyn Conn>;

/// A bound listening socket.
pub trait Listener: Send + 'static {
    /// Waits for the next connection and the peer's address.
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxConn, SocketAddr)>>;
    /// The address actually bound (port 0 resolved).
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// How a service opens sockets.
pub trait Net: Send + Sync + 'static {
    /// Binds a listener on `addr` (`ip:port`).
    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Box<dyn Listener>>>;
    /// Opens a connection to `addr` (`ip:port`).
    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<BoxConn>>;
}

/// Wall-clock time, which versions and TTLs are stamped with.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch, as this process believes it.
    fn now_millis(&self) -> u64;
}

/// Everything a service needs from outside, chosen at construction.
#[derive(Clone)]
pub struct Env {
    /// Sockets.
    pub net: Arc<dyn Net>,
    /// The wall clock.
    pub clock: Arc<dyn Clock>,
    /// Where blocking work (file I/O) runs. `Inline` also runs the storage
    /// engine's flushes and compactions on the writing task instead of its
    /// own threads, so that a simulated host owns all of its work.
    pub blocking: Blocking,
    /// The file system the store lives on (a simulation passes one whose
    /// crash drops unsynced writes).
    pub fs: Arc<dyn shoal_storage::Fs>,
}

/// Where [`Env::spawn_blocking`] runs its closure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Blocking {
    /// tokio's blocking thread pool: the runtime keeps serving while a file
    /// operation waits on the disk.
    #[default]
    Pool,
    /// On the calling task, to completion. A deterministic simulation needs
    /// this: pooled threads complete in real-time order, which would change
    /// the order of simulated events from run to run. The simulated host
    /// stalls meanwhile, which costs no simulated time.
    Inline,
}

/// A blocking task that panicked or was cancelled (pool mode only).
#[derive(Debug, thiserror::Error)]
#[error("blocking task failed: {0}")]
pub struct BlockingError(String);

impl Env {
    /// Real TCP, the system clock and the blocking thread pool.
    pub fn real() -> Self {
        Self {
            net: Arc::new(TcpNet),
            clock: Arc::new(SystemClock),
            blocking: Blocking::Pool,
            fs: Arc::new(shoal_storage::StdFs),
        }
    }

    /// How the storage engine runs its background work under this
    /// environment: its own threads, or inline when blocking work is inline.
    pub fn storage_background(&self) -> shoal_storage::Background {
        match self.blocking {
            Blocking::Pool => shoal_storage::Background::Threads,
            Blocking::Inline => shoal_storage::Background::Inline,
        }
    }

    /// Runs blocking `f` where [`Env::blocking`] says (a drop-in for
    /// `tokio::task::spawn_blocking(f).await`).
    pub async fn spawn_blocking<T, F>(&self, f: F) -> Result<T, BlockingError>
    where
        T: Send + 'static,
        F: FnOnce() -> T + Send + 'static,
    {
        match self.blocking {
            Blocking::Pool => tokio::task::spawn_blocking(f)
                .await
                .map_err(|e| BlockingError(e.to_string())),
            Blocking::Inline => Ok(f()),
        }
    }
}

impl std::fmt::Debug for Env {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Env").finish_non_exhaustive()
    }
}

/// tokio TCP with Nagle off (RPCs are small and latency-bound).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpNet;

struct TcpListener(tokio::net::TcpListener);

impl Listener for TcpListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxConn, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            stream.set_nodelay(true)?;
            Ok((Box::new(stream) as BoxConn, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Net for TcpNet {
    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = tokio::net::TcpListener::bind(&addr).await?;
            Ok(Box::new(TcpListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<BoxConn>> {
        Box::pin(async move {
            let stream = tokio::net::TcpStream::connect(&addr).await?;
            stream.set_nodelay(true)?;
            Ok(Box::new(stream) as BoxConn)
        })
    }
}

/// `SystemTime::now()`.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_millis(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            // A clock before 1970 is a broken host; 0 keeps versions ordered
            // by their counters, which is what correctness rests on.
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn tcp_net_round_trip() {
        let env = Env::real();
        let mut listener = env.net.bind("127.0.0.1:0".into()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn({
            let net = env.net.clone();
            async move {
                let mut c = net.connect(addr.to_string()).await.unwrap();
                c.write_all(b"ping").await.unwrap();
            }
        });
        let (mut conn, _) = listener.accept().await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"ping");
        client.await.unwrap();
        assert!(env.clock.now_millis() > 1_700_000_000_000);
    }
}
