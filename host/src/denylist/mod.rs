//! The cluster's deny list: node names that every node refuses (a decommissioned node, or
//! one whose key may have leaked), kept as registers `deny/NAME` of the metadata group.
//!
//! Every node follows the registers ([`DenyList::follow`]) and hands the list to its
//! transport, which refuses those nodes' handshakes, in both directions, and closes the
//! connections open to them. A denied node's certificate stays valid, so the list is what
//! keeps it out, until it is allowed again.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use crate::consensus::storage::Applied;
use crate::consensus::{Command, Consensus, ConsensusError, Outcome, State};
use crate::id::NodeId;
use crate::transport::Transport;

/// The prefix of deny-list entries among the group's registers.
const PREFIX: &str = "deny/";
/// How long a change waits, once committed, for every member to apply it.
const SETTLE: Duration = Duration::from_secs(2);

/// Why a deny-list operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DenyError {
    /// Not something to deny.
    #[error("{0}")]
    Invalid(String),
    /// The metadata group could not take or answer the operation.
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
}

/// One denied node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeniedNode {
    /// Its name.
    pub node: NodeId,
    /// Why, as the operator wrote it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// When it was denied (Unix time, milliseconds).
    pub since_ms: u64,
}

/// The deny list as this node reads and changes it. Cheap to clone.
#[derive(Clone)]
pub struct DenyList {
    consensus: Consensus,
}

impl DenyList {
    /// The list kept in `consensus`.
    pub fn new(consensus: Consensus) -> Self {
        DenyList { consensus }
    }

    /// Denies `node`; once this returns, every member that answered within 2 s refuses it.
    pub async fn deny(&self, node: &NodeId, reason: String) -> Result<DeniedNode, DenyError> {
        if reason.len() > 200 || reason.chars().any(char::is_control) {
            return Err(DenyError::Invalid(
                "a reason is at most 200 characters, none of them control characters".into(),
            ));
        }
        let entry = DeniedNode {
            node: node.clone(),
            reason,
            since_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let value = serde_json::to_vec(&entry).expect("an entry serializes");
        self.write(node, Some(value)).await?;
        tracing::warn!(%node, "node denied: every node refuses it");
        Ok(entry)
    }

    /// Takes `node` off the list; false if it was not on it.
    pub async fn allow(&self, node: &NodeId) -> Result<bool, DenyError> {
        let key = key_of(node);
        let was = self
            .consensus
            .read(|s| s.registers.get(&key).is_some())
            .await?;
        if was {
            self.write(node, None).await?;
            tracing::info!(%node, "node allowed again");
        }
        Ok(was)
    }

    /// The list, read through the leader.
    pub async fn list(&self) -> Result<Vec<DeniedNode>, DenyError> {
        Ok(self.consensus.read(entries).await?)
    }

    /// Keeps `transport`'s deny list equal to this node's copy of the registers until
    /// `cancel`.
    pub async fn follow(self, transport: Transport, cancel: CancellationToken) {
        let mut events = self.consensus.subscribe();
        let mut current: HashSet<NodeId> = HashSet::new();
        loop {
            let names: HashSet<NodeId> = self
                .consensus
                .read_local(entries)
                .into_iter()
                .map(|e| e.node)
                .collect();
            if names != current {
                transport.set_denied(names.clone());
                current = names;
            }
            // Wait for a change that may touch the list.
            loop {
                let event = tokio::select! {
                    e = events.recv() => e,
                    () = cancel.cancelled() => return,
                };
                match event {
                    Ok(Applied::Register { key }) if !key.starts_with(PREFIX) => {}
                    Ok(Applied::Lock { .. }) => {}
                    Ok(_) | Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }

    async fn write(&self, node: &NodeId, value: Option<Vec<u8>>) -> Result<(), DenyError> {
        let command = Command::Write {
            key: key_of(node),
            value,
            expect: None,
        };
        let change = self
            .consensus
            .propose_settled(command, SETTLE, "a deny-list change");
        match change.await? {
            (_, Outcome::Written { .. }) => Ok(()),
            (_, other) => {
                Err(ConsensusError::Failed(format!("a deny-list write did {other:?}")).into())
            }
        }
    }
}

fn key_of(node: &NodeId) -> String {
    format!("{PREFIX}{node}")
}

/// Every entry of the list in `state` (an entry that does not decode still denies its name).
fn entries(state: &State) -> Vec<DeniedNode> {
    state
        .registers
        .scan(PREFIX)
        .filter_map(|(key, r)| {
            let node: NodeId = key.strip_prefix(PREFIX)?.parse().ok()?;
            Some(serde_json::from_slice(&r.value).unwrap_or(DeniedNode {
                node,
                reason: String::new(),
                since_ms: 0,
            }))
        })
        .collect()
}
