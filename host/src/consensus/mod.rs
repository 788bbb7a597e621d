//! The cluster's metadata in one Raft group: the only module that knows openraft.
//!
//! Metadata in consensus, bulk data on the ring: what must be agreed (the function registry,
//! locks, job state) is a command in the group's log, applied in the same order on every
//! node; key-value data, modules and job chunks stay on the ring. The group's log, vote and
//! snapshots live in the node's store and are flushed before they are acknowledged
//! ([`storage`]); the state machine itself ([`state`]) is pure.

pub mod locks;
mod network;
pub mod state;
pub mod storage;
pub mod voters;
pub mod wire;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::Raft;
use serde::{Deserialize, Serialize};

pub use locks::{Leases, LockCommand, LockOutcome, LockTable};
pub use state::{Command, Outcome, Register, Registers, State};
use storage::{LogStore, MachineStore};
use wire::{RaftWire, Request, Response};

use crate::id::NodeId;
use crate::rpc::{self, Router};
use crate::store::Store;
use crate::transport::Transport;

/// The meta record holding this node's id in the group.
const ID: &str = "id";

/// A node's id in the group: chosen at random when the node first joins a group and kept in
/// its store, never reused (a node whose data directory was wiped gets a new one).
pub type RaftId = u64;

/// A member of the group as its log records it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// The node's name in the cluster.
    pub name: String,
    /// Its QUIC address.
    pub addr: Option<SocketAddr>,
}

openraft::declare_raft_types!(
    /// The group's types: commands and outcomes of [`state`], members by [`RaftId`].
    pub TypeConfig:
        D = Command,
        R = Outcome,
        NodeId = RaftId,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = std::io::Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

/// How the group keeps time. Every member should use the same settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsensusConfig {
    /// How often the leader sends heartbeats; also the time one AppendEntries round trip
    /// (with the follower's flush) may take. Default 100 ms.
    #[serde(with = "crate::millis")]
    pub heartbeat: Duration,
    /// A follower that hears no leader for a random time between this and twice this stands
    /// for election. Default 600 ms: well above a heartbeat and a flush on a loaded small
    /// machine.
    #[serde(with = "crate::millis")]
    pub election: Duration,
    /// A snapshot is taken after this many entries since the last one. Default 5000.
    pub snapshot_every: u64,
    /// Entries kept in the log behind the last snapshot, so a member a little behind catches
    /// up from the log rather than a whole snapshot. Default 1000.
    pub keep_after_snapshot: u64,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            heartbeat: Duration::from_millis(100),
            election: Duration::from_millis(600),
            snapshot_every: 5000,
            keep_after_snapshot: 1000,
        }
    }
}

/// The group as one node sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupStatus {
    /// This node's id in the group.
    pub id: RaftId,
    /// `leader`, `follower`, `candidate`, `learner`, or `in no group yet`.
    pub role: String,
    /// The leader's name, if known.
    pub leader: Option<String>,
    /// The current term.
    pub term: u64,
    /// The voters.
    pub voters: Vec<GroupMember>,
    /// Members that receive the log without voting.
    pub learners: Vec<GroupMember>,
    /// The last entry in this node's log.
    pub last_log_index: Option<u64>,
    /// The last entry this node applied.
    pub applied_index: Option<u64>,
    /// The last entry in this node's snapshot.
    pub snapshot_index: Option<u64>,
}

/// A member of the group as one node sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupMember {
    /// Its id in the group.
    pub id: RaftId,
    /// Its node name.
    pub name: String,
    /// Entries it lacks of the leader's log (known on the leader only).
    pub lag: Option<u64>,
}

/// Why a consensus operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsensusError {
    /// The group could not be started from this node's store.
    #[error("starting the consensus group: {0}")]
    Start(String),
    /// No leader could take the command (no quorum of voters, or an election under way).
    #[error("the metadata group has no leader that can take this now ({0}); try again shortly")]
    NoLeader(String),
    /// The group failed otherwise.
    #[error("the metadata group failed: {0}")]
    Failed(String),
}

/// This node's member of the group. Cheap to clone.
#[derive(Clone)]
pub struct Consensus {
    id: RaftId,
    raft: Raft<TypeConfig>,
    machine: MachineStore,
    transport: Transport,
}

impl Consensus {
    /// Starts this node's member of the group (not yet in any group until it is initialized
    /// or added by a leader), answering its peers through `router`.
    pub async fn start(
        name: &NodeId,
        store: Store,
        transport: Transport,
        router: &Router,
        config: &ConsensusConfig,
    ) -> Result<Consensus, ConsensusError> {
        let start = |e: &dyn std::fmt::Display| ConsensusError::Start(e.to_string());
        let id = match store.raft_meta(ID).map_err(|e| start(&e))? {
            Some(bytes) => postcard::from_bytes(&bytes).map_err(|e| start(&e))?,
            None => {
                // Never 0, never reused: a wiped data directory gets a new id.
                let id: RaftId = rand::random::<u64>().max(1);
                store
                    .set_raft_meta(ID, postcard::to_stdvec(&id).expect("ids encode"))
                    .await
                    .map_err(|e| start(&e))?;
                tracing::info!(node = %name, raft_id = id, "new id in the metadata group");
                id
            }
        };
        let raft_config = openraft::Config {
            cluster_name: "weft".into(),
            heartbeat_interval: config.heartbeat.as_millis() as u64,
            election_timeout_min: config.election.as_millis() as u64,
            election_timeout_max: 2 * config.election.as_millis() as u64,
            install_snapshot_timeout: 60_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_every),
            max_in_snapshot_log_to_keep: config.keep_after_snapshot,
            ..Default::default()
        }
        .validate()
        .map_err(|e| start(&e))?;
        let machine = MachineStore::open(store.clone()).map_err(|e| start(&e))?;
        let network = network::Network {
            transport: transport.clone(),
        };
        let raft = Raft::new(
            id,
            Arc::new(raft_config),
            network,
            LogStore::new(store),
            machine.clone(),
        )
        .await
        .map_err(|e| start(&e))?;
        network::serve(router, raft.clone(), machine.clone(), transport.clone());
        Ok(Consensus {
            id,
            raft,
            machine,
            transport,
        })
    }

    /// This node's id in the group.
    pub fn id(&self) -> RaftId {
        self.id
    }

    /// Forms a new group of `members` (this node among them). Only for a node that belongs
    /// to no group; a node that already does refuses.
    pub async fn initialize(
        &self,
        members: BTreeMap<RaftId, Member>,
    ) -> Result<(), ConsensusError> {
        self.raft
            .initialize(members)
            .await
            .map_err(|e| ConsensusError::Failed(e.to_string()))
    }

    /// Adds a member that receives the log but does not vote (the first step to becoming a
    /// voter); returns once it has caught up with the leader. Only on the leader.
    pub async fn add_learner(&self, id: RaftId, member: Member) -> Result<(), ConsensusError> {
        self.raft
            .add_learner(id, member, true)
            .await
            .map(|_| ())
            .map_err(|e| ConsensusError::Failed(e.to_string()))
    }

    /// Commits `command` through the leader (forwarded to it when this node is not), and
    /// returns the entry's index and what the command did, once applied on the leader.
    pub async fn propose(&self, command: Command) -> Result<(u64, Outcome), ConsensusError> {
        let forward_to = match self.raft.client_write(command.clone()).await {
            Ok(w) => return Ok((w.log_id.index, w.data)),
            Err(openraft::error::RaftError::APIError(
                openraft::error::ClientWriteError::ForwardToLeader(f),
            )) => f.leader_node,
            Err(e) => return Err(ConsensusError::Failed(e.to_string())),
        };
        match self
            .ask_leader(forward_to, &Request::Propose(command))
            .await?
        {
            Response::Committed { index, outcome } => Ok((index, outcome)),
            other => Err(ConsensusError::Failed(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Sends `request` to `leader`, following `NotLeader` answers for a few hops while
    /// leadership moves.
    async fn ask_leader(
        &self,
        mut leader: Option<Member>,
        request: &Request,
    ) -> Result<Response, ConsensusError> {
        for _ in 0..3 {
            let Some(addr) = leader.as_ref().and_then(|m| m.addr) else {
                return Err(ConsensusError::NoLeader("no leader known".into()));
            };
            match rpc::call::<RaftWire>(&self.transport, addr, request).await {
                Ok(Response::NotLeader(next)) => leader = next,
                Ok(answer) => return Ok(answer),
                Err(e) => return Err(ConsensusError::NoLeader(e.to_string())),
            }
        }
        Err(ConsensusError::NoLeader("leadership kept moving".into()))
    }

    /// Reads the registers after making sure this node has applied every entry committed
    /// before the call (a linearizable read): the leader confirms it still leads and names
    /// the entry the read must see, and this node waits until it has applied it.
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, ConsensusError> {
        let ask = match self.raft.ensure_linearizable().await {
            Ok(_) => return Ok(self.machine.read(f)),
            Err(openraft::error::RaftError::APIError(
                openraft::error::CheckIsLeaderError::ForwardToLeader(to),
            )) => to.leader_node,
            Err(e) => return Err(ConsensusError::NoLeader(e.to_string())),
        };
        match self.ask_leader(ask, &Request::ReadIndex).await? {
            Response::ReadIndex(index) => {
                if let Some(index) = index {
                    self.raft
                        .wait(Some(self.transport.rpc_timeout()))
                        .applied_index_at_least(Some(index), "a linearizable read")
                        .await
                        .map_err(|e| ConsensusError::NoLeader(e.to_string()))?;
                }
                Ok(self.machine.read(f))
            }
            other => Err(ConsensusError::Failed(format!(
                "unexpected answer {other:?}"
            ))),
        }
    }

    /// Reads this node's state machine as far as it has applied (may lag the leader).
    pub fn read_local<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        self.machine.read(f)
    }

    /// The group as this node sees it.
    pub fn metrics(&self) -> openraft::RaftMetrics<RaftId, Member> {
        self.raft.metrics().borrow().clone()
    }

    /// The group as this node sees it, for `/v1/status` and `weft status`.
    pub fn status(&self) -> GroupStatus {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let name = |id: &RaftId| {
            membership
                .get_node(id)
                .map_or_else(|| id.to_string(), |n| n.name.clone())
        };
        let last = m.last_log_index;
        let lag = |id: &RaftId| {
            let matched = m.replication.as_ref()?.get(id)?.map(|l| l.index);
            Some(last.unwrap_or(0).saturating_sub(matched.unwrap_or(0)))
        };
        let describe = |id: &RaftId| GroupMember {
            id: *id,
            name: name(id),
            lag: if *id == self.id {
                Some(0).filter(|_| m.replication.is_some())
            } else {
                lag(id)
            },
        };
        let voters: Vec<GroupMember> = membership.voter_ids().map(|id| describe(&id)).collect();
        let learners: Vec<GroupMember> = membership.learner_ids().map(|id| describe(&id)).collect();
        GroupStatus {
            id: self.id,
            role: if voters.is_empty() && learners.is_empty() {
                "in no group yet".into()
            } else {
                format!("{:?}", m.state).to_lowercase()
            },
            leader: m.current_leader.map(|l| name(&l)),
            term: m.current_term,
            voters,
            learners,
            last_log_index: last,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
        }
    }

    /// Appends the group's metrics, as this node sees it.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{Kind, single};
        let m = self.metrics();
        let index = |l: Option<u64>| l.map_or(0, |i| i + 1);
        for (name, help, value) in [
            (
                "weft_raft_term",
                "The metadata group's current term as this node knows it.",
                m.current_term,
            ),
            (
                "weft_raft_leader",
                "1 while this node leads the metadata group, else 0.",
                u64::from(m.current_leader == Some(self.id)),
            ),
            (
                "weft_raft_log_entries",
                "Entries in this node's log of the metadata group (the last index plus one).",
                index(m.last_log_index),
            ),
            (
                "weft_raft_applied_entries",
                "Entries of the metadata group this node has applied (the last index plus one).",
                index(m.last_applied.map(|l| l.index)),
            ),
            (
                "weft_raft_snapshot_entries",
                "Entries covered by this node's last snapshot of the metadata group.",
                index(m.snapshot.map(|l| l.index)),
            ),
        ] {
            single(out, name, Kind::Gauge, help, value);
        }
    }

    /// Stops this node's member.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "stopping the consensus member");
        }
    }
}
