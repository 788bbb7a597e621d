//! The replicated store's messages between nodes: replicas' reads and writes, repairs,
//! anti-entropy, tombstone collection, scans, and conditional writes sent to a key's primary.

use serde::{Deserialize, Serialize};

use super::{CasFailure, Entry, Expect, Fence, Leaves, Namespace, PutOutcome, Version};
use crate::id::{LockKey, NodeId};
use crate::rpc::Wire;

/// The replicated store's service on the router.
pub struct KvWire;

impl Wire for KvWire {
    const NAME: &'static str = "key-value";
    const TAG: u8 = 2;
    const VERSION: u8 = 4;
    type Request = Request;
    type Response = Response;
}

/// A request to another node's replicas.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Your copy of a key, read under these locks (none: an ordinary read).
    KvGet { key: Vec<u8>, fences: Vec<Fence> },
    /// Store each of these writes of their coordinators (a key and its version) if it is
    /// newer, checking its fences; flush once, then answer.
    KvPutMany(Vec<(Vec<u8>, Entry)>),
    /// Store the newer of these entries and flush (repair, hints, anti-entropy, handoff);
    /// hints are checked against the fences as their writes were.
    KvPush {
        entries: Vec<(Vec<u8>, Entry)>,
        hinted: bool,
    },
    /// Your copies of these keys (the ones you hold).
    KvFetch(Vec<Vec<u8>>),
    /// Drop these keys if you still hold exactly their tombstone of that version.
    KvPurge(Vec<(Vec<u8>, Version)>),
    /// Your entries (tombstones too) whose keys start with `prefix`, from `start` on.
    KvScan {
        prefix: Vec<u8>,
        start: Vec<u8>,
        limit: u32,
    },
    /// Anti-entropy: is the root of the tree over the keys we both should hold this one?
    AeRoot { from: NodeId, root: [u8; 32] },
    /// Anti-entropy: the leaves of the tree over the keys we both should hold, as I see it.
    AeLeaves { from: NodeId, leaves: Leaves },
    /// Anti-entropy: your versions of the keys we both should hold in these fine ranges.
    AeVersions { from: NodeId, fine: Vec<u16> },
    /// Have you handed every key you hold and do not own to its owners on this placement
    /// (a `View::placement_id`), and is it your current one?
    AeHandedOff([u8; 32]),
    /// Coordinate this conditional write: you are the key's primary.
    KvCas {
        ns: Namespace,
        key: Vec<u8>,
        value: Option<Vec<u8>>,
        expect: Expect,
        /// The locks the write is made under.
        fences: Vec<Fence>,
        w: Option<u8>,
        settle_ms: Option<u64>,
        /// The value's time to live.
        ttl_ms: Option<u64>,
    },
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// A replica's copy of a key.
    KvEntry(Option<Entry>),
    /// A read refused: `lock` has been granted again, with the larger token `seen`.
    KvRefused { lock: LockKey, seen: u64 },
    /// What a replica did with each write of a `KvPutMany`, in order.
    KvPutMany(Vec<Result<PutOutcome, String>>),
    /// The entries held of the keys asked for, and how many of the keys the answer covers
    /// (the rest did not fit: ask again).
    KvFetched {
        entries: Vec<(Vec<u8>, Entry)>,
        consumed: u32,
    },
    /// A page of a replica's entries, and whether more follow.
    KvScanned {
        entries: Vec<(Vec<u8>, Entry)>,
        more: bool,
    },
    /// Done (stored and flushed).
    Done,
    /// The outcome of a conditional write coordinated by the primary.
    KvCas(Result<Version, CasFailure>),
    /// Anti-entropy: whether my root is the one asked about.
    AeSame(bool),
    /// Anti-entropy: the leaves where our trees differ, and my fine ranges in them that hold
    /// something.
    AeFine {
        differing: Vec<u16>,
        fine: Vec<(u16, [u8; 32])>,
    },
    /// Anti-entropy: the fine ranges answered (as many as fit), and my versions of the keys
    /// in them.
    AeDiff {
        differing: Vec<u16>,
        have: Vec<(Vec<u8>, Version)>,
    },
    /// Whether I have handed my keys over on the placement asked about.
    HandedOff(bool),
}
