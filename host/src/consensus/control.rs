//! The group's shape, kept by its leader: every node that is up is a member (a voter or a
//! learner, so every node applies the registry and the lock table), and the voters are the
//! ones [`super::voters`] chooses. Changes go one at a time, through the leader.
//!
//! A node started with nothing to join (the first node of a new cluster) forms a group of
//! itself; every other node waits for the leader to add it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use openraft::ChangeMembers;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::voters::{self, Candidate, Step};
use super::{Consensus, ConsensusError, Member, RaftId};

/// A node of the cluster as membership sees it, for choosing the group's members.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Its id in the group (0: not known yet).
    pub id: RaftId,
    /// Its node name.
    pub name: String,
    /// Its QUIC address.
    pub addr: SocketAddr,
    /// Tagged `server`.
    pub server: bool,
    /// Alive now (suspects are not up, but keep their seats).
    pub up: bool,
    /// Declared down, and for how long.
    pub down_for: Option<Duration>,
}

/// A learner this close to the leader's log may become a voter.
const CATCH_UP_SLACK: u64 = 64;
/// How often the leader looks again even when nothing changed (a learner catching up).
const TICK: Duration = Duration::from_millis(500);

/// Keeps the group's shape while this node leads it; forms a group of this node alone at the
/// start when `found` is set and it is in no group.
pub(super) async fn run(
    consensus: Consensus,
    mut peers: watch::Receiver<Vec<Peer>>,
    found: bool,
    replace_after: Duration,
    cancel: CancellationToken,
) {
    if found && consensus.in_no_group() {
        let me = BTreeMap::from([(consensus.id, consensus.me.clone())]);
        match consensus.initialize(me).await {
            Ok(()) => tracing::info!("formed the metadata group, with this node its only voter"),
            Err(e) => tracing::warn!(error = %e, "could not form the metadata group"),
        }
    }
    let mut metrics = consensus.raft.metrics();
    let mut missing: HashMap<RaftId, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = peers.changed() => if r.is_err() { return },
            r = metrics.changed() => if r.is_err() { return },
            _ = tick.tick() => {}
        }
        if consensus.metrics().current_leader != Some(consensus.id) {
            missing.clear();
            continue;
        }
        let peers = peers.borrow_and_update().clone();
        let step = next_change(
            &consensus,
            &peers,
            &mut missing,
            replace_after,
            Instant::now(),
        );
        if let Some(change) = step {
            let what = format!("{change:?}");
            let within = consensus.config.propose_timeout;
            let done = tokio::select! {
                _ = cancel.cancelled() => return,
                r = tokio::time::timeout(within, consensus.change(change)) => r,
            };
            match done {
                Ok(Ok(())) => tracing::info!(change = %what, "changed the metadata group"),
                Ok(Err(e)) => {
                    tracing::warn!(change = %what, error = %e, "could not change the metadata group")
                }
                Err(_) => {
                    tracing::warn!(change = %what, "changing the metadata group took too long")
                }
            }
        }
    }
}

/// One change the group needs, judged on the leader.
#[derive(Debug)]
pub(super) enum Change {
    /// Add a node as a learner.
    Learner(RaftId, Member),
    /// Give a member its new address.
    Moved(RaftId, Member),
    /// Make a caught-up learner a voter.
    Promote(RaftId),
    /// Make a voter a learner (`keep`) or remove it.
    Demote(RaftId, bool),
    /// Remove learners that are gone.
    Remove(BTreeSet<RaftId>),
}

fn next_change(
    consensus: &Consensus,
    peers: &[Peer],
    missing: &mut HashMap<RaftId, Instant>,
    replace_after: Duration,
    now: Instant,
) -> Option<Change> {
    let m = consensus.metrics();
    let membership = m.membership_config.membership().clone();
    if membership.get_joint_config().len() > 1 {
        // A change is half-way; the leader finishes it first.
        return None;
    }
    let voters: BTreeSet<RaftId> = membership.voter_ids().collect();
    let members: BTreeMap<RaftId, Member> =
        membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
    let by_id: HashMap<RaftId, &Peer> = peers
        .iter()
        .filter(|p| p.id != 0)
        .map(|p| (p.id, p))
        .collect();
    // A member whose node is no longer seen, or whose name now has another id (its data
    // directory was wiped), counts as gone once it has been missing long enough, or at once.
    missing.retain(|id, _| members.contains_key(id) && !by_id.contains_key(id));
    let mut candidates: Vec<Candidate> = Vec::new();
    for p in by_id.values() {
        candidates.push(Candidate {
            id: p.id,
            name: p.name.clone(),
            server: p.server,
            up: p.up || p.id == consensus.id,
            gone: p.id != consensus.id && p.down_for.is_some_and(|d| d >= replace_after),
        });
    }
    for (id, member) in &members {
        if by_id.contains_key(id) {
            continue;
        }
        let since = *missing.entry(*id).or_insert(now);
        let renamed = peers.iter().any(|p| p.name == member.name && p.id != *id);
        candidates.push(Candidate {
            id: *id,
            name: member.name.clone(),
            server: false,
            up: false,
            gone: renamed || now.duration_since(since) >= replace_after,
        });
    }
    // Every node that is up is a member, at its current address.
    for p in by_id.values() {
        if !p.up || p.id == consensus.id {
            continue;
        }
        let member = Member {
            name: p.name.clone(),
            addr: Some(p.addr),
        };
        match members.get(&p.id) {
            None => return Some(Change::Learner(p.id, member)),
            Some(m) if *m != member => return Some(Change::Moved(p.id, member)),
            Some(_) => {}
        }
    }
    let desired = voters::desired(&voters, &candidates);
    match voters::next_step(&voters, &desired) {
        Some(Step::Add(id)) if members.contains_key(&id) => {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(&id).cloned().flatten())
                .map(|l| l.index);
            let last = m.last_log_index.unwrap_or(0);
            if matched.is_some_and(|i| i + CATCH_UP_SLACK >= last) {
                return Some(Change::Promote(id));
            }
        }
        // Not a member yet: it becomes one above once it is up.
        Some(Step::Add(_)) => {}
        Some(Step::Remove(_)) => {
            // Never this node (the leader stays a voter, one more than wanted at worst); a
            // gone voter first: a change needs a majority of the old voters and of the new,
            // and demoting a live voter while a dead one still counts may need both.
            let is_gone = |v: &RaftId| candidates.iter().any(|c| c.id == *v && c.gone);
            let mut leaving = voters
                .iter()
                .filter(|v| !desired.contains(v) && **v != consensus.id);
            let gone = leaving.clone().find(|v| is_gone(v));
            if let Some(id) = gone.or_else(|| leaving.next()).copied() {
                return Some(Change::Demote(id, !is_gone(&id)));
            }
        }
        None => {}
    }
    let gone: BTreeSet<RaftId> = candidates
        .iter()
        .filter(|c| c.gone && members.contains_key(&c.id) && !voters.contains(&c.id))
        .map(|c| c.id)
        .collect();
    (!gone.is_empty()).then_some(Change::Remove(gone))
}

impl Consensus {
    /// Applies one change to the group's members (on the leader).
    pub(super) async fn change(&self, change: Change) -> Result<(), ConsensusError> {
        let failed = |e: &dyn std::fmt::Display| ConsensusError::Failed(e.to_string());
        let members: ChangeMembers<RaftId, Member> = match change {
            Change::Learner(id, member) => ChangeMembers::AddNodes(BTreeMap::from([(id, member)])),
            Change::Moved(id, member) => ChangeMembers::SetNodes(BTreeMap::from([(id, member)])),
            Change::Promote(id) => ChangeMembers::AddVoterIds(BTreeSet::from([id])),
            Change::Demote(id, keep) => {
                return self
                    .raft
                    .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), keep)
                    .await
                    .map(|_| ())
                    .map_err(|e| failed(&e));
            }
            Change::Remove(ids) => ChangeMembers::RemoveNodes(ids),
        };
        self.raft
            .change_membership(members, true)
            .await
            .map(|_| ())
            .map_err(|e| failed(&e))
    }
}
