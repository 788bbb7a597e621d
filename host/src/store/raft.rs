//! The consensus group's durable state: its log (tree `raft-log`, entries by index) and its
//! small records (tree `raft-meta`: the vote, the last purged entry, the committed entry, the
//! current snapshot, this node's id in the group). The bytes are opaque here; `consensus`
//! gives them meaning. Every write is flushed (group commit and file-system sync) before it
//! returns, as replicated data is, except the committed mark, which may lag.

use super::{Store, StoreError};

impl Store {
    /// Appends log entries `(index, bytes)` and flushes them.
    pub async fn raft_append(&self, entries: Vec<(u64, Vec<u8>)>) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (index, bytes) in entries {
            batch.insert(&index.to_be_bytes(), bytes);
        }
        self.raft_log.apply_batch(batch)?;
        self.flush().await
    }

    /// The log entries with indexes in `from..to`, in order (missing ones skipped).
    pub fn raft_entries(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        if from >= to {
            return Ok(vec![]);
        }
        self.raft_log
            .range(from.to_be_bytes()..to.to_be_bytes())
            .map(|r| Ok(r?.1.to_vec()))
            .collect()
    }

    /// The last log entry, if any.
    pub fn raft_last_entry(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.raft_log.last()?.map(|(_, v)| v.to_vec()))
    }

    /// Removes the log entries from `from` on and flushes.
    pub async fn raft_truncate(&self, from: u64) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for key in self.raft_log.range(from.to_be_bytes()..).keys() {
            batch.remove(key?);
        }
        self.raft_log.apply_batch(batch)?;
        self.flush().await
    }

    /// Records `purged` under `key` in the meta tree, then removes the log entries up to and
    /// including `upto`, and flushes. (Should the node stop in between, the entries that
    /// remain are below the recorded point and are removed by the next purge.)
    pub async fn raft_purge(
        &self,
        upto: u64,
        key: &str,
        purged: Vec<u8>,
    ) -> Result<(), StoreError> {
        self.raft_meta.insert(key.as_bytes(), purged)?;
        let mut batch = sled::Batch::default();
        for k in self.raft_log.range(..=upto.to_be_bytes()).keys() {
            batch.remove(k?);
        }
        self.raft_log.apply_batch(batch)?;
        self.flush().await
    }

    /// One record of the meta tree.
    pub fn raft_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.raft_meta.get(key.as_bytes())?.map(|v| v.to_vec()))
    }

    /// Sets one record of the meta tree without flushing it (it is flushed with the next
    /// write that is): for records that may lag after a crash.
    pub fn set_raft_meta_lazily(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.raft_meta.insert(key.as_bytes(), value)?;
        Ok(())
    }

    /// Sets one record of the meta tree and flushes it.
    pub async fn set_raft_meta(&self, key: &str, value: Vec<u8>) -> Result<(), StoreError> {
        self.raft_meta.insert(key.as_bytes(), value)?;
        self.flush().await
    }
}
