//! Who holds a key, and how to ask its owner: the one place that computes owners.
//!
//! A [`Placement`] follows membership and keeps the ring as this node sees it (every member
//! not down, this node always on it), the QUIC address of each live member, the cluster's
//! size (every node ever seen, kept in the store), and, for `transition` after each change,
//! the earlier rings that reads and writes still consult while data moves to its new owners.
//! Replication, functions, blobs and routing read it; none of them builds a ring.
//!
//! [`Placement::route`] and [`Placement::forward`] are the one way work is sent to a key's
//! owner (keyed invocations, conditional writes): the owner answers, or, when it cannot be
//! reached, the caller runs the work itself; only a timeout, after which the owner may still
//! run it, is an error.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::id::NodeId;
use crate::membership::{MemberSet, MemberState, Membership};
use crate::ring::{Ring, RingNode, TagRule};
use crate::rpc::{self, Wire};
use crate::store::Store;
use crate::tasks::Tasks;
use crate::transport::{Transport, TransportError};

/// How keys are placed. Every node of a cluster must use the same `vnodes` and `rule`.
#[derive(Clone, Debug)]
pub struct PlacementConfig {
    /// Virtual nodes per node on the ring.
    pub vnodes: u32,
    /// Where replicas must go beyond ring order.
    pub rule: TagRule,
    /// The longest earlier rings are still consulted after a change, when the transition is
    /// not ended sooner by [`Placement::end_transition`] (every member confirmed its handoff).
    /// Also how long after start this node consults the ring without it when its ring changes.
    pub transition: Duration,
    /// Test only in effect: size the cluster by the members listed now (unsafe; see
    /// `ReplicationSwitches::count_listed_members_only`). Always false outside tests.
    pub count_listed_members_only: bool,
}

/// The ring as this node sees it, with the rings of the last `transition`.
pub struct View {
    /// The current ring.
    pub ring: Ring,
    /// Earlier rings still consulted, with when they stopped being current.
    pub earlier: Vec<(Ring, Instant)>,
    /// QUIC address of every member that is not down (this node excluded).
    pub addrs: HashMap<NodeId, SocketAddr>,
    /// The cluster's size: every node ever seen in it (down or forgotten by membership
    /// included, this node too). Replication factors are capped at this.
    pub known: usize,
    /// When the current ring became current.
    pub changed: Instant,
    rule: TagRule,
}

impl View {
    /// A replication factor capped at the cluster's size, so a cluster of two keeps two
    /// copies and a lone node one.
    pub fn cap(&self, n: usize) -> usize {
        n.min(self.known.max(1))
    }

    /// The nodes that hold `key` on the current ring, primary first (`n` as given: cap it
    /// first when it should not exceed the cluster).
    pub fn replicas(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        self.ring.replicas_placed(key, n, &self.rule)
    }

    /// The replica sets of `key`: the current ring's first, then each earlier ring's that
    /// differs.
    pub fn replica_sets(&self, key: &[u8], n: usize) -> Vec<Vec<NodeId>> {
        let mut sets = vec![self.replicas(key, n)];
        for (ring, _) in &self.earlier {
            let set = ring.replicas_placed(key, n, &self.rule);
            if !sets.contains(&set) {
                sets.push(set);
            }
        }
        sets
    }

    /// A view of `ring` alone, in a cluster of `known` nodes (tests).
    #[cfg(test)]
    pub(crate) fn of(ring: Ring, known: usize) -> View {
        View {
            ring,
            earlier: Vec::new(),
            addrs: HashMap::new(),
            known,
            changed: Instant::now(),
            rule: TagRule::default(),
        }
    }

    /// A digest of what places keys on this view: the ring, the cluster's size (which caps
    /// replication factors) and the tag rule. Nodes whose views have the same id place every
    /// key alike.
    pub fn placement_id(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&self.ring.fingerprint());
        h.update(&(self.known as u64).to_le_bytes());
        if let Some(tag) = &self.rule.require_tag {
            h.update(tag.as_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// The rule that keeps a replica on a tagged node.
    pub fn placement_rule(&self) -> &TagRule {
        &self.rule
    }

    /// The address of a live member (`None` for this node, or a member down or unknown).
    pub fn addr(&self, node: &NodeId) -> Option<SocketAddr> {
        self.addrs.get(node).copied()
    }
}

/// Where work for a key runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Route {
    /// This node owns the key, or its owner has no known address.
    Here,
    /// Another node owns it.
    Owner(NodeId, SocketAddr),
}

/// A forward to a key's owner whose outcome is unknown: the request reached it (or may have)
/// but no answer came, in time or at all. The owner may run (or have run) it, so running it
/// here too could run it twice.
#[derive(Debug, thiserror::Error)]
#[error("the key's owner {owner} {what}")]
pub struct OwnerTimedOut {
    /// The owner.
    pub owner: NodeId,
    /// What happened: no answer within some time, or the connection lost after sending.
    pub what: String,
}

/// This node's view of where keys live. Cheap to clone.
#[derive(Clone)]
pub struct Placement {
    inner: Arc<Inner>,
}

struct Inner {
    me: NodeId,
    store: Store,
    transport: Transport,
    config: PlacementConfig,
    view: RwLock<Arc<View>>,
    /// Every node ever seen in the cluster, this one included (kept in the store): the
    /// cluster's size does not shrink when membership forgets a member that has been down
    /// for long, nor across a restart, so a node left alone never takes writes alone.
    cluster: Mutex<BTreeSet<NodeId>>,
    /// The member set, followed by `view()` as well as by the background task.
    members: Mutex<watch::Receiver<MemberSet>>,
    started: Instant,
    /// A transition since start ended: the ring without this node is no longer added when
    /// nothing but the member list changed.
    start_ended: std::sync::atomic::AtomicBool,
    /// Counts ring changes, for those who act on them (anti-entropy).
    changes: watch::Sender<u64>,
    tasks: Tasks,
}

impl Placement {
    /// Starts following `membership`; earlier rings are forgotten once their transition is
    /// over.
    pub fn start(
        me: NodeId,
        store: Store,
        transport: Transport,
        membership: &Membership,
        config: PlacementConfig,
        tasks: Tasks,
    ) -> Placement {
        let members = membership.members();
        let cluster = cluster_nodes(&store, &me);
        let view = build_view(&members, &me, &cluster, &config, None);
        let placement = Placement {
            inner: Arc::new(Inner {
                me,
                store,
                transport,
                config,
                view: RwLock::new(Arc::new(view)),
                cluster: Mutex::new(cluster),
                members: Mutex::new(membership.watch()),
                started: Instant::now(),
                start_ended: Default::default(),
                changes: watch::channel(0).0,
                tasks: tasks.clone(),
            }),
        };
        tasks.spawn_joined(follow(
            placement.clone(),
            membership.watch(),
            tasks.token().clone(),
        ));
        placement
    }

    /// This node's name.
    pub fn me(&self) -> &NodeId {
        &self.inner.me
    }

    /// The QUIC endpoint work is forwarded through.
    pub fn transport(&self) -> &Transport {
        &self.inner.transport
    }

    /// The ring as this node sees it now.
    pub fn view(&self) -> Arc<View> {
        // Follow membership at once, so an operation right after a member joined already
        // places keys on it (the background task follows it too, for those who wait on
        // `changes`).
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

    /// Ticks each time the current ring changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    /// The nodes that hold `key` with replication factor `n` (capped at the cluster's size)
    /// on the current ring, primary first.
    pub fn replicas(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        let view = self.view();
        view.replicas(key, view.cap(n))
    }

    /// Where work for `key` (replicated `n` times) runs: its primary replica.
    pub fn route(&self, key: &[u8], n: usize) -> Route {
        let view = self.view();
        match view.replicas(key, view.cap(n)).into_iter().next() {
            Some(owner) if owner != self.inner.me => match view.addr(&owner) {
                Some(addr) => Route::Owner(owner, addr),
                None => Route::Here,
            },
            _ => Route::Here,
        }
    }

    /// Sends `request` to the owner found by [`Placement::route`] and waits up to `within`
    /// for its answer. `Ok(None)` when the request never reached the owner (no connection,
    /// or it failed before the request was sent) or the owner refused it: the caller runs
    /// the work itself. A timeout, or a connection lost once the request was sent, is an
    /// error, since the owner may run it or have run it.
    pub async fn forward<W: Wire>(
        &self,
        owner: &NodeId,
        addr: SocketAddr,
        request: &W::Request,
        within: Duration,
    ) -> Result<Option<W::Response>, OwnerTimedOut> {
        match rpc::call_within::<W>(&self.inner.transport, addr, request, within).await {
            Ok(answer) => Ok(Some(answer)),
            Err(TransportError::Timeout { after, .. }) => Err(OwnerTimedOut {
                owner: owner.clone(),
                what: format!("did not answer within {} s", after.as_secs()),
            }),
            Err(e @ (TransportError::Lost { .. } | TransportError::Frame { .. })) => {
                Err(OwnerTimedOut {
                    owner: owner.clone(),
                    what: format!("was sent the request but no answer came back ({e})"),
                })
            }
            Err(e) => {
                tracing::warn!(%owner, service = W::NAME, error = %e, "the key's owner could not be reached; running here");
                Ok(None)
            }
        }
    }

    /// Rebuilds the view from a new member set.
    fn follow(&self, set: &MemberSet) {
        let inner = &self.inner;
        let cluster = {
            let mut cluster = inner.cluster.lock().expect("not poisoned");
            let new: Vec<NodeId> = set
                .members
                .iter()
                .map(|m| m.node.clone())
                .filter(|n| !cluster.contains(n))
                .collect();
            if !new.is_empty() {
                cluster.extend(new.iter().cloned());
                let store = inner.store.clone();
                inner.tasks.spawn(async move {
                    let names: Vec<&str> = new.iter().map(NodeId::as_str).collect();
                    if let Err(e) = store.add_cluster_nodes(&names).await {
                        tracing::warn!(error = %e, "could not remember the cluster's new nodes");
                    }
                });
            }
            if inner.config.count_listed_members_only {
                BTreeSet::new()
            } else {
                cluster.clone()
            }
        };
        let mut guard = inner.view.write().expect("not poisoned");
        let mut view = build_view(set, &inner.me, &cluster, &inner.config, Some(&guard));
        let changed = view.changed != guard.changed;
        let start_ended = inner.start_ended.load(std::sync::atomic::Ordering::SeqCst);
        if inner.started.elapsed() < inner.config.transition && (changed || !start_ended) {
            // A node that just started (or joined) has no earlier ring of its own, yet the
            // others placed keys without it until now: consult their ring, the one without
            // this node, for the first transition period.
            let others = Ring::new(
                set.members
                    .iter()
                    .filter(|m| m.state != MemberState::Down)
                    .filter(|m| m.node != inner.me)
                    .map(|m| RingNode {
                        node: m.node.clone(),
                        tags: m.tags.clone(),
                    }),
                inner.config.vnodes,
            );
            view.earlier.retain(|(_, at)| *at != inner.started);
            if !others.is_empty() {
                view.earlier.push((others, inner.started));
            }
        }
        if !changed
            && view.known == guard.known
            && view.addrs == guard.addrs
            && view.earlier.len() == guard.earlier.len()
        {
            return;
        }
        if changed {
            tracing::info!(nodes = view.ring.len(), "the ring changed");
        }
        *guard = Arc::new(view);
        drop(guard);
        if changed {
            inner.changes.send_modify(|n| *n += 1);
        }
    }

    /// Ends the transition of the ring that became current at `changed` (every member
    /// confirmed it handed its keys to that ring's owners): earlier rings are no longer
    /// consulted. Nothing happens when the ring changed since. Whether it ended now.
    pub fn end_transition(&self, changed: Instant) -> bool {
        let mut guard = self.inner.view.write().expect("not poisoned");
        if guard.changed != changed || guard.earlier.is_empty() {
            return false;
        }
        *guard = Arc::new(guard.without_earlier(|_| false));
        self.inner
            .start_ended
            .store(true, std::sync::atomic::Ordering::SeqCst);
        true
    }

    /// Forgets earlier rings whose transition outlasted its limit, unconfirmed.
    fn expire_earlier_rings(&self) {
        let transition = self.inner.config.transition;
        let mut guard = self.inner.view.write().expect("not poisoned");
        if guard
            .earlier
            .iter()
            .any(|(_, at)| at.elapsed() >= transition)
        {
            tracing::warn!(
                limit_s = transition.as_secs(),
                "a transition ended on its time limit before every member confirmed its handoff: \
                 keys not handed over yet may read as missing until they are"
            );
            *guard = Arc::new(guard.without_earlier(|at| at.elapsed() < transition));
        }
    }
}

impl View {
    /// This view with only the earlier rings for which `keep` holds.
    fn without_earlier(&self, keep: impl Fn(&Instant) -> bool) -> View {
        View {
            ring: self.ring.clone(),
            earlier: self
                .earlier
                .iter()
                .filter(|(_, at)| keep(at))
                .cloned()
                .collect(),
            addrs: self.addrs.clone(),
            known: self.known,
            changed: self.changed,
            rule: self.rule.clone(),
        }
    }
}

/// The background task: follows membership, and forgets earlier rings on time.
async fn follow(
    placement: Placement,
    mut members: watch::Receiver<MemberSet>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let every = (placement.inner.config.transition / 8).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = members.changed() => {
                if changed.is_err() {
                    return;
                }
                let set = members.borrow_and_update().clone();
                placement.follow(&set);
            }
            _ = tick.tick() => placement.expire_earlier_rings(),
        }
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
fn build_view(
    set: &MemberSet,
    me: &NodeId,
    cluster: &BTreeSet<NodeId>,
    config: &PlacementConfig,
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
        config.vnodes,
    );
    let addrs = live.iter().map(|m| (m.node.clone(), m.addr)).collect();
    let mut names: BTreeSet<&NodeId> = set.members.iter().map(|m| &m.node).collect();
    names.insert(me);
    names.extend(cluster);
    let (earlier, changed) = match old {
        Some(old) if old.ring.nodes() == ring.nodes() => (old.earlier.clone(), old.changed),
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
        rule: config.rule.clone(),
    }
}
