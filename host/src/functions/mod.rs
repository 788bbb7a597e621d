//! The function registry every node knows: records ([`record`]) in the replicated store.
//!
//! Function records live in the replicated store, in the namespace `sys.functions`, which is
//! replicated to every node (N = the cluster's size), so any node can resolve any function
//! from its own copy. Registry changes are conditional writes (read, change, write if the
//! version is unchanged), acknowledged by two nodes.
//!
//! Module bytes are blobs ([`crate::blobs`]): an upload is stored on the node that took it
//! and on the digest's replicas, and acknowledged once two nodes have synced it; a node asked
//! to run a function whose module it does not hold fetches it from them, verified.

mod record;

use std::sync::Arc;

pub use record::{Deployment, FunctionRecord, RouteKey};

use crate::blobs::{BlobError, Blobs};
use crate::id::{Digest, FunctionName};
use crate::replication::{
    Expect, Namespace, Overrides, Quorum, ReplicationError, Replicator, Version,
};

/// The namespace of function records.
pub const NAMESPACE: &str = "sys.functions";

/// How long a registry change waits, after its quorum, for every other node to take it.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(2);
/// Attempts of a registry change that keeps losing to concurrent changes.
const UPDATE_ATTEMPTS: usize = 16;

/// The quorum of the registry: every node holds it; two acknowledge a change.
pub fn registry_quorum() -> Quorum {
    Quorum::new(u8::MAX, 1, 2).expect("valid")
}

/// Why a registry or module operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    /// Rollback with no earlier version.
    #[error("function `{0}` has no earlier version to roll back to")]
    NothingToRollBack(FunctionName),
    /// A stored function record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The replicated store refused or could not complete the operation.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// No function with that name.
    #[error("no function named `{0}`")]
    NoFunction(FunctionName),
    /// A module's bytes could not be stored or fetched.
    #[error(transparent)]
    Module(#[from] BlobError),
}

/// The registry and module distribution of this node. Cheap to clone.
#[derive(Clone)]
pub struct Functions {
    inner: Arc<Inner>,
}

struct Inner {
    replication: Replicator,
    blobs: Blobs,
    ns: Namespace,
}

impl Functions {
    /// The registry on top of `replication`, with modules in `blobs`.
    pub fn new(replication: Replicator, blobs: Blobs) -> Self {
        Functions {
            inner: Arc::new(Inner {
                replication,
                blobs,
                ns: NAMESPACE.parse().expect("a valid namespace"),
            }),
        }
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
        bytes: bytes::Bytes,
    ) -> Result<FunctionRecord, FunctionsError> {
        self.inner.blobs.put(bytes).await?;
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

    /// A module's bytes, verified: this node's copy, or fetched from another node.
    pub async fn module(&self, digest: Digest) -> Result<Vec<u8>, FunctionsError> {
        Ok(self.inner.blobs.get(digest).await?)
    }
}
