//! Node-to-node requests carried by the transport's RPC streams, and the service answering
//! them. Payloads are postcard-encoded; the frame header around them carries the protocol
//! version, so a change here that is not backward compatible bumps `PROTOCOL_VERSION`.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::id::NodeId;
use crate::membership::{Membership, SyncMember};
use crate::transport::{Service, Transport, TransportError};

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Are you there? The membership layer's direct check of a suspect, telling it the
    /// incarnation it is suspected at, so it can refute at once.
    Ping { suspected: Option<u16> },
    /// Here are the members I know; which do you know? (Full-state exchange.)
    Sync(Vec<SyncMember>),
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
    /// Yes: my name, and my incarnation (raised past the suspicion, if there was one).
    Pong { node: NodeId, incarnation: u16 },
    /// The members the answering node knows.
    Members(Vec<SyncMember>),
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
    membership: OnceLock<Membership>,
}

impl Dispatcher {
    /// The service of the node named `node`; membership requests are answered once
    /// [`Dispatcher::set_membership`] is called.
    pub fn new(node: NodeId) -> Arc<Self> {
        Arc::new(Dispatcher {
            node,
            membership: OnceLock::new(),
        })
    }

    /// Connects the membership task (started after the transport, which needs this service).
    pub fn set_membership(&self, membership: Membership) {
        let _ = self.membership.set(membership);
    }
}

impl Service for Dispatcher {
    fn call(&self, _from: SocketAddr, request: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let request = match postcard::from_bytes::<Request>(&request) {
            Ok(r) => r,
            Err(e) => {
                let e = format!("malformed request ({} bytes): {e}", request.len());
                return async move { Err(e) }.boxed();
            }
        };
        let node = self.node.clone();
        let membership = self.membership.get().cloned();
        async move {
            let response = match request {
                Request::Ping { suspected } => {
                    let incarnation = match (suspected, membership) {
                        (Some(inc), Some(m)) => m.suspected(inc).await.unwrap_or(0),
                        _ => 0,
                    };
                    Response::Pong { node, incarnation }
                }
                Request::Sync(theirs) => {
                    let membership = membership.ok_or("membership is not running yet")?;
                    let ours = membership
                        .exchange(theirs)
                        .await
                        .ok_or("membership is shutting down")?;
                    Response::Members(ours)
                }
            };
            postcard::to_stdvec(&response)
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
