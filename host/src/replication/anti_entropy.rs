//! Merkle anti-entropy: the hash trees this node shares with each peer, the exchange of
//! their leaves, and the pulls and pushes that repair the ranges that differ.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::merkle::{Leaves, leaf_of, leaf_points};
use super::sync::batches;
use super::wire::{KvWire, Request, Response};
use super::{Entry, PeerSync, ReplicationError, Replicator, Version, View, namespace_of, now_ms};
use crate::id::NodeId;
use crate::ring::Ring;
use crate::rpc;

/// Entries of this node that one peer should also hold.
type Shared = Vec<(Vec<u8>, Entry)>;

/// Stored entries (key and bytes), as read.
type Records = Box<dyn Iterator<Item = Result<(Vec<u8>, Vec<u8>), crate::store::StoreError>>>;

/// Per-peer trees, and how many entries are held but no longer owned.
type Scanned = (HashMap<NodeId, Leaves>, u64);

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

    /// This node's entries shared with `peer` that fall in `leaves`.
    pub(crate) fn shared_in(
        &self,
        view: &View,
        peer: &NodeId,
        leaves: &BTreeSet<u16>,
    ) -> Result<Shared, ReplicationError> {
        let inner = self.inner();
        let mut out = Vec::new();
        let records: Records = if inner.store.replicas_indexed() {
            // Only the ranges that differ, through the index by point.
            let mut found = Vec::new();
            for &leaf in leaves {
                let (from, to) = leaf_points(leaf);
                for key in inner.store.replica_keys_between(from, to)? {
                    if let Some(bytes) = inner.store.replica_get(&key)? {
                        found.push(Ok((key, bytes)));
                    }
                }
            }
            Box::new(found.into_iter())
        } else {
            Box::new(inner.store.replica_iter())
        };
        for record in records {
            let (key, bytes) = record?;
            if !leaves.contains(&(leaf_of(Ring::point(&key)) as u16)) {
                continue;
            }
            let owners = view.replicas(&key, self.n_of(&key, view));
            if owners.contains(&inner.me)
                && owners.contains(peer)
                && let Ok(e) = Entry::decode(&bytes)
            {
                out.push((key, e));
            }
        }
        Ok(out)
    }

    /// A peer's side of an exchange: compares its tree with this node's and lists this node's
    /// versions in the ranges that differ.
    pub(crate) async fn answer_leaves(
        &self,
        from: NodeId,
        theirs: Leaves,
    ) -> Result<(Vec<u16>, Vec<(Vec<u8>, Version)>), ReplicationError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let view = this.view();
            let inner = this.inner();
            let mine = inner
                .kept
                .for_view(&view, &inner.store)?
                .trees
                .remove(&from)
                .unwrap_or_default();
            let differing = mine.differing(&theirs);
            if differing.is_empty() {
                return Ok((differing, vec![]));
            }
            let set: BTreeSet<u16> = differing.iter().copied().collect();
            let mut have: Vec<(u16, Vec<u8>, Version)> = this
                .shared_in(&view, &from, &set)?
                .into_iter()
                .map(|(k, e)| (leaf_of(Ring::point(&k)) as u16, k, e.version))
                .collect();
            // Answer for as many whole ranges as fit one frame; the others wait for the
            // next round.
            have.sort_by_key(|(leaf, _, _)| *leaf);
            let mut size = 0;
            let mut covered = Vec::new();
            let mut out = Vec::new();
            let mut i = 0;
            for leaf in differing {
                let start = i;
                while i < have.len() && have[i].0 == leaf {
                    i += 1;
                }
                let bytes: usize = have[start..i].iter().map(|(_, k, _)| k.len() + 24).sum();
                if size + bytes > crate::replication::ANSWER_BYTES && !covered.is_empty() {
                    break;
                }
                size += bytes;
                covered.push(leaf);
                out.extend(have[start..i].iter().map(|(_, k, v)| (k.clone(), *v)));
            }
            Ok((covered, out))
        })
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
                Ok(other) => return Err(format!("unexpected answer {other:?}")),
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(held)
    }

    /// Compares trees with `peer` and repairs both sides where they differ.
    async fn exchange(
        &self,
        view: &View,
        peer: &NodeId,
        leaves: Leaves,
    ) -> Result<PeerSync, String> {
        let inner = self.inner();
        let addr = *view.addrs.get(peer).ok_or("no address known")?;
        let request = Request::AeLeaves {
            from: inner.me.clone(),
            leaves,
        };
        let (differing, theirs) =
            match rpc::call::<KvWire>(inner.placement.transport(), addr, &request).await {
                Ok(Response::AeDiff { differing, have }) => (differing, have),
                Ok(other) => return Err(format!("unexpected answer {other:?}")),
                Err(e) => return Err(e.to_string()),
            };
        if differing.is_empty() {
            return Ok(PeerSync {
                at_ms: now_ms(),
                in_sync: true,
                differing: 0,
                pulled: 0,
                pushed: 0,
                error: None,
            });
        }
        let set: BTreeSet<u16> = differing.iter().copied().collect();
        let this = self.clone();
        let (v, p) = (self.view(), peer.clone());
        let mine = tokio::task::spawn_blocking(move || this.shared_in(&v, &p, &set))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let theirs: HashMap<Vec<u8>, Version> = theirs.into_iter().collect();
        let mut push = Vec::new();
        let mine_versions: HashMap<&[u8], Version> = mine
            .iter()
            .map(|(k, e)| (k.as_slice(), e.version))
            .collect();
        for (k, e) in &mine {
            if theirs.get(k).is_none_or(|v| *v < e.version) {
                push.push((k.clone(), e.clone()));
            }
        }
        let pull: Vec<Vec<u8>> = theirs
            .iter()
            .filter(|(k, v)| mine_versions.get(k.as_slice()).is_none_or(|m| m < *v))
            .map(|(k, _)| k.clone())
            .collect();
        let (pushed, pulled) = (push.len() as u64, pull.len() as u64);
        for batch in batches(push) {
            self.push_to(peer, batch, false).await?;
        }
        let mut left: &[Vec<u8>] = &pull;
        while !left.is_empty() {
            let ask = &left[..left.len().min(1024)];
            match rpc::call::<KvWire>(
                inner.placement.transport(),
                addr,
                &Request::KvFetch(ask.to_vec()),
            )
            .await
            {
                Ok(Response::KvFetched { entries, consumed }) if consumed > 0 => {
                    self.apply_all(entries, false)
                        .await
                        .map_err(|e| e.to_string())?;
                    left = &left[(consumed as usize).min(left.len())..];
                }
                Ok(other) => return Err(format!("unexpected answer {other:?}")),
                Err(e) => return Err(e.to_string()),
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
