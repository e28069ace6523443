//! The accept loop that serves the [`Replica`](crate::rpc::Replica) service on a
//! listener, for nodes and gateways alike.

use std::time::Duration;

use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tokio::sync::watch;

use crate::env::Listener;

/// Requests one connection may have in flight; past it tarpc answers the
/// excess at once with an error instead of queueing without bound.
pub const MAX_IN_FLIGHT_PER_CONNECTION: usize = 1_024;

/// A served connection: the framed bincode transport of one peer.
pub type ServerTransport = tarpc::serde_transport::Transport<
    crate::env::BoxConn,
    tarpc::ClientMessage<crate::rpc::ReplicaRequest>,
    tarpc::Response<crate::rpc::ReplicaResponse>,
    Bincode<
        tarpc::ClientMessage<crate::rpc::ReplicaRequest>,
        tarpc::Response<crate::rpc::ReplicaResponse>,
    >,
>;

/// Serves connections accepted on `listener` until `shutdown` turns true,
/// handing each to [`serve_connection`] with `service`. A connection that sends
/// an oversized or undecodable frame is closed, and only that one.
///
/// This is a macro-free generic over the concrete service because tarpc's
/// generated futures are only known to be `Send` for concrete types.
pub async fn accept_loop<F>(
    mut listener: Box<dyn Listener>,
    max_frame_bytes: usize,
    mut shutdown: watch::Receiver<bool>,
    on_connection: F,
) where
    F: Fn(ServerTransport, watch::Receiver<bool>) + Send + Sync + 'static,
{
    loop {
        let accepted = tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.accept() => accepted,
        };
        let (conn, peer) = match accepted {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off briefly
                // rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        tracing::trace!(%peer, "connection accepted");
        let framed = LengthDelimitedCodec::builder()
            .max_frame_length(max_frame_bytes)
            .new_framed(conn);
        let transport = tarpc::serde_transport::new(framed, Bincode::default());
        on_connection(transport, shutdown.clone());
    }
}

/// Serves one connection with a concrete service (call it from the
/// `on_connection` callback of [`accept_loop`], inside `tokio::spawn`).
#[macro_export]
macro_rules! serve_connection {
    ($transport:expr, $service:expr, $shutdown:expr) => {{
        use $crate::__private::{BaseChannel, Channel, StreamExt};
        let mut stop = $shutdown;
        let channel = BaseChannel::with_defaults($transport)
            .max_concurrent_requests($crate::serve::MAX_IN_FLIGHT_PER_CONNECTION);
        let requests = channel.execute($crate::rpc::Replica::serve($service));
        $crate::__private::pin_mut!(requests);
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                next = requests.next() => match next {
                    Some(request) => { tokio::spawn(request); }
                    None => break,
                },
            }
        }
    }};
}
