//! Merkle anti-entropy: the hash trees this node shares with each peer, the exchange of
//! their leaves, and the pulls and pushes that repair the ranges that differ.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::coordinator::unexpected;
use super::merkle::{Leaves, cover, fine_of, fine_points};
use super::sync::batches;
use super::wire::{KvWire, Request, Response};
use super::{Entry, PeerSync, ReplicationError, Replicator, Version, View, namespace_of, now_ms};
use crate::id::NodeId;
use crate::ring::Ring;
use crate::rpc;

/// Keys and their versions.
type Versions = Vec<(Vec<u8>, Version)>;

/// Keys an exchange reads and pushes at a time.
const PUSH_STEP: usize = 1024;

/// Per-peer trees, and how many entries are held but no longer owned.
type Scanned = (rustc_hash::FxHashMap<NodeId, Leaves>, u64);

impl Replicator {
    /// The replication factor of a stored key.
    pub(super) fn n_of(&self, key: &[u8], view: &View) -> usize {
        view.cap(self.inner().config.quorum(namespace_of(key)).n.get() as usize)
    }

    /// The trees this node shares with its peers on `view`'s ring, as kept on write (built in
    /// one pass when the placement changed), and how many entries it holds but no longer
    /// owns. Blocking.
    pub(crate) fn kept_trees(&self, view: &Arc<View>) -> Result<Scanned, ReplicationError> {
        let inner = self.inner();
        let built = inner.kept.for_view(view, &inner.store)?;
        Ok((built.trees, built.orphans))
    }

    /// The versions of this node's entries shared with `peer` in the fine ranges `fine`,
    /// taken in the order given and range by range, as many whole ranges as fit `budget`
    /// bytes of answer (at least one): the ranges covered and the keys and versions found in
    /// them. Reads versions only, so memory stays within the budget however many ranges
    /// differ. Blocking.
    pub(crate) fn shared_versions(
        &self,
        view: &View,
        peer: &NodeId,
        fine: &[u16],
        budget: usize,
    ) -> Result<(Vec<u16>, Versions), ReplicationError> {
        let inner = self.inner();
        let shared = |key: &[u8], bytes: &[u8]| {
            let owners = view.replicas(key, self.n_of(key, view));
            if !(owners.contains(&inner.me) && owners.contains(peer)) {
                return None;
            }
            // An unreadable entry is left out: the peer's copy replaces it.
            Entry::version_of(bytes).ok().map(|v| (key.to_vec(), v))
        };
        let by_range: Box<dyn FnMut(u16) -> Result<Versions, ReplicationError>> =
            if inner.store.replicas_indexed() {
                // Only the ranges that differ, through the index by point.
                Box::new(|range| {
                    let (from, to) = fine_points(range);
                    Ok(inner.store.replica_peek_between(from, to, shared)?)
                })
            } else {
                // Without the index (it could not be built), one pass over every entry.
                let wanted: BTreeSet<u16> = fine.iter().copied().collect();
                let mut all: HashMap<u16, Versions> = HashMap::new();
                for record in inner.store.replica_iter() {
                    let (key, bytes) = record?;
                    let range = fine_of(Ring::point(&key));
                    if wanted.contains(&range)
                        && let Some(found) = shared(&key, &bytes)
                    {
                        all.entry(range).or_default().push(found);
                    }
                }
                Box::new(move |range| Ok(all.remove(&range).unwrap_or_default()))
            };
        cover(fine, budget, |(k, _)| k.len() + 24, by_range)
    }

    /// This node's entries of `keys`, as they are now (absent ones left out). Blocking.
    fn entries_of(&self, keys: &[Vec<u8>]) -> Result<Vec<(Vec<u8>, Entry)>, ReplicationError> {
        let mut out = Vec::with_capacity(keys.len());
        for key in keys {
            if let Some(entry) = self.local_get(key)? {
                out.push((key.clone(), entry));
            }
        }
        Ok(out)
    }

    /// A peer's side of an exchange: compares its tree with this node's and answers the
    /// leaves that differ and this node's fine ranges in them.
    pub(crate) async fn answer_leaves(
        &self,
        from: NodeId,
        theirs: Leaves,
    ) -> Result<(Vec<u16>, Vec<(u16, [u8; 32])>), ReplicationError> {
        self.blocking(move |this| {
            let (view, inner) = (this.view(), this.inner());
            Ok(inner.kept.with_tree(&view, &inner.store, &from, |mine| {
                let differing = mine.differing(&theirs);
                let fine = mine.fine(&differing);
                (differing, fine)
            })?)
        })
        .await
    }

    /// A peer's side of an exchange: this node's versions in the fine ranges asked for (as
    /// many whole ranges as fit one answer; the others wait for the next round).
    pub(crate) async fn answer_versions(
        &self,
        from: NodeId,
        fine: Vec<u16>,
    ) -> Result<(Vec<u16>, Versions), ReplicationError> {
        self.blocking(move |this| {
            let view = this.view();
            this.shared_versions(&view, &from, &fine, crate::replication::ANSWER_BYTES)
        })
        .await
    }

    /// The root of the tree this node shares with `peer` (built first if the placement
    /// changed).
    pub(crate) async fn root_of(&self, peer: NodeId) -> Result<[u8; 32], ReplicationError> {
        self.blocking(move |this| {
            let (view, inner) = (this.view(), this.inner());
            Ok(inner
                .kept
                .with_tree(&view, &inner.store, &peer, Leaves::root)?)
        })
        .await
    }

    /// Runs `f` on a blocking thread.
    async fn blocking<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Replicator) -> Result<R, ReplicationError> + Send + 'static,
    ) -> Result<R, ReplicationError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || f(&this))
            .await
            .map_err(|e| ReplicationError::Corrupt(format!("anti-entropy task failed: {e}")))?
    }

    /// The root of the tree this node shares with each peer, computed now.
    pub fn roots(&self) -> Result<HashMap<NodeId, [u8; 32]>, ReplicationError> {
        let view = self.view();
        let inner = self.inner();
        let trees = inner.kept.for_view(&view, &inner.store)?.trees;
        let mut roots: HashMap<NodeId, [u8; 32]> = trees
            .into_iter()
            .map(|(peer, leaves)| (peer, leaves.root()))
            .collect();
        for peer in view.ring.nodes() {
            if peer != self.inner().me {
                roots
                    .entry(peer)
                    .or_insert_with(|| Leaves::default().root());
            }
        }
        Ok(roots)
    }

    /// One anti-entropy round: an exchange with every peer on the ring, then the handoff of
    /// entries this node no longer owns ([`super::handoff`]).
    pub(crate) async fn anti_entropy_round(&self) {
        let inner = self.inner();
        #[cfg(feature = "test-switches")]
        if inner.pause_anti_entropy.load(Ordering::SeqCst) {
            return;
        }
        let view = self.view();
        let this = self.clone();
        let scan_view = view.clone();
        let scanned = tokio::task::spawn_blocking(move || this.kept_trees(&scan_view)).await;
        let (mut trees, orphans) = match scanned {
            Ok(Ok(t)) => t,
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "anti-entropy could not read the local data");
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "anti-entropy scan failed");
                return;
            }
        };
        let mut all_in_sync = true;
        for peer in view.ring.nodes() {
            if peer == inner.me {
                continue;
            }
            let leaves = trees.remove(&peer).unwrap_or_default();
            let result = self.exchange(&view, &peer, leaves).await;
            let sync = match result {
                Ok(s) => s,
                Err(e) => PeerSync {
                    at_ms: now_ms(),
                    in_sync: false,
                    differing: 0,
                    pulled: 0,
                    pushed: 0,
                    error: Some(e),
                },
            };
            all_in_sync &= sync.in_sync;
            inner.peers.lock().expect("not poisoned").insert(peer, sync);
        }
        inner.stats.ae_rounds.fetch_add(1, Ordering::Relaxed);
        if all_in_sync {
            inner.last_in_sync_ms.store(now_ms(), Ordering::Relaxed);
        }
        self.hand_off(&view, orphans).await;
        self.collect_tombstones(&view).await;
    }

    /// A peer's copies of `keys` (as many answers as it takes).
    pub(super) async fn fetch_from(
        &self,
        view: &View,
        peer: &NodeId,
        keys: Vec<Vec<u8>>,
    ) -> Result<HashMap<Vec<u8>, Entry>, String> {
        let addr = *view.addrs.get(peer).ok_or("no address known")?;
        let mut held = HashMap::new();
        let mut left: &[Vec<u8>] = &keys;
        while !left.is_empty() {
            let request = Request::KvFetch(left.to_vec());
            match rpc::call::<KvWire>(self.inner().placement.transport(), addr, &request).await {
                Ok(Response::KvFetched { entries, consumed }) if consumed > 0 => {
                    held.extend(entries);
                    left = &left[(consumed as usize).min(left.len())..];
                }
                Ok(other) => return Err(unexpected(&other)),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(held)
    }

    /// One request of an exchange to the peer at `addr`, its bytes counted.
    async fn ae_call(&self, addr: SocketAddr, request: &Request) -> Result<Response, String> {
        let inner = self.inner();
        let transport = inner.placement.transport();
        let (answer, sized) =
            rpc::call_sized::<KvWire>(transport, addr, request, transport.rpc_timeout())
                .await
                .map_err(|e| e.to_string())?;
        let stats = &inner.stats;
        stats.ae_bytes_sent.fetch_add(sized.sent, Ordering::Relaxed);
        stats
            .ae_bytes_received
            .fetch_add(sized.received, Ordering::Relaxed);
        Ok(answer)
    }

    /// Compares trees with `peer` and repairs both sides where they differ: the roots first,
    /// then, if they differ, the leaves, then the versions in the differing leaves.
    async fn exchange(
        &self,
        view: &View,
        peer: &NodeId,
        leaves: Leaves,
    ) -> Result<PeerSync, String> {
        let inner = self.inner();
        let addr = *view.addrs.get(peer).ok_or("no address known")?;
        let in_sync = PeerSync {
            at_ms: now_ms(),
            in_sync: true,
            differing: 0,
            pulled: 0,
            pushed: 0,
            error: None,
        };
        let from = inner.me.clone();
        let root = leaves.root();
        match self.ae_call(addr, &Request::AeRoot { from, root }).await? {
            Response::AeSame(true) => return Ok(in_sync),
            Response::AeSame(false) => {}
            other => return Err(unexpected(&other)),
        }
        let from = inner.me.clone();
        let request = Request::AeLeaves {
            from,
            leaves: leaves.top_only(),
        };
        let (differing, their_fine) = match self.ae_call(addr, &request).await? {
            Response::AeFine { differing, fine } => (differing, fine),
            other => return Err(unexpected(&other)),
        };
        let fine = leaves.differing_fine(&differing, &their_fine);
        if fine.is_empty() {
            // The trees changed between the two questions: the next round compares again.
            return Ok(PeerSync {
                in_sync: differing.is_empty(),
                differing: differing.len(),
                ..in_sync
            });
        }
        let from = inner.me.clone();
        let (covered, theirs) = match self
            .ae_call(addr, &Request::AeVersions { from, fine })
            .await?
        {
            Response::AeDiff { differing, have } => (differing, have),
            other => return Err(unexpected(&other)),
        };
        // The peer answered for these fine ranges: compare the same ones here, as many as fit
        // the same budget (this side may hold far more of them: a peer that lost its data
        // answers for every range); the rest wait for the next round, where they still differ.
        let p = peer.clone();
        let (covered, mine) = self
            .blocking(move |this| {
                let view = this.view();
                this.shared_versions(&view, &p, &covered, crate::replication::ANSWER_BYTES)
            })
            .await
            .map_err(|e| e.to_string())?;
        let covered: BTreeSet<u16> = covered.into_iter().collect();
        let theirs: HashMap<Vec<u8>, Version> = theirs
            .into_iter()
            .filter(|(k, _)| covered.contains(&fine_of(Ring::point(k))))
            .collect();
        let mine: HashMap<Vec<u8>, Version> = mine.into_iter().collect();
        let push: Vec<Vec<u8>> = mine
            .iter()
            .filter(|(k, v)| theirs.get(*k).is_none_or(|t| t < *v))
            .map(|(k, _)| k.clone())
            .collect();
        let pull: Vec<Vec<u8>> = theirs
            .iter()
            .filter(|(k, v)| mine.get(*k).is_none_or(|m| m < *v))
            .map(|(k, _)| k.clone())
            .collect();
        let (pushed, pulled) = (push.len() as u64, pull.len() as u64);
        // The entries to push are read as they are now (a newer version goes, which is as
        // good), a step at a time, so memory holds one step of values.
        for keys in push.chunks(PUSH_STEP) {
            let keys = keys.to_vec();
            let entries = self
                .blocking(move |this| this.entries_of(&keys))
                .await
                .map_err(|e| e.to_string())?;
            for entries in batches(entries) {
                let push = Request::KvPush {
                    entries,
                    hinted: false,
                };
                match self.ae_call(addr, &push).await? {
                    Response::Done => {}
                    other => return Err(unexpected(&other)),
                }
            }
        }
        let mut left: &[Vec<u8>] = &pull;
        while !left.is_empty() {
            let ask = &left[..left.len().min(1024)];
            match self.ae_call(addr, &Request::KvFetch(ask.to_vec())).await? {
                Response::KvFetched { entries, consumed } if consumed > 0 => {
                    self.apply_all(entries, false)
                        .await
                        .map_err(|e| e.to_string())?;
                    left = &left[(consumed as usize).min(left.len())..];
                }
                other => return Err(unexpected(&other)),
            }
        }
        inner.stats.ae_pushed.fetch_add(pushed, Ordering::Relaxed);
        inner.stats.ae_pulled.fetch_add(pulled, Ordering::Relaxed);
        Ok(PeerSync {
            at_ms: now_ms(),
            in_sync: false,
            differing: differing.len(),
            pulled,
            pushed,
            error: None,
        })
    }
}
