//! Replicated key-value data, Dynamo-style: every key lives on the `n` nodes the ring gives
//! it; a write is acknowledged once `w` of them have flushed it, a read asks until `r` have
//! answered and takes the newest version. Versions are hybrid logical clocks ([`version`]).
//! Replicas converge by read repair, hinted handoff and Merkle anti-entropy ([`sync`]).
//!
//! One [`Replicator`] per node coordinates the operations clients and guests ask of this node,
//! and answers its peers' requests for its own copies ([`replica`]). The ring is rebuilt from
//! the membership view: every member that is not down. For [`ReplicationConfig::transition`]
//! after the ring changes, reads and writes also need a quorum of each earlier ring's
//! replicas, so keys stay readable while anti-entropy moves them to their new owners.

mod anti_entropy;
mod batch;
mod collected;
mod config;
mod coordinator;
mod gate;
mod handle;
mod handoff;
mod hints;
mod kept;
mod merkle;
#[cfg(test)]
mod model;
mod replica;
mod serve;
mod status;
mod sync;
#[cfg(test)]
mod tests;
mod tombstones;
mod version;
pub mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use config::{Quorum, ReplicationConfig, ReplicationSwitches};
pub use coordinator::Scan;
pub use gate::{ALL_SEEN_BYTES, Failure, Gate, Mark, SEEN_BYTES, WAITING_BYTES};
pub use handle::{KvHandle, add_to_counter};
pub use merkle::Leaves;
pub(crate) use replica::ANSWER_BYTES;
pub use replica::PutOutcome;
pub use status::{RingShare, Status};
pub use version::Version;

pub use crate::id::Namespace;
use crate::id::{LockKey, NodeId};
use crate::placement::{Placement, View};
use crate::store::{Store, StoreError};
use crate::tasks::Tasks;

/// Largest key a client or guest may use, in bytes (its namespace is not counted).
pub const MAX_KEY: usize = 4 << 10;
/// Largest value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;

/// The longest time to live a write may ask for: about ten years.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 366 * 24 * 3600);

/// A write's time to live, if it has one, must be above 0 and at most [`MAX_TTL`].
pub(crate) fn check_ttl(ttl: Option<Duration>) -> Result<(), ReplicationError> {
    match ttl {
        Some(t) if t.is_zero() || t > MAX_TTL => Err(ReplicationError::BadInput(format!(
            "a ttl must be above 0 and at most 10 years, not {}",
            crate::millis::show(t)
        ))),
        _ => Ok(()),
    }
}

/// The one check of the key-value limits, where a key or value enters the node: the
/// coordinator's operations for clients and guests (`key` without its namespace), and, through
/// [`check_entry`], a replica applying an entry from a peer's write, hint, repair or
/// anti-entropy.
pub(crate) fn check_limits(key: &[u8], value: Option<&[u8]>) -> Result<(), ReplicationError> {
    if key.len() > MAX_KEY {
        return Err(ReplicationError::TooLarge(format!(
            "a key of {} bytes is over the limit of {MAX_KEY} bytes",
            key.len()
        )));
    }
    if let Some(v) = value
        && v.len() > MAX_VALUE
    {
        return Err(ReplicationError::TooLarge(format!(
            "a value of {} bytes is over the limit of {MAX_VALUE} bytes",
            v.len()
        )));
    }
    Ok(())
}

/// One version of a key: a value, or a tombstone recording its deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When it was written: fencing token, then HLC order.
    pub version: Version,
    /// The value; `None` for a deletion.
    pub value: Option<Vec<u8>>,
    /// The locks the write was made under (empty for an unfenced write); `version.token` is
    /// the largest of their tokens.
    pub fences: Vec<Fence>,
    /// When the value expires (Unix ms, judged by each reader's clock): the write's time plus
    /// its TTL. From then on the key reads as absent everywhere, and the entry is collected
    /// like a tombstone. `None`: the value lives until it is overwritten or deleted.
    pub expires: Option<u64>,
}

/// A lock a write was made under: the lock's key and the fencing token of its grant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fence {
    /// The lock.
    pub lock: LockKey,
    /// The token its holder was granted.
    pub token: u64,
}

/// The first byte of an entry stored by this version. Entries stored by the versions before
/// expiry begin with [`FENCED_FORMAT`]; those before fencing (no fences, no token) with their
/// HLC as a varint, whose first byte is at least 0x80 for any clock after 1970, so none of
/// them meet.
const ENTRY_FORMAT: u8 = 2;

/// The first byte of an entry stored before expiry: [`Fenced`] follows.
const FENCED_FORMAT: u8 = 1;

/// An entry as stored before expiry.
#[derive(Deserialize)]
struct Fenced {
    version: Version,
    value: Option<Vec<u8>>,
    fences: Vec<Fence>,
}

impl Entry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut out = vec![ENTRY_FORMAT];
        postcard::to_io(self, &mut out).expect("entries always encode");
        out
    }

    /// When this entry stops holding a value, if ever: the time of its deletion (a tombstone)
    /// or of its expiry (Unix ms). Collection treats both alike: after the tombstone grace,
    /// with every owner holding this same entry, it is dropped.
    pub(crate) fn ends(&self) -> Option<u64> {
        match self.value {
            None => Some(self.version.millis()),
            Some(_) => self.expires,
        }
    }

    /// What a reader sees of the entry at `now` (Unix ms): nothing for a tombstone or an
    /// expired value.
    pub(crate) fn read(self, now: u64) -> Option<Read> {
        match self.expires {
            Some(at) if at <= now => None,
            expires => self.value.map(|value| Read {
                version: self.version,
                value,
                expires,
            }),
        }
    }

    /// Whether the entry holds a value at `now` (Unix ms).
    pub(crate) fn is_live(&self, now: u64) -> bool {
        self.value.is_some() && self.expires.is_none_or(|at| at > now)
    }

    /// The version of the stored entry `bytes`, without decoding its value (the version comes
    /// first in both formats). Agrees with [`Entry::decode`] on every entry that decodes.
    pub(crate) fn version_of(bytes: &[u8]) -> Result<Version, ReplicationError> {
        let corrupt = |e: postcard::Error| ReplicationError::Corrupt(format!("stored entry: {e}"));
        match bytes.split_first() {
            Some((&(ENTRY_FORMAT | FENCED_FORMAT), rest)) => {
                Ok(postcard::take_from_bytes(rest).map_err(corrupt)?.0)
            }
            _ => {
                let ((hlc, node), _): ((u64, u64), _) =
                    postcard::take_from_bytes(bytes).map_err(corrupt)?;
                Ok(Version {
                    token: 0,
                    hlc,
                    node,
                })
            }
        }
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Entry, ReplicationError> {
        let corrupt = |e: postcard::Error| ReplicationError::Corrupt(format!("stored entry: {e}"));
        match bytes.split_first() {
            Some((&ENTRY_FORMAT, rest)) => postcard::from_bytes(rest).map_err(corrupt),
            Some((&FENCED_FORMAT, rest)) => {
                let f: Fenced = postcard::from_bytes(rest).map_err(corrupt)?;
                Ok(Entry {
                    version: f.version,
                    value: f.value,
                    fences: f.fences,
                    expires: None,
                })
            }
            _ => {
                let (version, value): ((u64, u64), Option<Vec<u8>>) =
                    postcard::from_bytes(bytes).map_err(corrupt)?;
                Ok(Entry {
                    version: Version {
                        token: 0,
                        hlc: version.0,
                        node: version.1,
                    },
                    value,
                    fences: Vec::new(),
                    expires: None,
                })
            }
        }
    }
}

/// [`check_limits`] for a stored key (`namespace \0 key`) and its entry.
pub(crate) fn check_entry(stored: &[u8], entry: &Entry) -> Result<(), ReplicationError> {
    let key = stored
        .get(namespace_of(stored).len() + 1..)
        .unwrap_or(stored);
    check_limits(key, entry.value.as_deref())
}

/// The namespace part of a stored key.
fn namespace_of(key: &[u8]) -> &str {
    let end = key.iter().position(|&b| b == 0).unwrap_or(key.len());
    std::str::from_utf8(&key[..end]).unwrap_or("")
}

/// Why a replicated operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    /// The caller asked for something malformed.
    #[error("{0}")]
    BadInput(String),
    /// A key or value over the limits ([`MAX_KEY`], [`MAX_VALUE`]).
    #[error("{0}")]
    TooLarge(String),
    /// Too few replicas answered.
    #[error(
        "only {got} of the {needed} replicas needed answered ({what}); failures: {failures}. Try again when more nodes are up, or ask for a smaller quorum"
    )]
    Unavailable {
        /// `read` or `write`.
        what: &'static str,
        /// Replicas that had to answer.
        needed: usize,
        /// Replicas that did.
        got: usize,
        /// What the others said.
        failures: String,
    },
    /// A conditional write found another version.
    #[error("the key is at version {}, not the one expected", current.map_or("none (absent)".to_string(), |v| v.to_string()))]
    Conflict {
        /// The version found (`None`: the key is absent).
        current: Option<Version>,
    },
    /// A read or write made under a lock that a replica knows was granted again since: its
    /// holder lost the lock, and it was refused.
    #[error(
        "refused: lock `{lock}` was granted again (token {seen}) after the grant this read or write was made under (token {token}), so the lock was lost; a refused write is not acknowledged (a replica that had not yet seen the later grant may keep it, below every write made under that grant)"
    )]
    Fenced {
        /// The lock.
        lock: LockKey,
        /// The token the write carried.
        token: u64,
        /// The larger token a replica has seen for the lock.
        seen: u64,
    },
    /// A read or write through a lock-protected handler's output gate, refused because the
    /// lock was lost (found so by this node, or by a replica that refused an earlier batch).
    #[error("{0}")]
    LockLost(String),
    /// A read or write through a lock-protected handler's output gate, not tried: a write
    /// under the same grant was not acknowledged.
    #[error(
        "an earlier write under this lock was not acknowledged ({0}), so nothing more is written under it until the lock is taken again"
    )]
    LineFailed(String),
    /// Local storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The node coordinating the operation reported a failure.
    #[error("the key's primary replica could not complete the write: {0}")]
    Remote(String),
    /// A stored or received record could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// A failed conditional write as it travels back from the primary.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum CasFailure {
    /// See [`ReplicationError::Conflict`].
    Conflict(Option<Version>),
    /// See [`ReplicationError::BadInput`].
    BadInput(String),
    /// See [`ReplicationError::Fenced`].
    Fenced {
        /// The lock.
        lock: LockKey,
        /// The token the write carried.
        token: u64,
        /// The larger token a replica has seen.
        seen: u64,
    },
    /// Anything else, said in words.
    Other(String),
}

impl From<ReplicationError> for CasFailure {
    fn from(e: ReplicationError) -> Self {
        match e {
            ReplicationError::Conflict { current } => CasFailure::Conflict(current),
            ReplicationError::BadInput(s) => CasFailure::BadInput(s),
            ReplicationError::Fenced { lock, token, seen } => {
                CasFailure::Fenced { lock, token, seen }
            }
            other => CasFailure::Other(other.to_string()),
        }
    }
}

impl From<CasFailure> for ReplicationError {
    fn from(f: CasFailure) -> Self {
        match f {
            CasFailure::Conflict(current) => ReplicationError::Conflict { current },
            CasFailure::BadInput(s) => ReplicationError::BadInput(s),
            CasFailure::Fenced { lock, token, seen } => {
                ReplicationError::Fenced { lock, token, seen }
            }
            CasFailure::Other(s) => ReplicationError::Remote(s),
        }
    }
}

/// What to require of a conditional write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expect {
    /// The key must be absent (or deleted).
    Absent,
    /// The key's live version must be this one.
    Version(Version),
}

/// A value read, with its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Read {
    /// The newest version among the replicas that answered.
    pub version: Version,
    /// The value.
    pub value: Vec<u8>,
    /// When the value expires (Unix ms), if it does.
    pub expires: Option<u64>,
}

/// Per-request options: quorum overrides (`r` or `w`, at most the namespace's `n`), and how
/// long a written value lives.
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    /// Replicas that must answer this read.
    pub r: Option<u8>,
    /// Replicas that must flush this write.
    pub w: Option<u8>,
    /// After the write quorum, wait up to this long for the other replicas too (the function
    /// registry uses it so that a deploy is served everywhere when it returns).
    pub settle: Option<Duration>,
    /// The written value expires this long after the write ([`Entry::expires`]); `None`: it
    /// does not expire. Ignored by deletions.
    pub ttl: Option<Duration>,
}

/// Counters shown by `/v1/status` and `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Reads coordinated.
    pub reads: AtomicU64,
    /// Writes coordinated (acknowledged).
    pub writes: AtomicU64,
    /// Reads or writes refused for want of replicas.
    pub unavailable: AtomicU64,
    /// Writes retried because a replica held a newer version.
    pub stale_retries: AtomicU64,
    /// Entries sent to replicas found behind by a read.
    pub read_repairs: AtomicU64,
    /// Hints stored for replicas that did not take a write.
    pub hints_stored: AtomicU64,
    /// Hints delivered.
    pub hints_delivered: AtomicU64,
    /// Anti-entropy rounds completed.
    pub ae_rounds: AtomicU64,
    /// Entries fetched from peers by anti-entropy.
    pub ae_pulled: AtomicU64,
    /// Entries sent to peers by anti-entropy.
    pub ae_pushed: AtomicU64,
    /// Requests of replica writes this node sent to peers ([`batch`]).
    pub write_batches: AtomicU64,
    /// Replica writes those requests carried.
    pub batched_writes: AtomicU64,
    /// Bytes of the requests of this node's anti-entropy exchanges (payloads).
    pub ae_bytes_sent: AtomicU64,
    /// Bytes of the answers to this node's anti-entropy exchanges (payloads).
    pub ae_bytes_received: AtomicU64,
    /// Entries dropped once their new owners had them, after a transition.
    pub handed_off: AtomicU64,
    /// Entries pushed to their new owners after this node stopped owning them.
    pub handoff_pushed: AtomicU64,
    /// Transitions this node ended because every member confirmed its handoff.
    pub transitions_ended: AtomicU64,
    /// Tombstones collected (by this node as the keys' primary).
    pub tombstones_collected: AtomicU64,
    /// Hints dropped unsent because they were older than half the tombstone grace.
    pub hints_expired: AtomicU64,
    /// Writes this node refused as a replica: made under a lock it had seen granted again.
    pub fenced: AtomicU64,
    /// Writes this node coordinated that were refused so (the writer had lost its lock).
    pub fenced_writes: AtomicU64,
    /// Batches lock-protected handlers' output gates sent.
    pub gate_batches: AtomicU64,
    /// Writes in them (one per key and batch).
    pub gate_writes: AtomicU64,
}

/// The result of the last anti-entropy exchange with one peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerSync {
    /// When it ended (Unix ms).
    pub at_ms: u64,
    /// Whether both sides already had the same tree.
    pub in_sync: bool,
    /// Ranges (of 1024) that differed.
    pub differing: usize,
    /// Entries fetched and sent.
    pub pulled: u64,
    /// Entries sent.
    pub pushed: u64,
    /// Why the exchange failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// This node's coordinator and replica of the key-value store. Cheap to clone.
#[derive(Clone)]
pub struct Replicator {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) me: NodeId,
    pub(crate) store: Store,
    pub(crate) placement: Placement,
    pub(crate) config: ReplicationConfig,
    pub(crate) clock: Mutex<version::Clock>,
    pub(crate) stats: Stats,
    pub(crate) peers: Mutex<BTreeMap<NodeId, PeerSync>>,
    /// Wakes the anti-entropy task early (the ring changed).
    pub(crate) wake: tokio::sync::Notify,
    /// Unix ms of the last anti-entropy round that found every peer in sync.
    pub(crate) last_in_sync_ms: AtomicU64,
    /// Test only: anti-entropy rounds (and the hand-off of keys to new owners) wait.
    #[cfg(feature = "test-switches")]
    pub(crate) pause_anti_entropy: std::sync::atomic::AtomicBool,
    /// Test only: collect tombstones even while a member is down (shows why it must not).
    #[cfg(feature = "test-switches")]
    pub(crate) ignore_down_for_gc: std::sync::atomic::AtomicBool,
    /// Conditional writes this node coordinates take turns per stripe of keys.
    pub(crate) stripes: Vec<tokio::sync::Mutex<()>>,
    /// Where its background work runs (repairs, replica requests, the sync task).
    pub(crate) tasks: Tasks,
    /// Bytes the output gates of this node spend remembering versions, in all (at most
    /// [`gate::ALL_SEEN_BYTES`]).
    pub(crate) gates_seen: std::sync::atomic::AtomicUsize,
    /// The anti-entropy trees, kept as the data changes.
    pub(crate) kept: Arc<kept::KeptTrees>,
    /// The tombstones this node dropped lately, refused when a copy comes back.
    pub(crate) collected: collected::Collected,
    /// This node's handoff of the keys it no longer owns.
    pub(crate) handing: Mutex<handoff::Handing>,
    /// Replica writes waiting to go to each peer.
    pub(crate) batches: batch::Batches,
}

/// A node refuses copies of a tombstone it collected for this many anti-entropy intervals
/// ([`collected`]): longer than a round that read the tombstone before it was dropped can take.
const COLLECTED_ROUNDS: u32 = 10;

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Replicator {
    /// Starts the replicator: keys go where `placement` says, and hinted handoff and
    /// anti-entropy run until the node stops.
    pub fn start(
        store: Store,
        placement: Placement,
        config: ReplicationConfig,
        tasks: Tasks,
    ) -> Replicator {
        let me = placement.me().clone();
        let kept = kept::KeptTrees::watch(me.clone(), config.clone(), &store);
        if let Err(e) = store.index_replicas(crate::ring::Ring::point) {
            // Anti-entropy then lists a range's entries by reading them all.
            tracing::error!(error = %e, "could not index the replicated data by ring point");
        }
        let inner = Arc::new(Inner {
            kept,
            handing: Mutex::default(),
            batches: batch::Batches::default(),
            collected: collected::Collected::new(config.anti_entropy_interval * COLLECTED_ROUNDS),
            clock: Mutex::new(version::Clock::new(version::node_tag(&me))),
            me,
            store,
            placement: placement.clone(),
            config,
            stats: Stats::default(),
            peers: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            last_in_sync_ms: AtomicU64::new(0),
            #[cfg(feature = "test-switches")]
            ignore_down_for_gc: Default::default(),
            #[cfg(feature = "test-switches")]
            pause_anti_entropy: Default::default(),
            stripes: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
            gates_seen: Default::default(),
            tasks: tasks.clone(),
        });
        let replicator = Replicator { inner };
        tasks.spawn_joined(sync::run(
            replicator.clone(),
            placement.changes(),
            tasks.token().clone(),
        ));
        replicator
    }

    pub(crate) fn inner(&self) -> &Inner {
        &self.inner
    }

    /// This node's name.
    pub fn me(&self) -> &NodeId {
        &self.inner.me
    }

    /// The nodes that hold `key` of `ns` on the current ring, primary first.
    pub fn owners(&self, ns: &Namespace, key: &[u8]) -> Vec<NodeId> {
        self.inner.placement.replicas(&ns.key(key), self.n(ns))
    }

    /// The replication factor of a namespace, before the cap at the cluster's size.
    fn n(&self, ns: &Namespace) -> usize {
        self.inner.config.quorum(ns.as_str()).n.get() as usize
    }

    /// The ring as this node sees it now.
    pub(crate) fn view(&self) -> Arc<View> {
        self.inner.placement.view()
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.inner.stats
    }

    /// The configuration.
    pub fn config(&self) -> &ReplicationConfig {
        &self.inner.config
    }

    /// The safety rules a test switched off (none, outside tests).
    pub(crate) fn switches(&self) -> ReplicationSwitches {
        #[cfg(feature = "test-switches")]
        return self.inner.config.unsafe_switches;
        #[cfg(not(feature = "test-switches"))]
        ReplicationSwitches::default()
    }

    /// Test only: while set, anti-entropy rounds (and with them the hand-off of keys to new
    /// owners) do nothing.
    #[cfg(feature = "test-switches")]
    pub fn pause_anti_entropy(&self, on: bool) {
        self.inner
            .pause_anti_entropy
            .store(on, std::sync::atomic::Ordering::SeqCst);
        if !on {
            self.inner.wake.notify_one();
        }
    }

    /// Test only: when set, tombstones are collected even while a member is down.
    #[cfg(feature = "test-switches")]
    pub fn set_collect_while_down(&self, on: bool) {
        self.inner
            .ignore_down_for_gc
            .store(on, std::sync::atomic::Ordering::SeqCst);
    }

    fn tick(&self) -> Version {
        let now = now_ms().saturating_add_signed(self.switches().clock_skew_ms);
        self.inner.clock.lock().expect("not poisoned").tick(now)
    }

    pub(crate) fn observe(&self, v: Version) {
        self.inner.clock.lock().expect("not poisoned").observe(v);
    }

    /// `(n, r, w)` for a namespace with the overrides, capped at the cluster's size.
    fn quorum(
        &self,
        ns: &Namespace,
        o: Overrides,
        view: &View,
    ) -> Result<(usize, usize, usize), ReplicationError> {
        let q: Quorum = self.inner.config.quorum(ns.as_str());
        let n = q.n.get();
        for (what, v) in [("r", o.r), ("w", o.w)] {
            if let Some(v) = v
                && !(1..=n).contains(&v)
            {
                return Err(ReplicationError::BadInput(format!(
                    "{what} must be between 1 and n = {n} for namespace `{ns}`, not {v}"
                )));
            }
        }
        let n = view.cap(n as usize);
        let r = (o.r.unwrap_or(q.r.get()) as usize).min(n);
        let w = (o.w.unwrap_or(q.w.get()) as usize).min(n);
        Ok((n, r, w))
    }
}
