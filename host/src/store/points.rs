//! An index of the replicated data by ring point (tree `points`: the key's point, big-endian,
//! then the key → nothing), so that anti-entropy lists the entries of a range of the ring by
//! reading that range instead of every entry.
//!
//! The point function is the caller's (`replication` passes the ring's), set once with
//! [`Store::index_replicas`]. A key enters the index when it enters `data` and leaves it
//! before it leaves `data`, both with the key's stripe held; after a crash the index may miss
//! the keys written or removed last (never the other way round), which [`Store::index_replicas`]
//! sees by counting and mends by indexing every entry again.

use super::journal::Tree;
use super::{Store, StoreError};

/// Maps a stored key to its ring point.
pub type PointOf = fn(&[u8]) -> u64;

fn index_key(point: u64, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(8 + key.len());
    k.extend_from_slice(&point.to_be_bytes());
    k.extend_from_slice(key);
    k
}

impl Store {
    /// Indexes the replicated data by `point_of` from now on; indexes every entry again (one
    /// pass) if the index does not count as many keys as the data (the first time, or after
    /// a crash between the two writes). Blocking; `false` if another function was set before.
    pub fn index_replicas(&self, point_of: PointOf) -> Result<bool, StoreError> {
        if self.point_of.set(point_of).is_err() {
            return Ok(false);
        }
        let held = self.replica_len();
        if self.points.len() != held {
            tracing::info!(entries = held, "indexing the replicated data by ring point");
            self.points.clear()?;
            for key in self.data.iter().keys() {
                let key = key?;
                let _turn = self.key_turn(&key);
                if self.data.get(&key)?.is_some() {
                    self.points.insert(index_key(point_of(&key), &key), &[])?;
                }
            }
        }
        Ok(true)
    }

    /// What `f` makes of each entry (key and stored bytes) whose key's point lies in
    /// `from..=to`, in point order, read without copying the entries; keys `f` maps to `None`
    /// are left out. Each entry is read as it is then (no stripe held).
    pub fn replica_peek_between<T>(
        &self,
        from: u64,
        to: u64,
        mut f: impl FnMut(&[u8], &[u8]) -> Option<T>,
    ) -> Result<Vec<T>, StoreError> {
        let start = from.to_be_bytes();
        let end = to.checked_add(1).map(u64::to_be_bytes);
        let range = match &end {
            Some(end) => self.points.range(&start[..]..&end[..]),
            None => self.points.range(&start[..]..),
        };
        let mut out = Vec::new();
        for indexed in range.keys() {
            let indexed = indexed?;
            let key = &indexed[8..];
            if let Some(bytes) = self.data.get(key)?
                && let Some(t) = f(key, &bytes)
            {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// Whether the data is indexed (and so [`Store::replica_peek_between`] finds every key).
    pub fn replicas_indexed(&self) -> bool {
        self.point_of.get().is_some()
    }

    /// Indexes a key that entered `data` (its stripe held).
    pub(super) fn index_add(&self, key: &[u8]) -> Result<(), StoreError> {
        if let Some(point_of) = self.point_of.get() {
            let indexed = index_key(point_of(key), key);
            self.points.insert(indexed.as_slice(), &[])?;
            self.journaled(Tree::Points, &indexed, Some(&[]));
        }
        Ok(())
    }

    /// Takes out of the index a key about to leave `data` (its stripe held).
    pub(super) fn index_remove(&self, key: &[u8]) -> Result<(), StoreError> {
        if let Some(point_of) = self.point_of.get() {
            let indexed = index_key(point_of(key), key);
            self.points.remove(indexed.as_slice())?;
            self.journaled(Tree::Points, &indexed, None);
        }
        Ok(())
    }
}
