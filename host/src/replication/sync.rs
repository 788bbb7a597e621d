//! The replicator's background task: following membership to rebuild the ring, and running
//! hinted handoff ([`super::hints`]) and anti-entropy rounds ([`super::anti_entropy`], which
//! also hand keys to new owners and collect tombstones) on their timers.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Entry, Replicator, View, build_view};
use crate::id::NodeId;
use crate::membership::MemberSet;

/// Largest batch of entries sent in one RPC, in bytes (frames are capped at 16 MiB).
pub(super) const BATCH_BYTES: usize = 4 << 20;

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
}

/// Splits entries into batches of at most [`BATCH_BYTES`].
pub(super) fn batches(entries: Vec<(Vec<u8>, Entry)>) -> Vec<Vec<(Vec<u8>, Entry)>> {
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
