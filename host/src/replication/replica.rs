//! This node as a replica: applying writes to its own copies (newest version wins, durable
//! before the answer: the store's journal is committed), and answering its peers' reads,
//! scans and anti-entropy requests.
//!
//! Fencing: a write made under locks carries their tokens, and the replica keeps the highest
//! token seen of each lock. A write from its coordinator, or its hint, under a token lower
//! than one seen is refused ([`PutOutcome::Fenced`]; a refused hint is dropped). Copies of
//! entries another replica already took (read repair, anti-entropy, hand-off) raise the
//! tokens seen but are not refused: the entry was judged when it was written, and refusing
//! its copies could leave an acknowledged write on fewer replicas for good. Versions order by
//! token first, so no copy ever replaces a write made under a later grant.

use serde::{Deserialize, Serialize};

use super::{Entry, Fence, ReplicationError, Replicator, Version};
use crate::id::LockKey;

/// Keys and their entries.
pub(crate) type Entries = Vec<(Vec<u8>, Entry)>;

/// About how many bytes one answer carries (frames are capped at 16 MiB).
pub(crate) const ANSWER_BYTES: usize = 8 << 20;

/// What a replica did with a write.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutOutcome {
    /// Stored and durable (or already held).
    Applied,
    /// Not stored: the replica holds this newer version.
    Stale(Version),
    /// Not stored: the write was made under `lock`, which the replica has seen granted again
    /// with the larger token `seen`.
    Fenced {
        /// The lock.
        lock: LockKey,
        /// The larger token seen.
        seen: u64,
    },
}

/// Whether a replica holding `current` takes `incoming`, and what it answers. Pure.
/// Conditions are checked by the coordinator, never here: a replica that lags must not
/// decide a condition the others would refuse.
pub(crate) fn decide(current: Option<&Entry>, incoming: &Entry) -> (bool, PutOutcome) {
    match current {
        Some(c) if c.version == incoming.version => (false, PutOutcome::Applied),
        Some(c) if c.version > incoming.version => (false, PutOutcome::Stale(c.version)),
        _ => (true, PutOutcome::Applied),
    }
}

impl Replicator {
    /// This node's copy of `key`.
    pub(crate) fn local_get(&self, key: &[u8]) -> Result<Option<Entry>, ReplicationError> {
        self.inner()
            .store
            .replica_get(key)?
            .map(|b| Entry::decode(&b))
            .transpose()
    }

    /// This node's copy of `key` for a read made under `fences`: the read raises the tokens
    /// seen of their locks (committed before the answer), so a holder that lost one of the
    /// locks can no longer write what this reader did not see; and it is refused, as a write
    /// would be, when one of the locks has seen a larger token.
    pub(crate) async fn local_get_fenced(
        &self,
        key: &[u8],
        fences: &[Fence],
    ) -> Result<Result<Option<Entry>, (LockKey, u64)>, ReplicationError> {
        if !fences.is_empty() {
            let store = &self.inner().store;
            let marks: Vec<_> = fences
                .iter()
                .map(|f| (f.lock.as_str().as_bytes(), f.token))
                .collect();
            match store.fence_raise(&marks, true)? {
                // Even when no mark rose: another request may have raised it and not be
                // durable yet (a commit with nothing pending returns at once).
                Ok(_) => store.commit().await?,
                Err((lock, seen)) => {
                    self.inner()
                        .stats
                        .fenced
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok(Err((refusing(fences, &lock), seen)));
                }
            }
        }
        Ok(Ok(self.local_get(key)?))
    }

    /// The highest fencing token this node has seen for `lock` as a replica (0: none).
    pub fn fence_seen(&self, lock: &LockKey) -> Result<u64, ReplicationError> {
        Ok(self.inner().store.fence_seen(lock.as_str().as_bytes())?)
    }

    /// This node's copy of `key` in `ns`, without asking any other node (diagnostics).
    pub fn local_entry(
        &self,
        ns: &super::Namespace,
        key: &[u8],
    ) -> Result<Option<Entry>, ReplicationError> {
        self.local_get(&ns.key(key))
    }

    /// Every entry of namespace `ns` this node holds (tombstones too), by key within it.
    pub fn local_entries(
        &self,
        ns: &super::Namespace,
    ) -> Result<Vec<(Vec<u8>, Entry)>, ReplicationError> {
        let prefix = ns.key(b"");
        let mut out = Vec::new();
        let mut start = prefix.clone();
        loop {
            let (page, more) = self.local_scan(&prefix, &start, 1000)?;
            let last = page.last().map(|(k, _)| k.clone());
            out.extend(
                page.into_iter()
                    .map(|(k, e)| (k[prefix.len()..].to_vec(), e)),
            );
            match (more, last) {
                (true, Some(mut last)) => {
                    last.push(0);
                    start = last;
                }
                _ => return Ok(out),
            }
        }
    }

    /// This node's entries (tombstones too) under `prefix` from `start`: at most `limit` and
    /// about [`ANSWER_BYTES`], and whether it stopped before the end of the prefix. Entries
    /// that cannot be decoded are skipped.
    pub(crate) fn local_scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<(Entries, bool), ReplicationError> {
        let raw = self.inner().store.replica_scan(prefix, start, limit)?;
        let full = raw.len() == limit;
        let mut out = Vec::with_capacity(raw.len());
        let mut size = 0;
        for (k, v) in raw {
            if size > ANSWER_BYTES {
                return Ok((out, true));
            }
            size += k.len() + v.len();
            if let Ok(e) = Entry::decode(&v) {
                out.push((k, e));
            }
        }
        Ok((out, full))
    }

    /// Stores `entry` under `key` if it is newer, without committing. `first_hand`: the write
    /// comes from its coordinator (or is its hint), and its fences are checked. Returns what
    /// was done, and whether anything changed (then commit before answering).
    fn apply_unflushed(
        &self,
        key: &[u8],
        entry: &Entry,
        first_hand: bool,
    ) -> Result<(PutOutcome, bool), ReplicationError> {
        super::check_entry(key, entry)?;
        if entry.ends().is_some()
            && self
                .inner()
                .collected
                .holds(key, entry.version, std::time::Instant::now())
        {
            // A copy of a tombstone every owner agreed to drop, still on its way.
            tracing::debug!("refused a copy of a tombstone collected here");
            return Ok((PutOutcome::Applied, false));
        }
        self.observe(entry.version);
        let encoded = entry.encode();
        let mut corrupt = None;
        let update = |old: Option<&[u8]>| {
            let current = match old.map(Entry::decode).transpose() {
                Ok(c) => c,
                Err(e) => {
                    // A record that cannot be read is replaced: the replicas hold good copies.
                    corrupt = Some(e.to_string());
                    None
                }
            };
            let (take, outcome) = decide(current.as_ref(), entry);
            (take.then(|| encoded.clone()), outcome)
        };
        let store = &self.inner().store;
        let (outcome, rose) = if entry.fences.is_empty() {
            (store.replica_update(key, update)?, false)
        } else {
            let marks: Vec<_> = entry
                .fences
                .iter()
                .map(|f| (f.lock.as_str().as_bytes(), f.token))
                .collect();
            match store.replica_update_fenced(key, &marks, first_hand, update)? {
                Ok(done) => done,
                Err((lock, seen)) => {
                    let lock = refusing(&entry.fences, &lock);
                    self.inner()
                        .stats
                        .fenced
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    return Ok((PutOutcome::Fenced { lock, seen }, false));
                }
            }
        };
        if let Some(e) = corrupt {
            tracing::warn!(error = %e, "replaced an unreadable stored entry");
        }
        let changed = rose || outcome == PutOutcome::Applied;
        Ok((outcome, changed))
    }

    /// Applies one write from its coordinator (checking its fences) and commits it before
    /// answering.
    pub(crate) async fn apply(
        &self,
        key: &[u8],
        entry: &Entry,
    ) -> Result<PutOutcome, ReplicationError> {
        let (outcome, changed) = self.apply_unflushed(key, entry, true)?;
        if changed {
            self.inner().store.commit().await?;
        }
        Ok(outcome)
    }

    /// Applies each of `writes` from their coordinators, as [`Replicator::apply`] does, and
    /// commits once: what was done with each.
    pub(crate) async fn apply_many(
        &self,
        writes: &[(Vec<u8>, Entry)],
    ) -> Result<Vec<Result<PutOutcome, String>>, ReplicationError> {
        let mut changed = false;
        let outcomes = writes
            .iter()
            .map(|(key, entry)| {
                let (outcome, c) = self
                    .apply_unflushed(key, entry, true)
                    .map_err(|e| e.to_string())?;
                changed |= c;
                Ok(outcome)
            })
            .collect();
        if changed {
            self.inner().store.commit().await?;
        }
        Ok(outcomes)
    }

    /// Applies the newer of `entries` and commits once. `hinted`: they are hints, writes their
    /// coordinator held for this node, checked against the fences as the writes would have
    /// been (one under a superseded token is dropped); otherwise copies of writes other
    /// replicas took (repair, anti-entropy, hand-off), which only raise the marks.
    pub(crate) async fn apply_all(
        &self,
        entries: Vec<(Vec<u8>, Entry)>,
        hinted: bool,
    ) -> Result<(), ReplicationError> {
        for (key, entry) in &entries {
            self.apply_unflushed(key, entry, hinted)?;
        }
        self.inner().store.commit().await?;
        Ok(())
    }
}

/// The lock of `fences` that the store named (as bytes) in a refusal.
fn refusing(fences: &[Fence], lock: &[u8]) -> LockKey {
    fences
        .iter()
        .find(|f| f.lock.as_str().as_bytes() == lock)
        .map(|f| f.lock.clone())
        .expect("the refusing lock is one of the request's")
}
