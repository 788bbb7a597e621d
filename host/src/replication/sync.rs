//! The replicator's background task: hinted handoff ([`super::hints`]) and anti-entropy
//! rounds ([`super::anti_entropy`], which also hand keys to new owners and collect
//! tombstones) on their timers, a round at once when the ring changes, and, during a
//! transition, asking the other members whether they handed their keys over
//! ([`super::handoff`]) on the hints' timer.

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{Entry, Replicator};

/// Largest batch of entries sent in one RPC, in bytes (frames are capped at 16 MiB).
pub(super) const BATCH_BYTES: usize = 4 << 20;

/// The replicator's background task.
pub(super) async fn run(
    r: Replicator,
    mut changes: watch::Receiver<u64>,
    cancel: CancellationToken,
) {
    let c = r.config().clone();
    let mut hints = tokio::time::interval(c.hint_interval);
    hints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_round = tokio::time::Instant::now() + c.anti_entropy_interval;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            changed = changes.changed() => {
                if changed.is_err() {
                    return;
                }
                changes.borrow_and_update();
                // A changed ring starts anti-entropy at once.
                r.anti_entropy_round().await;
                next_round = tokio::time::Instant::now() + c.anti_entropy_interval;
            }
            _ = hints.tick() => {
                r.deliver_hints().await;
                r.end_transition_if_confirmed().await;
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
