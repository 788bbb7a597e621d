//! Handing keys this node no longer owns to their new owners, once per owner and version;
//! confirming it to the other members, so that a transition ends when every member has
//! handed its keys over; and dropping the keys once the transition is over.
//!
//! After the ring changes, the first anti-entropy round reads the keys this node holds and
//! no longer owns (orphans) in key order and pushes each to its owners in batches. Each owner
//! has a cursor: every orphan up to it is confirmed (flushed by that owner). A push that fails
//! stops that owner's cursor, and the next round goes on from there for that owner alone.
//! An orphan written after the pass read it (during a transition this node still takes the
//! writes of the rings it was on) is noted by the kept trees' watcher and pushed again.
//! Nothing is pushed twice otherwise, however long the transition lasts. Once every owner
//! confirmed a whole pass, this node's handoff for the placement is complete: it says so to
//! any member that asks ([`Request::AeHandedOff`]), and it ends its own transition when every
//! member of the ring says so too.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::kept::ChangedOrphans;
use super::sync::{BATCH_BYTES, batches};
use super::wire::{KvWire, Request, Response};
use super::{Entry, ReplicationError, Replicator, View};
use crate::id::NodeId;
use crate::rpc;

/// Orphans read at a time.
const STEP: usize = 1024;

/// How long a member has to answer whether it handed its keys over.
const ASK_WITHIN: Duration = Duration::from_secs(2);

/// The handoff of one placement's orphans.
#[derive(Default)]
pub(crate) struct Handing {
    /// The placement (its [`View::placement_id`]).
    placement: Option<[u8; 32]>,
    /// Per owner: every orphan up to this key (in key order) is confirmed by it.
    through: HashMap<NodeId, Vec<u8>>,
    /// Owners that confirmed every orphan of a whole pass.
    done: BTreeSet<NodeId>,
    /// Every owner confirmed every orphan read, and those written since were pushed too.
    complete: bool,
}

impl Handing {
    fn restart(&mut self, placement: [u8; 32]) {
        *self = Handing {
            placement: Some(placement),
            ..Handing::default()
        };
    }
}

/// An orphan as read, with its owners.
type Orphan = (Vec<u8>, Entry, Vec<NodeId>);

/// Entries waiting to be pushed to one owner, and their size in bytes.
type Buffer = (Vec<(Vec<u8>, Entry)>, usize);

impl Replicator {
    /// Hands this node's orphans on `view` to their owners: those written since the last
    /// round, and a pass for the owners that have not confirmed one. `orphans`: how many
    /// the kept trees count. Drops them once the transition is over and the handoff complete.
    pub(super) async fn hand_off(&self, view: &Arc<View>, orphans: u64) {
        let inner = self.inner();
        let id = view.placement_id();
        let peers: BTreeSet<NodeId> = view
            .ring
            .nodes()
            .into_iter()
            .filter(|n| *n != inner.me)
            .collect();
        let Some(changed) = inner.kept.take_changed_orphans(view) else {
            // The trees are not for this view (the ring changed meanwhile): next round.
            return;
        };
        let mut handing = std::mem::take(&mut *inner.handing.lock().expect("not poisoned"));
        if handing.placement != Some(id) || changed == ChangedOrphans::Overflowed {
            handing.restart(id);
        }
        let mut all_pushed = true;
        if let ChangedOrphans::Keys(keys) = changed
            && !keys.is_empty()
        {
            all_pushed = self.push_changed(view, keys).await;
        }
        if orphans == 0 {
            handing.done = peers.clone();
        } else if !peers.is_subset(&handing.done) {
            self.pass(view, &peers, &mut handing).await;
        }
        handing.complete = all_pushed && peers.is_subset(&handing.done);
        let complete = handing.complete;
        *inner.handing.lock().expect("not poisoned") = handing;
        if complete {
            self.drop_handed_on(id, orphans).await;
        }
    }

    /// [`Replicator::drop_handed`], if `id` is still the placement, no earlier ring is
    /// consulted any more, and this node holds `orphans`.
    async fn drop_handed_on(&self, id: [u8; 32], orphans: u64) {
        let now = self.view();
        if orphans > 0 && now.earlier.is_empty() && now.placement_id() == id {
            self.drop_handed(now).await;
        }
    }

    /// Pushes the orphans written since the last round to their owners; gives back those
    /// that could not be pushed. Whether all were.
    async fn push_changed(&self, view: &View, keys: BTreeSet<Vec<u8>>) -> bool {
        let inner = self.inner();
        let mut by_owner: HashMap<NodeId, Vec<(Vec<u8>, Entry)>> = HashMap::new();
        for key in &keys {
            let Ok(Some(bytes)) = inner.store.replica_get(key) else {
                continue;
            };
            let Ok(entry) = Entry::decode(&bytes) else {
                continue;
            };
            let owners = view.replicas(key, self.n_of(key, view));
            if owners.contains(&inner.me) {
                continue;
            }
            for o in owners {
                by_owner
                    .entry(o)
                    .or_default()
                    .push((key.clone(), entry.clone()));
            }
        }
        let mut failed: Vec<Vec<u8>> = Vec::new();
        for (owner, entries) in by_owner {
            let keys: Vec<Vec<u8>> = entries.iter().map(|(k, _)| k.clone()).collect();
            if !self.push_handed(&owner, entries).await {
                failed.extend(keys);
            }
        }
        let all = failed.is_empty();
        if !all {
            inner.kept.give_back_changed_orphans(view, failed);
        }
        all
    }

    /// Pushes `entries` to `owner`, batch by batch; whether all were confirmed.
    async fn push_handed(&self, owner: &NodeId, entries: Vec<(Vec<u8>, Entry)>) -> bool {
        for batch in batches(entries) {
            let len = batch.len() as u64;
            if let Err(e) = self.push_to(owner, batch, false).await {
                tracing::debug!(%owner, error = %e, "handoff failed; will retry");
                return false;
            }
            self.inner()
                .stats
                .handoff_pushed
                .fetch_add(len, Ordering::Relaxed);
        }
        true
    }

    /// One pass over the orphans for the owners that have not confirmed one, each from its
    /// cursor.
    async fn pass(&self, view: &Arc<View>, peers: &BTreeSet<NodeId>, h: &mut Handing) {
        let pending: BTreeSet<NodeId> = peers.difference(&h.done).cloned().collect();
        let mut cursor: Vec<u8> = pending
            .iter()
            .map(|o| h.through.get(o).cloned().unwrap_or_default())
            .min()
            .unwrap_or_default();
        let mut failed: BTreeSet<NodeId> = BTreeSet::new();
        let mut buffers: HashMap<NodeId, Buffer> = HashMap::new();
        loop {
            let (found, last) = match self.orphans_after(view, &cursor).await {
                Ok(step) => step,
                Err(e) => {
                    tracing::warn!(error = %e, "handoff could not read the local data");
                    return;
                }
            };
            for (key, entry, owners) in found {
                for o in owners {
                    let after = h.through.get(&o).is_none_or(|t| key > *t);
                    if pending.contains(&o) && !failed.contains(&o) && after {
                        let buffer = buffers.entry(o).or_default();
                        buffer.1 += key.len() + entry.value.as_ref().map_or(0, Vec::len) + 32;
                        buffer.0.push((key.clone(), entry.clone()));
                    }
                }
            }
            let end = last.is_none();
            if let Some(last) = last {
                cursor = last;
            }
            for o in &pending {
                if failed.contains(o) {
                    continue;
                }
                let buffer = buffers.entry(o.clone()).or_default();
                if !buffer.0.is_empty() && (buffer.1 >= BATCH_BYTES || end) {
                    let (entries, _) = std::mem::take(buffer);
                    if !self.push_handed(o, entries).await {
                        failed.insert(o.clone());
                        continue;
                    }
                }
                if buffers.get(o).is_none_or(|b| b.0.is_empty()) {
                    // Every orphan of its up to the cursor is confirmed.
                    h.through.insert(o.clone(), cursor.clone());
                }
            }
            if end {
                break;
            }
        }
        for o in pending {
            if !failed.contains(&o) {
                h.done.insert(o);
            }
        }
    }

    /// Up to [`STEP`] keys after `after` that this node does not own on `view`, with their
    /// owners, and the last key read (`None` at the end of the data).
    async fn orphans_after(
        &self,
        view: &Arc<View>,
        after: &[u8],
    ) -> Result<(Vec<Orphan>, Option<Vec<u8>>), ReplicationError> {
        let this = self.clone();
        let after = after.to_vec();
        let view = view.clone();
        tokio::task::spawn_blocking(move || {
            let inner = this.inner();
            let keys = inner.store.replica_keys_after(&after, STEP)?;
            let last = keys.last().cloned();
            let mut out = Vec::new();
            for key in keys {
                let owners = view.replicas(&key, this.n_of(&key, &view));
                if owners.contains(&inner.me) {
                    continue;
                }
                if let Some(bytes) = inner.store.replica_get(&key)?
                    && let Ok(entry) = Entry::decode(&bytes)
                {
                    out.push((key, entry, owners));
                }
            }
            Ok((out, last))
        })
        .await
        .map_err(|e| ReplicationError::Corrupt(format!("handoff task failed: {e}")))?
    }

    /// Drops the orphans every owner confirmed (all but those written since the last
    /// round's pushes), once no earlier ring is consulted.
    async fn drop_handed(&self, view: Arc<View>) {
        let this = self.clone();
        let started = Instant::now();
        let dropped = tokio::task::spawn_blocking(move || -> Result<u64, ReplicationError> {
            let inner = this.inner();
            let mut dropped = 0;
            let mut cursor = Vec::new();
            loop {
                let keys = inner.store.replica_keys_after(&cursor, STEP)?;
                let Some(last) = keys.last().cloned() else {
                    break;
                };
                for key in keys {
                    if view
                        .replicas(&key, this.n_of(&key, &view))
                        .contains(&inner.me)
                    {
                        continue;
                    }
                    // With the key's stripe held, so a write cannot slip between the check
                    // and the bytes read; the removal then compares those bytes.
                    let confirmed = inner.store.replica_read_watched(&key, |bytes| {
                        bytes
                            .filter(|_| !inner.kept.is_changed_orphan(&key))
                            .map(<[u8]>::to_vec)
                    })?;
                    if let Some(bytes) = confirmed
                        && inner.store.replica_remove_if(&key, &bytes)?
                    {
                        dropped += 1;
                    }
                }
                cursor = last;
            }
            Ok(dropped)
        })
        .await;
        let inner = self.inner();
        match dropped {
            Ok(Ok(0)) => {}
            Ok(Ok(dropped)) => {
                let _ = inner.store.flush().await;
                inner.stats.handed_off.fetch_add(dropped, Ordering::Relaxed);
                tracing::info!(
                    entries = dropped,
                    took_ms = started.elapsed().as_millis() as u64,
                    "dropped entries handed to their new owners"
                );
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "could not drop handed entries"),
            Err(e) => tracing::warn!(error = %e, "dropping handed entries failed"),
        }
    }

    /// Whether this node handed every key it holds and does not own on the placement
    /// `placement` to that placement's owners (and that placement is its current one).
    pub(crate) fn handed_off(&self, placement: [u8; 32]) -> bool {
        if self.view().placement_id() != placement {
            return false;
        }
        let h = self.inner().handing.lock().expect("not poisoned");
        h.placement == Some(placement) && h.complete
    }

    /// Ends this node's transition once it and every other member of its ring handed their
    /// keys over to the current ring's owners.
    pub(super) async fn end_transition_if_confirmed(&self) {
        let view = self.view();
        if view.earlier.is_empty() {
            return;
        }
        let id = view.placement_id();
        if !self.handed_off(id) {
            return;
        }
        let inner = self.inner();
        #[cfg(feature = "test-switches")]
        let unconfirmed = inner.config.unsafe_switches.end_transition_unconfirmed;
        #[cfg(not(feature = "test-switches"))]
        let unconfirmed = false;
        if !unconfirmed {
            let asks = view
                .ring
                .nodes()
                .into_iter()
                .filter(|n| *n != inner.me)
                .map(|peer| {
                    let addr = view.addr(&peer);
                    async move {
                        let Some(addr) = addr else {
                            return false;
                        };
                        let request = Request::AeHandedOff(id);
                        matches!(
                            rpc::call_within::<KvWire>(
                                inner.placement.transport(),
                                addr,
                                &request,
                                ASK_WITHIN
                            )
                            .await,
                            Ok(Response::HandedOff(true))
                        )
                    }
                });
            if !futures::future::join_all(asks)
                .await
                .into_iter()
                .all(|ok| ok)
            {
                return;
            }
        }
        if inner.placement.end_transition(view.changed) {
            inner
                .stats
                .transitions_ended
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                after_ms = view.changed.elapsed().as_millis() as u64,
                "the transition ended: every member handed its keys to the new owners"
            );
            // Drop what this node handed over now, not in a round of its own.
            let orphans = inner.kept.orphans(&self.view()).unwrap_or(0);
            self.drop_handed_on(id, orphans).await;
        }
    }
}
