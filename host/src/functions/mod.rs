//! The function registry every node knows, and module distribution.
//!
//! Function records live in the replicated store, in the namespace `sys.functions`, which is
//! replicated to every node (N = the cluster's size), so any node can resolve any function
//! from its own copy. Registry changes are conditional writes (read, change, write if the
//! version is unchanged), acknowledged by two nodes.
//!
//! Module bytes are content-addressed: an upload is stored on the node that took it and on
//! the digest's replicas on the ring (3), and acknowledged once two nodes have flushed it.
//! A node asked to run a function whose module it does not hold fetches it, in 4 MiB
//! pieces, from the digest's replicas and then any other node, checks the blake3 digest of
//! the whole, and keeps it. A copy that fails the check is skipped, counted, and replaced on
//! the peer that held it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub mod wire;

use crate::id::{Digest, FunctionName, NodeId};
use crate::replication::{
    Expect, Namespace, Overrides, Quorum, ReplicationError, Replicator, Version,
};
use crate::rpc::{self, Router};
use crate::store::{Deployment, FunctionRecord, Store, StoreError};
use wire::{ModulesWire, Request, Response};

/// The namespace of function records.
pub const NAMESPACE: &str = "sys.functions";

/// Copies of each module placed on the ring.
const MODULE_REPLICAS: usize = 3;
/// Copies flushed before an upload is acknowledged.
const MODULE_WRITE: usize = 2;
/// Bytes of a module per RPC.
const CHUNK: usize = 4 << 20;
/// How long a registry change waits, after its quorum, for every other node to take it.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);
/// How long a replica may take to pull an offered module (up to 50 MiB, in pieces).
const OFFER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);
/// Attempts of a registry change that keeps losing to concurrent changes.
const UPDATE_ATTEMPTS: usize = 16;

/// The quorum of the registry: every node holds it; two acknowledge a change.
pub fn registry_quorum() -> Quorum {
    Quorum::new(u8::MAX, 1, 2).expect("valid")
}

/// Why a registry or module operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    /// Rollback with no earlier version, no such function, or a corrupt local record.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The replicated store refused or could not complete the operation.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// No function with that name.
    #[error("no function named `{0}`")]
    NoFunction(FunctionName),
    /// No node could provide the module's bytes.
    #[error("module {digest} could not be fetched from any node: {tried}")]
    ModuleUnavailable {
        /// The module.
        digest: Digest,
        /// What each node said.
        tried: String,
    },
    /// Too few nodes stored an upload.
    #[error(
        "module {digest} was stored on {got} of the {needed} nodes needed ({failures}); try again when more nodes are up"
    )]
    ModuleNotReplicated {
        /// The module.
        digest: Digest,
        /// Copies flushed.
        got: usize,
        /// Copies needed.
        needed: usize,
        /// What the others said.
        failures: String,
    },
}

/// Counters of module distribution.
#[derive(Debug, Default)]
pub struct ModuleStats {
    /// Modules fetched from other nodes.
    pub fetched: AtomicU64,
    /// Copies received from other nodes that did not match their digest.
    pub corrupt: AtomicU64,
}

impl ModuleStats {
    /// Appends module distribution's metrics.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{Kind, single};
        for (name, help, c) in [
            (
                "weft_modules_fetched_total",
                "Modules fetched from other nodes.",
                &self.fetched,
            ),
            (
                "weft_modules_corrupt_total",
                "Module copies from other nodes that did not match their digest.",
                &self.corrupt,
            ),
        ] {
            single(out, name, Kind::Counter, help, c.load(Ordering::Relaxed));
        }
    }
}

/// The registry and module distribution of this node. Cheap to clone.
#[derive(Clone)]
pub struct Functions {
    inner: Arc<Inner>,
}

struct Inner {
    replication: Replicator,
    store: Store,
    ns: Namespace,
    /// One fetch at a time per module: concurrent first calls of a function fetch it once.
    fetching: std::sync::Mutex<std::collections::HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    stats: ModuleStats,
}

impl Functions {
    /// The registry on top of `replication`.
    pub fn new(replication: Replicator, store: Store) -> Self {
        Functions {
            inner: Arc::new(Inner {
                replication,
                store,
                ns: NAMESPACE.parse().expect("a valid namespace"),
                fetching: Default::default(),
                stats: ModuleStats::default(),
            }),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &ModuleStats {
        &self.inner.stats
    }

    /// The version of this node's own copy of `name`'s record (a deletion too), if any:
    /// cheap, for checking a cached deployment.
    pub fn local_version(&self, name: &FunctionName) -> Result<Option<Version>, FunctionsError> {
        Ok(self
            .inner
            .replication
            .local_entry(&self.inner.ns, name.as_str().as_bytes())?
            .map(|e| e.version))
    }

    /// `name`'s record and its version: this node's copy, or the cluster's when it has none.
    pub async fn record(
        &self,
        name: &FunctionName,
    ) -> Result<Option<(FunctionRecord, Version)>, FunctionsError> {
        let key = name.as_str().as_bytes();
        let r = &self.inner.replication;
        if let Some(entry) = r.local_entry(&self.inner.ns, key)? {
            return match entry.value {
                Some(v) => Ok(Some((FunctionRecord::decode(&v)?, entry.version))),
                None => Ok(None),
            };
        }
        match r.get(&self.inner.ns, key, Overrides::default()).await? {
            Some(read) => Ok(Some((FunctionRecord::decode(&read.value)?, read.version))),
            None => Ok(None),
        }
    }

    /// Every function, by name.
    pub async fn list(&self) -> Result<Vec<FunctionRecord>, FunctionsError> {
        let mut records = Vec::new();
        let mut start = Vec::new();
        loop {
            let page = self
                .inner
                .replication
                .scan(&self.inner.ns, b"", &start, 1000)
                .await?;
            if !page.missing.is_empty() {
                tracing::debug!(missing = ?page.missing, "some nodes did not answer the function listing");
            }
            for (_, read) in page.entries {
                records.push(FunctionRecord::decode(&read.value)?);
            }
            match page.next {
                Some(next) => start = next,
                None => return Ok(records),
            }
        }
    }

    /// Stores `bytes` on the digest's replicas, then makes `deployment` current for `name`.
    pub async fn deploy(
        &self,
        name: &FunctionName,
        deployment: Deployment,
        bytes: &[u8],
    ) -> Result<FunctionRecord, FunctionsError> {
        self.distribute(bytes).await?;
        self.update(name, |old| {
            Ok(Some(FunctionRecord::deployed(
                old,
                name,
                deployment.clone(),
            )))
        })
        .await
        .map(|r| r.expect("a deploy stores a record"))
    }

    /// Makes the previous deployment of `name` current again.
    pub async fn rollback(&self, name: &FunctionName) -> Result<FunctionRecord, FunctionsError> {
        self.update(name, |old| {
            let old = old.ok_or_else(|| FunctionsError::NoFunction(name.clone()))?;
            Ok(Some(old.rolled_back()?))
        })
        .await
        .map(|r| r.expect("a rollback stores a record"))
    }

    /// Removes a function from the registry (its modules and key-value data stay).
    pub async fn delete(&self, name: &FunctionName) -> Result<(), FunctionsError> {
        self.update(name, |old| match old {
            Some(_) => Ok(None),
            None => Err(FunctionsError::NoFunction(name.clone())),
        })
        .await
        .map(|_| ())
    }

    /// Read, change, and write back if nobody changed it meanwhile; retried on conflict.
    async fn update(
        &self,
        name: &FunctionName,
        change: impl Fn(Option<FunctionRecord>) -> Result<Option<FunctionRecord>, FunctionsError>,
    ) -> Result<Option<FunctionRecord>, FunctionsError> {
        let r = &self.inner.replication;
        let key = name.as_str().as_bytes();
        let quorum = Overrides {
            r: Some(2),
            w: Some(2),
            settle: Some(SETTLE),
        };
        let mut last = None;
        for _ in 0..UPDATE_ATTEMPTS {
            let read = r.get(&self.inner.ns, key, quorum).await?;
            let (old, expect) = match read {
                Some(read) => (
                    Some(FunctionRecord::decode(&read.value)?),
                    Expect::Version(read.version),
                ),
                None => (None, Expect::Absent),
            };
            let new = change(old)?;
            let value = new.as_ref().map(FunctionRecord::encode);
            match r
                .put(&self.inner.ns, key, value, Some(expect), quorum)
                .await
            {
                Ok(_) => return Ok(new),
                Err(e @ ReplicationError::Conflict { .. }) => last = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        Err(last.expect("attempts were made").into())
    }

    /// Stores a module here and on its replicas; acknowledged once two nodes hold it.
    async fn distribute(&self, bytes: &[u8]) -> Result<Digest, FunctionsError> {
        let digest = self.inner.store.put_module(bytes).await?;
        let r = &self.inner.replication;
        let view = r.view();
        let me = r.me().clone();
        let owners = view.ring.replicas(digest.as_bytes(), MODULE_REPLICAS);
        let offers = owners.iter().filter(|o| **o != me).map(|owner| {
            let request = Request::ModuleOffer {
                digest,
                size: bytes.len() as u64,
                from: me.clone(),
            };
            let addr = view.addrs.get(owner).copied();
            async move {
                let Some(addr) = addr else {
                    return Err(format!("{owner}: no address known"));
                };
                // The replica pulls the module piece by piece before it answers.
                let within = OFFER_TIMEOUT;
                let answer =
                    rpc::call_within::<ModulesWire>(r.transport(), addr, &request, within).await;
                match answer {
                    Ok(Response::Done) => Ok(()),
                    Ok(other) => Err(format!("{owner}: unexpected answer {other:?}")),
                    Err(e) => Err(format!("{owner}: {e}")),
                }
            }
        });
        let results = futures::future::join_all(offers).await;
        let got = 1 + results.iter().filter(|r| r.is_ok()).count();
        let needed = view.cap(MODULE_WRITE);
        if got < needed {
            let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
            return Err(FunctionsError::ModuleNotReplicated {
                digest,
                got,
                needed,
                failures: failures.join("; "),
            });
        }
        Ok(digest)
    }

    /// A module's bytes, verified: this node's copy, or fetched from another node.
    pub async fn module(&self, digest: Digest) -> Result<Vec<u8>, FunctionsError> {
        match self.inner.store.module(digest) {
            Ok(bytes) => return Ok(bytes),
            Err(StoreError::NoModule(_)) => {}
            Err(StoreError::DigestMismatch(..)) => {
                tracing::warn!(%digest, "the local copy of a module is corrupt; fetching it again");
            }
            Err(e) => return Err(e.into()),
        }
        let lock = {
            let mut fetching = self.inner.fetching.lock().expect("not poisoned");
            fetching.retain(|_, l| Arc::strong_count(l) > 1);
            fetching.entry(digest).or_default().clone()
        };
        let _turn = lock.lock().await;
        if let Ok(bytes) = self.inner.store.module(digest) {
            return Ok(bytes);
        }
        let r = &self.inner.replication;
        let view = r.view();
        let me = r.me().clone();
        let mut candidates = view.ring.replicas(digest.as_bytes(), MODULE_REPLICAS);
        for n in view.ring.nodes() {
            if !candidates.contains(&n) {
                candidates.push(n);
            }
        }
        let mut tried = Vec::new();
        let mut corrupt_at = Vec::new();
        for node in candidates.into_iter().filter(|n| *n != me) {
            let Some(addr) = view.addrs.get(&node).copied() else {
                continue;
            };
            match fetch_from(r, addr, digest).await {
                Ok(bytes) => {
                    self.inner.store.put_module(&bytes).await?;
                    self.inner.stats.fetched.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%digest, from = %node, bytes = bytes.len(), "fetched a module");
                    for bad in corrupt_at {
                        self.repair(bad, digest, bytes.len() as u64);
                    }
                    return Ok(bytes);
                }
                Err(Fetch::Corrupt(actual)) => {
                    self.inner.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%digest, from = %node, %actual, "a node's copy of a module does not match its digest; trying another");
                    tried.push(format!(
                        "{node}: corrupt copy (hashes to {})",
                        actual.short()
                    ));
                    corrupt_at.push(node);
                }
                Err(Fetch::Failed(e)) => tried.push(format!("{node}: {e}")),
            }
        }
        Err(FunctionsError::ModuleUnavailable {
            digest,
            tried: if tried.is_empty() {
                "no other node is up".into()
            } else {
                tried.join("; ")
            },
        })
    }

    /// Offers this node's good copy to a node found holding a corrupt one.
    fn repair(&self, node: NodeId, digest: Digest, size: u64) {
        let r = self.inner.replication.clone();
        self.inner.replication.tasks().spawn(async move {
            let Some(addr) = r.view().addrs.get(&node).copied() else {
                return;
            };
            let request = Request::ModuleOffer {
                digest,
                size,
                from: r.me().clone(),
            };
            match rpc::call::<ModulesWire>(r.transport(), addr, &request).await {
                Ok(_) => tracing::info!(%node, %digest, "replaced a corrupt module copy"),
                Err(e) => {
                    tracing::warn!(%node, %digest, error = %e, "could not repair a module copy")
                }
            }
        });
    }

    /// Answers other nodes' module requests.
    pub fn serve(&self, router: &Router) {
        use futures::FutureExt;
        let this = self.clone();
        router.register::<ModulesWire, _>(move |_, request| {
            let f = this.clone();
            async move {
                Ok(match request {
                    Request::ModuleRead {
                        digest,
                        offset,
                        len,
                    } => Response::ModuleBytes(
                        f.read_range(digest, offset, len)
                            .map_err(|e| e.to_string())?,
                    ),
                    Request::ModuleOffer { digest, from, .. } => {
                        f.take_offer(digest, from)
                            .await
                            .map_err(|e| e.to_string())?;
                        Response::Done
                    }
                })
            }
            .boxed()
        });
    }

    /// Serves a piece of a stored module to a peer.
    pub fn read_range(
        &self,
        digest: Digest,
        offset: u64,
        len: u32,
    ) -> Result<Option<(u64, Vec<u8>)>, FunctionsError> {
        Ok(self
            .inner
            .store
            .module_range(digest, offset, (len as usize).min(CHUNK))?)
    }

    /// A peer offers a module: fetch it from that peer unless a good copy is here already.
    pub async fn take_offer(&self, digest: Digest, from: NodeId) -> Result<(), FunctionsError> {
        if self.inner.store.module(digest).is_ok() {
            return Ok(());
        }
        let r = &self.inner.replication;
        let addr = r.view().addrs.get(&from).copied().ok_or_else(|| {
            FunctionsError::ModuleUnavailable {
                digest,
                tried: format!("{from}: no address known"),
            }
        })?;
        match fetch_from(r, addr, digest).await {
            Ok(bytes) => {
                self.inner.store.put_module(&bytes).await?;
                Ok(())
            }
            Err(Fetch::Corrupt(actual)) => {
                self.inner.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                Err(FunctionsError::ModuleUnavailable {
                    digest,
                    tried: format!("{from}: corrupt copy (hashes to {})", actual.short()),
                })
            }
            Err(Fetch::Failed(e)) => Err(FunctionsError::ModuleUnavailable {
                digest,
                tried: format!("{from}: {e}"),
            }),
        }
    }
}

enum Fetch {
    Corrupt(Digest),
    Failed(String),
}

/// Reads a whole module from one peer, piece by piece, and checks its digest.
async fn fetch_from(
    r: &Replicator,
    addr: std::net::SocketAddr,
    digest: Digest,
) -> Result<Vec<u8>, Fetch> {
    let mut bytes = Vec::new();
    loop {
        let request = Request::ModuleRead {
            digest,
            offset: bytes.len() as u64,
            len: CHUNK as u32,
        };
        let (total, piece) = match rpc::call::<ModulesWire>(r.transport(), addr, &request).await {
            Ok(Response::ModuleBytes(Some(p))) => p,
            Ok(Response::ModuleBytes(None)) => {
                return Err(Fetch::Failed("not stored there".into()));
            }
            Ok(other) => return Err(Fetch::Failed(format!("unexpected answer {other:?}"))),
            Err(e) => return Err(Fetch::Failed(e.to_string())),
        };
        if piece.is_empty() && (bytes.len() as u64) < total {
            return Err(Fetch::Failed("the copy ended early".into()));
        }
        bytes.extend_from_slice(&piece);
        if bytes.len() as u64 >= total {
            break;
        }
    }
    let actual = Digest::of(&bytes);
    if actual != digest {
        return Err(Fetch::Corrupt(actual));
    }
    Ok(bytes)
}
