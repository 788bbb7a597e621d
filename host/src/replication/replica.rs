//! This node as a replica: applying writes to its own copies (newest version wins, flushed
//! before the answer), and answering its peers' reads, scans and anti-entropy requests.

use serde::{Deserialize, Serialize};

use super::{Entry, ReplicationError, Replicator, Version};

/// Keys and their entries.
pub(crate) type Entries = Vec<(Vec<u8>, Entry)>;

/// About how many bytes one answer carries (frames are capped at 16 MiB).
pub(crate) const ANSWER_BYTES: usize = 8 << 20;

/// What a replica did with a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PutOutcome {
    /// Stored and flushed (or already held).
    Applied,
    /// Not stored: the replica holds this newer version.
    Stale(Version),
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

    /// Stores `entry` under `key` if it is newer, without flushing.
    fn apply_unflushed(&self, key: &[u8], entry: &Entry) -> Result<PutOutcome, ReplicationError> {
        super::check_entry(key, entry)?;
        self.observe(entry.version);
        let encoded = entry.encode();
        let mut corrupt = None;
        let outcome = self.inner().store.replica_update(key, |old| {
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
        })?;
        if let Some(e) = corrupt {
            tracing::warn!(error = %e, "replaced an unreadable stored entry");
        }
        Ok(outcome)
    }

    /// Applies one write and flushes it before answering.
    pub(crate) async fn apply(
        &self,
        key: &[u8],
        entry: &Entry,
    ) -> Result<PutOutcome, ReplicationError> {
        let outcome = self.apply_unflushed(key, entry)?;
        if outcome == PutOutcome::Applied {
            self.inner().store.flush().await?;
        }
        Ok(outcome)
    }

    /// Applies the newer of `entries` and flushes once.
    pub(crate) async fn apply_all(
        &self,
        entries: Vec<(Vec<u8>, Entry)>,
    ) -> Result<(), ReplicationError> {
        for (key, entry) in &entries {
            self.apply_unflushed(key, entry)?;
        }
        self.inner().store.flush().await?;
        Ok(())
    }
}
