//! The cluster's metadata in one Raft group: the only module that knows openraft.
//!
//! Metadata in consensus, bulk data on the ring: what must be agreed (the function registry,
//! locks, job state) is a command in the group's log, applied in the same order on every
//! node; key-value data, modules and job chunks stay on the ring. The group's log, vote and
//! snapshots live in the node's store and are flushed before they are acknowledged
//! ([`storage`]); the state machine itself ([`state`]) is pure.

pub mod state;
pub mod storage;

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

pub use state::{Command, Outcome, Register, Registers};

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
