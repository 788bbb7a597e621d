//! Node-to-node requests carried by the transport's RPC streams, and the service answering
//! them. Payloads are postcard-encoded; the frame header around them carries the protocol
//! version, so a change here that is not backward compatible bumps `PROTOCOL_VERSION`.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use futures::FutureExt;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::functions::Functions;
use crate::id::{Digest, FunctionName, NodeId};
use crate::membership::{Membership, SyncMember};
use crate::replication::{
    CasFailure, Entry, Expect, Leaves, Namespace, Overrides, PutOutcome, Replicator, Version,
};
use crate::transport::{Caller, Service, Transport, TransportError};

/// A request from one node to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Are you there? The membership layer's direct check of a suspect, telling it the
    /// incarnation it is suspected at, so it can refute at once.
    Ping { suspected: Option<u16> },
    /// Here are the members I know; which do you know? (Full-state exchange.)
    Sync(Vec<SyncMember>),
    /// Your copy of a key.
    KvGet { key: Vec<u8> },
    /// Store this version of a key if it is newer; flush, then answer.
    KvPut { key: Vec<u8>, entry: Entry },
    /// Store the newer of these entries and flush (repair, hints, anti-entropy, handoff).
    KvPush(Vec<(Vec<u8>, Entry)>),
    /// Your copies of these keys (the ones you hold).
    KvFetch(Vec<Vec<u8>>),
    /// Drop these keys if you still hold exactly their tombstone of that version.
    KvPurge(Vec<(Vec<u8>, Version)>),
    /// Your entries (tombstones too) whose keys start with `prefix`, from `start` on.
    KvScan {
        prefix: Vec<u8>,
        start: Vec<u8>,
        limit: u32,
    },
    /// Anti-entropy: the leaves of the tree over the keys we both should hold, as I see it.
    AeLeaves { from: NodeId, leaves: Leaves },
    /// Up to `len` bytes of a module you hold, from `offset`.
    ModuleRead {
        digest: Digest,
        offset: u64,
        len: u32,
    },
    /// Store this module: fetch it from `from` unless you hold a good copy.
    ModuleOffer {
        digest: Digest,
        size: u64,
        from: NodeId,
    },
    /// Run this HTTP request: you own its key.
    Invoke(Forwarded),
    /// Coordinate this conditional write: you are the key's primary.
    KvCas {
        ns: Namespace,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        expect: Expect,
        w: Option<u8>,
        settle_ms: Option<u64>,
    },
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
    /// A replica's copy of a key.
    KvEntry(Option<Entry>),
    /// What a replica did with a write.
    KvPut(PutOutcome),
    /// The entries held of the keys asked for, and how many of the keys the answer covers
    /// (the rest did not fit: ask again).
    KvFetched {
        entries: Vec<(Vec<u8>, Entry)>,
        consumed: u32,
    },
    /// A page of a replica's entries, and whether more follow.
    KvScanned {
        entries: Vec<(Vec<u8>, Entry)>,
        more: bool,
    },
    /// Done (stored and flushed).
    Done,
    /// The answer to a forwarded request.
    Invoked(ForwardedAnswer),
    /// A piece of a module and its total size, or `None` when it is not held.
    ModuleBytes(Option<(u64, Vec<u8>)>),
    /// The outcome of a conditional write coordinated by the primary.
    KvCas(Result<Version, CasFailure>),
    /// Anti-entropy: the ranges where our trees differ, and my versions of the keys in them.
    AeDiff {
        differing: Vec<u16>,
        have: Vec<(Vec<u8>, Version)>,
    },
}

impl Response {
    /// Decodes a response payload.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("malformed response: {e}"))
    }
}

/// An HTTP request forwarded to the node that owns its key.
#[derive(Debug, Serialize, Deserialize)]
pub struct Forwarded {
    /// The function.
    pub function: FunctionName,
    /// The HTTP method.
    pub method: String,
    /// The path below the function, with the query.
    pub target: String,
    /// The request's headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The request's body.
    pub body: Vec<u8>,
}

/// The answer of a forwarded request, whole.
#[derive(Debug, Serialize, Deserialize)]
pub struct ForwardedAnswer {
    /// The HTTP status.
    pub status: u16,
    /// The response's headers.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The response's body.
    pub body: Vec<u8>,
}

/// Runs forwarded requests (the HTTP API implements it).
pub trait Invoker: Send + Sync + 'static {
    /// Runs one request here and answers with the whole response (errors included).
    fn invoke(&self, request: Forwarded) -> BoxFuture<'static, ForwardedAnswer>;
}

/// Answers requests for this node.
pub struct Dispatcher {
    node: NodeId,
    hooks: RwLock<Hooks>,
}

/// The services requests are handed to, connected as the node starts and dropped when it
/// stops (they hold the transport, which holds this: dropping them breaks the cycle).
#[derive(Default, Clone)]
struct Hooks {
    membership: Option<Membership>,
    replication: Option<Replicator>,
    functions: Option<Functions>,
    invoker: Option<Arc<dyn Invoker>>,
}

impl Dispatcher {
    /// The service of the node named `node`; each kind of request is answered once its
    /// service is connected.
    pub fn new(node: NodeId) -> Arc<Self> {
        Arc::new(Dispatcher {
            node,
            hooks: RwLock::default(),
        })
    }

    fn hooks(&self) -> std::sync::RwLockWriteGuard<'_, Hooks> {
        self.hooks.write().expect("not poisoned")
    }

    /// Connects the membership task (started after the transport, which needs this service).
    pub fn set_membership(&self, membership: Membership) {
        self.hooks().membership = Some(membership);
    }

    /// Connects the HTTP API, which runs forwarded requests.
    pub fn set_invoker(&self, invoker: Arc<dyn Invoker>) {
        self.hooks().invoker = Some(invoker);
    }

    /// Connects the function registry (started after replication).
    pub fn set_functions(&self, functions: Functions) {
        self.hooks().functions = Some(functions);
    }

    /// Connects the replicator (started after membership).
    pub fn set_replication(&self, replication: Replicator) {
        self.hooks().replication = Some(replication);
    }

    /// Disconnects every service (the node stops): later requests are refused.
    pub fn detach(&self) {
        *self.hooks() = Hooks::default();
    }
}

impl Service for Dispatcher {
    fn call(&self, from: Caller, request: Bytes) -> BoxFuture<'static, Result<Bytes, String>> {
        let request = match postcard::from_bytes::<Request>(&request) {
            Ok(r) => r,
            Err(e) => {
                let e = format!("malformed request ({} bytes): {e}", request.len());
                return async move { Err(e) }.boxed();
            }
        };
        let node = self.node.clone();
        let Hooks {
            membership,
            replication,
            functions,
            invoker,
        } = self.hooks.read().expect("not poisoned").clone();
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
                    let ours = membership.exchange(theirs, from).await?;
                    Response::Members(ours)
                }
                Request::ModuleRead {
                    digest,
                    offset,
                    len,
                } => {
                    let f = functions.ok_or("the function registry is not running yet")?;
                    Response::ModuleBytes(
                        f.read_range(digest, offset, len)
                            .map_err(|e| e.to_string())?,
                    )
                }
                Request::Invoke(forwarded) => {
                    let invoker = invoker.ok_or("the HTTP API is not running yet")?;
                    Response::Invoked(invoker.invoke(forwarded).await)
                }
                Request::ModuleOffer { digest, from, .. } => {
                    let f = functions.ok_or("the function registry is not running yet")?;
                    f.take_offer(digest, from)
                        .await
                        .map_err(|e| e.to_string())?;
                    Response::Done
                }
                kv => {
                    let r = replication.ok_or("replication is not running yet")?;
                    serve_kv(&r, kv).await.map_err(|e| e.to_string())?
                }
            };
            postcard::to_stdvec(&response)
                .map(Bytes::from)
                .map_err(|e| format!("encoding the response: {e}"))
        }
        .boxed()
    }
}

/// Answers a key-value or anti-entropy request from this node's copies.
async fn serve_kv(
    r: &Replicator,
    request: Request,
) -> Result<Response, crate::replication::ReplicationError> {
    Ok(match request {
        Request::KvGet { key } => Response::KvEntry(r.local_get(&key)?),
        Request::KvPut { key, entry } => {
            if key.len() > crate::replication::MAX_KEY
                || entry
                    .value
                    .as_ref()
                    .is_some_and(|v| v.len() > crate::replication::MAX_VALUE)
            {
                return Err(crate::replication::ReplicationError::BadInput(format!(
                    "a key of {} bytes or its value is over the limits",
                    key.len()
                )));
            }
            Response::KvPut(r.apply(&key, &entry).await?)
        }
        Request::KvPush(entries) => {
            r.apply_all(entries).await?;
            Response::Done
        }
        Request::KvPurge(keys) => {
            r.purge(&keys).await;
            Response::Done
        }
        Request::KvFetch(keys) => {
            // As many as fit one answer, in order; the caller asks again for the rest.
            let (mut out, mut size, mut consumed) = (Vec::new(), 0, 0u32);
            for k in keys {
                if size > crate::replication::ANSWER_BYTES {
                    break;
                }
                consumed += 1;
                if let Some(e) = r.local_get(&k)? {
                    size += k.len() + e.value.as_ref().map_or(0, Vec::len);
                    out.push((k, e));
                }
            }
            Response::KvFetched {
                entries: out,
                consumed,
            }
        }
        Request::KvScan {
            prefix,
            start,
            limit,
        } => {
            let (entries, more) = r.local_scan(&prefix, &start, limit.min(100_000) as usize)?;
            Response::KvScanned { entries, more }
        }
        Request::KvCas {
            ns,
            key,
            value,
            expect,
            w,
            settle_ms,
        } => {
            let full = ns.key(&key);
            if full.len() > crate::replication::MAX_KEY
                || value
                    .as_ref()
                    .is_some_and(|v| v.len() > crate::replication::MAX_VALUE)
            {
                return Err(crate::replication::ReplicationError::BadInput(
                    "the key or value is over the limits".into(),
                ));
            }
            let o = Overrides {
                r: None,
                w,
                settle: settle_ms.map(std::time::Duration::from_millis),
            };
            Response::KvCas(
                r.conditional_here(&ns, &full, value, expect, o)
                    .await
                    .map_err(CasFailure::from),
            )
        }
        Request::AeLeaves { from, leaves } => {
            let (differing, have) = r.answer_leaves(from, leaves).await?;
            Response::AeDiff { differing, have }
        }
        Request::Ping { .. }
        | Request::Sync(_)
        | Request::ModuleRead { .. }
        | Request::ModuleOffer { .. }
        | Request::Invoke(_) => {
            return Err(crate::replication::ReplicationError::BadInput(
                "a membership or module request reached the key-value service".into(),
            ));
        }
    })
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
