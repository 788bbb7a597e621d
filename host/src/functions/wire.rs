//! Module distribution's messages between nodes: pieces of a module, and offers of one.

use serde::{Deserialize, Serialize};

use crate::id::{Digest, NodeId};
use crate::rpc::Wire;

/// Module distribution's service on the router.
pub struct ModulesWire;

impl Wire for ModulesWire {
    const NAME: &'static str = "modules";
    const TAG: u8 = 3;
    const VERSION: u8 = 1;
    type Request = Request;
    type Response = Response;
}

/// A request to another node's module store.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Up to `len` bytes of a module you hold, from `offset`.
    ModuleRead {
        digest: Digest,
        offset: u64,
        len: u32,
    },
    /// Store this module: fetch it from `from` unless you hold a good copy.
    ModuleOffer {
        digest: Digest,
        size: u64,
        from: NodeId,
    },
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// A piece of a module and its total size, or `None` when it is not held.
    ModuleBytes(Option<(u64, Vec<u8>)>),
    /// Done (stored and flushed).
    Done,
}
