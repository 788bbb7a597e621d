//! The function registry: name -> current deployment, with history for rollback.

use serde::{Deserialize, Serialize};

use super::{Store, StoreError, decode_opt};
use crate::id::{Digest, FunctionName};

/// How many deployments of one function are remembered for rollback.
const HISTORY: usize = 32;

/// What kind of component a function is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionKind {
    /// Exports `wasi:http/incoming-handler`; invoked through `/fn/{name}/...`.
    Http,
    /// Exports `weft:plugin/task`; run by `POST /v1/jobs`.
    Mapreduce,
}

impl std::fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FunctionKind::Http => "http",
            FunctionKind::Mapreduce => "mapreduce",
        })
    }
}

/// Per-function limits from the manifest; `None` means the node's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionLimits {
    /// Wall-clock limit of one invocation, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Linear-memory cap of one instance, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

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
    /// Reserved for lock-protected handlers: the template of the lock key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_key: Option<String>,
    /// The key-value namespace the function's `kv` import uses, when it shares one; by
    /// default its own, `fn.NAME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kv_namespace: Option<String>,
    /// When it was deployed, in milliseconds since the Unix epoch (for humans only).
    pub deployed_at_ms: u64,
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

impl Store {
    /// Makes `deployment` the current version of `name` (keeping history) and flushes.
    pub async fn deploy(
        &self,
        name: &FunctionName,
        deployment: Deployment,
    ) -> Result<FunctionRecord, StoreError> {
        let record = self.update_function(name, |old| {
            let mut record = old.unwrap_or_else(|| FunctionRecord {
                name: name.clone(),
                history: vec![],
                current: 0,
            });
            // Deploying over a rolled-back version forgets the versions after it.
            record.history.truncate(record.current + 1);
            record.history.push(deployment.clone());
            if record.history.len() > HISTORY {
                record.history.remove(0);
            }
            record.current = record.history.len() - 1;
            Ok(Some(record))
        })?;
        self.flush().await?;
        Ok(record.expect("deploy always stores a record"))
    }

    /// Makes the previous deployment of `name` current again.
    pub async fn rollback(&self, name: &FunctionName) -> Result<FunctionRecord, StoreError> {
        let record = self.update_function(name, |old| {
            let mut record = old.ok_or_else(|| StoreError::NoFunction(name.clone()))?;
            if record.current == 0 {
                return Err(StoreError::NothingToRollBack(name.clone()));
            }
            record.current -= 1;
            Ok(Some(record))
        })?;
        self.flush().await?;
        Ok(record.expect("rollback always stores a record"))
    }

    /// Removes a function and its history (its modules and key-value data stay).
    pub async fn delete_function(&self, name: &FunctionName) -> Result<FunctionRecord, StoreError> {
        let old = self
            .functions
            .remove(name.as_str())?
            .ok_or_else(|| StoreError::NoFunction(name.clone()))?;
        self.flush().await?;
        super::decode(&old, || format!("function {name}"))
    }

    /// One function's record.
    pub fn function(&self, name: &FunctionName) -> Result<Option<FunctionRecord>, StoreError> {
        decode_opt(self.functions.get(name.as_str())?, || {
            format!("function {name}")
        })
    }

    /// All functions, by name.
    pub fn functions(&self) -> Result<Vec<FunctionRecord>, StoreError> {
        self.functions
            .iter()
            .map(|r| {
                let (k, v) = r?;
                super::decode(&v, || format!("function {}", String::from_utf8_lossy(&k)))
            })
            .collect()
    }

    /// Atomic read-modify-write of one record; `f` may run more than once.
    fn update_function(
        &self,
        name: &FunctionName,
        mut f: impl FnMut(Option<FunctionRecord>) -> Result<Option<FunctionRecord>, StoreError>,
    ) -> Result<Option<FunctionRecord>, StoreError> {
        loop {
            let old_bytes = self.functions.get(name.as_str())?;
            let old = decode_opt(old_bytes.clone(), || format!("function {name}"))?;
            let new = f(old)?;
            let new_bytes = new
                .as_ref()
                .map(|r| serde_json::to_vec(r).expect("records serialize"));
            if self
                .functions
                .compare_and_swap(name.as_str(), old_bytes, new_bytes)?
                .is_ok()
            {
                return Ok(new);
            }
        }
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
            kv_namespace: None,
            deployed_at_ms: n as u64,
        }
    }

    #[tokio::test]
    async fn deploy_rollback_redeploy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let name: FunctionName = "f".parse().unwrap();
        assert!(matches!(
            store.rollback(&name).await,
            Err(StoreError::NoFunction(_))
        ));
        store.deploy(&name, deployment(1)).await.unwrap();
        assert!(matches!(
            store.rollback(&name).await,
            Err(StoreError::NothingToRollBack(_))
        ));
        store.deploy(&name, deployment(2)).await.unwrap();
        let r = store.rollback(&name).await.unwrap();
        assert_eq!(r.active().digest, Digest::of(&[1]));
        // Redeploying after a rollback replaces the rolled-back future.
        let r = store.deploy(&name, deployment(3)).await.unwrap();
        assert_eq!(
            r.history
                .iter()
                .map(|d| d.deployed_at_ms)
                .collect::<Vec<_>>(),
            vec![1, 3]
        );
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.function(&name).unwrap().unwrap().active().digest,
            Digest::of(&[3])
        );
        store.delete_function(&name).await.unwrap();
        assert!(store.function(&name).unwrap().is_none());
    }

    #[tokio::test]
    async fn history_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let name: FunctionName = "f".parse().unwrap();
        for n in 0..40 {
            store.deploy(&name, deployment(n)).await.unwrap();
        }
        let r = store.function(&name).unwrap().unwrap();
        assert_eq!(r.history.len(), HISTORY);
        assert_eq!(r.active().deployed_at_ms, 39);
    }

    #[tokio::test]
    async fn modules_are_verified() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let d = store.put_module(b"bytes").await.unwrap();
        assert_eq!(store.module(d).unwrap(), b"bytes");
        // Corrupt the stored bytes behind the store's back.
        store.modules.insert(d.as_bytes(), &b"other"[..]).unwrap();
        assert!(matches!(
            store.module(d),
            Err(StoreError::DigestMismatch(..))
        ));
    }

    #[tokio::test]
    async fn replica_entries_update_scan_and_hints() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // `decide` sees the current bytes and chooses.
        let took = store
            .replica_update(b"a\0k", |old| (old.is_none().then(|| b"v1".to_vec()), 1))
            .unwrap();
        assert_eq!(took, 1);
        store
            .replica_update(b"a\0k", |old| {
                assert_eq!(old, Some(&b"v1"[..]));
                (None, ())
            })
            .unwrap();
        store
            .replica_update(b"a\0l", |_| (Some(b"v2".to_vec()), ()))
            .unwrap();
        store
            .replica_update(b"b\0k", |_| (Some(b"v3".to_vec()), ()))
            .unwrap();
        store.flush().await.unwrap();
        let scan = store.replica_scan(b"a\0", b"a\0l", 10).unwrap();
        assert_eq!(scan, vec![(b"a\0l".to_vec(), b"v2".to_vec())]);
        assert_eq!(store.replica_scan(b"a\0", b"", 10).unwrap().len(), 2);
        assert!(!store.replica_remove_if(b"a\0k", b"other").unwrap());
        assert!(store.replica_remove_if(b"a\0k", b"v1").unwrap());
        assert_eq!(store.replica_len(), 2);

        // Hints: a newer one replaces an older one; delivery removes only what was sent.
        let newer = |new: &[u8], old: &[u8]| new > old;
        store.put_hint("n2", b"k", b"1", newer).unwrap();
        store.put_hint("n2", b"k", b"0", newer).unwrap();
        store.put_hint("n10", b"j", b"5", newer).unwrap();
        assert_eq!(store.hint_targets().unwrap(), ["n10", "n2"]);
        assert_eq!(
            store.hints_for("n2", 10).unwrap(),
            vec![(b"k".to_vec(), b"1".to_vec())]
        );
        store.remove_hint("n2", b"k", b"0").unwrap();
        assert_eq!(store.hint_count(), 2);
        store.remove_hint("n2", b"k", b"1").unwrap();
        assert_eq!(store.hint_targets().unwrap(), ["n10"]);
    }
}
