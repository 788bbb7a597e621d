//! A guest's key-value namespace on the replicated store.

use std::time::Duration;

use super::{Expect, Fence, Namespace, Overrides, ReplicationError, Replicator};
use crate::id::LockKey;

/// One function's key-value namespace on the replicated store: what a guest's `kv` import
/// uses. Its writes are made under the locks in its fences (none at first).
#[derive(Clone)]
pub struct KvHandle {
    replicator: Replicator,
    ns: Namespace,
    fences: Vec<Fence>,
}

impl KvHandle {
    /// The handle of namespace `ns`.
    pub fn new(replicator: Replicator, ns: Namespace) -> Self {
        KvHandle {
            replicator,
            ns,
            fences: Vec::new(),
        }
    }

    /// From now on, writes are made under `fence`'s lock too (replacing an earlier grant of
    /// the same lock).
    pub fn fence(&mut self, fence: Fence) {
        self.fences.retain(|f| f.lock != fence.lock);
        self.fences.push(fence);
    }

    /// Writes are no longer made under `lock`.
    pub fn unfence(&mut self, lock: &LockKey) {
        self.fences.retain(|f| f.lock != *lock);
    }

    /// Whether writes under a lost lock are refused before they are tried (off only when a
    /// test switched fencing off).
    pub fn fencing(&self) -> bool {
        !self.replicator.switches().no_fencing
    }

    /// The locks writes are made under.
    pub fn fences(&self) -> &[Fence] {
        &self.fences
    }

    /// The value under `key`.
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReplicationError> {
        let read = self
            .replicator
            .get(&self.ns, key, &self.fences, Overrides::default())
            .await?;
        Ok(read.map(|r| r.value))
    }

    /// Stores `value` under `key` (acknowledged by a write quorum), expiring `ttl` after the
    /// write (`None`: never).
    pub async fn set(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), ReplicationError> {
        self.put(key, Some(value.to_vec()), ttl, None)
            .await
            .map(|_| ())
    }

    /// Stores `value` under `key` (`None`: a tombstone), acknowledged by a write quorum,
    /// expiring `ttl` after the write; with `expect`, only if the key is in that state.
    pub(super) async fn put(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        ttl: Option<Duration>,
        expect: Option<Expect>,
    ) -> Result<super::Version, ReplicationError> {
        self.replicator
            .put(
                &self.ns,
                key,
                value,
                expect,
                &self.fences,
                Overrides {
                    ttl,
                    ..Overrides::default()
                },
            )
            .await
    }

    pub(super) fn replicator(&self) -> &super::Replicator {
        &self.replicator
    }

    pub(super) fn ns(&self) -> &Namespace {
        &self.ns
    }

    /// Deletes `key`; returns whether it existed.
    pub async fn delete(&self, key: &[u8]) -> Result<bool, ReplicationError> {
        let existed = self.get(key).await?.is_some();
        self.replicator
            .put(
                &self.ns,
                key,
                None,
                None,
                &self.fences,
                Overrides::default(),
            )
            .await?;
        Ok(existed)
    }

    /// Adds `delta` to the i64 (little-endian) under `key` by compare-and-set, retrying when
    /// another writer got there first. A value that is not 8 bytes counts as 0.
    pub async fn increment(&self, key: &[u8], delta: i64) -> Result<i64, ReplicationError> {
        self.update(key, |old| Ok(add_to_counter(old, delta))).await
    }

    /// Replaces the value under `key` (`None`: absent) with what `f` makes of it, by
    /// compare-and-set, retrying when another writer got there first; returns what `f` said
    /// beside the new value. `f` may refuse the old value.
    pub async fn update<T>(
        &self,
        key: &[u8],
        f: impl Fn(Option<&[u8]>) -> Result<(Vec<u8>, T), ReplicationError>,
    ) -> Result<T, ReplicationError> {
        let mut backoff = Duration::from_millis(1);
        for _ in 0..64 {
            let read = self
                .replicator
                .get(&self.ns, key, &self.fences, Overrides::default())
                .await?;
            let (new, answer) = f(read.as_ref().map(|r| r.value.as_slice()))?;
            let expect = match &read {
                Some(r) => Expect::Version(r.version),
                None => Expect::Absent,
            };
            let put = self
                .replicator
                .put(
                    &self.ns,
                    key,
                    Some(new),
                    Some(expect),
                    &self.fences,
                    Overrides::default(),
                )
                .await;
            match put {
                Ok(_) => return Ok(answer),
                Err(ReplicationError::Conflict { .. }) => {
                    // Another writer won: wait a little (randomised) and read again.
                    let jitter = rand::random::<u64>() % (backoff.as_micros() as u64 + 1);
                    tokio::time::sleep(Duration::from_micros(jitter)).await;
                    backoff = (backoff * 2).min(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
        Err(ReplicationError::Unavailable {
            what: "update",
            needed: 1,
            got: 0,
            failures: "64 attempts lost to concurrent writers".into(),
        })
    }

    /// Up to `limit` keys of the namespace from `start` on, in key order, and where the next
    /// page starts (if there may be more).
    pub async fn keys(
        &self,
        start: &[u8],
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), ReplicationError> {
        let page = self.replicator.scan(&self.ns, b"", start, limit).await?;
        Ok((
            page.entries.into_iter().map(|(k, _)| k).collect(),
            page.next,
        ))
    }
}

/// A counter's new value and its bytes, `delta` added to `old` (an i64, little-endian; anything
/// else counts as 0): the `kv.increment` of guests.
pub fn add_to_counter(old: Option<&[u8]>, delta: i64) -> (Vec<u8>, i64) {
    let new = old
        .and_then(|v| <[u8; 8]>::try_from(v).ok())
        .map_or(0, i64::from_le_bytes)
        .wrapping_add(delta);
    (new.to_le_bytes().to_vec(), new)
}
