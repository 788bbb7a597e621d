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

mod merkle;
mod replica;
mod sync;
#[cfg(test)]
mod tests;
mod version;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use merkle::Leaves;
pub use replica::PutOutcome;
pub use version::Version;

use crate::config::{Quorum, ReplicationConfig};
use crate::id::{FunctionName, NodeId};
use crate::membership::{MemberSet, MemberState, Membership};
use crate::ring::{Ring, RingNode};
use crate::rpc::{self, Request, Response};
use crate::store::{Store, StoreError};
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

/// A key-value namespace: 1 to 64 characters of `[a-z0-9-_.]`, starting with a letter or
/// digit. A function's own namespace is `fn.NAME`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

impl Namespace {
    /// The private namespace of a function.
    pub fn of_function(f: &FunctionName) -> Namespace {
        Namespace(format!("fn.{f}"))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The stored key of `key` in this namespace.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.0.len() + 1 + key.len());
        k.extend_from_slice(self.0.as_bytes());
        k.push(0);
        k.extend_from_slice(key);
        k
    }
}

impl std::str::FromStr for Namespace {
    type Err = ReplicationError;
    fn from_str(s: &str) -> Result<Self, ReplicationError> {
        let ok = (1..=64).contains(&s.len())
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
        if ok {
            Ok(Namespace(s.to_string()))
        } else {
            Err(ReplicationError::BadInput(format!(
                "`{s}` is not a namespace: use 1 to 64 characters of a-z, 0-9, `-`, `_` and `.`, starting with a letter or digit"
            )))
        }
    }
}

impl TryFrom<String> for Namespace {
    type Error = ReplicationError;
    fn try_from(s: String) -> Result<Self, ReplicationError> {
        s.parse()
    }
}

impl From<Namespace> for String {
    fn from(n: Namespace) -> String {
        n.0
    }
}

impl std::fmt::Display for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
    /// A conditional write reached some replicas but not a quorum: it may or may not show.
    #[error(
        "the conditional write reached {applied} of the {needed} replicas needed before another write won: it may show on some replicas; read the key and retry"
    )]
    Indeterminate {
        /// Replicas that applied it.
        applied: usize,
        /// Replicas needed.
        needed: usize,
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
    /// See [`ReplicationError::Indeterminate`].
    Indeterminate(u32, u32),
    /// See [`ReplicationError::BadInput`].
    BadInput(String),
    /// Anything else, said in words.
    Other(String),
}

impl From<ReplicationError> for CasFailure {
    fn from(e: ReplicationError) -> Self {
        match e {
            ReplicationError::Conflict { current } => CasFailure::Conflict(current),
            ReplicationError::Indeterminate { applied, needed } => {
                CasFailure::Indeterminate(applied as u32, needed as u32)
            }
            ReplicationError::BadInput(s) => CasFailure::BadInput(s),
            other => CasFailure::Other(other.to_string()),
        }
    }
}

impl From<CasFailure> for ReplicationError {
    fn from(f: CasFailure) -> Self {
        match f {
            CasFailure::Conflict(current) => ReplicationError::Conflict { current },
            CasFailure::Indeterminate(applied, needed) => ReplicationError::Indeterminate {
                applied: applied as usize,
                needed: needed as usize,
            },
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
    /// Every member known, down ones included: `n` is capped at this.
    pub(crate) known: usize,
    pub(crate) changed: Instant,
}

impl View {
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
    /// Test only: skip the quorum check of earlier rings (shows the transition is needed).
    pub(crate) ignore_earlier: std::sync::atomic::AtomicBool,
    /// Members remembered from before a restart (self included): a floor on the cluster's
    /// size during the first transition period after start.
    pub(crate) remembered: usize,
    pub(crate) started: Instant,
    /// The member set, followed by `view()`.
    pub(crate) members: Mutex<tokio::sync::watch::Receiver<MemberSet>>,
    /// Conditional writes this node coordinates take turns per stripe of keys.
    pub(crate) stripes: Vec<tokio::sync::Mutex<()>>,
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
        cancel: CancellationToken,
    ) -> (Replicator, tokio::task::JoinHandle<()>) {
        let members = membership.members();
        // Until the first transition period is over, count the members remembered from
        // before a restart, so a node that has not heard from them yet does not write alone.
        let remembered = store.members().map_or(0, |m| m.len()) + 1;
        let view = build_view(&members, &me, remembered, config.vnodes, None);
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
            ignore_earlier: Default::default(),
            stripes: (0..256).map(|_| tokio::sync::Mutex::new(())).collect(),
            remembered,
            started: Instant::now(),
            members: Mutex::new(membership.watch()),
        });
        let replicator = Replicator { inner };
        let task = tokio::spawn(sync::run(replicator.clone(), membership.watch(), cancel));
        (replicator, task)
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
        let n = (self.inner.config.quorum(ns.as_str()).n.get() as usize).min(view.known.max(1));
        view.ring
            .replicas_placed(&full, n, &self.inner.config.placement)
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

    /// Test only: when set, reads and writes ignore earlier rings during a transition.
    #[doc(hidden)]
    pub fn set_ignore_earlier_rings(&self, on: bool) {
        self.inner.ignore_earlier.store(on, Ordering::SeqCst);
    }

    fn tick(&self) -> Version {
        self.inner
            .clock
            .lock()
            .expect("not poisoned")
            .tick(now_ms())
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
        let cap = view.known.max(1);
        let n = (n as usize).min(cap);
        let r = (o.r.unwrap_or(q.r.get()) as usize).min(n);
        let w = (o.w.unwrap_or(q.w.get()) as usize).min(n);
        Ok((n, r, w))
    }

    fn check_key(key: &[u8]) -> Result<(), ReplicationError> {
        if key.len() > MAX_KEY {
            return Err(ReplicationError::BadInput(format!(
                "a key of {} bytes is over the limit of {MAX_KEY} bytes",
                key.len()
            )));
        }
        Ok(())
    }

    /// Reads `key` in `ns`: the newest version among `r` replicas (of each ring in
    /// transition). Replicas found behind are repaired in the background.
    pub async fn get(
        &self,
        ns: &Namespace,
        key: &[u8],
        o: Overrides,
    ) -> Result<Option<Read>, ReplicationError> {
        let full = ns.key(key);
        Self::check_key(&full)?;
        let newest = self.newest(ns, full, o).await?;
        Ok(newest.and_then(|e| {
            e.value.map(|value| Read {
                version: e.version,
                value,
            })
        }))
    }

    /// The newest entry (a tombstone too) among `r` replicas of each ring in transition;
    /// replicas found behind are repaired in the background.
    async fn newest(
        &self,
        ns: &Namespace,
        full: Vec<u8>,
        o: Overrides,
    ) -> Result<Option<Entry>, ReplicationError> {
        let view = self.view();
        let (n, r, w) = self.quorum(ns, o, &view)?;
        let sets = self.sets(&view, &full, n);
        let targets = union(&sets);
        let (tx, mut rx) = mpsc::channel(targets.len().max(1));
        for node in &targets {
            let (this, node, key, tx) = (self.clone(), node.clone(), full.clone(), tx.clone());
            let addr = view.addrs.get(&node).copied();
            tokio::spawn(async move {
                let result = this.fetch_one(&node, addr, &key).await;
                let _ = tx.send((node, result)).await;
            });
        }
        drop(tx);
        let mut answers: HashMap<NodeId, Option<Entry>> = HashMap::new();
        let mut failures = Vec::new();
        while let Some((node, result)) = rx.recv().await {
            match result {
                Ok(entry) => {
                    answers.insert(node, entry);
                }
                Err(e) => failures.push(format!("{node}: {e}")),
            }
            if sets
                .iter()
                .enumerate()
                .all(|(i, s)| count_in(s, |x| answers.contains_key(x)) >= needed(i, s, r, w))
            {
                break;
            }
        }
        let short = sets
            .iter()
            .enumerate()
            .find(|(i, s)| count_in(s, |x| answers.contains_key(x)) < needed(*i, s, r, w))
            .map(|(_, s)| s);
        if let Some(set) = short {
            self.inner.stats.unavailable.fetch_add(1, Ordering::Relaxed);
            return Err(ReplicationError::Unavailable {
                what: "read",
                needed: r,
                got: count_in(set, |x| answers.contains_key(x)),
                failures: explain(&failures, set.len()),
            });
        }
        self.inner.stats.reads.fetch_add(1, Ordering::Relaxed);
        let newest = answers
            .values()
            .flatten()
            .max_by_key(|e| e.version)
            .cloned();
        if let Some(newest) = &newest {
            self.observe(newest.version);
            let behind: Vec<NodeId> = answers
                .iter()
                .filter(|(_, e)| e.as_ref().is_none_or(|e| e.version < newest.version))
                .map(|(n, _)| n.clone())
                .collect();
            if !behind.is_empty() {
                self.inner
                    .stats
                    .read_repairs
                    .fetch_add(behind.len() as u64, Ordering::Relaxed);
                let (this, newest) = (self.clone(), newest.clone());
                tokio::spawn(async move {
                    for node in behind {
                        let _ = this
                            .push_to(&node, vec![(full.clone(), newest.clone())])
                            .await;
                    }
                });
            }
        }
        Ok(newest)
    }

    /// Writes `value` (or deletes, with `None`) under `key` in `ns`, acknowledged once `w`
    /// replicas (of each ring in transition) have flushed it. With `expect`, only if the key
    /// is in that state on the replicas. Returns the new version.
    pub async fn put(
        &self,
        ns: &Namespace,
        key: &[u8],
        value: Option<Vec<u8>>,
        expect: Option<Expect>,
        o: Overrides,
    ) -> Result<Version, ReplicationError> {
        let full = ns.key(key);
        Self::check_key(&full)?;
        if let Some(v) = &value
            && v.len() > MAX_VALUE
        {
            return Err(ReplicationError::BadInput(format!(
                "a value of {} bytes is over the limit of {MAX_VALUE} bytes",
                v.len()
            )));
        }
        match expect {
            Some(expect) => self.conditional(ns, &full, value, expect, o).await,
            None => self.put_here(ns, &full, value, None, o).await,
        }
    }

    /// A conditional write is coordinated by the key's primary replica, one at a time per key,
    /// so concurrent writers do not split the replicas between them. When the primary cannot
    /// be reached, this node coordinates it.
    async fn conditional(
        &self,
        ns: &Namespace,
        full: &[u8],
        value: Option<Vec<u8>>,
        expect: Expect,
        o: Overrides,
    ) -> Result<Version, ReplicationError> {
        let view = self.view();
        let (n, _, _) = self.quorum(ns, o, &view)?;
        let primary = self.sets(&view, full, n)[0].first().cloned();
        if let Some(primary) = primary
            && primary != self.inner.me
            && let Some(addr) = view.addrs.get(&primary).copied()
        {
            let request = Request::KvCas {
                ns: ns.clone(),
                key: full[ns.as_str().len() + 1..].to_vec(),
                value: value.clone(),
                expect,
                w: o.w,
                settle_ms: o.settle.map(|d| d.as_millis() as u64),
            };
            match rpc::call(&self.inner.transport, addr, &request).await {
                Ok(Response::KvCas(result)) => {
                    return result.map_err(ReplicationError::from);
                }
                Ok(other) => {
                    tracing::warn!(%primary, ?other, "unexpected answer to a conditional write")
                }
                Err(e) => {
                    tracing::debug!(%primary, error = %e, "primary unreachable; coordinating here")
                }
            }
        }
        self.conditional_here(ns, full, value, expect, o).await
    }

    /// Coordinates a conditional write on this node, holding the key's lock stripe.
    pub(crate) async fn conditional_here(
        &self,
        ns: &Namespace,
        full: &[u8],
        value: Option<Vec<u8>>,
        expect: Expect,
        o: Overrides,
    ) -> Result<Version, ReplicationError> {
        let stripe = (crate::ring::Ring::point(full) % self.inner.stripes.len() as u64) as usize;
        let _turn = self.inner.stripes[stripe].lock().await;
        // The check reads a quorum, so it sees the last acknowledged write; the write that
        // follows is an ordinary one above it. Replicas never see a condition, so a
        // replica that lags cannot take a write the others refuse.
        let current = self.newest(ns, full.to_vec(), o).await?;
        let live = current
            .as_ref()
            .filter(|e| e.value.is_some())
            .map(|e| e.version);
        let wanted = match expect {
            Expect::Absent => None,
            Expect::Version(v) => Some(v),
        };
        if live != wanted {
            return Err(ReplicationError::Conflict { current: live });
        }
        self.put_here(ns, full, value, None, o).await
    }

    /// Coordinates a write on this node.
    async fn put_here(
        &self,
        ns: &Namespace,
        full: &[u8],
        value: Option<Vec<u8>>,
        expect: Option<Expect>,
        o: Overrides,
    ) -> Result<Version, ReplicationError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let entry = Entry {
                version: self.tick(),
                value: value.clone(),
            };
            match self.write(ns, full, &entry, expect, o).await? {
                WriteResult::Done => {
                    self.inner.stats.writes.fetch_add(1, Ordering::Relaxed);
                    return Ok(entry.version);
                }
                WriteResult::Stale(newer) if attempt < 5 => {
                    // A replica holds a newer version (a peer's clock runs ahead): write again
                    // above it, so this acknowledged write is not hidden behind an older one.
                    self.inner
                        .stats
                        .stale_retries
                        .fetch_add(1, Ordering::Relaxed);
                    self.observe(newer);
                }
                WriteResult::Stale(newer) => {
                    return Err(ReplicationError::Conflict {
                        current: Some(newer),
                    });
                }
            }
        }
    }

    async fn write(
        &self,
        ns: &Namespace,
        full: &[u8],
        entry: &Entry,
        expect: Option<Expect>,
        o: Overrides,
    ) -> Result<WriteResult, ReplicationError> {
        let view = self.view();
        let (n, r, w) = self.quorum(ns, o, &view)?;
        let sets = self.sets(&view, full, n);
        let targets = union(&sets);
        let (tx, mut rx) = mpsc::channel(targets.len().max(1));
        for node in &targets {
            let (this, node, key, entry, tx) = (
                self.clone(),
                node.clone(),
                full.to_vec(),
                entry.clone(),
                tx.clone(),
            );
            let addr = view.addrs.get(&node).copied();
            tokio::spawn(async move {
                let result = this.put_one(&node, addr, &key, &entry, expect).await;
                if result.is_err() {
                    // The replica did not take it: hold it for when it is back.
                    this.hint(&node, &key, &entry);
                }
                let _ = tx.send((node, result)).await;
            });
        }
        drop(tx);
        let mut applied: Vec<NodeId> = Vec::new();
        let mut answered = 0usize;
        let mut failures = Vec::new();
        let mut conflict: Option<Option<Version>> = None;
        let mut stale: Option<Version> = None;
        while let Some((node, result)) = rx.recv().await {
            match result {
                Ok(PutOutcome::Applied) => {
                    answered += 1;
                    applied.push(node)
                }
                Ok(PutOutcome::Stale(v)) => {
                    answered += 1;
                    stale = stale.max(Some(v));
                    if expect.is_some() {
                        conflict = Some(Some(v));
                    }
                }
                Ok(PutOutcome::Conflict(current)) => {
                    answered += 1;
                    conflict = Some(current);
                }
                Err(e) => failures.push(format!("{node}: {e}")),
            }
            if sets
                .iter()
                .enumerate()
                .all(|(i, s)| count_in(s, |x| applied.contains(x)) >= needed(i, s, w, r))
            {
                if let Some(settle) = o.settle {
                    // Give the other replicas a moment to take it too; they have it anyway
                    // once hints or anti-entropy deliver it.
                    let rest = async { while rx.recv().await.is_some() {} };
                    let _ = tokio::time::timeout(settle, rest).await;
                }
                return Ok(WriteResult::Done);
            }
            // A plain write that met a newer version starts again; stop waiting.
            if expect.is_none() && stale.is_some() {
                break;
            }
        }
        if let Some(v) = stale
            && expect.is_none()
        {
            return Ok(WriteResult::Stale(v));
        }
        let got = sets
            .iter()
            .map(|s| count_in(s, |x| applied.contains(x)))
            .min()
            .unwrap_or(0);
        if let Some(current) = conflict {
            if applied.is_empty() {
                return Err(ReplicationError::Conflict { current });
            }
            return Err(ReplicationError::Indeterminate {
                applied: applied.len(),
                needed: w,
            });
        }
        let _ = answered;
        self.inner.stats.unavailable.fetch_add(1, Ordering::Relaxed);
        let smallest = sets.iter().map(Vec::len).min().unwrap_or(0);
        Err(ReplicationError::Unavailable {
            what: "write",
            needed: w,
            got,
            failures: explain(&failures, smallest),
        })
    }

    /// Up to `limit` live keys of `ns` starting with `prefix`, from `start` on, in key order:
    /// the newest version of each among every node that answered. Returns the entries and the
    /// nodes that did not answer (their keys may be missing).
    pub async fn scan(
        &self,
        ns: &Namespace,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<(Vec<(Vec<u8>, Read)>, Vec<String>), ReplicationError> {
        let full_prefix = ns.key(prefix);
        let full_start = ns.key(start);
        let view = self.view();
        let mut nodes = view.ring.nodes();
        for (ring, _) in &view.earlier {
            for n in ring.nodes() {
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
        // Tombstones count against each node's limit, so ask for more than `limit`.
        let ask = limit.saturating_mul(2).max(limit + 64);
        let calls = nodes.iter().map(|node| {
            let addr = view.addrs.get(node).copied();
            let (p, s) = (full_prefix.clone(), full_start.clone());
            async move { (node.clone(), self.scan_one(node, addr, p, s, ask).await) }
        });
        let mut merged: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        let mut missing = Vec::new();
        for (node, result) in futures::future::join_all(calls).await {
            match result {
                Ok(entries) => {
                    for (k, e) in entries {
                        match merged.get(&k) {
                            Some(old) if old.version >= e.version => {}
                            _ => {
                                merged.insert(k, e);
                            }
                        }
                    }
                }
                Err(e) => missing.push(format!("{node}: {e}")),
            }
        }
        let skip = ns.as_str().len() + 1;
        let out = merged
            .into_iter()
            .filter_map(|(k, e)| {
                e.value.map(|value| {
                    (
                        k[skip..].to_vec(),
                        Read {
                            version: e.version,
                            value,
                        },
                    )
                })
            })
            .take(limit)
            .collect();
        Ok((out, missing))
    }

    /// The replica sets of `key` that must each reach quorum. A set smaller than the quorum
    /// (an earlier ring of fewer nodes, while the cluster grew) needs all its members.
    fn sets(&self, view: &View, key: &[u8], n: usize) -> Vec<Vec<NodeId>> {
        let mut sets = view.replica_sets(key, n, &self.inner.config.placement);
        if self.inner.ignore_earlier.load(Ordering::SeqCst) {
            sets.truncate(1);
        }
        sets
    }

    /// This node's copy, or a peer's over RPC.
    async fn fetch_one(
        &self,
        node: &NodeId,
        addr: Option<SocketAddr>,
        key: &[u8],
    ) -> Result<Option<Entry>, String> {
        if *node == self.inner.me {
            return self.local_get(key).map_err(|e| e.to_string());
        }
        let addr = addr.ok_or("no address known")?;
        match rpc::call(
            &self.inner.transport,
            addr,
            &Request::KvGet { key: key.to_vec() },
        )
        .await
        {
            Ok(Response::KvEntry(e)) => {
                if let Some(e) = &e {
                    self.observe(e.version);
                }
                Ok(e)
            }
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn put_one(
        &self,
        node: &NodeId,
        addr: Option<SocketAddr>,
        key: &[u8],
        entry: &Entry,
        expect: Option<Expect>,
    ) -> Result<PutOutcome, String> {
        if *node == self.inner.me {
            return self
                .apply(key, entry, expect)
                .await
                .map_err(|e| e.to_string());
        }
        let addr = addr.ok_or("no address known")?;
        let request = Request::KvPut {
            key: key.to_vec(),
            entry: entry.clone(),
            expect,
        };
        match rpc::call(&self.inner.transport, addr, &request).await {
            Ok(Response::KvPut(outcome)) => Ok(outcome),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    async fn scan_one(
        &self,
        node: &NodeId,
        addr: Option<SocketAddr>,
        prefix: Vec<u8>,
        start: Vec<u8>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Entry)>, String> {
        if *node == self.inner.me {
            return self
                .local_scan(&prefix, &start, limit)
                .map_err(|e| e.to_string());
        }
        let addr = addr.ok_or("no address known")?;
        let request = Request::KvScan {
            prefix,
            start,
            limit: limit as u32,
        };
        match rpc::call(&self.inner.transport, addr, &request).await {
            Ok(Response::KvEntries(entries)) => Ok(entries),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Sends entries to a node, which applies the newer ones and flushes.
    pub(crate) async fn push_to(
        &self,
        node: &NodeId,
        entries: Vec<(Vec<u8>, Entry)>,
    ) -> Result<(), String> {
        if *node == self.inner.me {
            return self.apply_all(entries).await.map_err(|e| e.to_string());
        }
        let addr = self
            .view()
            .addrs
            .get(node)
            .copied()
            .ok_or("no address known")?;
        match rpc::call(&self.inner.transport, addr, &Request::KvPush(entries)).await {
            Ok(Response::Done) => Ok(()),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Holds a write for a replica that did not take it.
    fn hint(&self, node: &NodeId, key: &[u8], entry: &Entry) {
        let newer = |new: &[u8], old: &[u8]| match (Entry::decode(new), Entry::decode(old)) {
            (Ok(n), Ok(o)) => n.version > o.version,
            _ => true,
        };
        match self
            .inner
            .store
            .put_hint(node.as_str(), key, &entry.encode(), newer)
        {
            Ok(()) => {
                self.inner
                    .stats
                    .hints_stored
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(%node, error = %e, "could not store a hint"),
        }
    }

    /// What `/v1/status` shows of replication.
    pub fn status(&self) -> Status {
        let view = self.view();
        let c = &self.inner.config;
        let n = (c.default.n.get() as usize).min(view.known.max(1));
        let replica_shares: HashMap<NodeId, f64> =
            view.ring.replica_shares(n).into_iter().collect();
        let nodes = view
            .ring
            .shares()
            .into_iter()
            .map(|(node, share)| RingShare {
                replica_share: replica_shares.get(&node).copied().unwrap_or(0.0),
                hints: self
                    .inner
                    .store
                    .hints_for(node.as_str(), 100_000)
                    .map_or(0, |h| h.len()),
                sync: self
                    .inner
                    .peers
                    .lock()
                    .expect("not poisoned")
                    .get(&node)
                    .cloned(),
                node,
                share,
            })
            .collect();
        let s = &self.inner.stats;
        let last = self.inner.last_in_sync_ms.load(Ordering::Relaxed);
        Status {
            node: self.inner.me.clone(),
            default: c.default.to_string(),
            namespaces: c
                .namespaces
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            vnodes: c.vnodes,
            nodes,
            in_transition: !view.earlier.is_empty(),
            ring_changed_ms_ago: view.changed.elapsed().as_millis() as u64,
            keys: self.inner.store.replica_len(),
            hints: self.inner.store.hint_count(),
            anti_entropy_interval_ms: c.anti_entropy_interval.as_millis() as u64,
            anti_entropy_rounds: s.ae_rounds.load(Ordering::Relaxed),
            anti_entropy_lag_ms: (last > 0).then(|| now_ms().saturating_sub(last)),
            clock_ahead_ms: self
                .inner
                .clock
                .lock()
                .expect("not poisoned")
                .ahead_ms(now_ms()),
            counters: [
                ("reads", &s.reads),
                ("writes", &s.writes),
                ("unavailable", &s.unavailable),
                ("stale_retries", &s.stale_retries),
                ("read_repairs", &s.read_repairs),
                ("hints_stored", &s.hints_stored),
                ("hints_delivered", &s.hints_delivered),
                ("anti_entropy_pulled", &s.ae_pulled),
                ("anti_entropy_pushed", &s.ae_pushed),
                ("handed_off", &s.handed_off),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
            .collect(),
        }
    }
}

/// One function's key-value namespace on the replicated store: what a guest's `kv` import
/// uses.
#[derive(Clone)]
pub struct KvHandle {
    replicator: Replicator,
    ns: Namespace,
}

impl KvHandle {
    /// The handle of namespace `ns`.
    pub fn new(replicator: Replicator, ns: Namespace) -> Self {
        KvHandle { replicator, ns }
    }

    /// The value under `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReplicationError> {
        let read = self
            .replicator
            .get(&self.ns, key, Overrides::default())
            .await?;
        Ok(read.map(|r| r.value))
    }

    /// Stores `value` under `key` (acknowledged by a write quorum).
    pub async fn set(&self, key: &[u8], value: &[u8]) -> Result<(), ReplicationError> {
        self.replicator
            .put(
                &self.ns,
                key,
                Some(value.to_vec()),
                None,
                Overrides::default(),
            )
            .await
            .map(|_| ())
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, ReplicationError> {
        let existed = self.get(key).await?.is_some();
        self.replicator
            .put(&self.ns, key, None, None, Overrides::default())
            .await?;
        Ok(existed)
    }

    /// Adds `delta` to the i64 (little-endian) under `key` by compare-and-set, retrying when
    /// another writer got there first. A value that is not 8 bytes counts as 0.
    pub async fn increment(&self, key: &[u8], delta: i64) -> Result<i64, ReplicationError> {
        let mut backoff = Duration::from_millis(1);
        for _ in 0..64 {
            let read = self
                .replicator
                .get(&self.ns, key, Overrides::default())
                .await?;
            let old = read
                .as_ref()
                .and_then(|r| <[u8; 8]>::try_from(r.value.as_slice()).ok())
                .map_or(0, i64::from_le_bytes);
            let new = old.wrapping_add(delta);
            let expect = match &read {
                Some(r) => Expect::Version(r.version),
                None => Expect::Absent,
            };
            let put = self
                .replicator
                .put(
                    &self.ns,
                    key,
                    Some(new.to_le_bytes().to_vec()),
                    Some(expect),
                    Overrides::default(),
                )
                .await;
            match put {
                Ok(_) => return Ok(new),
                Err(ReplicationError::Conflict { .. }) => {
                    // Another writer won: wait a little (randomised) and read again.
                    let jitter = rand::random::<u64>() % (backoff.as_micros() as u64 + 1);
                    tokio::time::sleep(Duration::from_micros(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
        Err(ReplicationError::Unavailable {
            what: "increment",
            needed: 1,
            got: 0,
            failures: "64 attempts lost to concurrent writers".into(),
        })
    }
}

enum WriteResult {
    Done,
    Stale(Version),
}

/// One node's place on the ring, for `/v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RingShare {
    /// The node.
    pub node: NodeId,
    /// Its share of the key space as primary (0 to 1).
    pub share: f64,
    /// Its share of all replicas (0 to 1).
    pub replica_share: f64,
    /// Hints this node holds for it.
    pub hints: usize,
    /// The last anti-entropy exchange with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<PeerSync>,
}

/// The ring and replication as one node sees them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// The node answering.
    pub node: NodeId,
    /// The default N/R/W.
    pub default: String,
    /// N/R/W of particular namespaces.
    pub namespaces: BTreeMap<String, String>,
    /// Virtual nodes per node.
    pub vnodes: u32,
    /// Every node on the ring, by name.
    pub nodes: Vec<RingShare>,
    /// Whether earlier rings are still consulted.
    pub in_transition: bool,
    /// Time since the ring last changed.
    pub ring_changed_ms_ago: u64,
    /// Entries (tombstones included) held by this node.
    pub keys: usize,
    /// Hints held by this node.
    pub hints: usize,
    /// Anti-entropy period.
    pub anti_entropy_interval_ms: u64,
    /// Anti-entropy rounds completed.
    pub anti_entropy_rounds: u64,
    /// Time since this node last found every peer in sync (none yet: `null`).
    pub anti_entropy_lag_ms: Option<u64>,
    /// How far this node's version clock runs ahead of its wall clock.
    pub clock_ahead_ms: u64,
    /// Counters.
    pub counters: BTreeMap<String, u64>,
}

/// The view of a member set: a ring of every member not down.
/// This node is always on its own ring, even before membership lists it. `floor` is a lower
/// bound on the cluster's size (the members remembered from before a restart), so a node that
/// has not heard from its peers yet does not take writes alone.
pub(crate) fn build_view(
    set: &MemberSet,
    me: &NodeId,
    floor: usize,
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
    let mut names: std::collections::BTreeSet<&NodeId> =
        set.members.iter().map(|m| &m.node).collect();
    names.insert(me);
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
        known: names.len().max(floor),
        changed,
    }
}

fn same_ring(a: &Ring, b: &Ring) -> bool {
    a.nodes() == b.nodes()
}

fn union(sets: &[Vec<NodeId>]) -> Vec<NodeId> {
    let mut all: Vec<NodeId> = Vec::new();
    for s in sets {
        for n in s {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
    }
    all
}

/// Answers needed from replica set `i` (0: the current ring's) for an operation of quorum `q`
/// whose counterpart has quorum `other` (`r` and `w`). The current set needs `q` (at most its
/// size). An earlier ring's set needs just enough to overlap every operation of the other
/// kind made under that ring, which needed `other` of it: `size - other + 1`. So a set of two
/// from the ring before a node joined needs one answer, not two, when `w` was two.
fn needed(i: usize, set: &[NodeId], q: usize, other: usize) -> usize {
    let size = set.len();
    if i == 0 {
        q.min(size)
    } else {
        (size - other.min(size) + 1).min(size)
    }
}

/// What the replicas that failed said, or why there were too few of them.
fn explain(failures: &[String], replicas: usize) -> String {
    if failures.is_empty() {
        format!(
            "this node's ring has only {replicas} live replica(s) for the key (down members are not on it; a node that just started may still be learning the cluster)"
        )
    } else {
        failures.join("; ")
    }
}

fn count_in(set: &[NodeId], pred: impl Fn(&NodeId) -> bool) -> usize {
    set.iter().filter(|n| pred(n)).count()
}
