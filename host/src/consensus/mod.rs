//! The cluster's metadata in one Raft group: the only module that knows openraft.
//!
//! Metadata in consensus, bulk data on the ring: what must be agreed (the function registry,
//! locks, job state) is a command in the group's log, applied in the same order on every
//! node; key-value data, modules and job chunks stay on the ring. The group's log, vote and
//! snapshots live in the node's store and are flushed before they are acknowledged
//! ([`storage`]); the state machine itself ([`state`]) is pure.

mod control;
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

pub use control::Peer;
pub use locks::{Leases, LockCommand, LockOutcome, LockTable};
pub use state::{Command, Outcome, Proposal, ProposalId, Register, Registers, State, Write};
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
        D = Proposal,
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
    /// A voter declared down for this long (or whose node came back with a wiped data
    /// directory) gives its seat to another node. Shorter replaces a crashed voter sooner, so
    /// the group is back to full tolerance sooner; longer lets a rebooting voter keep its
    /// seat. Default 60 s.
    #[serde(with = "crate::millis")]
    pub voter_replace_after: Duration,
    /// How long a change (a deploy, a lock request) waits for a leader and a quorum before
    /// it is refused as unavailable. Default 5 s.
    #[serde(with = "crate::millis")]
    pub propose_timeout: Duration,
    /// Test only: serve reads from this node's copy without asking the leader (not
    /// linearizable; the control of the linearizability test).
    #[cfg(feature = "test-switches")]
    #[serde(skip)]
    pub local_reads_for_tests: bool,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        ConsensusConfig {
            heartbeat: Duration::from_millis(100),
            election: Duration::from_millis(600),
            snapshot_every: 5000,
            keep_after_snapshot: 1000,
            voter_replace_after: Duration::from_secs(60),
            propose_timeout: Duration::from_secs(5),
            #[cfg(feature = "test-switches")]
            local_reads_for_tests: false,
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
    /// The last entry this node knows committed.
    pub committed_index: Option<u64>,
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

/// Counts changes of leader as this node sees them (the first leader it learns is not one).
async fn count_leader_changes(consensus: Consensus) {
    let mut metrics = consensus.raft.metrics();
    let mut last = metrics.borrow_and_update().current_leader;
    while metrics.changed().await.is_ok() {
        let now = metrics.borrow_and_update().current_leader;
        if now.is_some() && now != last {
            if last.is_some() {
                consensus
                    .stats
                    .leader_changes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            last = now;
        }
    }
}

fn no_quorum(within: Duration) -> ConsensusError {
    ConsensusError::NoLeader(format!(
        "no leader with a quorum of voters answered within {} ms",
        within.as_millis()
    ))
}

/// This node's member of the group. Cheap to clone.
#[derive(Clone)]
pub struct Consensus {
    id: RaftId,
    me: Member,
    raft: Raft<TypeConfig>,
    machine: MachineStore,
    transport: Transport,
    config: ConsensusConfig,
    store: Store,
    stats: Arc<Stats>,
    /// The cluster's nodes as membership sees them.
    peers: tokio::sync::watch::Receiver<Vec<Peer>>,
}

/// Counters kept by this node's member.
#[derive(Default)]
struct Stats {
    /// Proposals made since start (with `epoch`, the number of the next one).
    proposals: std::sync::atomic::AtomicU64,
    /// Random, chosen at start, so that numbers differ from those of an earlier run.
    epoch: u64,
    /// Times this node saw the leader change to another known leader.
    leader_changes: std::sync::atomic::AtomicU64,
    /// From proposing a command to its commit, for commands proposed here.
    commit: std::sync::Mutex<crate::metrics::Histogram>,
}

/// How a node takes part in the group, beyond its store and transport.
pub struct Wiring {
    /// Its id ([`Consensus::open_id`]).
    pub id: RaftId,
    /// Its name and address, as the group records them.
    pub me: Member,
    /// The cluster's nodes, as membership sees them (for choosing members and voters).
    pub peers: tokio::sync::watch::Receiver<Vec<Peer>>,
    /// Form a group of this node alone if it is in none (the first node of a new cluster).
    pub found: bool,
}

impl Consensus {
    /// This node's id in the group, from its store; a new one, stored, if it has none.
    pub async fn open_id(store: &Store, name: &NodeId) -> Result<RaftId, ConsensusError> {
        let start = |e: &dyn std::fmt::Display| ConsensusError::Start(e.to_string());
        if let Some(bytes) = store.raft_meta(ID).map_err(|e| start(&e))? {
            return postcard::from_bytes(&bytes).map_err(|e| start(&e));
        }
        // Never 0, never reused: a wiped data directory gets a new id.
        let id: RaftId = rand::random::<u64>().max(1);
        store
            .set_raft_meta(ID, postcard::to_stdvec(&id).expect("ids encode"))
            .await
            .map_err(|e| start(&e))?;
        tracing::info!(node = %name, raft_id = id, "new id in the metadata group");
        Ok(id)
    }

    /// Starts this node's member of the group, answering its peers through `router`; it
    /// joins a group when a leader adds it, or forms one ([`Wiring::found`]).
    pub async fn start(
        wiring: Wiring,
        store: Store,
        transport: Transport,
        router: &Router,
        config: &ConsensusConfig,
        tasks: &crate::tasks::Tasks,
    ) -> Result<Consensus, ConsensusError> {
        let start = |e: &dyn std::fmt::Display| ConsensusError::Start(e.to_string());
        let id = wiring.id;
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
            LogStore::new(store.clone()),
            machine.clone(),
        )
        .await
        .map_err(|e| start(&e))?;
        network::serve(router, id, raft.clone(), machine.clone(), transport.clone());
        let consensus = Consensus {
            id,
            me: wiring.me,
            raft,
            machine,
            transport,
            config: config.clone(),
            store,
            stats: Arc::new(Stats {
                epoch: rand::random(),
                ..Default::default()
            }),
            peers: wiring.peers.clone(),
        };
        tasks.spawn(count_leader_changes(consensus.clone()));
        tasks.spawn(control::run(
            consensus.clone(),
            wiring.peers,
            wiring.found,
            config.voter_replace_after,
            tasks.token().clone(),
        ));
        Ok(consensus)
    }

    /// Whether this node belongs to no group yet.
    pub fn in_no_group(&self) -> bool {
        let m = self.metrics();
        m.membership_config.membership().nodes().next().is_none()
    }

    /// This node's id in the group.
    pub fn id(&self) -> RaftId {
        self.id
    }

    /// Forms a new group of `members` (this node among them). Only for a node that belongs
    /// to no group; a node that already does refuses.
    pub(crate) async fn initialize(
        &self,
        members: BTreeMap<RaftId, Member>,
    ) -> Result<(), ConsensusError> {
        self.raft
            .initialize(members)
            .await
            .map_err(|e| ConsensusError::Failed(e.to_string()))
    }

    /// Commits `command` through the leader (forwarded to it when this node is not), and
    /// returns the entry's index and what the command did, once applied on the leader. Waits
    /// for a leader and a quorum at most [`ConsensusConfig::propose_timeout`]; a command that
    /// timed out may still commit later.
    pub async fn propose(&self, command: Command) -> Result<(u64, Outcome), ConsensusError> {
        self.propose_as(self.proposal_id(), command).await
    }

    /// [`Consensus::propose`], then, once a write applied, [`Consensus::settle`] for at most
    /// `within`, so the change is seen at once on every member that answers; the members that
    /// had not applied it are logged (`what` names the change).
    pub async fn propose_settled(
        &self,
        command: Command,
        within: Duration,
        what: &str,
    ) -> Result<(u64, Outcome), ConsensusError> {
        let (index, outcome) = self.propose(command).await?;
        if matches!(outcome, Outcome::Written { .. }) {
            let behind = self.settle(index, within).await;
            if !behind.is_empty() {
                tracing::info!(
                    ?behind,
                    "{what} committed; some members have not applied it yet"
                );
            }
        }
        Ok((index, outcome))
    }

    /// A new id for [`Consensus::propose_as`].
    pub fn proposal_id(&self) -> ProposalId {
        ProposalId {
            from: self.id,
            seq: self
                .stats
                .proposals
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                ^ self.stats.epoch,
        }
    }

    /// [`Consensus::propose`] under a given id: a caller that tries one change again after
    /// a timeout passes the same id, so that the change applies once however many of its
    /// tries commit (a later try answers with what the first did, while the group remembers
    /// it).
    pub async fn propose_as(
        &self,
        id: ProposalId,
        command: Command,
    ) -> Result<(u64, Outcome), ConsensusError> {
        let started = std::time::Instant::now();
        let done = self.propose_once(id, command).await;
        if done.is_ok() {
            let mut h = self.stats.commit.lock().expect("not poisoned");
            h.observe(started.elapsed());
        }
        done
    }

    async fn propose_once(
        &self,
        id: ProposalId,
        command: Command,
    ) -> Result<(u64, Outcome), ConsensusError> {
        // One id for every attempt: the state machine applies it once however many commit.
        let request = Request::Propose(Proposal { id, command });
        let Request::Propose(proposal) = &request else {
            unreachable!()
        };
        self.through_leader(
            &request,
            || async {
                match self.raft.client_write(proposal.clone()).await {
                    Ok(w) => Ok(Some((w.log_id.index, w.data))),
                    Err(openraft::error::RaftError::APIError(
                        openraft::error::ClientWriteError::ForwardToLeader(_),
                    )) => Ok(None),
                    Err(e) => Err(ConsensusError::Failed(e.to_string())),
                }
            },
            |answer| match answer {
                Response::Committed { index, outcome } => Ok((index, outcome)),
                other => Err(other),
            },
        )
        .await
    }

    /// Does something through the leader, following leadership as it moves, for at most
    /// `propose_timeout`: `local` when this node leads (`None`: it no longer does), else
    /// `request` sent to the leader, whose answer `remote` reads (`Err`: not the answer
    /// expected). A leader that says it is not the leader, does not answer, or refuses (it is
    /// stopping) is followed by the next one.
    async fn through_leader<T, L, Fut>(
        &self,
        request: &Request,
        mut local: L,
        remote: impl Fn(Response) -> Result<T, Response>,
    ) -> Result<T, ConsensusError>
    where
        L: FnMut() -> Fut,
        Fut: Future<Output = Result<Option<T>, ConsensusError>>,
    {
        let within = self.config.propose_timeout;
        let asked = tokio::time::timeout(within, async {
            loop {
                let leader = self.wait_leader().await?;
                if leader.0 == self.id {
                    if let Some(done) = local().await? {
                        return Ok(done);
                    }
                } else {
                    match self.ask(&leader, request).await {
                        None | Some(Response::NotLeader(_)) => {}
                        Some(Response::Failed(e)) => {
                            tracing::debug!(error = %e, "the leader refused a request");
                        }
                        Some(answer) => {
                            return remote(answer).map_err(|other| {
                                ConsensusError::Failed(format!("unexpected answer {other:?}"))
                            });
                        }
                    }
                }
                self.leader_moved(leader.0).await;
            }
        })
        .await;
        asked.unwrap_or_else(|_| Err(no_quorum(within)))
    }

    /// The leader, once one is known: its id and record.
    async fn wait_leader(&self) -> Result<(RaftId, Member), ConsensusError> {
        let m = self
            .raft
            .wait(None)
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await
            .map_err(|e| ConsensusError::NoLeader(e.to_string()))?;
        let leader = m.current_leader.expect("waited for it");
        let member = m
            .membership_config
            .membership()
            .get_node(&leader)
            .cloned()
            .unwrap_or_default();
        Ok((leader, member))
    }

    /// After the leader did not take a request: waits until another is known, or a little.
    async fn leader_moved(&self, was: RaftId) {
        let _ = self
            .raft
            .wait(Some(Duration::from_millis(100)))
            .metrics(|m| m.current_leader != Some(was), "another leader")
            .await;
    }

    /// Sends `request` to the leader; `None` when it could not be reached, or when this node
    /// learned meanwhile that leadership moved (a dead leader does not answer; the caller
    /// asks the next one rather than wait out the request's timeout). A proposal abandoned so
    /// may still commit; its retry carries the same id, and the state machine applies it
    /// once.
    async fn ask(&self, leader: &(RaftId, Member), request: &Request) -> Option<Response> {
        let addr = leader.1.addr?;
        let wait = self.raft.wait(None);
        let moved = wait.metrics(|m| m.current_leader != Some(leader.0), "leadership to move");
        tokio::select! {
            answer = rpc::call::<RaftWire>(&self.transport, addr, request) => match answer {
                Ok(answer) => Some(answer),
                Err(e) => {
                    tracing::debug!(leader = %leader.1.name, error = %e, "the leader did not answer");
                    None
                }
            },
            _ = moved => None,
        }
    }

    /// Reads the state machine after making sure this node has applied every entry committed
    /// before the call (a linearizable read): the leader confirms it still leads and names
    /// the entry the read must see, and this node waits until it has applied it.
    pub async fn read<T>(&self, f: impl FnOnce(&State) -> T) -> Result<T, ConsensusError> {
        #[cfg(feature = "test-switches")]
        if self.config.local_reads_for_tests {
            return Ok(self.machine.read(f));
        }
        let within = self.config.propose_timeout;
        let index = self
            .through_leader(
                &Request::ReadIndex,
                || async {
                    match self.raft.ensure_linearizable().await {
                        Ok(read) => Ok(Some(read.map(|l| l.index))),
                        Err(openraft::error::RaftError::APIError(
                            openraft::error::CheckIsLeaderError::ForwardToLeader(_),
                        )) => Ok(None),
                        Err(e) => Err(ConsensusError::NoLeader(e.to_string())),
                    }
                },
                |answer| match answer {
                    Response::ReadIndex(index) => Ok(index),
                    other => Err(other),
                },
            )
            .await?;
        if let Some(index) = index {
            self.wait_applied(index, within).await?;
        }
        Ok(self.machine.read(f))
    }

    /// Waits until this node has applied the entry at `index`.
    pub async fn wait_applied(&self, index: u64, within: Duration) -> Result<(), ConsensusError> {
        self.raft
            .wait(Some(within))
            .applied_index_at_least(Some(index), "an entry to apply")
            .await
            .map(|_| ())
            .map_err(|e| ConsensusError::NoLeader(format!("entry {index} not applied here: {e}")))
    }

    /// Waits, at most `within`, until every member of the group that is up has applied the
    /// entry at `index` (so a deploy is seen at once everywhere); returns the members that
    /// had not.
    pub async fn settle(&self, index: u64, within: Duration) -> Vec<String> {
        let m = self.metrics();
        let up: Vec<RaftId> = self
            .peers
            .borrow()
            .iter()
            .filter(|p| p.up)
            .map(|p| p.id)
            .collect();
        let others: Vec<Member> = m
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.id && up.contains(id))
            .map(|(_, n)| n.clone())
            .collect();
        let request = Request::Applied {
            index,
            within_ms: within.as_millis() as u64,
        };
        let asks = others.iter().map(|member| {
            let request = &request;
            async move {
                let Some(addr) = member.addr else {
                    return Some(member.name.clone());
                };
                let wait = within + Duration::from_secs(1);
                match rpc::call_within::<RaftWire>(&self.transport, addr, request, wait).await {
                    Ok(Response::Applied(true)) => None,
                    _ => Some(member.name.clone()),
                }
            }
        });
        let (mine, theirs) = tokio::join!(
            self.wait_applied(index, within),
            futures::future::join_all(asks)
        );
        let mut behind: Vec<String> = theirs.into_iter().flatten().collect();
        if mine.is_err() {
            behind.push(self.me.name.clone());
        }
        behind
    }

    /// Follows what applying entries changes on this node (the lock table).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<storage::Applied> {
        self.machine.subscribe()
    }

    /// The leader as this node knows it: its id and record.
    pub fn leader(&self) -> Option<(RaftId, Member)> {
        let m = self.raft.metrics().borrow().clone();
        let id = m.current_leader?;
        let member = m.membership_config.membership().get_node(&id).cloned()?;
        Some((id, member))
    }

    /// The QUIC endpoint the group uses.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// The group's settings on this node.
    pub fn config(&self) -> &ConsensusConfig {
        &self.config
    }

    /// Whether this node leads the group now (as far as it knows).
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.id)
    }

    /// Follows this node's view of the group.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<openraft::RaftMetrics<RaftId, Member>> {
        self.raft.metrics()
    }

    /// Reads this node's state machine as far as it has applied (may lag the leader).
    pub fn read_local<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        self.machine.read(f)
    }

    /// The group as this node sees it.
    pub fn metrics(&self) -> openraft::RaftMetrics<RaftId, Member> {
        self.raft.metrics().borrow().clone()
    }

    /// The index of the last entry this node applied (0: none yet).
    pub fn applied_index(&self) -> u64 {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index)
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
            committed_index: storage::committed_index(&self.store),
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
        let (built, installed) = self.machine.snapshots();
        for (name, help, value) in [
            (
                "weft_raft_leader_changes_total",
                "Times this node saw the metadata group's leader change.",
                self.stats
                    .leader_changes
                    .load(std::sync::atomic::Ordering::Relaxed),
            ),
            (
                "weft_raft_snapshots_built_total",
                "Snapshots of the metadata group this node built (then compacting its log).",
                built,
            ),
            (
                "weft_raft_snapshots_installed_total",
                "Snapshots of the metadata group this node installed from a leader.",
                installed,
            ),
        ] {
            single(out, name, Kind::Counter, help, value);
        }
        let commit = self.stats.commit.lock().expect("not poisoned").clone();
        crate::metrics::histograms(
            out,
            "weft_raft_commit_seconds",
            "From proposing a command on this node to its commit by the metadata group.",
            [(String::new(), &commit)],
        );
    }

    /// Stops this node's member.
    pub async fn shutdown(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "stopping the consensus member");
        }
    }
}
