//! Hinted handoff: offering the writes this node held for replicas that missed them, once
//! they are up, and dropping hints too old to deliver safely.

use std::sync::atomic::Ordering;

use super::sync::BATCH_BYTES;
use super::{Entry, Replicator, now_ms};
use crate::id::NodeId;

/// Hints delivered per target per tick.
const HINTS_PER_TICK: usize = 512;

impl Replicator {
    /// Offers held hints to their targets that are up.
    pub(super) async fn deliver_hints(&self) {
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
                match self.push_to(&node, entries, true).await {
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
}
