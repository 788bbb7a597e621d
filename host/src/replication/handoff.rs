//! Handing keys this node no longer owns to their new owners, and dropping them once the
//! owners hold them.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::sync::batches;
use super::{Entry, Replicator, View};
use crate::id::NodeId;

impl Replicator {
    /// Sends entries this node no longer owns to every owner (in every round, the transition
    /// included, so they are there before the earlier ring is forgotten), and drops them here
    /// once all owners have flushed them, no earlier ring is consulted, and they have not
    /// changed meanwhile.
    pub(super) async fn hand_off(&self, view: &View, orphans: Vec<(Vec<u8>, Vec<u8>)>) {
        let inner = self.inner();
        let mut by_owner: HashMap<NodeId, Vec<(Vec<u8>, Entry)>> = HashMap::new();
        let mut decoded = Vec::with_capacity(orphans.len());
        for (key, bytes) in orphans {
            let Ok(entry) = Entry::decode(&bytes) else {
                continue;
            };
            let owners = view.replicas(&key, self.n_of(&key, view));
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
                if let Err(e) = self.push_to(&owner, batch, false).await {
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
