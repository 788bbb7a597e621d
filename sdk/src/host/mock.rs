//! In-memory host for native builds: one independent state per thread, so parallel tests do
//! not see each other's keys, logs or emitted pairs.

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::Error;
use crate::log::Level;

/// Everything the mock host remembers.
#[derive(Default)]
pub(crate) struct State {
    pub(crate) kv: BTreeMap<Vec<u8>, Vec<u8>>,
    /// When set, every kv call fails with `Error::Unavailable(reason)`.
    pub(crate) kv_failure: Option<String>,
    pub(crate) logs: Vec<(Level, String)>,
    /// Pairs emitted since the last drain, and how many `emit` calls carried them.
    pub(crate) emitted: Vec<(Vec<u8>, Vec<u8>)>,
    pub(crate) emit_calls: usize,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

/// Run `f` on this thread's mock state.
pub(crate) fn with<R>(f: impl FnOnce(&mut State) -> R) -> R {
    STATE.with(|state| f(&mut state.borrow_mut()))
}

fn kv<R>(f: impl FnOnce(&mut BTreeMap<Vec<u8>, Vec<u8>>) -> R) -> Result<R, Error> {
    with(|state| match &state.kv_failure {
        Some(reason) => Err(Error::Unavailable(reason.clone())),
        None => Ok(f(&mut state.kv)),
    })
}

pub(crate) fn kv_get(key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    kv(|map| map.get(key).cloned())
}

pub(crate) fn kv_set(key: &[u8], value: &[u8]) -> Result<(), Error> {
    kv(|map| {
        map.insert(key.to_vec(), value.to_vec());
    })
}

pub(crate) fn kv_delete(key: &[u8]) -> Result<bool, Error> {
    kv(|map| map.remove(key).is_some())
}

pub(crate) fn kv_increment(key: &[u8], delta: i64) -> Result<i64, Error> {
    kv(|map| {
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
        Ok(next)
    })?
}

pub(crate) fn log(level: Level, message: &str) {
    // Shown by `cargo test` for failing tests, like any other output.
    eprintln!("[weft {level:?}] {message}");
    with(|state| state.logs.push((level, message.to_owned())));
}

pub(crate) fn emit(pairs: &[(Vec<u8>, Vec<u8>)]) {
    with(|state| {
        state.emitted.extend_from_slice(pairs);
        state.emit_calls += 1;
    });
}
