//! Collecting tombstones that no replica can bring back, and expired values alike: an entry
//! that ends ([`Entry::ends`]: deleted, or expiring) is a tombstone from its end on.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

use super::wire::{KvWire, Request, Response};
use super::{Entry, ReplicationError, Replicator, Version, View, now_ms};
use crate::id::NodeId;
use crate::rpc;

/// Tombstones to collect: keys and the versions of their tombstones.
type Candidates = Vec<(Vec<u8>, Version)>;

impl Replicator {
    /// Collects the tombstones this node is primary for that no replica can bring back: older
    /// than `tombstone_grace`, with every member of the cluster up (a member that is down may
    /// hold an older value), no earlier ring consulted, and every owner holding the same
    /// tombstone (or nothing). Each owner then drops it if it still holds exactly that one.
    pub(super) async fn collect_tombstones(&self, view: &View) {
        let inner = self.inner();
        #[cfg(feature = "test-switches")]
        let rule_off = inner.ignore_down_for_gc.load(Ordering::SeqCst);
        #[cfg(not(feature = "test-switches"))]
        let rule_off = false;
        let all_up = view.known <= view.ring.len() || rule_off;
        if !view.earlier.is_empty() || !all_up {
            return;
        }
        if inner.kept.tombstones(view) == Some(0) {
            // Counted as entries change: nothing to collect, and no reason to read the data.
            return;
        }
        let horizon = now_ms().saturating_sub(inner.config.tombstone_grace.as_millis() as u64);
        if inner
            .kept
            .tombstone_floor(view)
            .is_some_and(|floor| floor >= horizon)
        {
            // No tombstone held is old enough yet.
            return;
        }
        let this = self.clone();
        let scan_view = self.view();
        inner.kept.begin_pass();
        let found =
            tokio::task::spawn_blocking(move || this.old_tombstones(&scan_view, horizon)).await;
        let Ok(Ok((candidates, oldest))) = found else {
            inner.kept.end_pass(view, None);
            return;
        };
        inner.kept.end_pass(view, Some(oldest));
        for batch in candidates.chunks(1024) {
            // Which keys every other owner holds the same way.
            let mut agreed: Vec<bool> = vec![true; batch.len()];
            let mut owners_of: Vec<Vec<NodeId>> = Vec::with_capacity(batch.len());
            let mut peers: BTreeSet<NodeId> = BTreeSet::new();
            for (key, _) in batch {
                let owners = view.replicas(key, self.n_of(key, view));
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
                                Some(e) => e.ends().is_some() && e.version == batch[i].1,
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
                    rpc::call::<KvWire>(inner.placement.transport(), addr, &Request::KvPurge(mine))
                        .await,
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

    /// Tombstones older than `horizon` (Unix ms) that this node is the primary of, and when
    /// the oldest tombstone it holds was written (`u64::MAX`: none).
    fn old_tombstones(
        &self,
        view: &View,
        horizon: u64,
    ) -> Result<(Candidates, u64), ReplicationError> {
        let inner = self.inner();
        let (mut out, mut oldest) = (Vec::new(), u64::MAX);
        for record in inner.store.replica_iter() {
            let (key, bytes) = record?;
            let Ok(entry) = Entry::decode(&bytes) else {
                continue;
            };
            let Some(end) = entry.ends() else {
                continue;
            };
            oldest = oldest.min(end);
            if end >= horizon {
                continue;
            }
            if view.ring.replicas(&key, 1).first() == Some(&inner.me) {
                out.push((key, entry.version));
            }
        }
        Ok((out, oldest))
    }

    /// Drops each key whose entry is still exactly the tombstone of that version; flushes.
    /// Returns how many were dropped.
    pub(crate) async fn purge(&self, keys: &[(Vec<u8>, Version)]) -> usize {
        let inner = self.inner();
        let mut dropped = 0;
        for (key, version) in keys {
            // Exactly the stored bytes of that tombstone, fences and all.
            let Ok(Some(stored)) = inner.store.replica_get(key) else {
                continue;
            };
            let still =
                Entry::decode(&stored).is_ok_and(|e| e.ends().is_some() && e.version == *version);
            if still && let Ok(true) = inner.store.replica_remove_if(key, &stored) {
                inner
                    .collected
                    .remember(key, *version, std::time::Instant::now());
                dropped += 1;
            }
        }
        if dropped > 0 {
            let _ = inner.store.flush().await;
        }
        dropped
    }
}
