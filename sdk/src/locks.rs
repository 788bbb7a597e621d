//! Locks shared by the whole cluster, with fencing tokens.
//!
//! A lock is held until its [`Guard`] is dropped (or the invocation ends); the host renews its
//! lease meanwhile. While a guard is held, every key-value write of the invocation carries its
//! fencing token, so should the lock be lost (the node paused past the lease, say), the writes
//! fail with [`Error::Fenced`](crate::Error::Fenced) instead of overwriting a later holder's.
//! Lock keys are private to the function, like its key-value namespace.
//!
//! ```
//! use std::time::Duration;
//! use weft_sdk::{kv, locks};
//!
//! # fn main() -> Result<(), weft_sdk::Error> {
//! # let _host = weft_sdk::testing::MockHost::new();
//! kv::set("acct/a", &100)?;
//! // Take both accounts (in one fixed order, whatever order they are named in), move money.
//! locks::with_lock(&["acct/b", "acct/a"], Duration::from_secs(5), || {
//!     let a: i64 = kv::get("acct/a")?.unwrap_or(0);
//!     let b: i64 = kv::get("acct/b")?.unwrap_or(0);
//!     kv::set("acct/a", &(a - 30))?;
//!     kv::set("acct/b", &(b + 30))
//! })?;
//! assert_eq!(kv::get::<i64>("acct/b")?, Some(30));
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

use crate::{Error, host};

/// Held locks; dropping the guard releases them.
pub struct Guard(host::Guard);

impl Guard {
    /// The keys held, in the order they were taken, with their fencing tokens.
    ///
    /// ```
    /// # let _host = weft_sdk::testing::MockHost::new();
    /// let guard = weft_sdk::locks::lock_all(&["b", "a"], std::time::Duration::from_secs(1)).unwrap();
    /// let keys: Vec<String> = guard.held().into_iter().map(|(k, _)| k).collect();
    /// assert_eq!(keys, ["a", "b"]);
    /// ```
    pub fn held(&self) -> Vec<(String, u64)> {
        self.0.held()
    }

    /// The fencing token of the first lock held (a guard holds at least one).
    ///
    /// ```
    /// # let _host = weft_sdk::testing::MockHost::new();
    /// let first = weft_sdk::locks::lock("a", std::time::Duration::from_secs(1)).unwrap();
    /// let second = weft_sdk::locks::lock("b", std::time::Duration::from_secs(1)).unwrap();
    /// assert!(second.token() > first.token());
    /// ```
    pub fn token(&self) -> u64 {
        self.held().first().map_or(0, |(_, t)| *t)
    }

    /// Whether one of the locks was lost: its lease ran out before the host renewed it.
    ///
    /// ```
    /// let host = weft_sdk::testing::MockHost::new();
    /// let guard = weft_sdk::locks::lock("a", std::time::Duration::from_secs(1)).unwrap();
    /// assert!(!guard.is_lost());
    /// host.lose_lock("a");
    /// assert!(guard.is_lost());
    /// ```
    pub fn is_lost(&self) -> bool {
        self.0.lost()
    }

    /// Releases the locks now (what dropping the guard does).
    ///
    /// ```
    /// let host = weft_sdk::testing::MockHost::new();
    /// let guard = weft_sdk::locks::lock("a", std::time::Duration::from_secs(1)).unwrap();
    /// guard.release();
    /// assert!(host.held_locks().is_empty());
    /// ```
    pub fn release(self) {}
}

/// Takes the lock `key`, waiting at most `timeout` for another holder to let go.
///
/// ```
/// # let _host = weft_sdk::testing::MockHost::new();
/// let guard = weft_sdk::locks::lock("order/7", std::time::Duration::from_secs(5)).unwrap();
/// assert_eq!(guard.held()[0].0, "order/7");
/// ```
pub fn lock(key: &str, timeout: Duration) -> Result<Guard, Error> {
    lock_all(&[key], timeout)
}

/// Takes every lock in `keys` (1 to 16 keys of 1 to 200 bytes), in sorted order so that two
/// callers taking the same locks never wait for each other in a circle, waiting at most
/// `timeout` in all. A key this invocation already holds is an error.
///
/// ```
/// let host = weft_sdk::testing::MockHost::new();
/// host.lock_elsewhere("busy", true);
/// let err = weft_sdk::locks::lock_all(&["free", "busy"], std::time::Duration::from_millis(10));
/// assert!(matches!(err, Err(weft_sdk::Error::LockTimeout(_))));
/// assert!(host.held_locks().is_empty(), "nothing stays held after a failure");
/// ```
pub fn lock_all(keys: &[&str], timeout: Duration) -> Result<Guard, Error> {
    let keys: Vec<String> = keys.iter().map(|k| (*k).to_owned()).collect();
    let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    Ok(Guard(host::lock(&keys, ms)?))
}

/// The lock this handler runs under, when it was deployed as a lock-protected handler
/// (`weft deploy --lock ...`): the key the request gave, and the lock's fencing token.
///
/// ```
/// let host = weft_sdk::testing::MockHost::new();
/// assert_eq!(weft_sdk::locks::handler_lock(), None);
/// host.set_handler_lock(Some("orders"));
/// assert_eq!(weft_sdk::locks::handler_lock(), Some(("orders".to_owned(), 1)));
/// ```
pub fn handler_lock() -> Option<(String, u64)> {
    host::handler_lock()
}

/// Runs `f` holding every lock in `keys` ([`lock_all`]), and releases them after.
///
/// ```
/// use std::time::Duration;
/// # let _host = weft_sdk::testing::MockHost::new();
/// let n = weft_sdk::locks::with_lock(&["counter"], Duration::from_secs(1), || {
///     weft_sdk::kv::increment("counter", 1)
/// }).unwrap();
/// assert_eq!(n, 1);
/// ```
pub fn with_lock<R>(
    keys: &[&str],
    timeout: Duration,
    f: impl FnOnce() -> Result<R, Error>,
) -> Result<R, Error> {
    let _guard = lock_all(keys, timeout)?;
    f()
}
