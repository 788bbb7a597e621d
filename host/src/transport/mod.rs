//! The QUIC transport between nodes: the only module that knows quinn.
//!
//! One endpoint per node serves and dials on one UDP port. Both ends of every connection
//! present a certificate signed by the cluster's CA (`tls`). Gossip travels in unreliable
//! datagrams; RPCs use one bidirectional stream each. Every datagram and stream frame starts
//! with the header of `frame` (protocol version and cluster id), and everything read is bounded.
//! One connection per peer address is cached, whichever side dialled it.

mod config;
pub mod frame;
mod identity;
mod stream;
#[cfg(feature = "test-switches")]
pub mod testing;
mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use config::TransportConfig;
pub use frame::{ClusterId, FrameError, PROTOCOL_VERSION};
pub use identity::EXPIRY_WARNING;
pub use stream::{PieceStream, Pieces, Reply};
use stream::{answer, read_frame};
pub use tls::{ClusterDir, Credentials, TlsError};
pub(crate) use tls::{random_token, write_private};

use crate::id::NodeId;
use frame::{HEADER_LEN, Kind};

/// Largest gossip payload that fits one datagram at QUIC's minimum MTU (1200 bytes, of which
/// quinn needs 38 for its own headers) after the frame header.
pub const MAX_GOSSIP_PAYLOAD: usize = 1200 - 38 - HEADER_LEN;
/// Datagrams queued for a peer while its connection is being set up; more are dropped.
const MAX_QUEUED: usize = 32;
/// Received gossip waiting for the membership task; more is dropped (gossip tolerates loss).
const GOSSIP_QUEUE: usize = 1024;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The endpoint could not be created.
    #[error("binding the QUIC endpoint to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// No connection could be made.
    #[error("connecting to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The connection failed while in use.
    #[error("talking to {addr}: {reason}")]
    Connection { addr: SocketAddr, reason: String },
    /// The connection failed after the request was sent: the peer may have carried it out.
    #[error("talking to {addr}, after the request was sent: {reason}")]
    Lost { addr: SocketAddr, reason: String },
    /// No answer in time.
    #[error("{what} with {addr} timed out after {after:?}")]
    Timeout {
        what: &'static str,
        addr: SocketAddr,
        after: Duration,
    },
    /// The peer sent a frame this node refuses.
    #[error("bad frame from {addr}: {source}")]
    Frame {
        addr: SocketAddr,
        source: FrameError,
    },
    /// The peer refused the request, with its reason.
    #[error("{addr} refused the request: {reason}")]
    Refused { addr: SocketAddr, reason: String },
    /// The node is shutting down.
    #[error("the transport is shut down")]
    Closed,
}

/// A gossip payload received from a peer.
#[derive(Debug)]
pub struct Datagram {
    /// The peer's endpoint address.
    pub from: SocketAddr,
    /// The node name in the peer's certificate.
    pub node: Option<NodeId>,
    /// The frame's payload.
    pub payload: Bytes,
}

/// Who sent a request: the address of the connection it came on, and the node name in the
/// certificate that connection was made with.
#[derive(Clone, Debug)]
pub struct Caller {
    /// The peer's endpoint address.
    pub addr: SocketAddr,
    /// The node name its certificate vouches for (`None` for a certificate without one).
    pub node: Option<NodeId>,
}

/// What answers RPCs: given the caller and the request payload, the response, or a message
/// that goes back to the caller as an error frame.
pub trait Service: Send + Sync + 'static {
    /// Handles one request.
    fn call(&self, from: Caller, request: Bytes) -> BoxFuture<'static, Result<Reply, String>>;
}

/// The application close code of a connection closed because its peer was denied.
const DENIED: quinn::VarInt = quinn::VarInt::from_u32(403);

/// Counters of what crossed the wire.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames accepted (datagrams and stream frames that passed every check).
    pub frames_accepted: AtomicU64,
    /// Frames refused (bad magic, version, cluster, size, truncation).
    pub frames_rejected: AtomicU64,
    /// Handshakes that failed (no certificate, another CA, expired, not QUIC).
    pub handshakes_failed: AtomicU64,
    /// Gossip bytes sent and received (payload only).
    pub gossip_bytes_sent: AtomicU64,
    /// See `gossip_bytes_sent`.
    pub gossip_bytes_received: AtomicU64,
    /// Gossip datagrams dropped on purpose (`drop_datagrams`), for want of a connection, or
    /// because the membership task was behind.
    pub gossip_dropped: AtomicU64,
}

impl Stats {
    /// Appends the transport's metrics.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{Kind, family, single};
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        family(
            out,
            "weft_gossip_bytes_total",
            Kind::Counter,
            "Gossip payload bytes.",
            [
                ("sent", &self.gossip_bytes_sent),
                ("received", &self.gossip_bytes_received),
            ]
            .map(|(direction, c)| (format!("direction=\"{direction}\""), load(c))),
        );
        for (name, help, c) in [
            (
                "weft_gossip_dropped_total",
                "Gossip datagrams dropped (no connection yet, queue full, or test loss).",
                &self.gossip_dropped,
            ),
            (
                "weft_frames_accepted_total",
                "Frames from peers that passed every check.",
                &self.frames_accepted,
            ),
            (
                "weft_frames_rejected_total",
                "Frames from peers refused (version, cluster, size, truncation).",
                &self.frames_rejected,
            ),
            (
                "weft_handshakes_failed_total",
                "QUIC handshakes refused (no or foreign certificate, expired, timeout).",
                &self.handshakes_failed,
            ),
        ] {
            single(out, name, Kind::Counter, help, load(c));
        }
    }
}

/// A node's QUIC endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    inner: Arc<Inner>,
}

struct Inner {
    endpoint: quinn::Endpoint,
    /// The certificate presented (renewable) and the nodes refused.
    identity: Arc<identity::Identity>,
    cluster: ClusterId,
    config: TransportConfig,
    peers: Mutex<HashMap<SocketAddr, Peer>>,
    gossip: mpsc::Sender<Datagram>,
    service: Arc<dyn Service>,
    stats: Stats,
    cancel: CancellationToken,
    tasks: TaskTracker,
    /// Test only: peers cut off, as by a network partition.
    #[cfg(feature = "test-switches")]
    blocked: Mutex<std::collections::HashSet<SocketAddr>>,
}

enum Peer {
    Connected(quinn::Connection),
    Connecting(Vec<Bytes>),
    Unreachable(Instant),
}

fn add(counter: &AtomicU64, n: usize) {
    counter.fetch_add(n as u64, Ordering::Relaxed);
}

impl Transport {
    /// Binds the endpoint and starts accepting connections. Gossip received goes to the
    /// returned channel; RPCs go to `service`.
    pub fn bind(
        addr: SocketAddr,
        creds: &Credentials,
        config: TransportConfig,
        service: Arc<dyn Service>,
    ) -> Result<(Transport, mpsc::Receiver<Datagram>), TransportError> {
        let transport_config = Arc::new(quinn_transport(&config));
        let identity = identity::Identity::new(creds)?;
        let server_crypto = quic_server(identity.server_config(creds)?)?;
        let mut server = quinn::ServerConfig::with_crypto(server_crypto);
        server.transport_config(transport_config.clone());
        let mut endpoint = quinn::Endpoint::server(server, addr)
            .map_err(|source| TransportError::Bind { addr, source })?;
        let mut client = quinn::ClientConfig::new(quic_client(identity.client_config()?)?);
        client.transport_config(transport_config);
        endpoint.set_default_client_config(client);
        let (tx, rx) = mpsc::channel(GOSSIP_QUEUE);
        let inner = Arc::new(Inner {
            endpoint,
            identity,
            cluster: creds.cluster,
            config,
            peers: Mutex::default(),
            gossip: tx,
            service,
            stats: Stats::default(),
            cancel: CancellationToken::new(),
            tasks: TaskTracker::new(),
            #[cfg(feature = "test-switches")]
            blocked: Mutex::default(),
        });
        inner.tasks.spawn(accept_loop(inner.clone()));
        inner.warn_if_expiring();
        if !inner.config.certificate_check_interval.is_zero() {
            inner
                .tasks
                .spawn(watch_certificate(inner.clone(), creds.clone()));
        }
        Ok((Transport { inner }, rx))
    }

    /// [`Transport::bind`], waiting up to `wait` for a fixed port to be free: a node restarted
    /// in the same process may find its previous endpoint still on it, as quinn keeps the
    /// socket until the old connections have drained (three probe timeouts, longer for a peer
    /// that stopped answering).
    pub async fn bind_when_free(
        addr: SocketAddr,
        creds: &Credentials,
        config: TransportConfig,
        service: Arc<dyn Service>,
        wait: Duration,
    ) -> Result<(Transport, mpsc::Receiver<Datagram>), TransportError> {
        let until = Instant::now() + wait;
        loop {
            match Transport::bind(addr, creds, config.clone(), service.clone()) {
                Err(TransportError::Bind { source, .. })
                    if source.kind() == std::io::ErrorKind::AddrInUse
                        && addr.port() != 0
                        && Instant::now() < until =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                other => return other,
            }
        }
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner
            .endpoint
            .local_addr()
            .expect("a bound endpoint has an address")
    }

    /// The cluster this endpoint belongs to.
    pub fn cluster(&self) -> ClusterId {
        self.inner.cluster
    }

    /// Appends the transport's metrics: what crossed the wire, and this node's certificate.
    pub fn render_metrics(&self, out: &mut String) {
        self.inner.stats.render_metrics(out);
        self.inner.identity.render_metrics(out);
    }

    /// Counters of what crossed the wire.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The smoothed round-trip time to `peer`, if connected.
    pub fn rtt(&self, peer: SocketAddr) -> Option<Duration> {
        match self.inner.peers.lock().expect("not poisoned").get(&peer) {
            Some(Peer::Connected(c)) if c.close_reason().is_none() => Some(c.rtt()),
            _ => None,
        }
    }

    /// Refuses handshakes with the nodes `names` from now on (the cluster's deny list), and
    /// closes the connections open to any of them; `names` replaces the previous list.
    pub fn set_denied(&self, names: std::collections::HashSet<NodeId>) {
        let inner = &self.inner;
        #[cfg(feature = "test-switches")]
        let names = if inner.config.ignore_deny_list {
            Default::default()
        } else {
            names
        };
        inner.identity.set_denied(names);
        let mut peers = inner.peers.lock().expect("not poisoned");
        peers.retain(|addr, peer| match peer {
            Peer::Connected(c)
                if inner
                    .identity
                    .denies(tls::peer_node(c.peer_identity()).as_ref()) =>
            {
                tracing::info!(peer = %addr, "closed the connection to a node on the deny list");
                c.close(DENIED, b"denied");
                false
            }
            _ => true,
        });
    }

    /// The node name in the certificate of the connection to `peer`, if connected.
    pub fn peer_node(&self, peer: SocketAddr) -> Option<NodeId> {
        match self.inner.peers.lock().expect("not poisoned").get(&peer) {
            Some(Peer::Connected(c)) => tls::peer_node(c.peer_identity()),
            _ => None,
        }
    }

    /// Sends a gossip payload to `to` without waiting: over the cached connection, or queued
    /// while one is set up. Gossip is unreliable by design, so a failure only counts a drop.
    pub fn send_gossip(&self, to: SocketAddr, payload: &[u8]) {
        let inner = &self.inner;
        #[cfg(feature = "test-switches")]
        let dropped = inner.config.drop_datagrams > 0.0
            && rand::random::<f64>() < inner.config.drop_datagrams;
        #[cfg(not(feature = "test-switches"))]
        let dropped = false;
        if dropped || inner.is_blocked(to) {
            add(&inner.stats.gossip_dropped, 1);
            return;
        }
        let frame = Bytes::from(frame::encode(inner.cluster, Kind::Gossip, payload));
        let mut peers = inner.peers.lock().expect("not poisoned");
        match peers.get_mut(&to) {
            Some(Peer::Connected(c)) => match c.send_datagram(frame.clone()) {
                Ok(()) => {
                    add(&inner.stats.gossip_bytes_sent, payload.len());
                    return;
                }
                Err(quinn::SendDatagramError::ConnectionLost(_)) => {}
                Err(e) => {
                    tracing::debug!(peer = %to, error = %e, "gossip datagram not sent");
                    add(&inner.stats.gossip_dropped, 1);
                    return;
                }
            },
            Some(Peer::Connecting(queue)) => {
                if queue.len() < MAX_QUEUED {
                    queue.push(frame);
                } else {
                    add(&inner.stats.gossip_dropped, 1);
                }
                return;
            }
            Some(Peer::Unreachable(until)) if Instant::now() < *until => {
                add(&inner.stats.gossip_dropped, 1);
                return;
            }
            _ => {}
        }
        peers.insert(to, Peer::Connecting(vec![frame]));
        drop(peers);
        let inner2 = inner.clone();
        inner.tasks.spawn(async move {
            // The outcome lands in `peers`; queued datagrams are flushed or dropped there.
            let _ = inner2.connect(to).await;
        });
    }

    /// Sends one request to `to` and waits for its response, at most `rpc_timeout`.
    pub async fn rpc(&self, to: SocketAddr, request: &[u8]) -> Result<Bytes, TransportError> {
        self.rpc_within(to, request, self.rpc_timeout()).await
    }

    /// How long one RPC may take unless its caller says otherwise.
    pub fn rpc_timeout(&self) -> Duration {
        self.inner.config.rpc_timeout
    }

    /// Sends one request to `to` and waits for its response, at most `after` (for requests
    /// whose work takes long, such as a forwarded invocation).
    pub async fn rpc_within(
        &self,
        to: SocketAddr,
        request: &[u8],
        after: Duration,
    ) -> Result<Bytes, TransportError> {
        let (head, _rest) = self.exchange(to, request, after).await?;
        Ok(head)
    }

    /// Sends one request to `to` whose answer is streamed: its head arrives within `after`,
    /// then each piece within the RPC timeout of the one before.
    pub async fn rpc_stream(
        &self,
        to: SocketAddr,
        request: &[u8],
        after: Duration,
    ) -> Result<(Bytes, Pieces), TransportError> {
        let (head, recv) = self.exchange(to, request, after).await?;
        let pieces = Pieces::new(recv, self.inner.clone(), to);
        Ok((head, pieces))
    }

    /// Sends a request frame on a new stream and reads the response frame.
    async fn exchange(
        &self,
        to: SocketAddr,
        request: &[u8],
        after: Duration,
    ) -> Result<(Bytes, quinn::RecvStream), TransportError> {
        let inner = &self.inner;
        let conn = inner.connection(to).await?;
        let exchange = async {
            let lost = |e: &dyn std::fmt::Display| TransportError::Connection {
                addr: to,
                reason: e.to_string(),
            };
            let (mut send, mut recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
            send.write_all(&frame::header(inner.cluster, Kind::Request, request.len()))
                .await
                .map_err(|e| lost(&e))?;
            send.write_all(request).await.map_err(|e| lost(&e))?;
            let _ = send.finish();
            // From here on the peer may have the request: a failure leaves its outcome unknown.
            let sent = |e: TransportError| match e {
                TransportError::Connection { addr, reason } => {
                    TransportError::Lost { addr, reason }
                }
                other => other,
            };
            let (header, payload) = read_frame(&mut recv, inner, to).await.map_err(sent)?;
            match header.kind {
                Kind::Response => Ok((payload, recv)),
                Kind::Error => Err(TransportError::Refused {
                    addr: to,
                    reason: String::from_utf8_lossy(&payload).into_owned(),
                }),
                other => Err(TransportError::Lost {
                    addr: to,
                    reason: format!("expected a response frame, got {other:?}"),
                }),
            }
        };
        tokio::time::timeout(after, exchange)
            .await
            .map_err(|_| TransportError::Timeout {
                what: "request",
                addr: to,
                after,
            })?
    }

    /// Test only: cuts this node off from `peers` (both ways), as a network partition would,
    /// or heals it with an empty list. Connections to them are closed.
    #[cfg(feature = "test-switches")]
    pub fn partition_for_tests(&self, peers: &[SocketAddr]) {
        let inner = &self.inner;
        *inner.blocked.lock().expect("not poisoned") = peers.iter().copied().collect();
        let mut cache = inner.peers.lock().expect("not poisoned");
        for p in peers {
            if let Some(Peer::Connected(c)) = cache.remove(p) {
                c.close(0u32.into(), b"partitioned");
            }
        }
    }

    /// Closes every connection and the endpoint; waits at most 2 s for peers to be told.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.cancel.cancel();
        inner.endpoint.close(0u32.into(), b"node shutting down");
        inner.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            inner.endpoint.wait_idle().await;
            inner.tasks.wait().await;
        })
        .await;
    }
}

impl Inner {
    /// The cached connection to `to`, or a new one.
    async fn connection(
        self: &Arc<Self>,
        to: SocketAddr,
    ) -> Result<quinn::Connection, TransportError> {
        if self.is_blocked(to) {
            return Err(TransportError::Connection {
                addr: to,
                reason: "cut off by a simulated partition".into(),
            });
        }
        if let Some(Peer::Connected(c)) = self.peers.lock().expect("not poisoned").get(&to)
            && c.close_reason().is_none()
        {
            return Ok(c.clone());
        }
        self.connect(to).await
    }

    /// Whether `peer` is cut off by a test's partition (never, outside tests).
    fn is_blocked(&self, peer: SocketAddr) -> bool {
        #[cfg(feature = "test-switches")]
        {
            let blocked = self.blocked.lock().expect("not poisoned");
            !blocked.is_empty() && blocked.contains(&peer)
        }
        #[cfg(not(feature = "test-switches"))]
        {
            let _ = peer;
            false
        }
    }

    /// Dials `to`, caches the connection, flushes queued gossip and serves the connection.
    async fn connect(
        self: &Arc<Self>,
        to: SocketAddr,
    ) -> Result<quinn::Connection, TransportError> {
        let after = self.config.connect_timeout;
        let dialled = async {
            let connecting = self
                .endpoint
                .connect(to, tls::SERVER_NAME)
                .map_err(|e| e.to_string())?;
            connecting.await.map_err(|e| e.to_string())
        };
        let result = tokio::select! {
            r = tokio::time::timeout(after, dialled) => r.unwrap_or_else(|_| Err(format!("no answer within {after:?}"))),
            () = self.cancel.cancelled() => Err("the transport is shut down".to_string()),
        };
        let mut peers = self.peers.lock().expect("not poisoned");
        match result {
            Ok(conn) => {
                if let Some(Peer::Connecting(queue)) = peers.remove(&to) {
                    for frame in queue {
                        let len = frame.len() - HEADER_LEN;
                        if conn.send_datagram(frame).is_ok() {
                            add(&self.stats.gossip_bytes_sent, len);
                        }
                    }
                }
                peers.insert(to, Peer::Connected(conn.clone()));
                drop(peers);
                self.tasks.spawn(serve(self.clone(), conn.clone()));
                Ok(conn)
            }
            Err(reason) => {
                if let Some(Peer::Connecting(queue)) = peers.get(&to) {
                    add(&self.stats.gossip_dropped, queue.len());
                }
                if !matches!(peers.get(&to), Some(Peer::Connected(_))) {
                    peers.insert(to, Peer::Unreachable(Instant::now() + after));
                }
                tracing::debug!(peer = %to, %reason, "connection failed");
                Err(TransportError::Connect { addr: to, reason })
            }
        }
    }

    /// Caches a connection a peer dialled, in place of any connection to that address: a peer
    /// that dials anew may be a new process on the address of one that crashed, whose old
    /// connection still looks up here until it idles out (10 s), and would swallow everything
    /// sent to the new one meanwhile. The old connection is not closed: a dead one idles out,
    /// and a live one (both sides dialled at once) finishes its requests and stays as a
    /// second connection of the pair.
    fn adopt(&self, from: SocketAddr, conn: &quinn::Connection) {
        let mut peers = self.peers.lock().expect("not poisoned");
        #[cfg(feature = "test-switches")]
        if self.config.keep_cached_connections
            && matches!(peers.get(&from), Some(Peer::Connected(c)) if c.close_reason().is_none())
        {
            return;
        }
        if let Some(Peer::Connecting(queue)) = peers.remove(&from) {
            for frame in queue {
                let _ = conn.send_datagram(frame);
            }
        }
        peers.insert(from, Peer::Connected(conn.clone()));
    }

    /// Logs a warning when this node's certificate runs out within [`EXPIRY_WARNING`].
    fn warn_if_expiring(&self) {
        let left = self.identity.expires_in();
        if left < EXPIRY_WARNING.as_secs() as i64 {
            let days = left.div_euclid(86_400);
            tracing::warn!(
                days_left = days,
                "this node's certificate runs out within 30 days (or has): renew it with `weft cluster issue DIR --node NAME`; the node takes the new files up without a restart"
            );
        }
    }

    /// Counts a refused frame and logs why.
    fn rejected(&self, from: SocketAddr, e: &FrameError) {
        add(&self.stats.frames_rejected, 1);
        tracing::debug!(peer = %from, error = %e, "frame refused");
    }
}

fn quinn_transport(config: &TransportConfig) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    let idle = quinn::IdleTimeout::try_from(config.idle_timeout)
        .unwrap_or_else(|_| quinn::IdleTimeout::from(quinn::VarInt::from_u32(10_000)));
    t.max_idle_timeout(Some(idle))
        .keep_alive_interval(Some(config.idle_timeout / 3))
        .max_concurrent_bidi_streams(quinn::VarInt::from_u32(256))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .datagram_receive_buffer_size(Some(1 << 20));
    t
}

fn quic_server(
    config: rustls::ServerConfig,
) -> Result<Arc<quinn::crypto::rustls::QuicServerConfig>, TransportError> {
    quinn::crypto::rustls::QuicServerConfig::try_from(config)
        .map(Arc::new)
        .map_err(|e| TransportError::Tls(TlsError::Rustls(rustls::Error::General(e.to_string()))))
}

fn quic_client(
    config: rustls::ClientConfig,
) -> Result<Arc<quinn::crypto::rustls::QuicClientConfig>, TransportError> {
    quinn::crypto::rustls::QuicClientConfig::try_from(config)
        .map(Arc::new)
        .map_err(|e| TransportError::Tls(TlsError::Rustls(rustls::Error::General(e.to_string()))))
}

/// Accepts connections until the endpoint closes; each handshake runs in its own task.
async fn accept_loop(inner: Arc<Inner>) {
    loop {
        let incoming = tokio::select! {
            i = inner.endpoint.accept() => i,
            () = inner.cancel.cancelled() => None,
        };
        let Some(incoming) = incoming else { return };
        let inner2 = inner.clone();
        inner.tasks.spawn(async move {
            let from = incoming.remote_address();
            if inner2.is_blocked(from) {
                incoming.ignore();
                return;
            }
            let after = inner2.config.connect_timeout;
            match tokio::time::timeout(after, incoming).await {
                Ok(Ok(conn)) => {
                    inner2.adopt(from, &conn);
                    serve(inner2, conn).await;
                }
                Ok(Err(e)) => {
                    add(&inner2.stats.handshakes_failed, 1);
                    tracing::info!(peer = %from, error = %e, "refused a connection");
                }
                Err(_) => {
                    add(&inner2.stats.handshakes_failed, 1);
                    tracing::info!(peer = %from, "handshake timed out");
                }
            }
        });
    }
}

/// Every `certificate_check_interval`, reads this node's certificate and key again and, once
/// they have changed and stayed the same for one more check (so a pair caught half-written is
/// not judged), presents them from the next handshake on, or logs why not. Warns once a day
/// while the certificate runs out within 30 days.
async fn watch_certificate(inner: Arc<Inner>, creds: Credentials) {
    let every = inner.config.certificate_check_interval;
    let mut seen: Option<blake3::Hash> = None;
    let mut judged: Option<blake3::Hash> = None;
    let mut warned = Instant::now();
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            () = inner.cancel.cancelled() => return,
        }
        if warned.elapsed() >= Duration::from_secs(86_400) {
            warned = Instant::now();
            inner.warn_if_expiring();
        }
        let new = match creds.reload() {
            Ok(new) if inner.identity.differs(&new) => new,
            // Unchanged, or unreadable for now (a file being replaced).
            _ => continue,
        };
        let fingerprint = new.fingerprint();
        if seen != Some(fingerprint) {
            seen = Some(fingerprint);
            continue;
        }
        if judged == Some(fingerprint) {
            continue;
        }
        judged = Some(fingerprint);
        match inner.identity.renew(&new) {
            Ok(not_after) => {
                inner.identity.renewed.fetch_add(1, Ordering::Relaxed);
                let until = time::OffsetDateTime::from_unix_timestamp(not_after)
                    .map_or(not_after.to_string(), |t| t.to_string());
                tracing::info!(valid_until = %until, "took up a renewed certificate; new connections present it");
                inner.warn_if_expiring();
            }
            Err(why) => {
                inner.identity.refused.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%why, "kept the current certificate: the changed certificate files were refused");
            }
        }
    }
}

/// Reads gossip and requests from one connection until it closes, then forgets it.
async fn serve(inner: Arc<Inner>, conn: quinn::Connection) {
    let from = conn.remote_address();
    let node = tls::peer_node(conn.peer_identity());
    // A node denied while this connection is open is cut off at its next frame.
    let denied = || {
        let d = inner.identity.denies(node.as_ref());
        if d {
            conn.close(DENIED, b"denied");
        }
        d
    };
    let datagrams = async {
        let mut warned = false;
        loop {
            let bytes = match conn.read_datagram().await {
                Ok(b) => b,
                Err(e) => return e,
            };
            if inner.is_blocked(from) {
                continue;
            }
            if denied() {
                continue;
            }
            match frame::decode_datagram(&bytes, inner.cluster, MAX_GOSSIP_PAYLOAD as u32 * 2) {
                Ok((h, _)) if h.kind != Kind::Gossip => {
                    inner.rejected(from, &FrameError::UnknownKind(h.kind as u8));
                }
                Ok(_) => {
                    add(&inner.stats.frames_accepted, 1);
                    add(&inner.stats.gossip_bytes_received, bytes.len() - HEADER_LEN);
                    let payload = bytes.slice(HEADER_LEN..);
                    let d = Datagram {
                        from,
                        node: node.clone(),
                        payload,
                    };
                    if inner.gossip.try_send(d).is_err() {
                        add(&inner.stats.gossip_dropped, 1);
                    }
                }
                Err(e) => {
                    if let FrameError::UnknownVersion { theirs } = e
                        && !warned
                    {
                        // Once per connection: a peer of another version is an operator's
                        // problem to see, not a reason to flood the log.
                        warned = true;
                        tracing::warn!(peer = %from, theirs, ours = PROTOCOL_VERSION, "a peer speaks another protocol version; its gossip is ignored until both run the same version");
                    }
                    inner.rejected(from, &e);
                }
            }
        }
    };
    let streams = async {
        loop {
            match conn.accept_bi().await {
                Ok((send, recv)) => {
                    if !inner.is_blocked(from) && !denied() {
                        let caller = Caller {
                            addr: from,
                            node: node.clone(),
                        };
                        inner.tasks.spawn(answer(inner.clone(), caller, send, recv));
                    }
                }
                Err(e) => return e,
            }
        }
    };
    let reason = tokio::select! {
        e = datagrams => e,
        e = streams => e,
        () = inner.cancel.cancelled() => return,
    };
    tracing::debug!(peer = %from, %reason, "connection closed");
    let mut peers = inner.peers.lock().expect("not poisoned");
    if matches!(peers.get(&from), Some(Peer::Connected(c)) if c.stable_id() == conn.stable_id()) {
        peers.remove(&from);
    }
}
