//! [`SecureConn`]: a byte stream inside Noise transport messages.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::env::BoxConn;

/// Noise's limit on one message, tag included.
const MAX_MESSAGE: usize = 65_535;
/// ChaCha20-Poly1305's tag.
const TAG: usize = 16;
/// Most plaintext one message carries.
const MAX_PLAIN: usize = MAX_MESSAGE - TAG;
/// Ciphertext buffered for writing before `poll_write` pushes it out first:
/// keeps the write buffer bounded while letting a flush go out as one
/// `write` for the common case of one small frame.
const WRITE_HIGH_WATER: usize = 4 * MAX_MESSAGE;
/// Bytes read from the socket per call.
const READ_CHUNK: usize = 16 << 10;

/// An authenticated, encrypted connection (after [`super::Transport`]'s
/// handshake). Reads fail with `InvalidData` on any message whose tag does
/// not verify, which ends the connection: nothing unauthenticated is ever
/// returned to the reader.
pub struct SecureConn {
    inner: BoxConn,
    noise: snow::TransportState,
    /// Received ciphertext not yet decrypted: at most one partial message
    /// plus one read chunk.
    received: Vec<u8>,
    /// Decrypted bytes not yet read, from `plain_pos`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Encrypted messages not yet written, from `out_pos`.
    out: Vec<u8>,
    out_pos: usize,
}

impl std::fmt::Debug for SecureConn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecureConn").finish_non_exhaustive()
    }
}

impl SecureConn {
    pub(super) fn new(inner: BoxConn, noise: snow::TransportState) -> Self {
        Self {
            inner,
            noise,
            received: Vec::new(),
            plain: Vec::new(),
            plain_pos: 0,
            out: Vec::new(),
            out_pos: 0,
        }
    }

    /// Decrypts the first whole message in `received`, if there is one.
    fn decrypt_one(&mut self) -> io::Result<bool> {
        let Some(header) = self.received.get(..2) else {
            return Ok(false);
        };
        let len = usize::from(u16::from_be_bytes([header[0], header[1]]));
        if self.received.len() < 2 + len {
            return Ok(false);
        }
        self.plain.resize(len, 0);
        let n = self
            .noise
            .read_message(&self.received[2..2 + len], &mut self.plain)
            .map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "an RPC message failed authentication (altered, replayed or not from this peer)",
                )
            })?;
        self.plain.truncate(n);
        self.plain_pos = 0;
        self.received.drain(..2 + len);
        Ok(true)
    }

    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.out_pos < self.out.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.out[self.out_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out_pos += n;
        }
        self.out.clear();
        self.out_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for SecureConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.decrypt_one()? {
                continue;
            }
            // Uninitialised: zeroing 16 KiB on every poll would cost more
            // than decrypting a small message.
            let mut chunk = [std::mem::MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut chunk_buf = ReadBuf::uninit(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk_buf))?;
            let filled = chunk_buf.filled();
            if filled.is_empty() {
                return Poll::Ready(if this.received.is_empty() {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed inside an RPC message",
                    ))
                });
            }
            this.received.extend_from_slice(filled);
        }
    }
}

impl AsyncWrite for SecureConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.out.len() - this.out_pos >= WRITE_HIGH_WATER {
            ready!(this.poll_drain(cx))?;
        }
        let n = buf.len().min(MAX_PLAIN);
        let start = this.out.len();
        this.out.resize(start + 2 + n + TAG, 0);
        let len = this
            .noise
            .write_message(&buf[..n], &mut this.out[start + 2..])
            .map_err(|e| io::Error::other(format!("encrypting an RPC message: {e:?}")))?;
        let header = u16::try_from(len).map_err(io::Error::other)?.to_be_bytes();
        this.out[start..start + 2].copy_from_slice(&header);
        this.out.truncate(start + 2 + len);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
