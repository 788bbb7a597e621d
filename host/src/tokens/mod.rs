//! API tokens: the cluster's own token (every scope, kept in a file) and scoped tokens
//! ([`record`]), kept in the metadata group so that every node honours a new one and refuses
//! a revoked one as soon as it has applied the change.
//!
//! A scoped token is a register `token/ID` holding its [`TokenRecord`]: its scope, namespace,
//! expiry and the blake3 hash of its secret; the secret itself is shown once, to whoever
//! created it, and kept nowhere. Checking a token reads this node's copy of the registers, so
//! a node without a quorum still judges requests (by the changes it has applied).

mod record;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use record::{Denied, Grant, Scope, TokenInfo, TokenRecord};

use crate::consensus::{Command, Consensus, ConsensusError, Outcome};
use crate::id::{Namespace, TokenId};

/// The prefix of token records among the group's registers.
const PREFIX: &str = "token/";
/// How long a created or revoked token waits, once committed, for every member to apply it.
const SETTLE: Duration = Duration::from_secs(2);

/// Why a token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    /// A request for a token that cannot be made.
    #[error("{0}")]
    Invalid(String),
    /// No token with that id.
    #[error("no token with id `{0}` (it may have been revoked already)")]
    NoToken(TokenId),
    /// A stored record could not be decoded.
    #[error("corrupt token record: {0}")]
    Corrupt(String),
    /// The metadata group could not take or answer the operation.
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
}

/// What `create` is asked for.
#[derive(Clone, Debug)]
pub struct NewToken {
    /// What it allows.
    pub scope: Scope,
    /// The key-value namespace it is limited to (read and invoke tokens only).
    pub namespace: Option<Namespace>,
    /// What it is for.
    pub name: String,
    /// How long it works; without it, until revoked.
    pub expires_in: Option<Duration>,
}

/// A token just created: its text (shown once) and what it is.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Created {
    /// The token, to send as `Authorization: Bearer <token>`.
    pub token: String,
    /// What it is.
    #[serde(flatten)]
    pub info: TokenInfo,
}

/// The tokens a node honours. Cheap to clone.
#[derive(Clone)]
pub struct Tokens {
    inner: Arc<Inner>,
}

struct Inner {
    consensus: Consensus,
    cluster_token: String,
}

impl Tokens {
    /// The cluster's own token, `cluster_token`, and the scoped ones in `consensus`.
    pub fn new(consensus: Consensus, cluster_token: String) -> Self {
        Tokens {
            inner: Arc::new(Inner {
                consensus,
                cluster_token,
            }),
        }
    }

    /// The cluster's own token (every scope; the dashboard's sign-in).
    pub fn cluster_token(&self) -> &str {
        &self.inner.cluster_token
    }

    /// What the token `presented` allows now, by this node's copy of the registers.
    pub fn grant(&self, presented: &str) -> Result<Grant, Denied> {
        if constant_time_eq(presented.as_bytes(), self.inner.cluster_token.as_bytes()) {
            return Ok(Grant {
                scope: Scope::Admin,
                namespace: None,
            });
        }
        let (id, secret) = record::parse(presented).ok_or(Denied::Unknown)?;
        let stored = self
            .inner
            .consensus
            .read_local(|s| s.registers.get(&key_of(&id)).map(|r| r.value.clone()))
            .ok_or(Denied::Unknown)?;
        let record: TokenRecord = serde_json::from_slice(&stored).map_err(|_| Denied::Unknown)?;
        record.check(secret, now_ms())
    }

    /// Creates a token: committed, and applied by every member that answers within 2 s.
    pub async fn create(&self, new: NewToken) -> Result<Created, TokensError> {
        let scope = new.scope;
        if new.namespace.is_some() && scope > Scope::Invoke {
            return Err(TokensError::Invalid(format!(
                "a namespace limits a token to key-value data, which {scope} tokens go beyond: give a namespace to read or invoke tokens only"
            )));
        }
        if new.name.len() > 200 || new.name.chars().any(char::is_control) {
            return Err(TokensError::Invalid(
                "a token's name is at most 200 characters, none of them control characters".into(),
            ));
        }
        let created_ms = now_ms();
        let expires_ms = match new.expires_in.map(|d| d.as_millis() as u64) {
            Some(0) => {
                return Err(TokensError::Invalid(
                    "a token that expires at once is of no use: give a positive duration".into(),
                ));
            }
            Some(ms) => Some(created_ms.saturating_add(ms)),
            None => None,
        };
        let secret = crate::transport::random_token();
        // A new id each attempt; `expect: Some(0)` makes a clash with an existing one fail.
        for _ in 0..4 {
            let id: TokenId = format!("{:012x}", rand::random::<u64>() >> 16)
                .parse()
                .expect("12 hex digits");
            let info = TokenInfo {
                id: id.clone(),
                scope,
                namespace: new.namespace.clone(),
                name: new.name.clone(),
                created_ms,
                expires_ms,
            };
            let record = TokenRecord {
                info: info.clone(),
                secret_hash: record::hash_secret(&secret),
            };
            let value = serde_json::to_vec(&record).expect("a record serializes");
            let command = Command::Write {
                key: key_of(&id),
                value: Some(value),
                expect: Some(0),
            };
            match self.propose(command).await? {
                true => {
                    tracing::info!(token = %id, %scope, "token created");
                    return Ok(Created {
                        token: record::text(&id, &secret),
                        info,
                    });
                }
                false => continue,
            }
        }
        Err(TokensError::Corrupt(
            "four random token ids were all taken".into(),
        ))
    }

    /// Every scoped token, read through the leader.
    pub async fn list(&self) -> Result<Vec<TokenInfo>, TokensError> {
        let values: Vec<Vec<u8>> = self
            .inner
            .consensus
            .read(|s| {
                s.registers
                    .scan(PREFIX)
                    .map(|(_, r)| r.value.clone())
                    .collect()
            })
            .await?;
        values
            .iter()
            .map(|v| {
                serde_json::from_slice::<TokenRecord>(v)
                    .map(|r| r.info)
                    .map_err(|e| TokensError::Corrupt(e.to_string()))
            })
            .collect()
    }

    /// Revokes the token `id`: every member that answers within 2 s refuses it on return.
    pub async fn revoke(&self, id: &TokenId) -> Result<(), TokensError> {
        let key = key_of(id);
        let revision = self
            .inner
            .consensus
            .read(|s| s.registers.get(&key).map(|r| r.revision))
            .await?
            .ok_or_else(|| TokensError::NoToken(id.clone()))?;
        let command = Command::Write {
            key,
            value: None,
            expect: Some(revision),
        };
        if !self.propose(command).await? {
            return Err(TokensError::NoToken(id.clone()));
        }
        tracing::info!(token = %id, "token revoked");
        Ok(())
    }

    /// Proposes a register write and waits for members to apply it; false when its
    /// expectation did not hold.
    async fn propose(&self, command: Command) -> Result<bool, TokensError> {
        let c = &self.inner.consensus;
        match c.propose_settled(command, SETTLE, "a token change").await? {
            (_, Outcome::Written { .. }) => Ok(true),
            (_, Outcome::Conflict { .. }) => Ok(false),
            (_, other) => Err(TokensError::Corrupt(format!("a token write did {other:?}"))),
        }
    }
}

fn key_of(id: &TokenId) -> String {
    format!("{PREFIX}{id}")
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether `a` and `b` are equal, in time that does not depend on where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
