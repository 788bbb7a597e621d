//! Membership's messages between nodes: the direct check of a suspect, and the full-state
//! exchange of member lists.

use serde::{Deserialize, Serialize};

use super::core::SyncMember;
use crate::id::NodeId;
use crate::rpc::Wire;

/// Membership's service on the router.
pub struct MembershipWire;

impl Wire for MembershipWire {
    const NAME: &'static str = "membership";
    const TAG: u8 = 1;
    const VERSION: u8 = 1;
    type Request = Request;
    type Response = Response;
}

/// A request to another node's membership.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Are you there? The direct check of a suspect, telling it the incarnation it is
    /// suspected at, so it can refute at once.
    Ping { suspected: Option<u16> },
    /// Here are the members I know; which do you know? (Full-state exchange; the first entry
    /// is the sender itself.)
    Sync(Vec<SyncMember>),
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// Yes: my name, and my incarnation (raised past the suspicion, if there was one).
    Pong { node: NodeId, incarnation: u16 },
    /// The members the answering node knows, itself first.
    Members(Vec<SyncMember>),
}
