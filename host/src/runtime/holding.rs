//! What an invocation holds of the lock service: the locks it may take (`GuestLocks`), a
//! lock-protected handler's own lock, and the guards a guest took. Plain types, apart from the
//! bindings and the guest's state, which both use them.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::id::{LockKey, Namespace};
use crate::locks::{Held, Locks};

/// What an invocation may use of the lock service.
#[derive(Clone)]
pub struct GuestLocks {
    /// The node's lock service.
    pub locks: Locks,
    /// The scope of the function's locks: its key-value namespace.
    pub scope: Namespace,
}

/// The lock a lock-protected handler runs under, taken by the platform before the call.
#[derive(Clone)]
pub struct HandlerLock {
    /// The key as the request gave it.
    pub key: String,
    /// The lock.
    pub lock: LockKey,
    /// Its fencing token.
    pub token: u64,
    /// Set once the lock is found lost.
    pub lost: Arc<AtomicBool>,
}

/// A lock the invocation holds, and the flag that says it was lost.
pub(super) struct Holding {
    pub(super) key: LockKey,
    pub(super) token: u64,
    pub(super) lost: Arc<AtomicBool>,
}

/// Locks taken by one `acquire`, with the keys the guest named; released when the guest
/// drops the guard or the invocation ends.
pub struct Guard {
    pub(super) held: Vec<(String, Held)>,
}

/// Whether any lock the invocation holds was lost; its key and token if so.
pub(super) fn lost(holding: &[Holding]) -> Option<(&LockKey, u64)> {
    holding
        .iter()
        .find(|h| h.lost.load(Ordering::SeqCst))
        .map(|h| (&h.key, h.token))
}
