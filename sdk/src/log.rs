//! Write lines into the node's log, tagged by the host with the function's name.
//!
//! ```
//! weft_sdk::log::info("starting");
//! weft_sdk::log::warn(format!("slow request: {} ms", 250));
//! ```

use crate::host;

/// How important a log line is, from least to most.
///
/// ```
/// use weft_sdk::log::{self, Level};
/// log::log(Level::Debug, "cache miss");
/// assert!(Level::Error > Level::Warn);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Information useful when debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the function recovered from.
    Warn,
    /// Something failed.
    Error,
}

/// Write one line at `level`.
///
/// ```
/// weft_sdk::log::log(weft_sdk::log::Level::Info, "hello");
/// ```
pub fn log(level: Level, message: impl AsRef<str>) {
    host::log(level, message.as_ref());
}

/// Write one line at [`Level::Trace`].
///
/// ```
/// weft_sdk::log::trace("entering parse");
/// ```
pub fn trace(message: impl AsRef<str>) {
    log(Level::Trace, message);
}

/// Write one line at [`Level::Debug`].
///
/// ```
/// weft_sdk::log::debug("cache miss");
/// ```
pub fn debug(message: impl AsRef<str>) {
    log(Level::Debug, message);
}

/// Write one line at [`Level::Info`].
///
/// ```
/// weft_sdk::log::info("request served");
/// ```
pub fn info(message: impl AsRef<str>) {
    log(Level::Info, message);
}

/// Write one line at [`Level::Warn`].
///
/// ```
/// weft_sdk::log::warn("retrying");
/// ```
pub fn warn(message: impl AsRef<str>) {
    log(Level::Warn, message);
}

/// Write one line at [`Level::Error`].
///
/// ```
/// weft_sdk::log::error("giving up");
/// ```
pub fn error(message: impl AsRef<str>) {
    log(Level::Error, message);
}
