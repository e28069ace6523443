//! The accept loop that serves the [`Replica`](crate::rpc::Replica) service on a
//! listener, for nodes and gateways alike.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tarpc::tokio_serde::formats::Bincode;
use tarpc::tokio_util::codec::LengthDelimitedCodec;
use tokio::sync::watch;

use crate::env::Listener;
use crate::secure::Transport;

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
        if let Some(len) = request_batch_len(src) {
            if len > crate::rpc::MAX_BATCH_KEYS as u64 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "batch of {len} keys exceeds {} (checked before decoding: \
                         each empty key would cost 24 bytes of memory for 1 on the wire)",
                        crate::rpc::MAX_BATCH_KEYS
                    ),
                ));
            }
        }
        std::pin::Pin::new(&mut self.get_mut().0).deserialize(src)
    }
}

/// The bincode variant indices of the batch requests (`read_many`,
/// `merge_batch`), found by encoding one of each rather than assumed, so a
/// reordered service definition cannot make the check read the wrong thing.
fn batch_variants() -> &'static [u64; 2] {
    static VARIANTS: std::sync::OnceLock<[u64; 2]> = std::sync::OnceLock::new();
    VARIANTS.get_or_init(|| {
        use crate::rpc::ReplicaRequest;
        use bincode::Options;
        let index = |r: &ReplicaRequest| {
            let bytes = bincode::DefaultOptions::new()
                .serialize(r)
                .expect("a request encodes");
            varint(&bytes).map_or(u64::MAX, |(v, _)| v)
        };
        [
            index(&ReplicaRequest::ReadMany { keys: Vec::new() }),
            index(&ReplicaRequest::MergeBatch {
                entries: Vec::new(),
            }),
        ]
    })
}

/// The element count of a batch request, read from the frame without
/// decoding it: after the message variant come the context (deadline as
/// two varints, the trace id as 16 bytes, span id and sampling decision as
/// varints), the request id, the method's variant, then the batch's length.
/// `None` for anything else.
fn request_batch_len(frame: &[u8]) -> Option<u64> {
    let (variant, rest) = varint(frame)?;
    if variant != 0 {
        return None;
    }
    let (_secs, rest) = varint(rest)?;
    let (_nanos, rest) = varint(rest)?;
    let rest = rest.get(16..)?;
    let (_span, rest) = varint(rest)?;
    let (_sampling, rest) = varint(rest)?;
    let (_id, rest) = varint(rest)?;
    let (method, rest) = varint(rest)?;
    if !batch_variants().contains(&method) {
        return None;
    }
    varint(rest).map(|(len, _)| len)
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

/// Bounds on one listener's connections (from `rpc.*`).
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// Largest frame, checked on its length prefix before anything is
    /// allocated for it.
    pub max_frame_bytes: usize,
    /// Connections open at once; past it a new one is closed unread.
    pub max_connections: usize,
    /// Closes a connection with nothing in flight and no request for this long.
    pub idle_timeout: Duration,
}

impl ServeLimits {
    /// The limits a process's config sets.
    pub fn from_config(config: &crate::Config) -> Self {
        Self {
            max_frame_bytes: config.max_frame_bytes(),
            max_connections: config.rpc.max_connections,
            idle_timeout: Duration::from_millis(config.rpc.idle_timeout_ms),
        }
    }
}

/// What [`serve_connection`] needs of the
/// connection it serves besides the transport.
#[derive(Debug, Clone)]
pub struct Connection {
    /// Turns true when the process stops.
    pub shutdown: watch::Receiver<bool>,
    /// See [`ServeLimits::idle_timeout`].
    pub idle_timeout: Duration,
}

/// A warning logged at most once per interval, with how many were
/// suppressed meanwhile: a peer with the wrong secret retries every gossip
/// round, and one line per attempt would drown the log.
#[derive(Debug)]
pub struct Throttled {
    interval_ms: u64,
    origin: std::time::Instant,
    /// Milliseconds since `origin` of the last line, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

impl Throttled {
    /// At most one line per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval_ms: interval.as_millis() as u64,
            origin: std::time::Instant::now(),
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// Whether to log now, and how many were suppressed since the last line.
    pub fn admit(&self) -> Option<u64> {
        let now = self.origin.elapsed().as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        if last != 0 && now < last + self.interval_ms {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        if self
            .last
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(self.suppressed.swap(0, Ordering::Relaxed))
    }
}

/// Serves connections accepted on `listener` until `shutdown` turns true.
/// Each connection gets its own task, which first runs the responder's
/// handshake (bounded by the transport's time limit; a peer without the
/// cluster secret is dropped there, before tarpc sees a byte), then frames
/// the encrypted stream and runs `on_connection` on it. Past
/// `limits.max_connections` a new connection is closed at once. A
/// connection that sends an oversized or undecodable frame is closed, and
/// only that one.
///
/// `on_connection` returns the serving future rather than spawning it, so
/// that the connection's slot is held exactly as long as it is served; it is
/// a callback over the concrete service because tarpc's generated futures
/// are only known to be `Send` for concrete types.
pub async fn accept_loop<F, Fut>(
    mut listener: Box<dyn Listener>,
    transport: Transport,
    limits: ServeLimits,
    stats: Arc<crate::observe::ConnStats>,
    mut shutdown: watch::Receiver<bool>,
    on_connection: F,
) where
    F: Fn(ServerTransport, Connection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let on_connection = Arc::new(on_connection);
    let open = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let refused_full = Arc::new(Throttled::new(LOG_INTERVAL));
    let refused_handshake = Arc::new(Throttled::new(LOG_INTERVAL));
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
        let Ok(slot) = open.clone().try_acquire_owned() else {
            stats.refused_full.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = refused_full.admit() {
                tracing::warn!(%peer, max = limits.max_connections, suppressed,
                    "RPC connection refused: rpc.max_connections reached");
            }
            drop(conn);
            continue;
        };
        tracing::trace!(%peer, "connection accepted");
        let (transport, on_connection) = (transport.clone(), on_connection.clone());
        let refused_handshake = refused_handshake.clone();
        let connection = Connection {
            shutdown: shutdown.clone(),
            idle_timeout: limits.idle_timeout,
        };
        let stats = stats.clone();
        tokio::spawn(async move {
            let _slot = slot;
            stats.open.fetch_add(1, Ordering::Relaxed);
            let _open = OpenGuard(&stats.open);
            let secure = match transport.accept(conn).await {
                Ok(secure) => secure,
                Err(e) => {
                    stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = refused_handshake.admit() {
                        tracing::warn!(%peer, error = %e, suppressed,
                            "RPC connection refused: handshake failed");
                    }
                    return;
                }
            };
            let framed = LengthDelimitedCodec::builder()
                .max_frame_length(limits.max_frame_bytes)
                .new_framed(Box::new(secure) as crate::env::BoxConn);
            let served = tarpc::serde_transport::new(framed, CheckedBincode::default());
            on_connection(served, connection).await;
        });
    }
}

/// Counts a connection closed, however its task ends.
struct OpenGuard<'a>(&'a AtomicU64);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How often a repeated refusal is logged.
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Counts a connection's requests in flight, so that the idle timer closes
/// only a connection that is waiting for nothing (a decommission call may
/// run for an hour with no other traffic on its connection).
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicU64>);

impl InFlight {
    /// Marks one request started; dropping the guard marks it done.
    pub fn start(&self) -> InFlightGuard {
        self.0.fetch_add(1, Ordering::Relaxed);
        InFlightGuard(self.0.clone())
    }

    /// Whether no request is in flight.
    pub fn is_idle(&self) -> bool {
        self.0.load(Ordering::Relaxed) == 0
    }
}

/// See [`InFlight::start`].
#[derive(Debug)]
pub struct InFlightGuard(Arc<AtomicU64>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Serves one connection: the future to return from the `on_connection`
/// callback of [`accept_loop`]. Each request runs on its own task, answered
/// by `handler`; the connection ends on shutdown, when the peer closes, or
/// after [`Connection::idle_timeout`] with nothing in flight.
///
/// `handler` answers one request, usually by handing it to the
/// tarpc-generated server of a [`Replica`](crate::rpc::Replica)
/// implementation:
///
/// ```no_run
/// use shoal_node::node::NodeService;
/// use shoal_node::rpc::Replica;
/// use shoal_node::serve::{serve_connection, Connection, ServerTransport};
///
/// fn on_connection(
///     service: NodeService,
/// ) -> impl Fn(ServerTransport, Connection) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
///     move |transport, connection| {
///         let service = service.clone();
///         Box::pin(serve_connection(
///             transport,
///             move |ctx, request| tarpc::server::Serve::serve(service.serve(), ctx, request),
///             connection,
///         ))
///     }
/// }
/// ```
///
/// It takes that closure rather than the service itself because a request's
/// future must be `Send` to run on its own task, and Rust cannot yet state
/// that of a generic service's `async fn`s; a closure written where the
/// service is a concrete type names a future the compiler can check.
pub async fn serve_connection<T, H, Fut>(transport: T, handler: H, connection: Connection)
where
    T: tarpc::Transport<Out, In> + Send + 'static,
    H: FnOnce(tarpc::context::Context, crate::rpc::ReplicaRequest) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<crate::rpc::ReplicaResponse, tarpc::ServerError>> + Send + 'static,
{
    use futures::StreamExt;
    use tarpc::server::{BaseChannel, Channel};
    let Connection {
        shutdown: mut stop,
        idle_timeout,
    } = connection;
    let in_flight = InFlight::default();
    let channel =
        BaseChannel::with_defaults(transport).max_concurrent_requests(MAX_IN_FLIGHT_PER_CONNECTION);
    let requests = channel.execute(tarpc::server::serve(handler));
    futures::pin_mut!(requests);
    let idle = tokio::time::sleep(idle_timeout);
    futures::pin_mut!(idle);
    loop {
        tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => break,
            next = requests.next() => match next {
                Some(request) => {
                    let guard = in_flight.start();
                    // Not `async move { request.await; drop(guard) }`: that
                    // block would hold the request's future twice.
                    tokio::spawn(futures::FutureExt::map(request, move |()| drop(guard)));
                    idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
                }
                None => break,
            },
            _ = &mut idle => {
                if in_flight.is_idle() {
                    break;
                }
                idle.as_mut().reset(tokio::time::Instant::now() + idle_timeout);
            }
        }
    }
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

    fn encoded(message: crate::rpc::ReplicaRequest) -> Vec<u8> {
        use bincode::Options;
        let request: In = tarpc::ClientMessage::Request(tarpc::Request {
            context: tarpc::context::current(),
            id: 300,
            message,
        });
        bincode::DefaultOptions::new().serialize(&request).unwrap()
    }

    #[test]
    fn reads_the_length_of_a_batch_request_frame() {
        use crate::rpc::ReplicaRequest;
        let keys = vec![b"a".to_vec(); 300];
        assert_eq!(
            request_batch_len(&encoded(ReplicaRequest::ReadMany { keys })),
            Some(300)
        );
        assert_eq!(
            request_batch_len(&encoded(ReplicaRequest::MergeBatch { entries: vec![] })),
            Some(0)
        );
        assert_eq!(request_batch_len(&encoded(ReplicaRequest::Status {})), None);
        assert_eq!(
            request_batch_len(&encoded(ReplicaRequest::Read { key: vec![0; 300] })),
            None
        );
    }

    /// 5M empty keys are 5 MB on the wire and 120 MB decoded: refused on
    /// the length alone.
    #[test]
    fn an_oversized_batch_is_refused_before_it_is_decoded() {
        use tarpc::tokio_serde::Deserializer;
        let keys = vec![Vec::new(); crate::rpc::MAX_BATCH_KEYS + 1];
        let frame = encoded(crate::rpc::ReplicaRequest::ReadMany { keys });
        let frame = tarpc::tokio_util::bytes::BytesMut::from(&frame[..]);
        let mut codec = CheckedBincode::default();
        let err = std::pin::Pin::new(&mut codec)
            .deserialize(&frame)
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().contains("10001 keys"), "{err}");
        let keys = vec![Vec::new(); crate::rpc::MAX_BATCH_KEYS];
        let frame = encoded(crate::rpc::ReplicaRequest::ReadMany { keys });
        let frame = tarpc::tokio_util::bytes::BytesMut::from(&frame[..]);
        assert!(std::pin::Pin::new(&mut codec).deserialize(&frame).is_ok());
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
