//! A request body streamed into an HTTP handler as the client sends it.
//!
//! Nothing buffers it: the guest pulls each piece when it reads, and hyper reads the socket
//! only when asked, so a request's memory stays bounded whatever the body's size, and a slow
//! reader slows the client down (TCP's own backpressure). The node's limits apply on the way:
//! past `limit` bytes, or when the client keeps the guest waiting past the deadline, the guest's
//! read fails, and the fault is kept for the caller, which answers 413 or 408 itself if the
//! guest has not answered yet.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::runtime::BodyFault;

/// A request body on its way into a guest, with the limits it is read under.
pub(crate) struct Streamed {
    inner: Body,
    read: u64,
    limit: u64,
    deadline: Instant,
    /// Set up the first time the client keeps the reader waiting.
    timer: Option<Pin<Box<Sleep>>>,
    fault: Fault,
}

/// Where a [`Streamed`] body leaves the fault that stopped it, if one did.
pub(crate) type Fault = Arc<OnceLock<BodyFault>>;

impl Streamed {
    /// `body`, failing past `limit` bytes or when the reader waits for it past `within` from
    /// now; the fault, if any, is left in the returned [`Fault`].
    pub(crate) fn new(body: Body, limit: u64, within: Duration) -> (Streamed, Fault) {
        let fault = Fault::default();
        let streamed = Streamed {
            inner: body,
            read: 0,
            limit,
            deadline: Instant::now() + within,
            timer: None,
            fault: fault.clone(),
        };
        (streamed, fault)
    }

    fn fail(&mut self, fault: BodyFault) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        let _ = self.fault.set(fault.clone());
        Poll::Ready(Some(Err(fault)))
    }
}

impl http_body::Body for Streamed {
    type Data = Bytes;
    type Error = BodyFault;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        let this = self.get_mut();
        if this.fault.get().is_some() {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.read > this.limit {
                        return this.fail(BodyFault::TooLarge(this.limit));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(BodyFault::Broken(e.to_string())),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = this.deadline;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => this.fail(BodyFault::TooSlow),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.fault.get().is_some() || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// Reads `body` to its end, as a guest would: the bytes that came through, and the fault.
    async fn drain(mut body: Streamed) -> (Vec<u8>, Option<BodyFault>) {
        let mut got = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(frame) => got.extend_from_slice(&frame.into_data().unwrap_or_default()),
                Err(fault) => return (got, Some(fault)),
            }
        }
        (got, None)
    }

    fn pieces(pieces: &[&'static [u8]]) -> Body {
        let frames = pieces
            .iter()
            .map(|p| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(p))));
        Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames.collect::<Vec<_>>(),
        )))
    }

    #[tokio::test]
    async fn a_body_within_its_limit_comes_through_whole_and_one_past_it_fails() {
        let within = Duration::from_secs(60);
        for (limit, expected_bytes, expected_fault) in [
            (11, &b"hello world"[..], None),
            (100, b"hello world", None),
            // The piece that passes the limit is not handed over.
            (10, b"hello ", Some(BodyFault::TooLarge(10))),
            (6, b"hello ", Some(BodyFault::TooLarge(6))),
            (5, b"", Some(BodyFault::TooLarge(5))),
        ] {
            let (body, fault) = Streamed::new(pieces(&[b"hello ", b"world"]), limit, within);
            let (got, failed) = drain(body).await;
            assert_eq!(got, expected_bytes, "limit {limit}");
            assert_eq!(failed, expected_fault, "limit {limit}");
            assert_eq!(
                fault.get().cloned(),
                expected_fault,
                "limit {limit}: the fault is kept"
            );
        }
    }

    #[tokio::test]
    async fn a_client_that_keeps_the_reader_waiting_past_the_deadline_fails_it() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        let stream = tokio_stream_of(rx);
        let (body, fault) = Streamed::new(Body::new(stream), 100, Duration::from_millis(50));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        // One piece, then nothing (the sender stays open): the reader waits until the deadline.
        let (got, failed) = drain(body).await;
        assert_eq!(got, b"a");
        assert_eq!(failed, Some(BodyFault::TooSlow));
        assert_eq!(fault.get(), Some(&BodyFault::TooSlow));
        drop(tx);
    }

    #[tokio::test]
    async fn a_broken_connection_is_a_fault_naming_the_error() {
        let frames = vec![
            Ok(Frame::data(Bytes::from_static(b"a"))),
            Err(std::io::Error::other("connection reset")),
        ];
        let body = Body::new(http_body_util::StreamBody::new(futures::stream::iter(
            frames,
        )));
        let (body, fault) = Streamed::new(body, 100, Duration::from_secs(60));
        let (got, failed) = drain(body).await;
        assert_eq!(got, b"a");
        assert!(
            matches!(&failed, Some(BodyFault::Broken(e)) if e.contains("connection reset")),
            "{failed:?}"
        );
        assert_eq!(fault.get().cloned(), failed);
    }

    /// A body fed by a channel, one frame per message.
    fn tokio_stream_of(
        rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>,
    ) -> impl http_body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static {
        http_body_util::StreamBody::new(futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|frame| (frame, rx))
        }))
    }
}
