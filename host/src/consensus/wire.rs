//! The group's messages between nodes: Raft's own (append, vote), snapshots (offered, then
//! pulled as a stream), and commands forwarded to the leader.

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{SnapshotMeta, Vote};
use serde::{Deserialize, Serialize};

use super::{Member, Outcome, Proposal, RaftId, TypeConfig};
use crate::rpc::Wire;

/// The consensus service on the router.
pub struct RaftWire;

impl Wire for RaftWire {
    const NAME: &'static str = "consensus";
    const TAG: u8 = 6;
    const VERSION: u8 = 3;
    type Request = Request;
    type Response = Response;
}

/// A request to another member of the group. Raft's own messages name the member they are
/// for: a node answers only those for its own id, so a node that came back with a wiped data
/// directory (a new id, perhaps at the old address) never answers for the member it was.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Raft's AppendEntries (heartbeats too).
    Append {
        /// The member it is for.
        to: RaftId,
        /// The request.
        rpc: AppendEntriesRequest<TypeConfig>,
    },
    /// Raft's RequestVote.
    Vote {
        /// The member it is for.
        to: RaftId,
        /// The request.
        rpc: VoteRequest<RaftId>,
    },
    /// A snapshot for you: pull it from the sender ([`Request::ReadSnapshot`]) and install it.
    Snapshot {
        /// The member it is for.
        to: RaftId,
        /// The leader's vote.
        vote: Vote<RaftId>,
        /// What the snapshot covers.
        meta: SnapshotMeta<RaftId, Member>,
    },
    /// Stream your current snapshot, if its id is this (head: [`Response::SnapshotSize`]).
    ReadSnapshot {
        /// The snapshot's id.
        id: String,
    },
    /// Propose this command (to the leader).
    Propose(Proposal),
    /// Confirm you are still the leader and say up to which entry a read must have applied
    /// (a follower's linearizable read).
    ReadIndex,
    /// Answer once you have applied the entry at `index`, or after `within_ms`.
    Applied {
        /// The entry.
        index: u64,
        /// How long to wait, in milliseconds.
        within_ms: u64,
    },
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// To [`Request::Append`].
    Append(AppendEntriesResponse<RaftId>),
    /// To [`Request::Vote`].
    Vote(VoteResponse<RaftId>),
    /// To [`Request::Snapshot`]: installed.
    Installed(SnapshotResponse<RaftId>),
    /// To [`Request::ReadSnapshot`]: its size, then its bytes in pieces (`None`: not the
    /// current snapshot here any more).
    SnapshotSize(Option<u64>),
    /// To [`Request::Propose`]: committed and applied at this index, with this outcome.
    Committed {
        /// The entry's index.
        index: u64,
        /// What it did.
        outcome: Outcome,
    },
    /// To [`Request::Propose`] and [`Request::ReadIndex`]: this node is not the leader; the
    /// leader, if known.
    NotLeader(Option<Member>),
    /// To [`Request::ReadIndex`]: a read must see every entry up to this index.
    ReadIndex(Option<u64>),
    /// To [`Request::Applied`]: whether the entry was applied in time.
    Applied(bool),
    /// To [`Request::Propose`] and [`Request::ReadIndex`]: the leader could not do it.
    Failed(String),
}
