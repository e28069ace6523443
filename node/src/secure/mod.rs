//! The internode transport: every RPC connection proves the cluster secret
//! on both ends, then encrypts and authenticates every byte.
//!
//! The handshake is Noise `NNpsk0` (25519, ChaChaPoly, SHA-256) from the
//! `snow` crate: two 48-byte messages, no certificates. The pre-shared key
//! is mixed in before the first message, so the responder cannot decrypt
//! the initiator's first message unless both hold the same secret, and the
//! initiator cannot decrypt the reply unless the responder does: each end
//! proves the secret to the other, and the fresh ephemeral keys give every
//! connection its own session keys (forward secrecy against a later leak of
//! the secret, which a static-key scheme would not give without more
//! messages). A peer without the secret, or with another cluster's, fails
//! the handshake before a single byte reaches tarpc's decoder.
//!
//! After the handshake the connection is a [`SecureConn`]: a byte stream
//! carried in Noise transport messages, each a 2-byte length and at most
//! 65,535 bytes of ciphertext with a 16-byte tag. A byte altered in flight
//! fails its tag and closes the connection; a replayed, dropped or
//! reordered message fails on its nonce.
//!
//! Why Noise and not mutual TLS: the same guarantee with no CA to generate,
//! distribute and rotate; `cluster up` only writes one random file. The cost
//! per RPC is one ChaCha20-Poly1305 pass per direction (BENCHMARKS.md has
//! the figures).

mod secret;
mod stream;

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub use secret::{ClusterSecret, SecretError, MIN_SECRET_BYTES};
pub use stream::SecureConn;

use crate::env::{BoxConn, Conn};

/// The Noise protocol name: the pattern and the primitives, fixed.
const PATTERN: &str = "Noise_NNpsk0_25519_ChaChaPoly_SHA256";

/// Mixed into the handshake hash, so that a different protocol (or a later,
/// incompatible version of this one) using the same secret fails the
/// handshake instead of misreading frames.
const PROLOGUE: &[u8] = b"shoal-rpc/1";

/// Both handshake messages are 48 bytes (an ephemeral key and an empty
/// payload's tag); anything longer is not this protocol.
const MAX_HANDSHAKE_MESSAGE: usize = 256;

/// How long a new connection may take to complete the handshake before it is
/// dropped (`rpc.handshake_timeout_ms`; both sides apply it).
///
/// The handshake is two 48-byte messages, one round trip plus an X25519
/// exchange per side (about 250 us, BENCHMARKS.md), so an honest peer is
/// done in milliseconds even across a slow link; the bound is what a peer
/// that connects and then says nothing (or trickles bytes) can hold one of
/// the `rpc.max_connections` slots for, and 5 s keeps that short while
/// leaving ample room for a peer that is busy or paused by a GC-like stall.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// What each end of a connection needs for the handshake.
#[derive(Debug, Clone)]
pub struct Transport {
    secret: ClusterSecret,
    handshake_timeout: Duration,
}

impl Transport {
    /// A transport proving `secret`, giving up on a handshake after `timeout`.
    pub fn new(secret: ClusterSecret, handshake_timeout: Duration) -> Self {
        Self {
            secret,
            handshake_timeout,
        }
    }

    /// The handshake's time limit.
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Runs the initiator's side over a freshly dialed connection.
    pub async fn connect(&self, conn: BoxConn) -> io::Result<SecureConn> {
        self.bounded(handshake(conn, &self.secret, Side::Initiator))
            .await
    }

    /// Runs the responder's side over a freshly accepted connection.
    pub async fn accept(&self, conn: BoxConn) -> io::Result<SecureConn> {
        self.bounded(handshake(conn, &self.secret, Side::Responder))
            .await
    }

    async fn bounded(
        &self,
        f: impl std::future::Future<Output = io::Result<SecureConn>>,
    ) -> io::Result<SecureConn> {
        match tokio::time::timeout(self.handshake_timeout, f).await {
            Ok(result) => result,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "handshake not completed within {} ms",
                    self.handshake_timeout.as_millis()
                ),
            )),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Initiator,
    Responder,
}

fn noise_err(context: &str, e: snow::Error) -> io::Error {
    io::Error::other(format!("{context}: {e:?}"))
}

async fn handshake(
    mut conn: BoxConn,
    secret: &ClusterSecret,
    side: Side,
) -> io::Result<SecureConn> {
    let params = PATTERN
        .parse()
        .map_err(|e| noise_err("noise parameters", e))?;
    let builder = snow::Builder::new(params)
        .psk(0, secret.psk())
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(|e| noise_err("noise builder", e))?;
    let mut state = match side {
        Side::Initiator => builder.build_initiator(),
        Side::Responder => builder.build_responder(),
    }
    .map_err(|e| noise_err("noise handshake state", e))?;
    let mut buf = [0u8; MAX_HANDSHAKE_MESSAGE];
    let mut payload = [0u8; MAX_HANDSHAKE_MESSAGE];
    // NNpsk0 is two messages: initiator -> responder, then back.
    for step in 0..2 {
        let ours = (step == 0) == (side == Side::Initiator);
        if ours {
            let len = state
                .write_message(&[], &mut buf)
                .map_err(|e| noise_err("handshake write", e))?;
            write_message(&mut conn, &buf[..len]).await?;
        } else {
            let len = read_message(&mut conn, &mut buf).await?;
            state.read_message(&buf[..len], &mut payload).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "handshake failed: the peer does not hold this cluster's secret",
                )
            })?;
        }
    }
    let transport = state
        .into_transport_mode()
        .map_err(|e| noise_err("handshake finish", e))?;
    Ok(SecureConn::new(conn, transport))
}

async fn write_message(conn: &mut impl Conn, message: &[u8]) -> io::Result<()> {
    let len = u16::try_from(message.len()).map_err(io::Error::other)?;
    let mut frame = Vec::with_capacity(2 + message.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    conn.write_all(&frame).await?;
    conn.flush().await
}

async fn read_message(conn: &mut impl Conn, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = [0u8; 2];
    conn.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("handshake message of {len} bytes: not a Shoal peer"),
        ));
    }
    conn.read_exact(&mut buf[..len]).await?;
    Ok(len)
}

#[cfg(test)]
mod tests;
