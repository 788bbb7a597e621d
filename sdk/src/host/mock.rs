//! In-memory host for native builds: one independent state per thread, so parallel tests do
//! not see each other's keys, logs or emitted pairs.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};

use crate::Error;
use crate::log::Level;

/// Everything the mock host remembers.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) kv: BTreeMap<Vec<u8>, Vec<u8>>,
    /// When each key written with a TTL expires, on the mock clock (ms).
    pub(crate) expires: BTreeMap<Vec<u8>, u64>,
    /// The mock clock (ms), moved only by `MockHost::advance`.
    pub(crate) clock_ms: u64,
    /// When set, every kv call fails with `Error::Unavailable(reason)`.
    pub(crate) kv_failure: Option<String>,
    pub(crate) logs: Vec<(Level, String)>,
    /// Pair records emitted since the last drain, and how many `emit` calls carried them.
    pub(crate) emitted: Vec<u8>,
    pub(crate) emit_calls: usize,
    /// Locks held by the code under test: key → (token, lost).
    pub(crate) locks: BTreeMap<String, (u64, bool)>,
    /// The last token granted.
    pub(crate) last_token: u64,
    /// Locks "someone else" holds: taking them times out.
    pub(crate) held_elsewhere: BTreeSet<String>,
    /// The lock-protected handler's own lock, when the test gave it one (also in `locks`).
    pub(crate) handler_lock: Option<(String, u64)>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Run `f` on this thread's mock state.
pub(crate) fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|state| f(&mut state.borrow_mut()))
}

impl State {
    /// Drops the keys whose time to live ran out on the mock clock.
    pub(crate) fn expire(&mut self) {
        let now = self.clock_ms;
        let gone: Vec<Vec<u8>> = self
            .expires
            .iter()
            .filter(|(_, at)| **at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for key in gone {
            self.expires.remove(&key);
            self.kv.remove(&key);
        }
    }
}

fn kv<R>(f: impl FnOnce(&mut BTreeMap<Vec<u8>, Vec<u8>>) -> R) -> Result<R, Error> {
    with(|state| match &state.kv_failure {
        Some(reason) => Err(Error::Unavailable(reason.clone())),
        None => {
            state.expire();
            Ok(f(&mut state.kv))
        }
    })
}

/// [`kv`] for a write: refused while a held lock is lost, as the host refuses it.
fn kv_write<R>(f: impl FnOnce(&mut BTreeMap<Vec<u8>, Vec<u8>>) -> R) -> Result<R, Error> {
    let lost = with(|state| {
        state
            .locks
            .iter()
            .find(|(_, (_, lost))| *lost)
            .map(|(k, (t, _))| (k.clone(), *t))
    });
    if let Some((key, token)) = lost {
        return Err(Error::Fenced(format!(
            "lock `{key}` (token {token}) was lost, so this write was not made"
        )));
    }
    kv(f)
}

pub(crate) fn handler_lock() -> Option<(String, u64)> {
    with(|state| state.handler_lock.clone())
}

/// Locks taken by one `lock` call; released when dropped.
pub(crate) struct Guard {
    held: Vec<(String, u64)>,
}

pub(crate) fn lock(keys: &[String], _timeout_ms: u64) -> Result<Guard, Error> {
    if keys.is_empty() || keys.len() > 16 {
        return Err(Error::LockInvalid(format!(
            "acquire takes 1 to 16 keys, not {}",
            keys.len()
        )));
    }
    let mut keys = keys.to_vec();
    keys.sort();
    keys.dedup();
    with(|state| {
        for key in &keys {
            if key.is_empty() || key.len() > 200 {
                return Err(Error::LockInvalid(format!(
                    "a lock key must be 1 to 200 bytes, not {}",
                    key.len()
                )));
            }
            if state.locks.contains_key(key) {
                return Err(Error::LockInvalid(format!(
                    "lock `{key}` is already held by this invocation"
                )));
            }
            if state.held_elsewhere.contains(key) {
                return Err(Error::LockTimeout(format!(
                    "`{key}`: held by another holder (MockHost::lock_elsewhere)"
                )));
            }
        }
        let mut held = Vec::new();
        for key in keys {
            state.last_token += 1;
            state.locks.insert(key.clone(), (state.last_token, false));
            held.push((key, state.last_token));
        }
        Ok(Guard { held })
    })
}

impl Guard {
    pub(crate) fn held(&self) -> Vec<(String, u64)> {
        self.held.clone()
    }

    pub(crate) fn lost(&self) -> bool {
        with(|state| {
            self.held.iter().any(|(k, t)| {
                state
                    .locks
                    .get(k)
                    .is_some_and(|&(tk, lost)| tk == *t && lost)
            })
        })
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        with(|state| {
            for (key, token) in &self.held {
                if state.locks.get(key).is_some_and(|(t, _)| t == token) {
                    state.locks.remove(key);
                }
            }
        });
    }
}

pub(crate) fn kv_get(key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    kv(|map| map.get(key).cloned())
}

pub(crate) fn kv_set(key: &[u8], value: &[u8]) -> Result<(), Error> {
    kv_write(|map| {
        map.insert(key.to_vec(), value.to_vec());
    })?;
    with(|state| state.expires.remove(key));
    Ok(())
}

pub(crate) fn kv_set_with_ttl(key: &[u8], value: &[u8], ttl_ms: u64) -> Result<(), Error> {
    if ttl_ms == 0 || ttl_ms > crate::kv::MAX_TTL.as_millis() as u64 {
        return Err(Error::Unavailable(format!(
            "a ttl must be above 0 and at most 10 years, not {ttl_ms} ms"
        )));
    }
    kv_set(key, value)?;
    with(|state| state.expires.insert(key.to_vec(), state.clock_ms + ttl_ms));
    Ok(())
}

pub(crate) fn kv_delete(key: &[u8]) -> Result<bool, Error> {
    let existed = kv_write(|map| map.remove(key).is_some())?;
    with(|state| state.expires.remove(key));
    Ok(existed)
}

pub(crate) fn kv_increment(key: &[u8], delta: i64) -> Result<i64, Error> {
    let next = kv_write(|map| {
        let current = match map.get(key) {
            None => Ok(0),
            Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
                .map(i64::from_le_bytes)
                .map_err(|_| {
                    Error::Format(format!(
                        "increment needs an 8-byte counter, found {} bytes",
                        bytes.len()
                    ))
                }),
        }?;
        let next = current.wrapping_add(delta);
        map.insert(key.to_vec(), next.to_le_bytes().to_vec());
        Ok::<i64, Error>(next)
    })??;
    // A write without a TTL, as the host's increment is: the key lasts.
    with(|state| state.expires.remove(key));
    Ok(next)
}

pub(crate) fn log(level: Level, message: &str) {
    // Shown by `cargo test` for failing tests, like any other output.
    eprintln!("[weft {level:?}] {message}");
    with(|state| state.logs.push((level, message.to_owned())));
}

pub(crate) fn emit(pairs: &[u8]) {
    with(|state| {
        state.emitted.extend_from_slice(pairs);
        state.emit_calls += 1;
    });
}
