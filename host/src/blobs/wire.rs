//! The blob service's messages between nodes: a streamed read, an offer to store a blob, and
//! a question of which blobs a node holds.

use serde::{Deserialize, Serialize};

use crate::id::{Digest, NodeId};
use crate::rpc::Wire;

/// The blob service on the router.
pub struct BlobsWire;

impl Wire for BlobsWire {
    const NAME: &'static str = "blobs";
    const TAG: u8 = 5;
    const VERSION: u8 = 1;
    type Request = Request;
    type Response = Response;
}

/// A request to another node's blob service.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Stream a blob you hold: the answer's head is [`Response::Size`], then its bytes follow
    /// in pieces.
    Read {
        /// The blob.
        digest: Digest,
    },
    /// Store this blob: pull it from `from` unless you hold a good copy; answer once it is
    /// on your disk.
    Offer {
        /// The blob.
        digest: Digest,
        /// Its size in bytes.
        size: u64,
        /// The node to pull it from.
        from: NodeId,
    },
    /// Which of these blobs do you hold? (Answered by [`Response::Held`], one size per digest,
    /// from the files present: a copy is checked against its digest when it is read.) Added
    /// without a new version: an older node answers it with an error, which counts as holding
    /// none of them.
    Has {
        /// The blobs.
        digests: Vec<Digest>,
    },
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// The size of the blob whose pieces follow, or `None` when it is not held here (and
    /// nothing follows).
    Size(Option<u64>),
    /// The offered blob is stored and synced.
    Done,
    /// For each digest asked about, the size of the copy here, if there is one.
    Held(Vec<Option<u64>>),
}
