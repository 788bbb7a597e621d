//! The one error type of the SDK, so that handlers can use `?` on every SDK call.

/// Why an SDK call failed, or why a handler or task gave up.
///
/// A handler returning `Err(error)` answers `500` with the error's message;
/// a map/reduce step returning `Err(error)` fails that task with the message.
///
/// ```
/// use weft_sdk::Error;
///
/// fn parse(input: &str) -> Result<u32, Error> {
///     input.trim().parse().map_err(|e| Error::msg(format!("not a number: {e}")))
/// }
/// assert_eq!(parse(" 7 ").unwrap(), 7);
/// assert_eq!(parse("x").unwrap_err().to_string(), "not a number: invalid digit found in string");
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key or value is larger than the host allows; the message says the limit.
    #[error("key or value too large: {0}")]
    TooLarge(String),
    /// The key-value store (or the lock service) could not serve the call; retrying later may
    /// work.
    #[error("key-value store unavailable: {0}")]
    Unavailable(String),
    /// A read or write was refused because a lock this invocation held was lost (its lease
    /// ran out and the lock was granted again): stop, as every later one under it is refused
    /// too. A refused write was not acknowledged; a replica that had not yet seen the later
    /// grant may keep it, but it never replaces a write made under that grant.
    /// A lock-protected handler whose reads or writes were refused answers `503` whatever it
    /// returns.
    #[error("refused, the lock was lost: {0}")]
    Fenced(String),
    /// A lock was held by someone else past the timeout.
    #[error("lock not granted in time: {0}")]
    LockTimeout(String),
    /// A lock request was malformed (a bad or repeated key, too many keys).
    #[error("bad lock request: {0}")]
    LockInvalid(String),
    /// A typed key or value could not be encoded to or decoded from JSON.
    #[error("JSON encoding or decoding failed: {0}")]
    Json(#[from] serde_json::Error),
    /// Stored bytes do not have the shape the call expects (e.g. a counter that is not 8 bytes).
    #[error("stored value has the wrong format: {0}")]
    Format(String),
    /// A free-form error raised by the function itself.
    #[error("{0}")]
    Message(String),
}

impl Error {
    /// An error with a free-form message, e.g. to reject bad input.
    ///
    /// ```
    /// let error = weft_sdk::Error::msg("missing field `name`");
    /// assert_eq!(error.to_string(), "missing field `name`");
    /// ```
    pub fn msg(message: impl std::fmt::Display) -> Self {
        Error::Message(message.to_string())
    }
}

impl From<String> for Error {
    /// ```
    /// let error: weft_sdk::Error = String::from("bad input").into();
    /// assert_eq!(error.to_string(), "bad input");
    /// ```
    fn from(message: String) -> Self {
        Error::Message(message)
    }
}

impl From<&str> for Error {
    /// ```
    /// let error: weft_sdk::Error = "bad input".into();
    /// assert_eq!(error.to_string(), "bad input");
    /// ```
    fn from(message: &str) -> Self {
        Error::Message(message.to_owned())
    }
}
