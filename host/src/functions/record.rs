//! Function records: name -> current deployment, with history for rollback, and where a keyed
//! handler's key comes from. Pure: the records are entries of the replicated store.

use serde::{Deserialize, Serialize};

use super::FunctionsError;
use crate::id::{Digest, FunctionName};
use crate::runtime::{FunctionKind, FunctionLimits};

/// How long a request of a lock-protected handler waits for its lock unless the deployment
/// says otherwise: 5 s.
pub const DEFAULT_LOCK_WAIT_MS: u64 = 5_000;

/// How many deployments of one function are remembered for rollback.
const HISTORY: usize = 32;

/// One deployment of a function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The module.
    pub digest: Digest,
    /// What the component is.
    pub kind: FunctionKind,
    /// The module's size in bytes.
    pub size: u64,
    /// Limits for this deployment.
    #[serde(default)]
    pub limits: FunctionLimits,
    /// For a lock-protected handler: where each request's lock key comes from (the same
    /// forms as a route key). The request runs on the key's owner, under the key's lock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_key: Option<RouteKey>,
    /// How long a request of a lock-protected handler may wait for its lock, in milliseconds,
    /// before it is answered 503 with `Retry-After` (default [`DEFAULT_LOCK_WAIT_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_ms: Option<u64>,
    /// Where the request's key comes from, for a handler that runs on its key's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_key: Option<RouteKey>,
    /// The key-value namespace the function's `kv` import uses, when it shares one; by
    /// default its own, `fn.NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_namespace: Option<String>,
    /// Whether the function's callers see the details of its failures (trap message and
    /// backtrace, guest stderr). Off by default: callers get a short message and an error id,
    /// and the details go to the node's log under that id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub debug: bool,
    /// The function's configuration, read by the guest through `wasi:config/store`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub config: std::collections::BTreeMap<String, String>,
    /// When it was deployed, in milliseconds since the Unix epoch (for humans only).
    pub deployed_at_ms: u64,
}

/// Where a keyed handler's key comes from in a request: `path:N` (the N-th path segment
/// below the function, from 1), `header:NAME` or `query:NAME`. The request then runs on the
/// node that owns that key in the function's key-value namespace, next to its data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum RouteKey {
    /// The N-th path segment (from 1).
    Segment(usize),
    /// A request header.
    Header(String),
    /// A query parameter.
    Query(String),
}

impl std::str::FromStr for RouteKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("`{s}` is not a route key: use path:N (N from 1), header:NAME or query:NAME")
        };
        let (kind, what) = s.split_once(':').ok_or_else(bad)?;
        match kind {
            "path" => match what.parse::<usize>() {
                Ok(n) if n >= 1 => Ok(RouteKey::Segment(n)),
                _ => Err(bad()),
            },
            "header" if http::HeaderName::from_bytes(what.as_bytes()).is_ok() => {
                Ok(RouteKey::Header(what.to_ascii_lowercase()))
            }
            "query" if !what.is_empty() => Ok(RouteKey::Query(what.to_string())),
            _ => Err(bad()),
        }
    }
}

impl TryFrom<String> for RouteKey {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<RouteKey> for String {
    fn from(k: RouteKey) -> String {
        k.to_string()
    }
}

impl std::fmt::Display for RouteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RouteKey::Segment(n) => write!(f, "path:{n}"),
            RouteKey::Header(h) => write!(f, "header:{h}"),
            RouteKey::Query(q) => write!(f, "query:{q}"),
        }
    }
}

impl RouteKey {
    /// The key of a request: `path` is the path below the function (`/a/b`), `query` the raw
    /// query string. `None` when the request does not have it.
    pub fn extract(
        &self,
        path: &str,
        query: Option<&str>,
        headers: &http::HeaderMap,
    ) -> Option<String> {
        match self {
            RouteKey::Segment(n) => path
                .split('/')
                .filter(|s| !s.is_empty())
                .nth(n - 1)
                .map(str::to_string),
            RouteKey::Header(h) => headers
                .get(h.as_str())
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
            RouteKey::Query(q) => query?.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == q).then(|| v.to_string())
            }),
        }
    }
}

/// A function: its name, its history and which deployment is current.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    /// The function's name.
    pub name: FunctionName,
    /// Deployments, oldest first; at most 32.
    pub history: Vec<Deployment>,
    /// Index into `history` of the deployment that serves.
    pub current: usize,
}

impl FunctionRecord {
    /// The deployment that serves.
    pub fn active(&self) -> &Deployment {
        &self.history[self.current]
    }
}

impl FunctionRecord {
    /// `old` (if any) with `deployment` made current. Deploying over a rolled-back version
    /// forgets the versions after it; at most 32 are kept.
    pub fn deployed(
        old: Option<FunctionRecord>,
        name: &FunctionName,
        deployment: Deployment,
    ) -> Self {
        let mut record = old.unwrap_or_else(|| FunctionRecord {
            name: name.clone(),
            history: vec![],
            current: 0,
        });
        record.history.truncate(record.current + 1);
        record.history.push(deployment);
        if record.history.len() > HISTORY {
            record.history.remove(0);
        }
        record.current = record.history.len() - 1;
        record
    }

    /// The record with the previous deployment current again.
    pub fn rolled_back(mut self) -> Result<Self, FunctionsError> {
        if self.current == 0 {
            return Err(FunctionsError::NothingToRollBack(self.name));
        }
        self.current -= 1;
        Ok(self)
    }

    /// The record as stored (JSON).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("records serialize")
    }

    /// A stored record.
    pub fn decode(bytes: &[u8]) -> Result<Self, FunctionsError> {
        serde_json::from_slice(bytes)
            .map_err(|e| FunctionsError::Corrupt(format!("a stored function record: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(n: u8) -> Deployment {
        Deployment {
            digest: Digest::of(&[n]),
            kind: FunctionKind::Http,
            size: 1,
            limits: FunctionLimits::default(),
            lock_key: None,
            lock_wait_ms: None,
            route_key: None,
            kv_namespace: None,
            debug: false,
            config: Default::default(),
            deployed_at_ms: n as u64,
        }
    }

    #[test]
    fn deploy_rollback_redeploy() {
        let name: FunctionName = "f".parse().unwrap();
        let r = FunctionRecord::deployed(None, &name, deployment(1));
        assert!(matches!(
            r.clone().rolled_back(),
            Err(FunctionsError::NothingToRollBack(_))
        ));
        let r = FunctionRecord::deployed(Some(r), &name, deployment(2));
        let r = r.rolled_back().unwrap();
        assert_eq!(r.active().digest, Digest::of(&[1]));
        // Redeploying after a rollback replaces the rolled-back future.
        let r = FunctionRecord::deployed(Some(r), &name, deployment(3));
        assert_eq!(
            r.history
                .iter()
                .map(|d| d.deployed_at_ms)
                .collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(FunctionRecord::decode(&r.encode()).unwrap(), r);
        assert!(FunctionRecord::decode(b"{").is_err());
    }

    #[test]
    fn route_keys_parse_and_extract() {
        let mut headers = http::HeaderMap::new();
        headers.insert("x-user", "ann".parse().unwrap());
        let cases = [
            ("path:1", "/carts/7", None, Some("carts")),
            ("path:2", "/carts/7/items", None, Some("7")),
            ("path:3", "/carts/7", None, None),
            ("header:X-User", "/", None, Some("ann")),
            ("header:x-other", "/", None, None),
            ("query:id", "/", Some("a=1&id=42"), Some("42")),
            ("query:id", "/", Some("idx=1"), None),
            ("query:id", "/", None, None),
        ];
        for (template, path, query, want) in cases {
            let key: RouteKey = template.parse().unwrap();
            assert_eq!(key.to_string().parse::<RouteKey>().unwrap(), key);
            assert_eq!(
                key.extract(path, query, &headers).as_deref(),
                want,
                "{template} {path} {query:?}"
            );
        }
        for bad in [
            "",
            "path",
            "path:0",
            "path:x",
            "header:",
            "header:a b",
            "query:",
            "cookie:a",
        ] {
            assert!(bad.parse::<RouteKey>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn history_is_bounded() {
        let name: FunctionName = "f".parse().unwrap();
        let mut r = None;
        for n in 0..40 {
            r = Some(FunctionRecord::deployed(r, &name, deployment(n)));
        }
        let r = r.unwrap();
        assert_eq!(r.history.len(), HISTORY);
        assert_eq!(r.active().deployed_at_ms, 39);
    }
}
