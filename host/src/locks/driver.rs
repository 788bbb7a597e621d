//! The leader's side of the lock service: it judges leases on its monotonic clock and
//! proposes an `Expire` for each that runs out. On taking over it gives every held lock its
//! whole lease again plus the lock delay ([`Leases::took_over`]), because it cannot know
//! when a lease granted by its predecessor began.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

use super::Inner;
use crate::consensus::storage::Applied;
use crate::consensus::{Command, LockOutcome, Outcome};

/// An expiry that could not be committed is tried again after this long.
const RETRY: Duration = Duration::from_secs(1);
/// Sleep this long when no lease is held (the loop wakes on events anyway).
const IDLE: Duration = Duration::from_secs(3600);

/// Runs on every node; acts while this node leads the group.
pub(super) async fn run(inner: Arc<Inner>, cancel: CancellationToken) {
    let consensus = &inner.consensus;
    let mut events = consensus.subscribe();
    let mut metrics = consensus.watch();
    // The term this node leads in, once it has taken over the leases.
    let mut leading: Option<u64> = None;
    loop {
        let next = match leading {
            Some(_) => inner.leases().next_due(),
            None => None,
        };
        let wake = next.unwrap_or_else(|| Instant::now() + IDLE);
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = metrics.changed() => {
                if r.is_err() {
                    return;
                }
                let (leads, term) = {
                    let m = metrics.borrow_and_update();
                    (m.current_leader == Some(consensus.id()), m.current_term)
                };
                if !leads {
                    if leading.take().is_some() {
                        *inner.leases() = Default::default();
                    }
                } else if leading != Some(term) {
                    leading = take_over(&inner).await.then_some(term);
                }
            }
            event = events.recv() => match event {
                Ok(Applied::Lock { key, .. }) => {
                    if leading.is_some() {
                        let now = Instant::now();
                        consensus.read_local(|s| inner.leases().applied(&s.locks, &key, now));
                    }
                }
                Ok(Applied::Register { .. }) => {}
                // A snapshot replaced the table, or this loop fell behind: judge every lease
                // again from now, as a new leader does.
                Ok(Applied::Reset) | Err(RecvError::Lagged(_)) => {
                    if leading.is_some() && !take_over(&inner).await {
                        leading = None;
                    }
                }
                Err(RecvError::Closed) => return,
            },
            _ = tokio::time::sleep_until(wake.into()) => {
                if leading.is_some() {
                    expire_due(&inner);
                }
            }
        }
    }
}

/// Takes over the leases as a new leader: after a linearizable read (so every entry
/// committed before is applied here), every held lock gets its lease again plus the delay.
async fn take_over(inner: &Arc<Inner>) -> bool {
    let table = match inner.consensus.read(|s| s.locks.clone()).await {
        Ok(t) => t,
        Err(e) => {
            tracing::debug!(error = %e, "could not take over the leases yet");
            return false;
        }
    };
    let delay = inner.config.lock_delay;
    let now = Instant::now();
    let held = inner.leases().took_over(&table, now, delay);
    #[cfg(feature = "test-switches")]
    if inner.config.expire_at_takeover_for_tests {
        let mut leases = inner.leases();
        for (key, _) in table.iter() {
            leases.retry(key, now);
        }
    }
    if held > 0 {
        tracing::info!(
            locks = held,
            delay_ms = delay.as_millis() as u64,
            "leading the metadata group: held locks wait out their lease and the lock delay"
        );
    }
    inner.stats.delay_waits.add(held as u64);
    true
}

/// Proposes an expiry for every lease that has run out.
fn expire_due(inner: &Arc<Inner>) {
    let now = Instant::now();
    let due = {
        let mut leases = inner.leases();
        let due = leases.due(now);
        // Not again until the expiry has been applied (which forgets the lease) or failed.
        for c in &due {
            leases.retry(c.key(), now + RETRY);
        }
        due
    };
    for command in due {
        let inner = inner.clone();
        inner.tasks.clone().spawn(async move {
            let what = format!("{command:?}");
            match inner.consensus.propose(Command::Lock(command)).await {
                Ok((_, Outcome::Lock(LockOutcome::Done { next }))) => {
                    inner.stats.expiries.add(1);
                    tracing::info!(expired = %what, handed_to = ?next, "a lease ran out");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(expiry = %what, error = %e, "could not expire a lease yet")
                }
            }
        });
    }
}
