//! The host side of `weft:plugin/locks`: guards over locks of the cluster's lock service,
//! scoped to the function's key-value namespace. While a guard is held, the invocation's
//! key-value writes carry its fencing tokens; a lock found lost fails the writes at once.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::time::Instant;
use wasmtime::component::Resource;

use super::bindings::handler::weft::plugin::locks;
use super::holding::{Guard, GuestLocks, Holding};
use super::state::GuestState;
use crate::id::LockKey;
use crate::locks::{Held, LockError};
use crate::replication::Fence;

/// The most locks one `acquire` may take.
const MAX_KEYS: usize = 16;
/// The longest key a guest may lock, in bytes.
const MAX_KEY_BYTES: usize = 200;

impl GuestState {
    fn guest_locks(&self) -> Result<&GuestLocks, locks::Error> {
        self.locks
            .as_ref()
            .ok_or_else(|| locks::Error::Unavailable("locks are not available to this call".into()))
    }

    /// Who holds the invocation's guards, as `weft locks` shows it: the function, the node and
    /// the invocation. A name of its own: the lock service hands a lock again to the holder
    /// that has it, so two invocations must never share one.
    fn holder(&mut self, g: &GuestLocks) -> String {
        let id = *self.invocation.get_or_insert_with(rand::random::<u64>);
        format!(
            "{} on {} (invocation {id:016x})",
            self.function,
            g.locks.node()
        )
    }

    /// Starts making writes under `held`'s lock.
    fn hold(&mut self, held: &Held) {
        let grant = held.grant();
        self.hold_lock(grant.key.clone(), grant.token, held.lost_flag());
    }

    /// Starts making writes under `lock` with `token`.
    pub(super) fn hold_lock(&mut self, lock: LockKey, token: u64, lost: Arc<AtomicBool>) {
        if let Some(kv) = self.kv.as_mut() {
            kv.fence(Fence {
                lock: lock.clone(),
                token,
            });
        }
        self.holding.push(Holding {
            key: lock,
            token,
            lost,
        });
    }

    /// Stops making writes under `key`.
    fn let_go(&mut self, key: &LockKey) {
        if let Some(kv) = self.kv.as_mut() {
            kv.unfence(key);
        }
        self.holding.retain(|h| h.key != *key);
    }
}

impl locks::Host for GuestState {
    async fn acquire(
        &mut self,
        keys: Vec<String>,
        timeout_ms: u64,
    ) -> Result<Resource<Guard>, locks::Error> {
        let g = self.guest_locks()?.clone();
        let holder = self.holder(&g);
        if keys.is_empty() || keys.len() > MAX_KEYS {
            return Err(locks::Error::Invalid(format!(
                "acquire takes 1 to {MAX_KEYS} keys, not {}",
                keys.len()
            )));
        }
        let mut wanted = Vec::with_capacity(keys.len());
        for key in &keys {
            if key.is_empty() || key.len() > MAX_KEY_BYTES {
                return Err(locks::Error::Invalid(format!(
                    "a lock key must be 1 to {MAX_KEY_BYTES} bytes, not {}",
                    key.len()
                )));
            }
            let lock = LockKey::scoped(&g.scope, key.as_bytes());
            if self.holding.iter().any(|h| h.key == lock) {
                return Err(locks::Error::Invalid(format!(
                    "lock `{key}` is already held by this invocation"
                )));
            }
            wanted.push((key.clone(), lock));
        }
        // One order for every caller (the keys' bytes), so two invocations taking the same
        // locks never wait for each other in a circle.
        wanted.sort();
        wanted.dedup();
        let wait = Duration::from_millis(timeout_ms).min(g.locks.config().max_wait);
        let deadline = Instant::now() + wait;
        let mut held = Vec::with_capacity(wanted.len());
        for (key, lock) in &wanted {
            let left = deadline.saturating_duration_since(Instant::now());
            match g.locks.hold(lock, holder.clone(), left).await {
                Ok(h) => held.push((key.clone(), h)),
                // The ones taken are released as `held` is dropped.
                Err(e) => return Err(refused(key, e)),
            }
        }
        for (_, h) in &held {
            self.hold(h);
        }
        self.table.push(Guard { held }).map_err(|e| {
            locks::Error::Unavailable(format!("too many guards in this invocation: {e}"))
        })
    }

    async fn handler_lock(&mut self) -> Option<(String, u64)> {
        self.handler_lock.as_ref().map(|h| (h.key.clone(), h.token))
    }
}

impl locks::HostGuard for GuestState {
    async fn held(&mut self, guard: Resource<Guard>) -> Vec<(String, u64)> {
        match self.table.get(&guard) {
            Ok(g) => g
                .held
                .iter()
                .map(|(key, h)| (key.clone(), h.grant().token))
                .collect(),
            Err(_) => Vec::new(),
        }
    }

    async fn lost(&mut self, guard: Resource<Guard>) -> bool {
        self.table
            .get(&guard)
            .is_ok_and(|g| g.held.iter().any(|(_, h)| h.is_lost()))
    }

    async fn drop(&mut self, guard: Resource<Guard>) -> wasmtime::Result<()> {
        let g = self.table.delete(guard)?;
        for (_, h) in &g.held {
            self.let_go(&h.grant().key);
        }
        // Dropping each `Held` releases its lock in the background.
        Ok(())
    }
}

/// A lock request's failure as the guest sees it.
fn refused(key: &str, e: LockError) -> locks::Error {
    match e {
        LockError::Held { .. } => locks::Error::Timeout(format!("`{key}`: {e}")),
        LockError::BadInput(m) => locks::Error::Invalid(format!("`{key}`: {m}")),
        e => locks::Error::Unavailable(format!("`{key}`: {e}")),
    }
}
