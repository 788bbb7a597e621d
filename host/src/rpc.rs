//! The router of node-to-node requests: it knows service tags, not services.
//!
//! Each service owns its wire messages (a type implementing [`Wire`], in its own `wire.rs`)
//! with a tag and a version of its own, and registers a handler with the [`Router`] when the
//! node starts. A request's payload is the service's tag, its version, and the postcard
//! encoding of its request; the answer is the postcard encoding of its response, or an error
//! frame saying what was wrong. Adding a service adds its files and one registration line in
//! `node.rs`; nothing here changes.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::transport::{Caller, Reply, Service, Transport, TransportError};
pub use crate::transport::{PieceStream, Pieces};

/// The messages of one service.
pub trait Wire: Send + Sync + 'static {
    /// The service's name, for errors.
    const NAME: &'static str;
    /// The byte that routes a request to the service; unique per node.
    const TAG: u8;
    /// The version of these messages: a node refuses requests of another version with an
    /// error that names both.
    const VERSION: u8;
    /// What callers send.
    type Request: Serialize + DeserializeOwned + Send + 'static;
    /// What the service answers.
    type Response: Serialize + DeserializeOwned + Send + 'static;
}

/// The payload of a request of service `W`.
pub fn encode_request<W: Wire>(request: &W::Request) -> Vec<u8> {
    let payload = vec![W::TAG, W::VERSION];
    postcard::to_extend(request, payload).expect("requests always encode")
}

/// Decodes the answer to a request of service `W`.
pub fn decode_response<W: Wire>(bytes: &[u8]) -> Result<W::Response, String> {
    postcard::from_bytes(bytes)
        .map_err(|e| format!("malformed answer from the {} service: {e}", W::NAME))
}

/// Sends `request` to the `W` service of the node at `to`, within the transport's
/// `rpc_timeout`, and decodes the answer.
pub async fn call<W: Wire>(
    transport: &Transport,
    to: SocketAddr,
    request: &W::Request,
) -> Result<W::Response, TransportError> {
    call_within::<W>(transport, to, request, transport.rpc_timeout()).await
}

/// [`call`] with a deadline of its own (for requests whose work takes longer than an RPC).
pub async fn call_within<W: Wire>(
    transport: &Transport,
    to: SocketAddr,
    request: &W::Request,
    within: Duration,
) -> Result<W::Response, TransportError> {
    Ok(call_sized::<W>(transport, to, request, within).await?.0)
}

/// The bytes of one call's payloads: the request sent and the answer received (frame
/// headers, QUIC and TLS not counted).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Payloads {
    /// The request's payload.
    pub sent: u64,
    /// The answer's payload.
    pub received: u64,
}

/// [`call_within`], also telling the size of the request and of the answer.
pub async fn call_sized<W: Wire>(
    transport: &Transport,
    to: SocketAddr,
    request: &W::Request,
    within: Duration,
) -> Result<(W::Response, Payloads), TransportError> {
    let payload = encode_request::<W>(request);
    let answer = transport.rpc_within(to, &payload, within).await?;
    let sized = Payloads {
        sent: payload.len() as u64,
        received: answer.len() as u64,
    };
    Ok((answer_from::<W>(to, &answer)?, sized))
}

/// Sends `request` to the `W` service of the node at `to`, whose answer is a head followed by
/// pieces ([`Router::register_streaming`]): the head within `within`, each piece within the
/// transport's `rpc_timeout` of the one before.
pub async fn open<W: Wire>(
    transport: &Transport,
    to: SocketAddr,
    request: &W::Request,
    within: Duration,
) -> Result<(W::Response, Pieces), TransportError> {
    let (head, pieces) = transport
        .rpc_stream(to, &encode_request::<W>(request), within)
        .await?;
    Ok((answer_from::<W>(to, &head)?, pieces))
}

/// Decodes an answer of `W` from the node at `to`; a malformed one fails its connection.
fn answer_from<W: Wire>(to: SocketAddr, bytes: &[u8]) -> Result<W::Response, TransportError> {
    decode_response::<W>(bytes).map_err(|reason| TransportError::Connection { addr: to, reason })
}

/// Answers one request of a service; an `Err` goes back to the caller as an error frame.
type Handler =
    Arc<dyn Fn(Caller, &[u8]) -> BoxFuture<'static, Result<Reply, String>> + Send + Sync>;

/// Hands each request to the service its tag names.
#[derive(Default)]
pub struct Router {
    handlers: RwLock<HashMap<u8, (&'static str, u8, Handler)>>,
}

impl Router {
    /// A router with no service yet: requests are refused until their service registers.
    pub fn new() -> Arc<Self> {
        Arc::new(Router::default())
    }

    /// Serves the requests of `W` with `handle`.
    ///
    /// # Panics
    ///
    /// If another service registered the same tag: tags are fixed in the code.
    pub fn register<W, F>(&self, handle: F)
    where
        W: Wire,
        F: Fn(Caller, W::Request) -> BoxFuture<'static, Result<W::Response, String>>
            + Send
            + Sync
            + 'static,
    {
        self.add::<W, _>(move |caller, request| {
            handle(caller, request)
                .map(|answer| Ok(Reply::Whole(encode::<W>(&answer?)?)))
                .boxed()
        });
    }

    /// Serves the requests of `W` with `handle`, whose answer is a head and then pieces
    /// (bulk data: no frame holds more than a piece). Callers use [`open`].
    ///
    /// # Panics
    ///
    /// If another service registered the same tag.
    pub fn register_streaming<W, F>(&self, handle: F)
    where
        W: Wire,
        F: Fn(Caller, W::Request) -> BoxFuture<'static, Result<(W::Response, PieceStream), String>>
            + Send
            + Sync
            + 'static,
    {
        self.add::<W, _>(move |caller, request| {
            handle(caller, request)
                .map(|answer| {
                    let (head, pieces) = answer?;
                    Ok(Reply::Streamed(encode::<W>(&head)?, pieces))
                })
                .boxed()
        });
    }

    fn add<W, F>(&self, handle: F)
    where
        W: Wire,
        F: Fn(Caller, W::Request) -> BoxFuture<'static, Result<Reply, String>>
            + Send
            + Sync
            + 'static,
    {
        let handler: Handler = Arc::new(move |caller, payload: &[u8]| {
            match postcard::from_bytes::<W::Request>(payload) {
                Ok(request) => handle(caller, request),
                Err(e) => {
                    let e = format!(
                        "malformed {} request ({} bytes): {e}",
                        W::NAME,
                        payload.len()
                    );
                    async move { Err(e) }.boxed()
                }
            }
        });
        let old = self
            .handlers
            .write()
            .expect("not poisoned")
            .insert(W::TAG, (W::NAME, W::VERSION, handler));
        assert!(old.is_none(), "two services registered tag {}", W::TAG);
    }

    /// Drops every handler (the node stops): later requests are refused. Handlers hold their
    /// services, which hold the transport, which holds this router: dropping them here
    /// breaks that cycle.
    pub fn close(&self) {
        self.handlers.write().expect("not poisoned").clear();
    }
}

impl Service for Router {
    fn call(&self, from: Caller, request: Bytes) -> BoxFuture<'static, Result<Reply, String>> {
        let refuse = |e: String| async move { Err(e) }.boxed();
        let [tag, version, payload @ ..] = &request[..] else {
            return refuse(format!(
                "malformed request ({} bytes): no service tag",
                request.len()
            ));
        };
        let handlers = self.handlers.read().expect("not poisoned");
        match handlers.get(tag) {
            None => refuse(format!(
                "no service with tag {tag} on this node (it may be starting or stopping, or of another version)"
            )),
            Some((name, ours, _)) if ours != version => refuse(format!(
                "the {name} service here speaks version {ours}, and this request version {version}: run the same Weft version on every node"
            )),
            Some((_, _, handle)) => handle(from, payload),
        }
    }
}

/// The postcard encoding of a response of `W`.
fn encode<W: Wire>(response: &W::Response) -> Result<Bytes, String> {
    postcard::to_stdvec(response)
        .map(Bytes::from)
        .map_err(|e| format!("encoding the answer: {e}"))
}
