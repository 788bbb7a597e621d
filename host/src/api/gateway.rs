//! The HTTP listener: accepts client connections and holds each to the gateway's limits,
//! so that clients nobody vetted cannot tie the node up.
//!
//! - A request head must arrive whole within `header_timeout` of the node starting to wait
//!   for it (the connection opening, or the previous response going out): a client that
//!   trickles header lines, or idles on a kept-alive connection, is closed.
//! - A head larger than `max_header_bytes` is answered 431 and the connection closed.
//! - At most `max_connections` connections are open at once; one beyond it is answered 503
//!   with `retry-after` and closed, without parsing its request; while 64 such answers are
//!   under way, a further connection beyond the limit is closed at once, so a flood of
//!   connections cannot hold descriptors through its answers.
//!
//! Request bodies are limited by the handlers that read them (`max_request_body`,
//! `body_timeout`). On shutdown the listener closes, every connection finishes the request it
//! is serving and then closes, and `serve` returns when the last one has.
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Limits;
use crate::metrics::Metrics;

/// Serves `app` on `listener` within `limits` until `stop`, then waits for the connections
/// still open to finish their requests.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    limits: &Limits,
    metrics: Arc<Metrics>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes.get());
    let slots = Arc::new(Semaphore::new(limits.max_connections.get()));
    let refusal = Arc::new(refusal(limits.max_connections.get()));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was taken:
                    // the listener itself is fine, so back off a little and go on.
                    tracing::warn!(error = %e, "could not accept an HTTP connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.connection_closed("too_many_connections");
            if let Ok(answering) = refusing.clone().try_acquire_owned() {
                let refusal = refusal.clone();
                connections.spawn(async move {
                    refuse(stream, &refusal).await;
                    drop(answering);
                });
            }
            continue;
        };
        let connection =
            http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let metrics = metrics.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let _open = metrics.connection_opened();
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                if e.is_timeout() {
                    metrics.connection_closed("header_timeout");
                } else if e.is_parse_too_large() {
                    metrics.connection_closed("headers_too_large");
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
    Ok(())
}

/// Connections beyond `max_connections` being answered at once; further ones are closed
/// without an answer.
const MAX_REFUSING: usize = 64;

/// The whole answer to a connection beyond `max_connections`.
fn refusal(limit: usize) -> Vec<u8> {
    let body = format!(
        "{{\"error\":\"this node has {limit} client connections open, its limit \
         ([limits] max_connections); retry in a moment or use another node\"}}\n"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         retry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Answers a connection beyond the limit and closes it, within a second. The answer goes out
/// once the request head is in (an HTTP client takes an answer before its request as an
/// error), and what the client sends after it is read and dropped until it closes, so that
/// closing does not reset the connection before the client has read the answer.
async fn refuse(mut stream: TcpStream, answer: &[u8]) {
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 << 10 {
            match stream.read(&mut buf).await? {
                0 => break,
                k => head.extend_from_slice(&buf[..k]),
            }
        }
        stream.write_all(answer).await?;
        stream.shutdown().await?;
        while stream.read(&mut buf).await? > 0 {}
        Ok::<_, std::io::Error>(())
    })
    .await;
}
