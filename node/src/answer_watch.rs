//! The event a decommissioned node's stop waits for: its reply has been
//! flushed to the caller and that connection has ended.

use std::sync::Arc;

use tokio::sync::watch;

/// A served connection's transport that notices when a successful
/// decommission reply was flushed on it and the connection then ended (the
/// caller hung up, having read it, or the connection was closed for it):
/// the event the node's stop waits for, so that the reply has reached its
/// caller before shutdown closes anything (instead of guessing with a
/// sleep).
///
/// The connection's end, not the flush alone: a flushed reply is still in
/// flight, and a node that stopped at once would race it with its own
/// shutdown (in the simulation, the order in which the host's tasks drop
/// their sockets would reach the network and change the trace).
pub(crate) struct AnswerWatch<T> {
    inner: T,
    /// A decommission reply was handed to `inner` and not yet flushed.
    staged: bool,
    /// A decommission reply was flushed: its connection's end is the event.
    flushed: bool,
    answered: Arc<watch::Sender<bool>>,
}

type Answer = tarpc::Response<crate::rpc::ReplicaResponse>;

impl<T: futures::Stream + Unpin> futures::Stream for AnswerWatch<T> {
    type Item = T::Item;

    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T::Item>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_next(cx)
    }
}

impl<T: futures::Sink<Answer> + Unpin> futures::Sink<Answer> for AnswerWatch<T> {
    type Error = T::Error;

    fn poll_ready(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), T::Error>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_ready(cx)
    }

    fn start_send(self: std::pin::Pin<&mut Self>, item: Answer) -> Result<(), T::Error> {
        let this = self.get_mut();
        let decommissioned = matches!(
            &item.message,
            Ok(crate::rpc::ReplicaResponse::Decommission(Ok(_)))
        );
        std::pin::Pin::new(&mut this.inner).start_send(item)?;
        this.staged |= decommissioned;
        Ok(())
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), T::Error>> {
        let this = self.get_mut();
        let flushed = std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_flush(cx));
        this.note(&flushed);
        std::task::Poll::Ready(flushed)
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), T::Error>> {
        let this = self.get_mut();
        let closed = std::task::ready!(std::pin::Pin::new(&mut this.inner).poll_close(cx));
        this.note(&closed);
        std::task::Poll::Ready(closed)
    }
}

impl<T> AnswerWatch<T> {
    /// After a successful flush (or close, which flushes), a decommission
    /// reply handed over before it is on its way.
    fn note<E>(&mut self, outcome: &Result<(), E>) {
        if outcome.is_ok() && self.staged {
            self.staged = false;
            self.flushed = true;
        }
    }
}

impl<T> Drop for AnswerWatch<T> {
    /// The connection is over (its serving loop returned).
    fn drop(&mut self) {
        if self.flushed {
            self.answered.send_replace(true);
        }
    }
}

impl<T> AnswerWatch<T> {
    /// `inner`, reporting to `answered`.
    pub(crate) fn new(inner: T, answered: Arc<watch::Sender<bool>>) -> Self {
        Self {
            inner,
            staged: false,
            flushed: false,
            answered,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::HandoverReport;
    use crate::rpc::RemoteError;

    /// A sink that holds what it was sent until flushed.
    #[derive(Default)]
    struct Wire {
        staged: Vec<Answer>,
        sent: Vec<Answer>,
        fail_flush: bool,
    }

    impl futures::Sink<Answer> for Wire {
        type Error = std::io::Error;
        fn poll_ready(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            std::task::Poll::Ready(Ok(()))
        }
        fn start_send(self: std::pin::Pin<&mut Self>, item: Answer) -> Result<(), Self::Error> {
            self.get_mut().staged.push(item);
            Ok(())
        }
        fn poll_flush(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            let this = self.get_mut();
            if this.fail_flush {
                return std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()));
            }
            this.sent.append(&mut this.staged);
            std::task::Poll::Ready(Ok(()))
        }
        fn poll_close(
            self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.poll_flush(cx)
        }
    }

    fn answer(message: Result<crate::rpc::ReplicaResponse, tarpc::ServerError>) -> Answer {
        tarpc::Response {
            request_id: 1,
            message,
        }
    }

    fn watch(wire: Wire) -> (AnswerWatch<Wire>, watch::Receiver<bool>) {
        let answered = Arc::new(watch::channel(false).0);
        let rx = answered.subscribe();
        let w = AnswerWatch::new(wire, answered);
        (w, rx)
    }

    #[tokio::test]
    async fn the_stop_event_is_the_end_of_a_connection_that_flushed_a_decommission_reply() {
        use crate::rpc::ReplicaResponse;
        use futures::SinkExt;
        let ok = || {
            answer(Ok(ReplicaResponse::Decommission(Ok(
                HandoverReport::default(),
            ))))
        };
        let refused = |id: &str| RemoteError::ShuttingDown { id: id.into() };

        // Other replies, and a refused decommission, are not the event.
        let (mut w, rx) = watch(Wire::default());
        w.feed(answer(Ok(ReplicaResponse::Status(Err(refused("n"))))))
            .await
            .unwrap();
        w.feed(answer(Ok(ReplicaResponse::Decommission(Err(refused("n"))))))
            .await
            .unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.inner.sent.len(), 2);
        drop(w);
        assert!(!*rx.borrow(), "no successful decommission reply went out");

        // Flushed, the reply is on its way; the connection's end is the event.
        let (mut w, rx) = watch(Wire::default());
        w.feed(ok()).await.unwrap();
        w.flush().await.unwrap();
        assert_eq!(w.inner.sent.len(), 1);
        assert!(!*rx.borrow(), "flushed, but the connection is still open");
        drop(w);
        assert!(*rx.borrow(), "flushed, then the connection ended");

        // Handed to the transport but never flushed: not the event.
        let (mut w, rx) = watch(Wire::default());
        w.feed(ok()).await.unwrap();
        drop(w);
        assert!(!*rx.borrow(), "staged only");

        // A flush that fails is not a delivery; closing flushes.
        let (mut w, rx) = watch(Wire {
            fail_flush: true,
            ..Wire::default()
        });
        w.feed(ok()).await.unwrap();
        assert!(w.flush().await.is_err());
        w.inner.fail_flush = false;
        w.close().await.unwrap();
        drop(w);
        assert!(*rx.borrow());
    }
}
