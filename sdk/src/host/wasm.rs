//! Host calls through the component's imports, generated from `sdk/wit/plugin.wit`.
//!
//! The `handler-imports` world (kv, log) is always generated; unused imports are dropped when
//! the component is built, so a map/reduce task does not import `kv` unless it calls it.
//! The `mapreduce` world lives in [`crate::__private::task_bindings`] behind the feature of the
//! same name because its custom section makes `task` a required export.

use crate::Error;
use crate::log::Level;

#[allow(unsafe_code, missing_docs, clippy::all)]
pub(crate) mod bindings {
    wit_bindgen::generate!({
        world: "handler-imports",
        path: "wit",
        pub_export_macro: false,
    });
}

use bindings::weft::plugin::{kv, locks, log as wit_log};

impl From<kv::Error> for Error {
    fn from(error: kv::Error) -> Self {
        match error {
            kv::Error::TooLarge(reason) => Error::TooLarge(reason),
            kv::Error::Unavailable(reason) => Error::Unavailable(reason),
            kv::Error::Fenced(reason) => Error::Fenced(reason),
        }
    }
}

impl From<locks::Error> for Error {
    fn from(error: locks::Error) -> Self {
        match error {
            locks::Error::Timeout(reason) => Error::LockTimeout(reason),
            locks::Error::Invalid(reason) => Error::LockInvalid(reason),
            locks::Error::Unavailable(reason) => Error::Unavailable(reason),
        }
    }
}

pub(crate) fn handler_lock() -> Option<(String, u64)> {
    locks::handler_lock()
}

/// Held locks: the host's guard resource (dropping it releases them).
pub(crate) struct Guard(locks::Guard);

pub(crate) fn lock(keys: &[String], timeout_ms: u64) -> Result<Guard, Error> {
    Ok(Guard(locks::acquire(keys, timeout_ms)?))
}

impl Guard {
    pub(crate) fn held(&self) -> Vec<(String, u64)> {
        self.0.held()
    }

    pub(crate) fn lost(&self) -> bool {
        self.0.lost()
    }
}

pub(crate) fn kv_get(key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
    Ok(kv::get(key)?)
}

pub(crate) fn kv_set(key: &[u8], value: &[u8]) -> Result<(), Error> {
    Ok(kv::set(key, value)?)
}

pub(crate) fn kv_set_with_ttl(key: &[u8], value: &[u8], ttl_ms: u64) -> Result<(), Error> {
    Ok(kv::set_with_ttl(key, value, ttl_ms)?)
}

pub(crate) fn kv_delete(key: &[u8]) -> Result<bool, Error> {
    Ok(kv::delete(key)?)
}

pub(crate) fn kv_increment(key: &[u8], delta: i64) -> Result<i64, Error> {
    Ok(kv::increment(key, delta)?)
}

pub(crate) fn log(level: Level, message: &str) {
    let level = match level {
        Level::Trace => wit_log::Level::Trace,
        Level::Debug => wit_log::Level::Debug,
        Level::Info => wit_log::Level::Info,
        Level::Warn => wit_log::Level::Warn,
        Level::Error => wit_log::Level::Error,
    };
    wit_log::log(level, message);
}

#[cfg(feature = "mapreduce")]
pub(crate) fn emit(pairs: &[u8]) {
    crate::__private::task_bindings::weft::plugin::emit::emit(pairs);
}

#[cfg(not(feature = "mapreduce"))]
pub(crate) fn emit(_pairs: &[u8]) {
    // Unreachable in practice: only `export_mapreduce!` drives an `Emitter`, and it requires the
    // feature. Failing loudly beats importing `emit` into every HTTP handler.
    panic!("weft-sdk: emitting map/reduce output needs the `mapreduce` feature");
}
