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

type In = tarpc::ClientMessage<crate::rpc::ReplicaRequest>;
type Out = tarpc::Response<crate::rpc::ReplicaResponse>;

/// A served connection: the framed bincode transport of one peer.
pub type ServerTransport =
    tarpc::serde_transport::Transport<crate::env::BoxConn, In, Out, CheckedBincode>;

/// The longest deadline a peer may set on a request.
///
/// tarpc turns the relative deadline on the wire into an `Instant` by plain
/// addition and files it in a timer wheel, and both panic on values that are
/// far enough out (found by `tests/tests/bad_input.rs`). No Shoal call waits
/// anywhere near this long, so a frame asking for more is refused before it
/// is decoded.
pub const MAX_DEADLINE_SECS: u64 = 24 * 3600;

/// Bincode, as tarpc frames it, refusing requests whose deadline is beyond
/// [`MAX_DEADLINE_SECS`] instead of letting the decoder panic on them.
#[derive(Default)]
pub struct CheckedBincode(Bincode<In, Out>);

impl tarpc::tokio_serde::Deserializer<In> for CheckedBincode {
    type Error = std::io::Error;

    fn deserialize(
        self: std::pin::Pin<&mut Self>,
        src: &tarpc::tokio_util::bytes::BytesMut,
    ) -> Result<In, Self::Error> {
        if let Some(secs) = request_deadline_secs(src) {
            if secs > MAX_DEADLINE_SECS {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("request deadline {secs} s away exceeds {MAX_DEADLINE_SECS} s"),
                ));
            }
        }
        std::pin::Pin::new(&mut self.get_mut().0).deserialize(src)
    }
}

impl tarpc::tokio_serde::Serializer<Out> for CheckedBincode {
    type Error = std::io::Error;

    fn serialize(
        self: std::pin::Pin<&mut Self>,
        item: &Out,
    ) -> Result<tarpc::tokio_util::bytes::Bytes, Self::Error> {
        std::pin::Pin::new(&mut self.get_mut().0).serialize(item)
    }
}

/// The deadline seconds of a request frame, read without decoding it: with
/// bincode's default options the frame starts with the varint variant index
/// (0 for `ClientMessage::Request`), then the context's deadline as a
/// `Duration` whose seconds are a varint `u64`. `None` for other messages and
/// for frames too short to say (the decoder refuses those itself).
fn request_deadline_secs(frame: &[u8]) -> Option<u64> {
    let (variant, rest) = varint(frame)?;
    if variant != 0 {
        return None;
    }
    varint(rest).map(|(secs, _)| secs)
}

/// One bincode varint: a byte below 251 is the value; 251, 252 and 253 are
/// followed by a little-endian u16, u32 and u64; 254 (u128) is larger than any
/// `u64` and reads as `u64::MAX`.
fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let (&first, rest) = b.split_first()?;
    let take = |n: usize| -> Option<(u64, &[u8])> {
        let bytes = rest.get(..n)?;
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(bytes);
        Some((u64::from_le_bytes(v), &rest[n..]))
    };
    match first {
        0..=250 => Some((u64::from(first), rest)),
        251 => take(2),
        252 => take(4),
        253 => take(8),
        _ => Some((u64::MAX, rest)),
    }
}

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
            biased;
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
        let transport = tarpc::serde_transport::new(framed, CheckedBincode::default());
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
                biased;
                _ = stop.wait_for(|s| *s) => break,
                next = requests.next() => match next {
                    Some(request) => { tokio::spawn(request); }
                    None => break,
                },
            }
        }
    }};
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn frame(deadline: Duration) -> Vec<u8> {
        use bincode::Options;
        let mut context = tarpc::context::current();
        context.deadline = std::time::Instant::now() + deadline;
        let request: In = tarpc::ClientMessage::Request(tarpc::Request {
            context,
            id: 7,
            message: crate::rpc::ReplicaRequest::Status {},
        });
        bincode::DefaultOptions::new().serialize(&request).unwrap()
    }

    #[test]
    fn reads_the_deadline_of_a_request_frame() {
        let secs = request_deadline_secs(&frame(Duration::from_secs(1_000))).unwrap();
        assert!((998..=1_000).contains(&secs), "{secs}");
        let far = request_deadline_secs(&frame(Duration::from_secs(1 << 40))).unwrap();
        assert!(far > MAX_DEADLINE_SECS);
        assert_eq!(request_deadline_secs(&[]), None);
        assert_eq!(request_deadline_secs(&[1, 0]), None, "not a request");
        assert_eq!(request_deadline_secs(&[0, 253, 1]), None, "truncated");
        assert_eq!(request_deadline_secs(&[0, 254]), Some(u64::MAX));
    }

    #[test]
    fn a_far_deadline_is_refused_not_decoded() {
        use tarpc::tokio_serde::Deserializer;
        let mut codec = CheckedBincode::default();
        let ok = tarpc::tokio_util::bytes::BytesMut::from(&frame(Duration::from_secs(5))[..]);
        assert!(std::pin::Pin::new(&mut codec).deserialize(&ok).is_ok());
        let mut bad = frame(Duration::from_secs(5));
        // Varint u64 of 2^63 seconds: enough to overflow `Instant + Duration`.
        bad.splice(1..2, [253, 0, 0, 0, 0, 0, 0, 0, 128]);
        let bad = tarpc::tokio_util::bytes::BytesMut::from(&bad[..]);
        let err = std::pin::Pin::new(&mut codec)
            .deserialize(&bad)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
    }
}
