//! Convergence in the background: following membership to rebuild the ring, hinted handoff,
//! Merkle anti-entropy with every peer, and handing keys this node no longer owns to their
//! owners.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::merkle::{Leaves, leaf_of};
use super::wire::{KvWire, Request, Response};
use super::{
    Entry, PeerSync, ReplicationError, Replicator, Version, View, build_view, namespace_of, now_ms,
};
use crate::id::NodeId;
use crate::membership::MemberSet;
use crate::ring::Ring;
use crate::rpc;

/// Largest batch of entries sent in one RPC, in bytes (frames are capped at 16 MiB).
const BATCH_BYTES: usize = 4 << 20;

/// Hints delivered per target per tick.
const HINTS_PER_TICK: usize = 512;

/// The replicator's background task.
pub(super) async fn run(
    r: Replicator,
    mut members: watch::Receiver<MemberSet>,
    cancel: CancellationToken,
) {
    let c = r.config().clone();
    let mut hints = tokio::time::interval(c.hint_interval);
    hints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_round = tokio::time::Instant::now() + c.anti_entropy_interval;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = members.changed() => {
                if changed.is_err() {
                    return;
                }
                let set = members.borrow_and_update().clone();
                r.follow(&set);
            }
            _ = hints.tick() => {
                r.expire_earlier_rings();
                r.deliver_hints().await;
            }
            _ = tokio::time::sleep_until(next_round) => {
                r.anti_entropy_round().await;
                next_round = tokio::time::Instant::now() + c.anti_entropy_interval;
            }
            _ = r.inner().wake.notified() => {
                r.anti_entropy_round().await;
                next_round = tokio::time::Instant::now() + c.anti_entropy_interval;
            }
        }
    }
}

/// Entries of this node that one peer should also hold.
type Shared = Vec<(Vec<u8>, Entry)>;

/// Per-peer trees, and entries held but no longer owned (key and stored bytes).
type Scanned = (HashMap<NodeId, Leaves>, Vec<(Vec<u8>, Vec<u8>)>);

impl Replicator {
    /// Rebuilds the view from a new member set; a changed ring starts anti-entropy at once.
    pub(super) fn follow(&self, set: &MemberSet) {
        let inner = self.inner();
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
            if self.switches().count_listed_members_only {
                BTreeSet::new()
            } else {
                cluster.clone()
            }
        };
        let mut guard = inner.view.write().expect("not poisoned");
        let mut view = build_view(set, &inner.me, &cluster, inner.config.vnodes, Some(&guard));
        if inner.started.elapsed() < inner.config.transition {
            // A node that just started (or joined) has no earlier ring of its own, yet the
            // others placed keys without it until now: consult their ring, the one without
            // this node, for the first transition period.
            let others = crate::ring::Ring::new(
                set.members
                    .iter()
                    .filter(|m| m.state != crate::membership::MemberState::Down)
                    .filter(|m| m.node != inner.me)
                    .map(|m| crate::ring::RingNode {
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
        let changed = view.changed != guard.changed;
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
            inner.wake.notify_one();
        }
    }

    /// Forgets earlier rings once the transition after them is over.
    fn expire_earlier_rings(&self) {
        let inner = self.inner();
        let transition = inner.config.transition;
        let mut guard = inner.view.write().expect("not poisoned");
        if guard
            .earlier
            .iter()
            .any(|(_, at)| at.elapsed() >= transition)
        {
            let earlier = guard
                .earlier
                .iter()
                .filter(|(_, at)| at.elapsed() < transition)
                .cloned()
                .collect();
            *guard = Arc::new(View {
                ring: guard.ring.clone(),
                earlier,
                addrs: guard.addrs.clone(),
                known: guard.known,
                changed: guard.changed,
            });
        }
    }

    /// Offers held hints to their targets that are up.
    async fn deliver_hints(&self) {
        let inner = self.inner();
        let Ok(targets) = inner.store.hint_targets() else {
            return;
        };
        let view = self.view();
        let hint_horizon = if self.switches().keep_old_hints {
            0
        } else {
            now_ms().saturating_sub(inner.config.tombstone_grace.as_millis() as u64 / 2)
        };
        for target in targets {
            let Ok(node) = target.parse::<NodeId>() else {
                continue;
            };
            if !view.addrs.contains_key(&node) {
                continue;
            }
            let Ok(held) = inner.store.hints_for(&target, HINTS_PER_TICK) else {
                continue;
            };
            // In batches that fit a frame; a hint that cannot be read is dropped.
            let mut batch: Vec<(Vec<u8>, Vec<u8>, Entry)> = Vec::new();
            let mut size = 0;
            let mut rest = held.into_iter().peekable();
            while let Some((key, bytes)) = rest.next() {
                match Entry::decode(&bytes) {
                    Ok(e) if e.version.millis() < hint_horizon => {
                        // Too old to deliver safely: its key's tombstone may be collected.
                        let _ = inner.store.remove_hint(&target, &key, &bytes);
                        inner.stats.hints_expired.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(e) => {
                        size += key.len() + bytes.len();
                        batch.push((key, bytes, e));
                    }
                    Err(_) => {
                        let _ = inner.store.remove_hint(&target, &key, &bytes);
                    }
                }
                if size < BATCH_BYTES && rest.peek().is_some() {
                    continue;
                }
                let entries = batch
                    .iter()
                    .map(|(k, _, e)| (k.clone(), e.clone()))
                    .collect();
                match self.push_to(&node, entries).await {
                    Ok(()) => {
                        for (key, bytes, _) in &batch {
                            let _ = inner.store.remove_hint(&target, key, bytes);
                        }
                        inner
                            .stats
                            .hints_delivered
                            .fetch_add(batch.len() as u64, Ordering::Relaxed);
                        tracing::debug!(%node, hints = batch.len(), "delivered hints");
                    }
                    Err(e) => {
                        tracing::debug!(%node, error = %e, "could not deliver hints yet");
                        break;
                    }
                }
                batch.clear();
                size = 0;
            }
        }
    }

    /// The replication factor of a stored key.
    fn n_of(&self, key: &[u8], view: &View) -> usize {
        view.cap(self.inner().config.quorum(namespace_of(key)).n.get() as usize)
    }

    /// One pass over this node's data: the tree it shares with each peer (or with `only`),
    /// and the entries it holds but no longer owns (with their stored bytes).
    pub(crate) fn trees(
        &self,
        view: &View,
        only: Option<&NodeId>,
    ) -> Result<Scanned, ReplicationError> {
        let inner = self.inner();
        let mut trees: HashMap<NodeId, Leaves> = HashMap::new();
        let mut orphans = Vec::new();
        for record in inner.store.replica_iter() {
            let (key, bytes) = record?;
            let Ok(entry) = Entry::decode(&bytes) else {
                // Unreadable: left out of the trees, so the peers' copies replace it.
                tracing::warn!(key = %String::from_utf8_lossy(&key), "skipping an unreadable stored entry");
                continue;
            };
            let point = Ring::point(&key);
            let owners =
                view.ring
                    .replicas_placed(&key, self.n_of(&key, view), &inner.config.placement);
            if !owners.contains(&inner.me) {
                orphans.push((key, bytes));
                continue;
            }
            for peer in owners.iter().filter(|p| **p != inner.me) {
                if only.is_some_and(|o| o != peer) {
                    continue;
                }
                trees.entry(peer.clone()).or_default().add(
                    point,
                    &key,
                    entry.version,
                    entry.value.is_none(),
                );
            }
        }
        Ok((trees, orphans))
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
        for record in inner.store.replica_iter() {
            let (key, bytes) = record?;
            if !leaves.contains(&(leaf_of(Ring::point(&key)) as u16)) {
                continue;
            }
            let owners =
                view.ring
                    .replicas_placed(&key, self.n_of(&key, view), &inner.config.placement);
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
            let (mut trees, _) = this.trees(&view, Some(&from))?;
            let mine = trees.remove(&from).unwrap_or_default();
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
        let (trees, _) = self.trees(&view, None)?;
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
    /// entries this node no longer owns.
    pub(crate) async fn anti_entropy_round(&self) {
        let inner = self.inner();
        #[cfg(feature = "test-switches")]
        if inner.pause_anti_entropy.load(Ordering::SeqCst) {
            return;
        }
        let view = self.view();
        let this = self.clone();
        let scan_view = view.clone();
        let scanned = tokio::task::spawn_blocking(move || this.trees(&scan_view, None)).await;
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
        if !orphans.is_empty() {
            self.hand_off(&view, orphans).await;
        }
        self.collect_tombstones(&view).await;
    }

    /// Collects the tombstones this node is primary for that no replica can bring back: older
    /// than `tombstone_grace`, with every member of the cluster up (a member that is down may
    /// hold an older value), no earlier ring consulted, and every owner holding the same
    /// tombstone (or nothing). Each owner then drops it if it still holds exactly that one.
    async fn collect_tombstones(&self, view: &View) {
        let inner = self.inner();
        #[cfg(feature = "test-switches")]
        let rule_off = inner.ignore_down_for_gc.load(Ordering::SeqCst);
        #[cfg(not(feature = "test-switches"))]
        let rule_off = false;
        let all_up = view.known <= view.ring.len() || rule_off;
        if !view.earlier.is_empty() || !all_up {
            return;
        }
        let horizon = now_ms().saturating_sub(inner.config.tombstone_grace.as_millis() as u64);
        let this = self.clone();
        let scan_view = self.view();
        let found =
            tokio::task::spawn_blocking(move || this.old_tombstones(&scan_view, horizon)).await;
        let Ok(Ok(candidates)) = found else {
            return;
        };
        for batch in candidates.chunks(1024) {
            // Which keys every other owner holds the same way.
            let mut agreed: Vec<bool> = vec![true; batch.len()];
            let mut owners_of: Vec<Vec<NodeId>> = Vec::with_capacity(batch.len());
            let mut peers: BTreeSet<NodeId> = BTreeSet::new();
            for (key, _) in batch {
                let owners =
                    view.ring
                        .replicas_placed(key, self.n_of(key, view), &inner.config.placement);
                peers.extend(owners.iter().filter(|o| **o != inner.me).cloned());
                owners_of.push(owners);
            }
            for peer in &peers {
                let asked: Vec<usize> = (0..batch.len())
                    .filter(|&i| owners_of[i].contains(peer))
                    .collect();
                let keys: Vec<Vec<u8>> = asked.iter().map(|&i| batch[i].0.clone()).collect();
                match self.fetch_from(view, peer, keys).await {
                    Ok(held) => {
                        for &i in &asked {
                            let same = match held.get(&batch[i].0) {
                                None => true,
                                Some(e) => e.value.is_none() && e.version == batch[i].1,
                            };
                            agreed[i] &= same;
                        }
                    }
                    Err(_) => {
                        for &i in &asked {
                            agreed[i] = false;
                        }
                    }
                }
            }
            let purge: Vec<(Vec<u8>, Version)> = batch
                .iter()
                .zip(&agreed)
                .filter(|(_, ok)| **ok)
                .map(|((k, v), _)| (k.clone(), *v))
                .collect();
            if purge.is_empty() {
                continue;
            }
            let mut failed = false;
            for peer in &peers {
                let mine: Vec<(Vec<u8>, Version)> = purge
                    .iter()
                    .filter(|(k, _)| {
                        let i = batch
                            .iter()
                            .position(|(b, _)| b == k)
                            .expect("from the batch");
                        owners_of[i].contains(peer)
                    })
                    .cloned()
                    .collect();
                let Some(addr) = view.addrs.get(peer).copied() else {
                    failed = true;
                    continue;
                };
                if !matches!(
                    rpc::call::<KvWire>(&inner.transport, addr, &Request::KvPurge(mine)).await,
                    Ok(Response::Done)
                ) {
                    failed = true;
                }
            }
            // This node drops its own copies last, and only when every owner dropped theirs,
            // so a failed round leaves a tombstone here to collect again.
            if !failed {
                let dropped = self.purge(&purge).await;
                inner
                    .stats
                    .tombstones_collected
                    .fetch_add(dropped as u64, Ordering::Relaxed);
            }
        }
    }

    /// Tombstones older than `horizon` (Unix ms) that this node is the primary of.
    fn old_tombstones(
        &self,
        view: &View,
        horizon: u64,
    ) -> Result<Vec<(Vec<u8>, Version)>, ReplicationError> {
        let inner = self.inner();
        let mut out = Vec::new();
        for record in inner.store.replica_iter() {
            let (key, bytes) = record?;
            let Ok(entry) = Entry::decode(&bytes) else {
                continue;
            };
            if entry.value.is_some() || entry.version.millis() >= horizon {
                continue;
            }
            if view.ring.replicas(&key, 1).first() == Some(&inner.me) {
                out.push((key, entry.version));
            }
        }
        Ok(out)
    }

    /// A peer's copies of `keys` (as many answers as it takes).
    async fn fetch_from(
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
            match rpc::call::<KvWire>(&self.inner().transport, addr, &request).await {
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

    /// Drops each key whose entry is still exactly the tombstone of that version; flushes.
    /// Returns how many were dropped.
    pub(crate) async fn purge(&self, keys: &[(Vec<u8>, Version)]) -> usize {
        let inner = self.inner();
        let mut dropped = 0;
        for (key, version) in keys {
            let tombstone = Entry {
                version: *version,
                value: None,
            }
            .encode();
            if let Ok(true) = inner.store.replica_remove_if(key, &tombstone) {
                dropped += 1;
            }
        }
        if dropped > 0 {
            let _ = inner.store.flush().await;
        }
        dropped
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
        let (differing, theirs) = match rpc::call::<KvWire>(&inner.transport, addr, &request).await
        {
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
            self.push_to(peer, batch).await?;
        }
        let mut left: &[Vec<u8>] = &pull;
        while !left.is_empty() {
            let ask = &left[..left.len().min(1024)];
            match rpc::call::<KvWire>(&inner.transport, addr, &Request::KvFetch(ask.to_vec())).await
            {
                Ok(Response::KvFetched { entries, consumed }) if consumed > 0 => {
                    self.apply_all(entries).await.map_err(|e| e.to_string())?;
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

    /// Sends entries this node no longer owns to every owner (in every round, the transition
    /// included, so they are there before the earlier ring is forgotten), and drops them here
    /// once all owners have flushed them, no earlier ring is consulted, and they have not
    /// changed meanwhile.
    async fn hand_off(&self, view: &View, orphans: Vec<(Vec<u8>, Vec<u8>)>) {
        let inner = self.inner();
        let mut by_owner: HashMap<NodeId, Vec<(Vec<u8>, Entry)>> = HashMap::new();
        let mut decoded = Vec::with_capacity(orphans.len());
        for (key, bytes) in orphans {
            let Ok(entry) = Entry::decode(&bytes) else {
                continue;
            };
            let owners =
                view.ring
                    .replicas_placed(&key, self.n_of(&key, view), &inner.config.placement);
            for o in &owners {
                by_owner
                    .entry(o.clone())
                    .or_default()
                    .push((key.clone(), entry.clone()));
            }
            decoded.push((key, bytes, owners));
        }
        let mut failed: BTreeSet<NodeId> = BTreeSet::new();
        for (owner, entries) in by_owner {
            for batch in batches(entries) {
                if let Err(e) = self.push_to(&owner, batch).await {
                    tracing::debug!(%owner, error = %e, "handoff failed; will retry");
                    failed.insert(owner.clone());
                    break;
                }
            }
        }
        let now = self.view();
        if !view.earlier.is_empty() || !now.earlier.is_empty() || now.changed != view.changed {
            // Readers may still ask this node while an earlier ring is consulted, and a ring
            // that changed during the round may make this node an owner again: keep them.
            return;
        }
        let started = Instant::now();
        let mut dropped = 0u64;
        for (key, bytes, owners) in decoded {
            if owners.iter().any(|o| failed.contains(o)) || owners.is_empty() {
                continue;
            }
            if let Ok(true) = inner.store.replica_remove_if(&key, &bytes) {
                dropped += 1;
            }
        }
        if dropped > 0 {
            let _ = inner.store.flush().await;
            inner.stats.handed_off.fetch_add(dropped, Ordering::Relaxed);
            tracing::info!(
                entries = dropped,
                took_ms = started.elapsed().as_millis() as u64,
                "handed entries to their new owners"
            );
        }
    }
}

/// Splits entries into batches of at most [`BATCH_BYTES`].
fn batches(entries: Vec<(Vec<u8>, Entry)>) -> Vec<Vec<(Vec<u8>, Entry)>> {
    let mut out = vec![];
    let mut cur = vec![];
    let mut size = 0;
    for (k, e) in entries {
        let len = k.len() + e.value.as_ref().map_or(0, |v| v.len()) + 32;
        if size + len > BATCH_BYTES && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            size = 0;
        }
        size += len;
        cur.push((k, e));
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}
