//! The lock service's messages between nodes: asking the leader how long each lease has left.

use serde::{Deserialize, Serialize};

use crate::rpc::Wire;

/// The lock service on the router.
pub struct LocksWire;

impl Wire for LocksWire {
    const NAME: &'static str = "locks";
    const TAG: u8 = 7;
    const VERSION: u8 = 1;
    type Request = Request;
    type Response = Response;
}

/// A request to the leader's lock service.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// How long each lease you judge has left.
    Leases,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// Per lock: its key, the token whose lease it is, and the milliseconds left (`None`: this
    /// node does not lead the group now).
    Leases(Option<Vec<(String, u64, u64)>>),
}
