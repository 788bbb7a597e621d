//! One RPC on its own QUIC stream, both ends: the answer to a request (a response frame, or a
//! response frame, pieces and an end frame), and reading frames with their checks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::frame::{self, FrameError, HEADER_LEN, Kind};
use super::{Caller, Inner, TransportError, add};

/// The pieces of a streamed answer; an `Err` ends the stream with an error frame.
pub type PieceStream = futures::stream::BoxStream<'static, Result<Bytes, String>>;

/// An answer: one response frame, or a response frame followed by pieces (each its own
/// frame, so no frame holds more than a piece) and an end frame.
pub enum Reply {
    /// The whole answer.
    Whole(Bytes),
    /// A head, then pieces.
    Streamed(Bytes, PieceStream),
}

/// A streamed answer as it arrives: [`Pieces::next`] until `None`.
pub struct Pieces {
    recv: quinn::RecvStream,
    inner: Arc<Inner>,
    from: SocketAddr,
    /// Longest wait for one piece.
    idle: Duration,
    done: bool,
}

impl Pieces {
    pub(super) fn new(recv: quinn::RecvStream, inner: Arc<Inner>, from: SocketAddr) -> Pieces {
        let idle = inner.config.rpc_timeout;
        Pieces {
            recv,
            inner,
            from,
            idle,
            done: false,
        }
    }

    /// The next piece, `None` after the last; an error if the peer failed part-way, sent
    /// something else, or went quiet for longer than the RPC timeout.
    pub async fn next(&mut self) -> Result<Option<Bytes>, TransportError> {
        if self.done {
            return Ok(None);
        }
        let read = read_frame(&mut self.recv, &self.inner, self.from);
        let (header, payload) = tokio::time::timeout(self.idle, read).await.map_err(|_| {
            TransportError::Timeout {
                what: "a piece of a streamed answer",
                addr: self.from,
                after: self.idle,
            }
        })??;
        match header.kind {
            Kind::Piece => Ok(Some(payload)),
            Kind::End => {
                self.done = true;
                Ok(None)
            }
            Kind::Error => Err(TransportError::Refused {
                addr: self.from,
                reason: String::from_utf8_lossy(&payload).into_owned(),
            }),
            other => Err(TransportError::Connection {
                addr: self.from,
                reason: format!("expected a piece, got a {other:?} frame"),
            }),
        }
    }
}

/// Answers one request stream: a request frame in, a response or error frame out.
pub(super) async fn answer(
    inner: Arc<Inner>,
    caller: Caller,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) {
    let from = caller.addr;
    let after = inner.config.rpc_timeout;
    // Reading the request and writing the answer are bounded by `rpc_timeout`; the work in
    // between is bounded by the service (an invocation by its function's time limit).
    let work = async {
        let read = tokio::time::timeout(after, read_frame(&mut recv, &inner, from)).await;
        let reply = match read {
            Ok(Ok((h, payload))) if h.kind == Kind::Request => inner
                .service
                .call(caller, payload)
                .await
                .map_err(|m| m.into_bytes()),
            Ok(Ok((h, _))) => {
                Err(format!("expected a request frame, got {:?}", h.kind).into_bytes())
            }
            Ok(Err(TransportError::Frame { source, .. })) => Err(source.to_string().into_bytes()),
            Ok(Err(_)) | Err(_) => return,
        };
        let frame = |kind, payload: &[u8]| frame::encode(inner.cluster, kind, payload);
        let (head, pieces) = match reply {
            Ok(Reply::Whole(p)) => (frame(Kind::Response, &p), None),
            Ok(Reply::Streamed(p, pieces)) => (frame(Kind::Response, &p), Some(pieces)),
            Err(m) => (frame(Kind::Error, &m), None),
        };
        // Each frame must be taken by the peer within the RPC timeout (QUIC's flow control
        // holds a writer back while the reader is slow).
        let write = async |bytes: Vec<u8>, send: &mut quinn::SendStream| {
            matches!(
                tokio::time::timeout(after, send.write_all(&bytes)).await,
                Ok(Ok(()))
            )
        };
        if !write(head, &mut send).await {
            return;
        }
        if let Some(mut pieces) = pieces {
            use futures::StreamExt;
            loop {
                let (next, last) = match pieces.next().await {
                    Some(Ok(piece)) => (frame(Kind::Piece, &piece), false),
                    Some(Err(m)) => (frame(Kind::Error, m.as_bytes()), true),
                    None => (frame(Kind::End, b""), true),
                };
                if !write(next, &mut send).await {
                    return;
                }
                if last {
                    break;
                }
            }
        }
        let _ = send.finish();
        // Let the peer read the answer before the stream is dropped.
        let _ = tokio::time::timeout(after, send.stopped()).await;
    };
    work.await;
}

/// Reads one frame from a stream, checking its header before reading its payload.
pub(super) async fn read_frame(
    recv: &mut quinn::RecvStream,
    inner: &Inner,
    from: SocketAddr,
) -> Result<(frame::Header, Bytes), TransportError> {
    let lost = |e: &dyn std::fmt::Display| TransportError::Connection {
        addr: from,
        reason: e.to_string(),
    };
    let mut head = [0; HEADER_LEN];
    let mut got = 0;
    while got < HEADER_LEN {
        match recv.read(&mut head[got..]).await.map_err(|e| lost(&e))? {
            Some(n) => got += n,
            None => break,
        }
    }
    let header = frame::decode_header(
        &head[..got],
        inner.cluster,
        inner.config.max_frame_bytes.get(),
    )
    .inspect_err(|e| inner.rejected(from, e))
    .map_err(|source| TransportError::Frame { addr: from, source })?;
    let mut payload = vec![0; header.len as usize];
    match recv.read_exact(&mut payload).await {
        Ok(()) => {}
        Err(quinn::ReadExactError::FinishedEarly(n)) => {
            let e = FrameError::Truncated {
                got: n,
                need: header.len as usize,
            };
            inner.rejected(from, &e);
            return Err(TransportError::Frame {
                addr: from,
                source: e,
            });
        }
        Err(quinn::ReadExactError::ReadError(e)) => return Err(lost(&e)),
    }
    add(&inner.stats.frames_accepted, 1);
    Ok((header, Bytes::from(payload)))
}
