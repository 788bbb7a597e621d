//! Newtypes for the identifiers that cross module boundaries, with their preconditions checked
//! once, at construction.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The blake3 digest of a module's bytes: its content address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Digest(*blake3::hash(bytes).as_bytes())
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A digest from its raw bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Digest(bytes)
    }

    /// The first 12 hex digits, for humans.
    pub fn short(&self) -> String {
        self.to_string()[..12].to_string()
    }
}

impl From<blake3::Hash> for Digest {
    fn from(hash: blake3::Hash) -> Self {
        Digest(*hash.as_bytes())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.short())
    }
}

impl FromStr for Digest {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let hash = blake3::Hash::from_hex(s).map_err(|_| IdError::Digest(s.to_string()))?;
        Ok(Digest(*hash.as_bytes()))
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

impl TryFrom<String> for Digest {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

/// `s` is 1 to `max` characters of a-z, 0-9 and `extra`, starting with a letter or digit.
fn is_name(s: &str, max: usize, extra: &[u8]) -> bool {
    (1..=max).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || extra.contains(&b))
        && s.as_bytes()[0].is_ascii_alphanumeric()
}

/// A string identifier whose shape is checked once, when it is parsed (or deserialized):
/// `$name` holds a `String` that `$valid` accepts; any other string is `IdError::$name`.
macro_rules! validated_string {
    ($(#[$doc:meta])* $name:ident, $valid:expr) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(into = "String", try_from = "String")]
        pub struct $name(String);

        impl $name {
            /// The identifier as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                let valid: fn(&str) -> bool = $valid;
                if valid(s) {
                    Ok($name(s.to_string()))
                } else {
                    Err(IdError::$name(s.to_string()))
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                s.parse()
            }
        }

        impl From<$name> for String {
            fn from(n: $name) -> String {
                n.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
    };
}

validated_string!(
    /// A function's name: 1 to 64 characters of `[a-z0-9-_]`, starting with a letter or
    /// digit. The name appears in URLs (`/fn/{name}/...`) and in storage keys, so nothing
    /// else is allowed.
    FunctionName,
    |s| is_name(s, 64, b"-_")
);

validated_string!(
    /// A node's name: 1 to 63 characters of `[a-z0-9-]`, starting with a letter or digit, so
    /// it is also a valid DNS label (it is written into the node's certificate).
    NodeId,
    |s| is_name(s, 63, b"-")
);

validated_string!(
    /// A key-value namespace: 1 to 64 characters of `[a-z0-9-_.]`, starting with a letter or
    /// digit. A function's own namespace is `fn.NAME`.
    Namespace,
    |s| is_name(s, 64, b"-_.")
);

validated_string!(
    /// A scoped API token's id: 12 hex digits (lower case), the part of the token that names
    /// it in lists and revocations (the secret is the rest).
    TokenId,
    |s| s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
);

impl Namespace {
    /// The private namespace of a function.
    pub fn of_function(f: &FunctionName) -> Namespace {
        Namespace(format!("fn.{f}"))
    }

    /// The stored key of `key` in this namespace.
    pub fn key(&self, key: &[u8]) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.0.len() + 1 + key.len());
        k.extend_from_slice(self.0.as_bytes());
        k.push(0);
        k.extend_from_slice(key);
        k
    }
}

validated_string!(
    /// A lock's key: 1 to 256 printable ASCII characters other than `/`, `?`, `#`, `%` and
    /// space, so it is one segment of a URL path as it is.
    LockKey,
    |s| (1..=256).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_graphic() && !b"/?#%".contains(&b))
);

impl LockKey {
    /// The lock of `key` (any bytes) in a namespace's scope: `NS:KEY`, with every byte a lock
    /// key cannot hold (and `~`) written `~XX` in hex. A key too long for that is named by
    /// its blake3 digest, `NS:~h<64 hex digits>`.
    pub fn scoped(ns: &Namespace, key: &[u8]) -> LockKey {
        let mut s = format!("{ns}:");
        for &b in key {
            if b.is_ascii_graphic() && !b"/?#%~".contains(&b) {
                s.push(b as char);
            } else {
                s.push_str(&format!("~{b:02x}"));
            }
        }
        if s.len() > 256 {
            s = format!("{ns}:~h{}", blake3::hash(key).to_hex());
        }
        LockKey(s)
    }
}

/// A map/reduce job's id: 16 random bytes shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct JobId([u8; 16]);

impl JobId {
    /// A fresh random id.
    pub fn random() -> Self {
        JobId(rand::random())
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

impl FromStr for JobId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        let bad = || IdError::JobId(s.to_string());
        if s.len() != 32 || !s.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(JobId(out))
    }
}

impl From<JobId> for String {
    fn from(id: JobId) -> String {
        id.to_string()
    }
}

impl TryFrom<String> for JobId {
    type Error = IdError;
    fn try_from(s: String) -> Result<Self, IdError> {
        s.parse()
    }
}

/// An identifier that does not have the required shape.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdError {
    /// Not 64 hex digits.
    #[error("`{0}` is not a blake3 digest (64 hex digits)")]
    Digest(String),
    /// Not a valid function name.
    #[error(
        "`{0}` is not a valid function name: use 1 to 64 characters of a-z, 0-9, '-' and '_', starting with a letter or digit"
    )]
    FunctionName(String),
    /// Not a valid node name.
    #[error(
        "`{0}` is not a valid node name: use 1 to 63 characters of a-z, 0-9 and '-', starting with a letter or digit"
    )]
    NodeId(String),
    /// Not 32 hex digits.
    #[error("`{0}` is not a job id (32 hex digits)")]
    JobId(String),
    /// Not a valid key-value namespace.
    #[error(
        "`{0}` is not a namespace: use 1 to 64 characters of a-z, 0-9, `-`, `_` and `.`, starting with a letter or digit"
    )]
    Namespace(String),
    /// Not a valid lock key.
    #[error(
        "`{0}` is not a lock key: use 1 to 256 printable ASCII characters other than `/`, `?`, `#`, `%` and space"
    )]
    LockKey(String),
    /// Not 12 hex digits.
    #[error("`{0}` is not a token id (12 hex digits, as `weft token list` shows)")]
    TokenId(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scoped_lock_keys_are_valid_and_distinct() {
        let ns: Namespace = "fn.bank".parse().unwrap();
        let check = |key: &[u8], expected: &str| {
            let k = LockKey::scoped(&ns, key);
            assert_eq!(k.as_str(), expected);
            assert!(k.as_str().parse::<LockKey>().is_ok(), "{k}");
        };
        check(b"acct-1", "fn.bank:acct-1");
        check(b"acct/1", "fn.bank:acct~2f1");
        check(b"acct~2f1", "fn.bank:acct~7e2f1");
        check("é 1".as_bytes(), "fn.bank:~c3~a9~201");
        let long = LockKey::scoped(&ns, &[b'/'; 100]);
        assert!(long.as_str().starts_with("fn.bank:~h") && long.as_str().len() == 74);
        assert!(long.as_str().parse::<LockKey>().is_ok());
    }

    #[test]
    fn function_names() {
        let check = |s: &str, ok: bool| assert_eq!(s.parse::<FunctionName>().is_ok(), ok, "{s:?}");
        check("hello", true);
        check("word-count_2", true);
        check("9lives", true);
        check("", false);
        check("-x", false);
        check("Hello", false);
        check("a/b", false);
        check("a b", false);
        check(&"x".repeat(64), true);
        check(&"x".repeat(65), false);
        let node = |s: &str, ok: bool| assert_eq!(s.parse::<NodeId>().is_ok(), ok, "{s:?}");
        node("edge-7", true);
        node("a_b", false);
        node(&"x".repeat(63), true);
        node(&"x".repeat(64), false);
    }

    #[test]
    fn digests_and_job_ids_round_trip() {
        let d = Digest::of(b"weft");
        assert_eq!(d.to_string().parse::<Digest>().unwrap(), d);
        assert!("zz".parse::<Digest>().is_err());
        let j = JobId::random();
        assert_eq!(j.to_string().parse::<JobId>().unwrap(), j);
        assert!("0123".parse::<JobId>().is_err());
        assert!("g".repeat(32).parse::<JobId>().is_err());
    }
}
