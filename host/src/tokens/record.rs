//! What a token is and what it allows, pure: scopes, the record the metadata group keeps
//! (never the secret, only its blake3 hash), the token's text, and the judgement of a token
//! presented at a time.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::id::{Namespace, TokenId};

/// What a token allows; each scope allows everything the ones below it do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Read users' data: key-value reads and scans, jobs and their output, the lock list.
    Read,
    /// Also change data and run work: key-value writes and deletes, submitting and
    /// cancelling jobs, taking and releasing locks.
    Invoke,
    /// Also change functions: deploy, roll back, delete.
    Deploy,
    /// Everything: tokens and the deny list included.
    Admin,
}

impl Scope {
    /// Every scope, lowest first.
    pub const ALL: [Scope; 4] = [Scope::Read, Scope::Invoke, Scope::Deploy, Scope::Admin];

    /// Its name, as flags and JSON write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Invoke => "invoke",
            Scope::Deploy => "deploy",
            Scope::Admin => "admin",
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scope {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Scope::ALL
            .into_iter()
            .find(|scope| scope.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a scope: use read, invoke, deploy or admin"))
    }
}

/// What anyone allowed to list tokens sees of one: everything but its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// Its id: the part of the token that names it, shown in lists and used to revoke it.
    pub id: TokenId,
    /// What it allows.
    pub scope: Scope,
    /// The key-value namespace it is limited to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<Namespace>,
    /// What it is for, as its creator wrote it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// When it was created (Unix time, milliseconds).
    pub created_ms: u64,
    /// When it stops working (Unix time, milliseconds), if ever.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// A token as the metadata group keeps it: its info and the blake3 hash of its secret.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// What it is.
    #[serde(flatten)]
    pub info: TokenInfo,
    /// blake3 of the secret, hex.
    pub secret_hash: String,
}

/// The text of a scoped token: `weft_`, its id, `_`, its secret (64 hex digits).
pub const PREFIX: &str = "weft_";

/// A token's text split into its id and secret, if it has the shape of a scoped token.
pub fn parse(text: &str) -> Option<(TokenId, &str)> {
    let rest = text.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id: TokenId = id.parse().ok()?;
    (secret.len() == 64 && secret.bytes().all(|b| b.is_ascii_hexdigit())).then_some((id, secret))
}

/// The text of the token with `id` and `secret`.
pub fn text(id: &TokenId, secret: &str) -> String {
    format!("{PREFIX}{id}_{secret}")
}

/// The hash kept of `secret`.
pub fn hash_secret(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// What a token that checked out may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    /// Its scope.
    pub scope: Scope,
    /// The key-value namespace it is limited to, if any.
    pub namespace: Option<Namespace>,
}

/// Why a presented token is refused (401), or a request beyond its grant (403).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// No `Authorization: Bearer` header.
    #[error(
        "this route needs `Authorization: Bearer <token>`: the cluster's token (the node prints where its file is) or one from `weft token create`"
    )]
    Missing,
    /// Not a token of this cluster, or one revoked.
    #[error("the bearer token is wrong or has been revoked")]
    Unknown,
    /// A token past its expiry.
    #[error("token {id} expired; create a new one with `weft token create`")]
    Expired {
        /// The token.
        id: TokenId,
    },
    /// A token whose scope is below what the route needs.
    #[error("token scope `{has}` does not allow this; it needs `{needs}` (or a scope above it)")]
    Scope {
        /// The token's scope.
        has: Scope,
        /// What the route needs.
        needs: Scope,
    },
    /// A token limited to one namespace, used outside it.
    #[error("this token is limited to the key-value namespace `{namespace}`; {what}")]
    Namespace {
        /// The token's namespace.
        namespace: Namespace,
        /// What the request asked for instead.
        what: String,
    },
}

impl Denied {
    /// Whether the request should be retried with another token (401) rather than refused
    /// for this one (403).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            Denied::Missing | Denied::Unknown | Denied::Expired { .. }
        )
    }
}

impl TokenRecord {
    /// What the token allows if `secret` is its secret and it has not expired at `now_ms`.
    pub fn check(&self, secret: &str, now_ms: u64) -> Result<Grant, Denied> {
        let given = blake3::hash(secret.as_bytes());
        let kept = blake3::Hash::from_hex(&self.secret_hash).map_err(|_| Denied::Unknown)?;
        // blake3::Hash compares in constant time.
        if given != kept {
            return Err(Denied::Unknown);
        }
        if self.info.expires_ms.is_some_and(|at| now_ms >= at) {
            return Err(Denied::Expired {
                id: self.info.id.clone(),
            });
        }
        Ok(Grant {
            scope: self.info.scope,
            namespace: self.info.namespace.clone(),
        })
    }
}

impl Grant {
    /// Whether this grant allows a route that needs `needs`, in the key-value namespace
    /// `namespace` if the route is in one.
    pub fn allows(&self, needs: Scope, namespace: Option<&str>) -> Result<(), Denied> {
        if self.scope < needs {
            return Err(Denied::Scope {
                has: self.scope,
                needs,
            });
        }
        match (&self.namespace, namespace) {
            (None, _) => Ok(()),
            (Some(mine), Some(asked)) if mine.as_str() == asked => Ok(()),
            (Some(mine), Some(asked)) => Err(Denied::Namespace {
                namespace: mine.clone(),
                what: format!("this request is for `{asked}`"),
            }),
            (Some(mine), None) => Err(Denied::Namespace {
                namespace: mine.clone(),
                what: "this route is not a key-value route".into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(scope: Scope, namespace: Option<&str>, expires_ms: Option<u64>) -> TokenRecord {
        TokenRecord {
            info: TokenInfo {
                id: "0123456789ab".parse().unwrap(),
                scope,
                namespace: namespace.map(|n| n.parse().unwrap()),
                name: String::new(),
                created_ms: 1,
                expires_ms,
            },
            secret_hash: hash_secret(&"7".repeat(64)),
        }
    }

    #[test]
    fn a_token_is_parsed_only_in_its_own_shape() {
        let secret = "a".repeat(64);
        let t = text(&"0123456789ab".parse().unwrap(), &secret);
        assert_eq!(
            parse(&t).map(|(id, s)| (id.to_string(), s)),
            Some(("0123456789ab".into(), secret.as_str()))
        );
        for bad in [
            "",
            "weft_",
            "weft_0123456789ab",
            "weft_0123456789ab_short",
            "weft_XYZ3456789ab_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            &format!("wft_0123456789ab_{secret}"),
            &format!("weft_0123456789ab_{secret}x"),
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_record_grants_its_scope_only_to_its_secret_and_only_until_it_expires() {
        let secret = "7".repeat(64);
        let r = record(Scope::Invoke, None, Some(1_000));
        assert_eq!(r.check(&secret, 999).map(|g| g.scope), Ok(Scope::Invoke));
        assert!(matches!(
            r.check(&secret, 1_000),
            Err(Denied::Expired { .. })
        ));
        assert_eq!(r.check(&"8".repeat(64), 0), Err(Denied::Unknown));
        assert_eq!(
            record(Scope::Read, None, None)
                .check(&secret, u64::MAX)
                .map(|g| g.scope),
            Ok(Scope::Read)
        );
    }

    #[test]
    fn a_grant_allows_its_scope_and_those_below_it_in_its_namespace() {
        // (grant scope, grant namespace, route needs, route namespace, allowed)
        let table = [
            (Scope::Read, None, Scope::Read, None, true),
            (Scope::Read, None, Scope::Invoke, Some("a"), false),
            (Scope::Invoke, None, Scope::Read, Some("a"), true),
            (Scope::Deploy, None, Scope::Admin, None, false),
            (Scope::Admin, None, Scope::Deploy, None, true),
            (Scope::Invoke, Some("a"), Scope::Invoke, Some("a"), true),
            (Scope::Invoke, Some("a"), Scope::Read, Some("b"), false),
            (Scope::Invoke, Some("a"), Scope::Read, None, false),
        ];
        for (scope, ns, needs, asked, allowed) in table {
            let grant = Grant {
                scope,
                namespace: ns.map(|n: &str| n.parse().unwrap()),
            };
            assert_eq!(
                grant.allows(needs, asked).is_ok(),
                allowed,
                "{scope} {ns:?} -> {needs} {asked:?}"
            );
        }
    }
}
