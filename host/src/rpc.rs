//! Node-to-node requests carried by the transport's RPC streams, and the service answering
//! them. Payloads are postcard-encoded; the frame header around them carries the protocol
//! version, so a change here that is not backward compatible bumps `PROTOCOL_VERSION`.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::transport::{Service, Transport, TransportError};

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Are you there? (The membership layer's direct check of a suspect.)
    Ping,
}

impl Request {
    /// The request's payload bytes.
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("requests always encode")
    }
}

/// The answer to a [`Request`].
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// Yes, and this is my name.
    Pong { node: NodeId },
}

impl Response {
    /// Decodes a response payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("malformed response: {e}"))
    }
}

/// Answers requests for this node.
pub struct Dispatcher {
    node: NodeId,
}

impl Dispatcher {
    /// The service of the node named `node`.
    pub fn new(node: NodeId) -> Arc<Self> {
        Arc::new(Dispatcher { node })
    }
}

impl Service for Dispatcher {
    fn call(&self, _from: SocketAddr, request: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let response = match postcard::from_bytes::<Request>(&request) {
            Ok(Request::Ping) => Ok(Response::Pong {
                node: self.node.clone(),
            }),
            Err(e) => Err(format!("malformed request ({} bytes): {e}", request.len())),
        };
        async move {
            let r = response?;
            postcard::to_stdvec(&r)
                .map(Bytes::from)
                .map_err(|e| format!("encoding the response: {e}"))
        }
        .boxed()
    }
}

/// Sends `request` to `to` and decodes the answer.
pub async fn call(
    transport: &Transport,
    to: SocketAddr,
    request: &Request,
) -> Result<Response, TransportError> {
    let answer = transport.rpc(to, &request.encode()).await?;
    Response::decode(&answer).map_err(|reason| TransportError::Connection { addr: to, reason })
}
