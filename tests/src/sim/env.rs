//! The simulated side of `shoal_node::env`: turmoil's TCP, a wall clock on
//! turmoil's simulated time with a per-node skew, and inline blocking work.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use shoal_node::env::{Blocking, BoxConn, BoxFuture, Clock, Env, Listener, Net};

/// Sockets over turmoil's simulated network. Addresses may be host names
/// (`node-1:7000`): turmoil resolves them through its own DNS.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimNet;

struct SimListener(turmoil::net::TcpListener);

impl Listener for SimListener {
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(BoxConn, SocketAddr)>> {
        Box::pin(async move {
            let (stream, peer) = self.0.accept().await?;
            Ok((Box::new(stream) as BoxConn, peer))
        })
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

impl Net for SimNet {
    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Box<dyn Listener>>> {
        Box::pin(async move {
            let listener = turmoil::net::TcpListener::bind(addr).await?;
            Ok(Box::new(SimListener(listener)) as Box<dyn Listener>)
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<BoxConn>> {
        Box::pin(async move {
            let stream = turmoil::net::TcpStream::connect(addr).await?;
            Ok(Box::new(stream) as BoxConn)
        })
    }
}

/// The wall clock of one simulated process: turmoil's simulated time since
/// the Unix epoch (the simulation's epoch is drawn from the seed) plus a skew
/// that the fault schedule may change at any moment.
#[derive(Debug, Clone, Default)]
pub struct SimClock {
    skew_ms: Arc<AtomicI64>,
}

impl SimClock {
    /// Sets this clock's offset from simulated true time.
    pub fn set_skew_ms(&self, skew_ms: i64) {
        self.skew_ms.store(skew_ms, Ordering::SeqCst);
    }

    /// The current offset from simulated true time.
    pub fn skew_ms(&self) -> i64 {
        self.skew_ms.load(Ordering::SeqCst)
    }
}

impl Clock for SimClock {
    fn now_millis(&self) -> u64 {
        // Outside a host (never in practice: services read the clock from
        // their own tasks) there is no simulated time; 0 keeps versions
        // ordered by their counters, as the real clock does before 1970.
        let true_ms = turmoil::since_epoch().map_or(0, |d| d.as_millis() as i64);
        true_ms.saturating_add(self.skew_ms()).max(0) as u64
    }
}

/// The [`Env`] every simulated node and gateway gets: simulated sockets, its
/// own skewable clock, and blocking work run inline so that thread timing
/// cannot reorder simulated events.
pub fn sim_env(clock: SimClock) -> Env {
    Env {
        net: Arc::new(SimNet),
        clock: Arc::new(clock),
        blocking: Blocking::Inline,
    }
}
