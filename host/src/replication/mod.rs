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
mod config;
mod coordinator;
mod handle;
mod handoff;
mod hints;
mod merkle;
mod replica;
mod serve;
mod status;
mod sync;
#[cfg(test)]
mod tests;
mod tombstones;
mod version;
pub mod wire;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use config::{Quorum, ReplicationConfig, ReplicationSwitches};
pub use coordinator::Scan;
pub use handle::KvHandle;
pub use merkle::Leaves;
pub(crate) use replica::ANSWER_BYTES;
pub use replica::PutOutcome;
pub use status::{RingShare, Status};
pub use version::Version;

pub use crate::id::Namespace;
use crate::id::NodeId;
use crate::membership::{MemberSet, MemberState, Membership};
use crate::ring::{Ring, RingNode};
use crate::store::{Store, StoreError};
use crate::tasks::Tasks;
use crate::transport::Transport;

/// Largest key, in bytes: 4 KiB for the key itself plus room for its namespace.
pub const MAX_KEY: usize = (4 << 10) + 128;
/// Largest value, in bytes.
pub const MAX_VALUE: usize = 1 << 20;

/// One version of a key: a value, or a tombstone recording its deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// When it was written, in HLC order.
    pub version: Version,
    /// The value; `None` for a deletion.
    pub value: Option<Vec<u8>>,
}

impl Entry {
    pub(crate) fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("entries always encode")
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Entry, ReplicationError> {
        postcard::from_bytes(bytes)
            .map_err(|e| ReplicationError::Corrupt(format!("stored entry: {e}")))
    }
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
    /// Anything else, said in words.
    Other(String),
}

impl From<ReplicationError> for CasFailure {
    fn from(e: ReplicationError) -> Self {
        match e {
            ReplicationError::Conflict { current } => CasFailure::Conflict(current),
            ReplicationError::BadInput(s) => CasFailure::BadInput(s),
            other => CasFailure::Other(other.to_string()),
        }
    }
}

impl From<CasFailure> for ReplicationError {
    fn from(f: CasFailure) -> Self {
        match f {
            CasFailure::Conflict(current) => ReplicationError::Conflict { current },
            CasFailure::BadInput(s) => ReplicationError::BadInput(s),
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
}

/// Per-request quorum overrides (`r` or `w`, at most the namespace's `n`).
#[derive(Clone, Copy, Debug, Default)]
pub struct Overrides {
    /// Replicas that must answer this read.
    pub r: Option<u8>,
    /// Replicas that must flush this write.
    pub w: Option<u8>,
    /// After the write quorum, wait up to this long for the other replicas too (the function
    /// registry uses it so that a deploy is served everywhere when it returns).
    pub settle: Option<Duration>,
}

/// The ring as this node sees it, with the rings of the last `transition`.
pub(crate) struct View {
    pub(crate) ring: Ring,
    /// Earlier rings still consulted, with when they stopped being current.
    pub(crate) earlier: Vec<(Ring, Instant)>,
    /// QUIC address of every member that is not down.
    pub(crate) addrs: HashMap<NodeId, SocketAddr>,
    /// The cluster's size: every node ever seen in it (down or forgotten by membership
    /// included, this node too). `n` is capped at this.
    pub(crate) known: usize,
    pub(crate) changed: Instant,
}

impl View {
    /// A replication factor capped at the cluster's size, so a cluster of two keeps two
    /// copies and a lone node one.
    pub(crate) fn cap(&self, n: usize) -> usize {
        n.min(self.known.max(1))
    }

    /// The replica sets of `key` with replication factor `n`: the current ring's first.
    pub(crate) fn replica_sets(
        &self,
        key: &[u8],
        n: usize,
        placement: &crate::ring::Placement,
    ) -> Vec<Vec<NodeId>> {
        let mut sets = vec![self.ring.replicas_placed(key, n, placement)];
        for (ring, _) in &self.earlier {
            let set = ring.replicas_placed(key, n, placement);
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
        sets
    }
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
    /// Entries handed to new owners after this node stopped owning them.
    pub handed_off: AtomicU64,
    /// Tombstones collected (by this node as the keys' primary).
    pub tombstones_collected: AtomicU64,
    /// Hints dropped unsent because they were older than half the tombstone grace.
    pub hints_expired: AtomicU64,
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
    pub(crate) transport: Transport,
    pub(crate) config: ReplicationConfig,
    pub(crate) clock: Mutex<version::Clock>,
    pub(crate) view: RwLock<Arc<View>>,
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
    /// Every node ever seen in the cluster, this one included (kept in the store): the
    /// cluster's size does not shrink when membership forgets a member that has been down
    /// for long, nor across a restart, so a node left alone never takes writes alone.
    pub(crate) cluster: Mutex<BTreeSet<NodeId>>,
    pub(crate) started: Instant,
    /// The member set, followed by `view()`.
    pub(crate) members: Mutex<tokio::sync::watch::Receiver<MemberSet>>,
    /// Conditional writes this node coordinates take turns per stripe of keys.
    pub(crate) stripes: Vec<tokio::sync::Mutex<()>>,
    /// Where its background work runs (repairs, replica requests, the sync task).
    pub(crate) tasks: Tasks,
}

/// Unix time in milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Replicator {
    /// Starts the replicator of node `me`: it follows `membership` to rebuild the ring, and
    /// runs hinted handoff and anti-entropy until `cancel`.
    pub fn start(
        me: NodeId,
        store: Store,
        transport: Transport,
        membership: &Membership,
        config: ReplicationConfig,
        tasks: Tasks,
    ) -> Replicator {
        let members = membership.members();
        let cluster = cluster_nodes(&store, &me);
        let view = build_view(&members, &me, &cluster, config.vnodes, None);
        let inner = Arc::new(Inner {
            clock: Mutex::new(version::Clock::new(version::node_tag(&me))),
            me,
            store,
            transport,
            config,
            view: RwLock::new(Arc::new(view)),
            stats: Stats::default(),
            peers: Mutex::default(),
            wake: tokio::sync::Notify::new(),
            last_in_sync_ms: AtomicU64::new(0),
            #[cfg(feature = "test-switches")]
            ignore_down_for_gc: Default::default(),
            #[cfg(feature = "test-switches")]
            pause_anti_entropy: Default::default(),
            stripes: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
            cluster: Mutex::new(cluster),
            started: Instant::now(),
            tasks: tasks.clone(),
            members: Mutex::new(membership.watch()),
        });
        let replicator = Replicator { inner };
        tasks.spawn_joined(sync::run(
            replicator.clone(),
            membership.watch(),
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

    /// The node that owns `key` of `ns` (its first replica), with its QUIC address, or
    /// `None` for the address when it is this node.
    pub fn owner(&self, ns: &Namespace, key: &[u8]) -> (NodeId, Option<SocketAddr>) {
        let view = self.view();
        let owner = view
            .ring
            .replicas(&ns.key(key), 1)
            .pop()
            .unwrap_or_else(|| self.inner.me.clone());
        let addr = if owner == self.inner.me {
            None
        } else {
            view.addrs.get(&owner).copied()
        };
        (owner, addr)
    }

    /// The nodes that hold `key` of `ns` on the current ring, primary first.
    pub fn owners(&self, ns: &Namespace, key: &[u8]) -> Vec<NodeId> {
        let view = self.view();
        let full = ns.key(key);
        let n = view.cap(self.inner.config.quorum(ns.as_str()).n.get() as usize);
        view.ring
            .replicas_placed(&full, n, &self.inner.config.placement)
    }

    /// The node's background tasks.
    pub(crate) fn tasks(&self) -> &Tasks {
        &self.inner.tasks
    }

    /// The QUIC endpoint.
    pub(crate) fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// The ring as this node sees it now.
    pub(crate) fn view(&self) -> Arc<View> {
        // Follow membership at once, so an operation right after a member joined already
        // places keys on it (the background task follows it too, to start anti-entropy).
        let mut members = self.inner.members.lock().expect("not poisoned");
        if members.has_changed().unwrap_or(false) {
            let set = members.borrow_and_update().clone();
            drop(members);
            self.follow(&set);
        } else {
            drop(members);
        }
        self.inner.view.read().expect("not poisoned").clone()
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

/// Every node this node has seen in its cluster, from the store (and, for a data directory of
/// an earlier version, from the members it remembers), itself included.
fn cluster_nodes(store: &Store, me: &NodeId) -> BTreeSet<NodeId> {
    let mut cluster: BTreeSet<NodeId> = match store.cluster_nodes() {
        Ok(names) => names.iter().filter_map(|n| n.parse().ok()).collect(),
        Err(e) => {
            tracing::warn!(error = %e, "could not read the cluster's nodes from the store");
            BTreeSet::new()
        }
    };
    for (_, record) in store.members().unwrap_or_default() {
        if let Ok(id) = serde_json::from_slice::<crate::membership::Identity>(&record) {
            cluster.insert(id.node);
        }
    }
    cluster.insert(me.clone());
    cluster
}

/// The view of a member set: a ring of every member not down.
/// This node is always on its own ring, even before membership lists it. The cluster's size
/// counts `cluster` (every node ever seen) as well as the members listed now, so a node that
/// has not heard from its peers yet, or whose peers membership has forgotten, does not take
/// writes alone.
pub(crate) fn build_view(
    set: &MemberSet,
    me: &NodeId,
    cluster: &BTreeSet<NodeId>,
    vnodes: u32,
    old: Option<&View>,
) -> View {
    let live: Vec<_> = set
        .members
        .iter()
        .filter(|m| m.state != MemberState::Down && m.node != *me)
        .collect();
    let ring = Ring::new(
        live.iter()
            .map(|m| RingNode {
                node: m.node.clone(),
                tags: m.tags.clone(),
            })
            .chain(std::iter::once(RingNode {
                node: me.clone(),
                tags: set
                    .members
                    .iter()
                    .find(|m| m.node == *me)
                    .map(|m| m.tags.clone())
                    .unwrap_or_default(),
            })),
        vnodes,
    );
    let addrs = live.iter().map(|m| (m.node.clone(), m.addr)).collect();
    let mut names: BTreeSet<&NodeId> = set.members.iter().map(|m| &m.node).collect();
    names.insert(me);
    names.extend(cluster);
    let (earlier, changed) = match old {
        Some(old) if same_ring(&old.ring, &ring) => (old.earlier.clone(), old.changed),
        Some(old) => {
            let mut earlier = old.earlier.clone();
            earlier.push((old.ring.clone(), Instant::now()));
            (earlier, Instant::now())
        }
        None => (vec![], Instant::now()),
    };
    View {
        ring,
        earlier,
        addrs,
        known: names.len(),
        changed,
    }
}

fn same_ring(a: &Ring, b: &Ring) -> bool {
    a.nodes() == b.nodes()
}
