//! Key-value storage private to the calling function.
//!
//! Keys are the UTF-8 bytes of the `&str` given (not JSON-quoted), so the CLI can name them.
//! Typed values are stored as JSON; [`get_raw`]/[`set_raw`] store bytes untouched; counters
//! used by [`increment`] are signed 64-bit little-endian integers (read them with [`counter`]).
//!
//! ```
//! use weft_sdk::kv;
//!
//! # fn main() -> Result<(), weft_sdk::Error> {
//! kv::set("greeting", &"hello")?;
//! assert_eq!(kv::get::<String>("greeting")?, Some("hello".to_owned()));
//! assert_eq!(kv::increment("visits", 1)?, 1);
//! assert!(kv::delete("greeting")?);
//! # Ok(())
//! # }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Error, host};

/// The value stored under `key`, decoded from JSON, or `None` if the key is missing.
///
/// ```
/// # fn main() -> Result<(), weft_sdk::Error> {
/// weft_sdk::kv::set("limits", &vec![1, 2, 3])?;
/// let limits: Option<Vec<u32>> = weft_sdk::kv::get("limits")?;
/// assert_eq!(limits, Some(vec![1, 2, 3]));
/// assert_eq!(weft_sdk::kv::get::<u32>("absent")?, None);
/// # Ok(())
/// # }
/// ```
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    match get_raw(key)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        None => Ok(None),
    }
}

/// Store `value` as JSON under `key`, replacing any previous value.
///
/// ```
/// #[derive(serde::Serialize)]
/// struct User { name: String }
/// # fn main() -> Result<(), weft_sdk::Error> {
/// weft_sdk::kv::set("user:1", &User { name: "ada".into() })?;
/// assert_eq!(weft_sdk::kv::get_raw("user:1")?, Some(br#"{"name":"ada"}"#.to_vec()));
/// # Ok(())
/// # }
/// ```
pub fn set<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    set_raw(key, &serde_json::to_vec(value)?)
}

/// Store `value` as JSON under `key` for `ttl`: from then on the key reads as absent on every
/// node (a cache entry, a session). `ttl` must be above 0 and at most [`MAX_TTL`], and is
/// counted in milliseconds. A later [`set`] makes the key lasting again.
///
/// ```
/// use std::time::Duration;
/// # fn main() -> Result<(), weft_sdk::Error> {
/// let host = weft_sdk::testing::MockHost::new();
/// weft_sdk::kv::set_with_ttl("session:7", &"ada", Duration::from_secs(30))?;
/// assert_eq!(weft_sdk::kv::get::<String>("session:7")?, Some("ada".to_owned()));
/// host.advance(Duration::from_secs(30));
/// assert_eq!(weft_sdk::kv::get::<String>("session:7")?, None);
/// # Ok(())
/// # }
/// ```
pub fn set_with_ttl<T: Serialize + ?Sized>(
    key: &str,
    value: &T,
    ttl: std::time::Duration,
) -> Result<(), Error> {
    set_raw_with_ttl(key, &serde_json::to_vec(value)?, ttl)
}

/// Store `value` under `key` without encoding it, for `ttl` (see [`set_with_ttl`]).
///
/// ```
/// # fn main() -> Result<(), weft_sdk::Error> {
/// weft_sdk::kv::set_raw_with_ttl("page:/", b"<html>", std::time::Duration::from_secs(60))?;
/// # Ok(())
/// # }
/// ```
pub fn set_raw_with_ttl(key: &str, value: &[u8], ttl: std::time::Duration) -> Result<(), Error> {
    let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
    host::kv_set_with_ttl(key.as_bytes(), value, ms)
}

/// The longest time to live a write may ask for: about ten years.
pub const MAX_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 366 * 24 * 3600);

/// The bytes stored under `key`, or `None`.
///
/// ```
/// # fn main() -> Result<(), weft_sdk::Error> {
/// weft_sdk::kv::set_raw("blob", b"\x00\x01")?;
/// assert_eq!(weft_sdk::kv::get_raw("blob")?, Some(vec![0, 1]));
/// # Ok(())
/// # }
/// ```
pub fn get_raw(key: &str) -> Result<Option<Vec<u8>>, Error> {
    host::kv_get(key.as_bytes())
}

/// Store `value` under `key` without encoding it.
///
/// ```
/// # fn main() -> Result<(), weft_sdk::Error> {
/// weft_sdk::kv::set_raw("blob", b"raw bytes")?;
/// # Ok(())
/// # }
/// ```
pub fn set_raw(key: &str, value: &[u8]) -> Result<(), Error> {
    host::kv_set(key.as_bytes(), value)
}

/// Remove `key`; returns whether it existed.
///
/// ```
/// # fn main() -> Result<(), weft_sdk::Error> {
/// weft_sdk::kv::set("k", &1)?;
/// assert!(weft_sdk::kv::delete("k")?);
/// assert!(!weft_sdk::kv::delete("k")?);
/// # Ok(())
/// # }
/// ```
pub fn delete(key: &str) -> Result<bool, Error> {
    host::kv_delete(key.as_bytes())
}

/// Atomically add `delta` to the counter under `key` (missing counts as 0); returns the new value.
///
/// The counter is stored as 8 little-endian bytes, not JSON; read it with [`counter`].
///
/// ```
/// # fn main() -> Result<(), weft_sdk::Error> {
/// assert_eq!(weft_sdk::kv::increment("hits", 2)?, 2);
/// assert_eq!(weft_sdk::kv::increment("hits", -1)?, 1);
/// # Ok(())
/// # }
/// ```
pub fn increment(key: &str, delta: i64) -> Result<i64, Error> {
    host::kv_increment(key.as_bytes(), delta)
}

/// The current value of the counter under `key`, 0 if missing.
///
/// Fails with [`Error::Format`] if the stored value is not an 8-byte counter.
///
/// ```
/// # fn main() -> Result<(), weft_sdk::Error> {
/// assert_eq!(weft_sdk::kv::counter("jobs")?, 0);
/// weft_sdk::kv::increment("jobs", 5)?;
/// assert_eq!(weft_sdk::kv::counter("jobs")?, 5);
/// # Ok(())
/// # }
/// ```
pub fn counter(key: &str) -> Result<i64, Error> {
    match get_raw(key)? {
        None => Ok(0),
        Some(bytes) => <[u8; 8]>::try_from(bytes.as_slice())
            .map(i64::from_le_bytes)
            .map_err(|_| {
                Error::Format(format!(
                    "`{key}` holds {} bytes, not an 8-byte counter",
                    bytes.len()
                ))
            }),
    }
}
