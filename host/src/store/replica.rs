//! Replicated data as this node holds it (tree `data`); hints: writes held for replicas
//! that could not take them (tree `hints`); and fences: the highest fencing token seen per
//! lock (tree `fences`). The bytes are opaque here; `replication` gives them meaning.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use super::journal::Tree;
use super::{Record, Store, StoreError};

/// Entries and hints, counted as they are written (and once when the store opens), so that
/// status and metrics read two numbers instead of scanning the trees.
#[derive(Debug, Default)]
pub(super) struct Counts {
    entries: AtomicU64,
    /// Hints by the node they are held for.
    hints: Mutex<HashMap<String, u64>>,
}

impl Counts {
    /// Counts what the trees hold (the one scan).
    pub(super) fn of(data: &sled::Tree, hints: &sled::Tree) -> Result<Self, StoreError> {
        let counts = Counts::default();
        counts
            .entries
            .store(data.iter().keys().count() as u64, Ordering::Relaxed);
        let mut by_target = counts.hints.lock().expect("not poisoned");
        for k in hints.iter().keys() {
            let k = k?;
            let end = k.iter().position(|&b| b == 0).unwrap_or(k.len());
            *by_target
                .entry(String::from_utf8_lossy(&k[..end]).into_owned())
                .or_default() += 1;
        }
        drop(by_target);
        Ok(counts)
    }

    fn hint_added(&self, target: &str) {
        *self
            .hints
            .lock()
            .expect("not poisoned")
            .entry(target.to_string())
            .or_default() += 1;
    }

    fn hint_removed(&self, target: &str) {
        let mut hints = self.hints.lock().expect("not poisoned");
        if let Some(n) = hints.get_mut(target) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                hints.remove(target);
            }
        }
    }
}

/// Told of every change of the replicated data, with the key's stripe held (so that no other
/// change of the key, and no [`Store::replica_scan_watched`] read of it, comes between the
/// change and the call). It must be quick and must not touch the store.
pub trait ReplicaWatch: Send + Sync {
    /// `key` went from `old` to `new` (`None`: absent).
    fn changed(&self, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>);
}

/// A lock key and a fencing token, as bytes and a number.
pub type FenceMark<'a> = (&'a [u8], u64);

/// A fenced operation's outcome: `Ok` with what it did, or the lock (as bytes) that refused it
/// and the larger token that lock has seen.
pub type Fenced<T> = Result<T, (Vec<u8>, u64)>;

impl Store {
    /// The stored entry under `key`.
    pub fn replica_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.data.get(key)?.map(|v| v.to_vec()))
    }

    /// Replaces the entry under `key` with what `decide` makes of the current one, atomically
    /// with respect to other updates of the key (retrying when one raced it). `decide` returns
    /// the new bytes (or `None` to leave the key as it is) and a result passed back. Not
    /// durable: call [`Store::commit`] before acknowledging.
    pub fn replica_update<T>(
        &self,
        key: &[u8],
        mut decide: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
    ) -> Result<T, StoreError> {
        let _turn = self.key_turn(key);
        loop {
            let old = self.data.get(key)?;
            let (new, result) = decide(old.as_deref());
            let Some(new) = new else {
                return Ok(result);
            };
            let added = old.is_none();
            match self
                .data
                .compare_and_swap(key, old.as_deref(), Some(&new[..]))?
            {
                Ok(()) => {
                    self.journaled(Tree::Data, key, Some(&new));
                    if added {
                        self.counts.entries.fetch_add(1, Ordering::Relaxed);
                        self.index_add(key)?;
                    }
                    self.tell(key, old.as_deref(), Some(&new));
                    return Ok(result);
                }
                Err(_) => continue,
            }
        }
    }

    /// Sets the one watcher of the replicated data; `false` if one was set already.
    pub fn watch_replicas(&self, watcher: std::sync::Arc<dyn ReplicaWatch>) -> bool {
        self.watcher.set(watcher).is_ok()
    }

    /// Up to `limit` keys after `after`, in key order (a scan in steps: each step sees the
    /// keys as they are when it is taken).
    pub fn replica_keys_after(
        &self,
        after: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        use std::ops::Bound;
        self.data
            .range::<&[u8], _>((Bound::Excluded(after), Bound::Unbounded))
            .keys()
            .take(limit)
            .map(|k| Ok(k?.to_vec()))
            .collect()
    }

    /// Reads `key` with its stripe held and calls `f` with its bytes (`None`: absent) before
    /// releasing it: no change of the key comes between, and the watcher has heard of every
    /// earlier change and hears of every later one after `f`.
    pub fn replica_read_watched<T>(
        &self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> T,
    ) -> Result<T, StoreError> {
        let _turn = self.key_turn(key);
        Ok(f(self.data.get(key)?.as_deref()))
    }

    /// Holds the stripe of `key`.
    pub(super) fn key_turn(&self, key: &[u8]) -> std::sync::MutexGuard<'_, ()> {
        // FNV-1a: keys are short, and any spread will do.
        let h = key.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let stripes = &self.key_stripes;
        stripes[(h % stripes.len() as u64) as usize]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Tells the watcher, if any, of a change (with the key's stripe held).
    fn tell(&self, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        if let Some(w) = self.watcher.get() {
            w.changed(key, old, new);
        }
    }

    /// [`Store::replica_update`] for a write made under locks: raises the highest token seen
    /// of each lock in `fences` to the write's, then updates the entry, with the locks' stripes
    /// held, so no read or write under the same locks comes between. With `check`, a lock
    /// that has seen a larger token refuses the write: nothing changes, and the lock and its
    /// token are returned as the error. Returns `decide`'s result and whether a mark rose
    /// (commit before answering, even when the entry did not change). Not durable yet.
    ///
    /// (Not a sled transaction: sled 0.34's transactions take a process-wide lock that every
    /// other operation of every tree then waits on; the lock-protected counter ran at a fifth
    /// of its unlocked speed with them.)
    pub fn replica_update_fenced<T>(
        &self,
        key: &[u8],
        fences: &[FenceMark<'_>],
        check: bool,
        decide: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, T),
    ) -> Result<Fenced<(T, bool)>, StoreError> {
        let _turns = self.fence_turns(fences);
        let rose = match self.raise(fences, check)? {
            Ok(rose) => rose,
            Err(refused) => return Ok(Err(refused)),
        };
        let result = self.replica_update(key, decide)?;
        Ok(Ok((result, rose)))
    }

    /// Raises the highest token seen of each lock in `fences` (a read made under the locks),
    /// all or nothing, with the locks' stripes held. With `check`, a lock that has seen a
    /// larger token refuses: nothing changes, and the lock and its token are returned as the
    /// error. Returns whether a mark rose (then commit before answering). Not durable yet.
    pub fn fence_raise(
        &self,
        fences: &[FenceMark<'_>],
        check: bool,
    ) -> Result<Fenced<bool>, StoreError> {
        let _turns = self.fence_turns(fences);
        self.raise(fences, check)
    }

    /// Holds the stripes of `fences`' locks, in one order, so reads and writes under the same
    /// lock take turns on this node.
    fn fence_turns(&self, fences: &[FenceMark<'_>]) -> Vec<std::sync::MutexGuard<'_, ()>> {
        let stripes = &self.fence_stripes;
        let mut at: Vec<usize> = fences
            .iter()
            .map(|(lock, _)| {
                let h = blake3::hash(lock);
                (u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
                    % stripes.len() as u64) as usize
            })
            .collect();
        at.sort_unstable();
        at.dedup();
        at.into_iter()
            .map(|i| stripes[i].lock().unwrap_or_else(|e| e.into_inner()))
            .collect()
    }

    /// Raises each lock's mark to its token in `fences`; with `check`, first refuses (changing
    /// nothing) when one has seen a larger token. The caller holds the locks' stripes.
    fn raise(&self, fences: &[FenceMark<'_>], check: bool) -> Result<Fenced<bool>, StoreError> {
        let mut seen = Vec::with_capacity(fences.len());
        for &(lock, token) in fences {
            let have = self.fences.get(lock)?.map_or(0, |v| token_of(&v));
            if check && token < have {
                return Ok(Err((lock.to_vec(), have)));
            }
            seen.push(have);
        }
        let mut rose = false;
        for (&(lock, token), have) in fences.iter().zip(seen) {
            if token > have {
                self.fences.insert(lock, &token.to_be_bytes())?;
                self.journaled(Tree::Fences, lock, Some(&token.to_be_bytes()));
                rose = true;
            }
        }
        Ok(Ok(rose))
    }

    /// The highest fencing token this node has seen for `lock` (0: none).
    pub fn fence_seen(&self, lock: &[u8]) -> Result<u64, StoreError> {
        Ok(self.fences.get(lock)?.map_or(0, |v| token_of(&v)))
    }

    /// Removes `key` if it still holds exactly `expected` (tombstone collection).
    pub fn replica_remove_if(&self, key: &[u8], expected: &[u8]) -> Result<bool, StoreError> {
        let _turn = self.key_turn(key);
        // Every change of the key holds its stripe: it stays as read until the swap.
        if self.data.get(key)?.as_deref() != Some(expected) {
            return Ok(false);
        }
        self.index_remove(key)?;
        let removed = self
            .data
            .compare_and_swap(key, Some(expected), None::<&[u8]>)?
            .is_ok();
        if removed {
            self.journaled(Tree::Data, key, None);
            self.counts.entries.fetch_sub(1, Ordering::Relaxed);
            self.tell(key, Some(expected), None);
        }
        Ok(removed)
    }

    /// Up to `limit` entries whose keys start with `prefix`, from `start` (inclusive) on.
    pub fn replica_scan(
        &self,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Vec<Record>, StoreError> {
        let from = if start > prefix { start } else { prefix };
        self.data
            .range(from..)
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|r| Ok(r.map(|(k, v)| (k.to_vec(), v.to_vec()))?))
            .collect()
    }

    /// Every entry, in key order.
    pub fn replica_iter(&self) -> impl Iterator<Item = Result<Record, StoreError>> + use<> {
        self.data
            .iter()
            .map(|r| Ok(r.map(|(k, v)| (k.to_vec(), v.to_vec()))?))
    }

    /// How many entries this node holds (counted on write: no scan).
    pub fn replica_len(&self) -> usize {
        self.counts.entries.load(Ordering::Relaxed) as usize
    }

    /// Holds `entry` for `target`, to hand over when it is back. A newer hint for the same key
    /// replaces an older one when `newer` says so. Not journaled: durable after the next
    /// [`Store::flush`] or checkpoint (or sled's own flush, every 500 ms).
    pub fn put_hint(
        &self,
        target: &str,
        key: &[u8],
        entry: &[u8],
        newer: impl Fn(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let hint_key = hint_key(target, key);
        loop {
            let old = self.hints.get(&hint_key)?;
            if old.as_deref().is_some_and(|o| !newer(entry, o)) {
                return Ok(());
            }
            let added = old.is_none();
            if self
                .hints
                .compare_and_swap(&hint_key, old, Some(entry))?
                .is_ok()
            {
                if added {
                    self.counts.hint_added(target);
                }
                return Ok(());
            }
        }
    }

    /// The nodes that hints are held for.
    pub fn hint_targets(&self) -> Result<Vec<String>, StoreError> {
        let mut targets = Vec::new();
        let mut from = Vec::new();
        while let Some(r) = self.hints.range(from.as_slice()..).next() {
            let (k, _) = r?;
            let end = k.iter().position(|&b| b == 0).unwrap_or(k.len());
            targets.push(String::from_utf8_lossy(&k[..end]).into_owned());
            from = k[..end].to_vec();
            from.push(1);
        }
        Ok(targets)
    }

    /// Up to `limit` hints held for `target`, as `(key, entry)`.
    pub fn hints_for(&self, target: &str, limit: usize) -> Result<Vec<Record>, StoreError> {
        let prefix = hint_key(target, b"");
        self.hints
            .scan_prefix(&prefix)
            .take(limit)
            .map(|r| Ok(r.map(|(k, v)| (k[prefix.len()..].to_vec(), v.to_vec()))?))
            .collect()
    }

    /// Drops a delivered hint, unless a newer one replaced it meanwhile.
    pub fn remove_hint(&self, target: &str, key: &[u8], entry: &[u8]) -> Result<(), StoreError> {
        let removed = self
            .hints
            .compare_and_swap(hint_key(target, key), Some(entry), None::<&[u8]>)?
            .is_ok();
        if removed {
            self.counts.hint_removed(target);
        }
        Ok(())
    }

    /// How many hints are held for `target` (counted on write: no scan).
    pub fn hint_count_for(&self, target: &str) -> usize {
        let hints = self.counts.hints.lock().expect("not poisoned");
        hints.get(target).copied().unwrap_or(0) as usize
    }

    /// How many hints are held, for every target together (counted on write: no scan).
    pub fn hint_count(&self) -> usize {
        let hints = self.counts.hints.lock().expect("not poisoned");
        hints.values().sum::<u64>() as usize
    }
}

/// A stored token. sled checksums what it stores, so a value of another length is not
/// expected; it would count as no token seen.
fn token_of(stored: &[u8]) -> u64 {
    stored.try_into().map_or(0, u64::from_be_bytes)
}

fn hint_key(target: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(target.len() + 1 + key.len());
    k.extend_from_slice(target.as_bytes());
    k.push(0);
    k.extend_from_slice(key);
    k
}
