//! The function registry every node knows: records ([`record`]) in the metadata group.
//!
//! A function record is a register of the metadata group's state machine, under `fn/NAME`.
//! Deploy, rollback and delete are compare-and-set commands through the group's leader,
//! acknowledged once committed (and, for at most two seconds more, once every member that
//! answers has applied them), so every node applies them in the same order. Listing and
//! showing read linearizably unless asked for this node's copy; an invocation resolves its
//! function from this node's copy, so it keeps working without a quorum.
//!
//! Module bytes are blobs ([`crate::blobs`]): an upload is stored on the node that took it
//! and on the digest's replicas, and acknowledged once two nodes have synced it; a node asked
//! to run a function whose module it does not hold fetches it from them, verified.

mod record;

use std::sync::Arc;
use std::time::Duration;

pub use record::{DEFAULT_LOCK_WAIT_MS, Deployment, FunctionRecord, RouteKey};

use crate::blobs::{BlobError, Blobs};
use crate::consensus::{Command, Consensus, ConsensusError, Outcome, Register};
use crate::id::{Digest, FunctionName};

/// Where an earlier version kept function records: the replicated store's namespace (now
/// only read, once, by [`Functions::adopt_earlier_records`]).
pub const LEGACY_NAMESPACE: &str = "sys.functions";

/// The register marking that the records of an earlier version were moved into the group.
const ADOPTED: &str = "sys/adopted-earlier-function-records";

/// The prefix of function records among the group's registers.
const PREFIX: &str = "fn/";

/// How long a registry change waits, after it committed, for every member to apply it.
const SETTLE: Duration = Duration::from_secs(2);
/// How long an invocation of a function this node has no record of asks the leader.
const ASK_LEADER: Duration = Duration::from_secs(1);
/// Attempts of a registry change that keeps losing to concurrent changes.
const UPDATE_ATTEMPTS: usize = 16;

/// Why a registry or module operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FunctionsError {
    /// Rollback with no earlier version.
    #[error("function `{0}` has no earlier version to roll back to")]
    NothingToRollBack(FunctionName),
    /// A stored function record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// The metadata group could not take or answer the operation.
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
    /// Concurrent changes to one function kept winning over this one.
    #[error("function `{0}` is being changed by others at the same time; try again")]
    Busy(FunctionName),
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
    consensus: Consensus,
    blobs: Blobs,
}

/// Which copy of the registry a read sees.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Consistency {
    /// Every change acknowledged before the read (asks the leader; needs a quorum).
    Linearizable,
    /// This node's copy, which may lag the leader (works without a quorum).
    Local,
}

impl Functions {
    /// The registry in `consensus`, with modules in `blobs`.
    pub fn new(consensus: Consensus, blobs: Blobs) -> Self {
        Functions {
            inner: Arc::new(Inner { consensus, blobs }),
        }
    }

    /// The revision of this node's copy of `name`'s record, if it has one: cheap, for
    /// checking a cached deployment.
    pub fn local_version(&self, name: &FunctionName) -> Option<u64> {
        let key = key_of(name);
        self.inner
            .consensus
            .read_local(|s| s.registers.get(&key).map(|r| r.revision))
    }

    /// `name`'s record and its revision. For [`Consistency::Local`], when this node has no
    /// copy yet it asks the leader too (it may have just been deployed elsewhere).
    pub async fn record(
        &self,
        name: &FunctionName,
        consistency: Consistency,
    ) -> Result<Option<(FunctionRecord, u64)>, FunctionsError> {
        let key = key_of(name);
        let get = |s: &crate::consensus::State| s.registers.get(&key).cloned();
        let c = &self.inner.consensus;
        let found = match consistency {
            Consistency::Linearizable => c.read(get).await?,
            // Briefly: without a quorum this node's copy is the answer.
            Consistency::Local => match c.read_local(get) {
                Some(r) => Some(r),
                None => tokio::time::timeout(ASK_LEADER, c.read(get))
                    .await
                    .ok()
                    .and_then(Result::ok)
                    .flatten(),
            },
        };
        found.map(decode).transpose()
    }

    /// The modules the current deployments name, and those a rollback of each would make
    /// current, in this node's copy of the registry.
    pub fn digests_in_use(&self) -> std::collections::HashSet<Digest> {
        self.inner.consensus.read_local(|s| {
            s.registers
                .scan(PREFIX)
                .filter_map(|(_, r)| FunctionRecord::decode(&r.value).ok())
                .flat_map(|record| {
                    let from = record.current.saturating_sub(1);
                    record.history[from..=record.current]
                        .iter()
                        .map(|d| d.digest)
                        .collect::<Vec<_>>()
                })
                .collect()
        })
    }

    /// Every function, by name.
    pub async fn list(
        &self,
        consistency: Consistency,
    ) -> Result<Vec<FunctionRecord>, FunctionsError> {
        let all = |s: &crate::consensus::State| -> Vec<Register> {
            s.registers.scan(PREFIX).map(|(_, r)| r.clone()).collect()
        };
        let c = &self.inner.consensus;
        let registers = match consistency {
            Consistency::Linearizable => c.read(all).await?,
            Consistency::Local => c.read_local(all),
        };
        registers
            .into_iter()
            .map(|r| decode(r).map(|(record, _)| record))
            .collect()
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

    /// Reads linearizably, changes, and writes back if the record's revision is unchanged;
    /// retried when a concurrent change won.
    async fn update(
        &self,
        name: &FunctionName,
        change: impl Fn(Option<FunctionRecord>) -> Result<Option<FunctionRecord>, FunctionsError>,
    ) -> Result<Option<FunctionRecord>, FunctionsError> {
        let c = &self.inner.consensus;
        let key = key_of(name);
        for _ in 0..UPDATE_ATTEMPTS {
            let (old, revision) = match self.record(name, Consistency::Linearizable).await? {
                Some((record, revision)) => (Some(record), revision),
                None => (None, 0),
            };
            let new = change(old)?;
            let command = Command::Write {
                key: key.clone(),
                value: new.as_ref().map(FunctionRecord::encode),
                expect: Some(revision),
            };
            let what = format!("a change of function `{name}`");
            match c.propose_settled(command, SETTLE, &what).await? {
                (_, Outcome::Written { .. }) => return Ok(new),
                (_, Outcome::Conflict { .. }) => continue,
                (_, other) => {
                    return Err(FunctionsError::Corrupt(format!(
                        "a registry write did {other:?}"
                    )));
                }
            }
        }
        Err(FunctionsError::Busy(name.clone()))
    }

    /// Moves function records kept by an earlier version (in the replicated store's namespace
    /// `sys.functions`) into the metadata group, once the group can commit: each name's newest
    /// copy (a quorum read), written only where the group has no record of that name, so
    /// nothing newer is replaced. Every node that holds old records does this; the first to
    /// commit a name wins. Returns how many this node moved.
    pub async fn adopt_earlier_records(
        &self,
        replication: &crate::replication::Replicator,
    ) -> Result<usize, FunctionsError> {
        let ns: crate::id::Namespace = LEGACY_NAMESPACE.parse().expect("a valid namespace");
        let held = replication
            .local_entries(&ns)
            .map_err(|e| FunctionsError::Corrupt(e.to_string()))?;
        if held.is_empty() {
            return Ok(0);
        }
        // Once done, never again: a function deleted since must not come back.
        let c = &self.inner.consensus;
        if c.read(|s| s.registers.get(ADOPTED).is_some()).await? {
            return Ok(0);
        }
        let mut moved = 0;
        for (key, _) in held {
            // The newest copy the store's quorum knows (a deletion stays a deletion), not
            // this node's, which may be stale.
            let newest = replication
                .get(&ns, &key, &[], crate::replication::Overrides::default())
                .await
                .map_err(|e| FunctionsError::Corrupt(e.to_string()))?;
            let Some(value) = newest.map(|r| r.value) else {
                continue;
            };
            let Ok(name) = std::str::from_utf8(&key)
                .map_err(|e| e.to_string())
                .and_then(|k| k.parse::<FunctionName>().map_err(|e| e.to_string()))
            else {
                continue;
            };
            if let Err(e) = FunctionRecord::decode(&value) {
                tracing::warn!(function = %name, error = %e, "an earlier version's function record cannot be read; left behind");
                continue;
            }
            let command = Command::Write {
                key: key_of(&name),
                value: Some(value),
                expect: Some(0),
            };
            if let (_, Outcome::Written { .. }) = c.propose(command).await? {
                moved += 1;
            }
        }
        let done = Command::Write {
            key: ADOPTED.into(),
            value: Some(b"1".to_vec()),
            expect: None,
        };
        c.propose(done).await?;
        Ok(moved)
    }

    /// A module's bytes, verified: this node's copy, or fetched from another node.
    pub async fn module(&self, digest: Digest) -> Result<Vec<u8>, FunctionsError> {
        Ok(self.inner.blobs.get(digest).await?)
    }
}

fn key_of(name: &FunctionName) -> String {
    format!("{PREFIX}{name}")
}

fn decode(r: Register) -> Result<(FunctionRecord, u64), FunctionsError> {
    Ok((FunctionRecord::decode(&r.value)?, r.revision))
}
