//! The guests built from `plugins/` by the build script.
//!
//! The first-party plugins are embedded in the binary for `weft demo`; every guest's file is
//! also available by path for tests and benchmarks.

use std::path::PathBuf;

/// `hello`: an HTTP handler that greets.
pub const HELLO: &[u8] = include_bytes!(concat!(env!("WEFT_GUESTS_DIR"), "/hello.wasm"));
/// `counter`: an HTTP handler that counts requests per path in key-value storage.
pub const COUNTER: &[u8] = include_bytes!(concat!(env!("WEFT_GUESTS_DIR"), "/counter.wasm"));
/// `cache`: a read-through cache with a time to live in front of a slow origin.
pub const CACHE: &[u8] = include_bytes!(concat!(env!("WEFT_GUESTS_DIR"), "/cache.wasm"));
/// `ledger`: a lock-protected handler appending to a log per key (deploy with `--lock path:1`).
pub const LEDGER: &[u8] = include_bytes!(concat!(env!("WEFT_GUESTS_DIR"), "/ledger.wasm"));
/// `wordcount`: a map/reduce task with a combiner.
pub const WORDCOUNT: &[u8] = include_bytes!(concat!(env!("WEFT_GUESTS_DIR"), "/wordcount.wasm"));

/// The embedded first-party plugins, by name.
pub const EMBEDDED: &[(&str, &[u8])] = &[
    ("hello", HELLO),
    ("counter", COUNTER),
    ("cache", CACHE),
    ("wordcount", WORDCOUNT),
];

/// `wagi-echo`: a WASI 0.1 program (a core module, not a component) that echoes its request,
/// served the CGI way (WAGI).
pub const WAGI_ECHO: &[u8] =
    include_bytes!(concat!(env!("WEFT_WASIP1_GUESTS_DIR"), "/wagi_echo.wasm"));

/// The built component of any guest package in `plugins/` (e.g. `guest-loop`).
pub fn path(package: &str) -> PathBuf {
    PathBuf::from(env!("WEFT_GUESTS_DIR")).join(format!("{}.wasm", package.replace('-', "_")))
}
