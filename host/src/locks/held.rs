//! A lock held by this node on behalf of a guest or a lock-protected handler: its lease is
//! renewed in the background for as long as it is held, and losing it (a renewal refused,
//! or none answered before the lease ran out as this node counts it) is noticed, so the
//! holder stops writing under its token.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Grant, LockError, Locks};
use crate::id::LockKey;

/// A held lock. Released when dropped (in the background), or by [`Held::release`].
pub struct Held {
    grant: Grant,
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
    locks: Option<Locks>,
}

impl Locks {
    /// Takes `key` for `holder`, waiting in line at most `wait`, with the service's default
    /// lease, and keeps renewing it while the [`Held`] lives.
    pub async fn hold(
        &self,
        key: &LockKey,
        holder: String,
        wait: Duration,
    ) -> Result<Held, LockError> {
        let lease = self.config().default_lease;
        // The lease counts from the request's sending, so the holder distrusts it first.
        let mut sent = Instant::now();
        let mut grant = self.acquire(key, Some(holder), lease, wait).await?;
        if sent.elapsed() >= lease / 3 {
            // It waited in line, so by that count little of its lease may be left: renew at
            // once, and count from the renewal.
            let asked = Instant::now();
            match self.renew(key, grant.token).await {
                Ok(renewed) => {
                    grant = renewed;
                    sent = asked;
                }
                Err(e) => {
                    let _ = self.release(key, grant.token).await;
                    return Err(e);
                }
            }
        }
        let lost = Arc::new(AtomicBool::new(false));
        let stop = self.inner.tasks.token().child_token();
        let renewing = renew(
            self.clone(),
            grant.clone(),
            sent,
            lost.clone(),
            stop.clone(),
        );
        self.inner.tasks.spawn(renewing);
        Ok(Held {
            grant,
            lost,
            stop,
            locks: Some(self.clone()),
        })
    }
}

impl Held {
    /// The grant: key, holder and fencing token.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// Whether the lock was lost: a renewal was refused, or the lease ran out before one was
    /// answered.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::SeqCst)
    }

    /// The flag [`Held::is_lost`] reads, to watch the lock from elsewhere.
    pub fn lost_flag(&self) -> Arc<AtomicBool> {
        self.lost.clone()
    }

    /// Releases the lock now.
    pub async fn release(mut self) -> Result<(), LockError> {
        self.stop.cancel();
        let locks = self.locks.take().expect("released once");
        locks.release(&self.grant.key, self.grant.token).await
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(locks) = self.locks.take() {
            let (key, token) = (self.grant.key.clone(), self.grant.token);
            let tasks = locks.inner.tasks.clone();
            tasks.spawn(async move {
                if let Err(e) = locks.release(&key, token).await {
                    tracing::debug!(%key, token, error = %e, "releasing a dropped lock");
                }
            });
        }
    }
}

/// Renews `grant` every third of its lease until `stop`; marks it lost when a renewal is
/// refused or the lease (counted from `sent`, the last request's sending) runs out first.
async fn renew(
    locks: Locks,
    grant: Grant,
    mut sent: Instant,
    lost: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let lease = Duration::from_millis(grant.lease_ms);
    let mut due = sent + lease / 3;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(due) => {}
        }
        let asked = Instant::now();
        let answer = tokio::select! {
            _ = stop.cancelled() => return,
            a = tokio::time::timeout_at(sent + lease, locks.renew(&grant.key, grant.token)) => a,
        };
        match answer {
            Ok(Ok(_)) => {
                sent = asked;
                due = sent + lease / 3;
            }
            Ok(Err(LockError::NotHolder { .. })) | Err(_) => {
                tracing::warn!(key = %grant.key, token = grant.token, holder = %grant.holder, "lost a held lock");
                lost.store(true, Ordering::SeqCst);
                return;
            }
            Ok(Err(e)) => {
                // No answer this time (no leader, say): try again while the lease lasts.
                tracing::debug!(key = %grant.key, error = %e, "renewing a held lock");
                if Instant::now() >= sent + lease {
                    lost.store(true, Ordering::SeqCst);
                    return;
                }
                due = Instant::now() + lease / 20;
            }
        }
    }
}
