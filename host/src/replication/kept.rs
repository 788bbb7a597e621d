//! The anti-entropy trees, kept up to date as the data changes (Riak's active anti-entropy)
//! instead of built by reading every entry each round.
//!
//! A leaf is the XOR of its entries' hashes, so a change updates it in place: the old
//! entry's hash out, the new one's in ([`Leaves::add`] both). The store tells [`KeptTrees`]
//! of every change with the key's stripe held ([`ReplicaWatch`]). What a tree covers depends
//! on the ring (the keys this node shares with one peer), so the trees are built once for a
//! placement, in one pass over the data, when the node starts and whenever the ring (or the
//! cluster's size, which caps replication factors) changes; meanwhile changes keep both the
//! trees of the old placement and the ones being built up to date. A build reads the keys in
//! order, in steps, each with its stripe held, and moves a cursor over them: a change of a key
//! the build has read reaches the new trees through the watcher; a change of one after the
//! cursor marks it pending, and the build reads it (as it is then) before the cursor passes
//! it, since a step's list of keys may have been taken before the key was written. Between
//! changes of placement nothing reads the data.

use std::sync::{Arc, Mutex};

use super::merkle::{Leaves, entry_hash};
use super::{Entry, ReplicationConfig, View, namespace_of};
use crate::id::NodeId;
use crate::ring::Ring;
use crate::store::{ReplicaWatch, Store, StoreError};

/// The trees of one placement.
#[derive(Clone)]
pub(crate) struct Built {
    /// The placement they are for.
    pub(crate) view: Arc<View>,
    /// The tree this node shares with each peer (a peer it shares nothing with has none).
    pub(crate) trees: rustc_hash::FxHashMap<NodeId, Leaves>,
    /// Entries this node holds but does not own on `view`'s ring (to hand over).
    pub(crate) orphans: u64,
    /// Entries that end ([`Entry::ends`]: tombstones, and values with an expiry) this node
    /// holds (owned or not): with none, collection reads nothing. Called tombstones here.
    pub(crate) tombstones: u64,
    /// No tombstone held ended before this (Unix ms; `u64::MAX`: none). A lower bound:
    /// a collection does not raise it, a pass over the data does ([`KeptTrees::end_pass`]),
    /// so collection reads nothing until a tombstone may be old enough.
    pub(crate) tombstone_floor: u64,
}

impl Built {
    fn new(view: Arc<View>) -> Built {
        Built {
            view,
            trees: Default::default(),
            orphans: 0,
            tombstones: 0,
            tombstone_floor: u64::MAX,
        }
    }

    /// Adds (or, as the hashes are XORed, takes back) the entry `bytes` of `key`. Whether
    /// this node owns the key (false for an unreadable entry).
    fn toggle(
        &mut self,
        me: &NodeId,
        config: &ReplicationConfig,
        key: &[u8],
        bytes: &[u8],
        add: bool,
    ) -> bool {
        let Ok(entry) = Entry::decode(bytes) else {
            // Unreadable: left out of the trees, so the peers' copies replace it.
            return false;
        };
        if let Some(end) = entry.ends() {
            if add {
                self.tombstones += 1;
                self.tombstone_floor = self.tombstone_floor.min(end);
            } else {
                self.tombstones = self.tombstones.saturating_sub(1);
            }
        }
        let n = self
            .view
            .cap(config.quorum(namespace_of(key)).n.get() as usize);
        let owners = self.view.replicas(key, n);
        if !owners.contains(me) {
            if add {
                self.orphans += 1;
            } else {
                self.orphans = self.orphans.saturating_sub(1);
            }
            return false;
        }
        let point = Ring::point(key);
        let hash = entry_hash(key, entry.version, entry.value.is_none());
        for peer in owners.iter().filter(|p| *p != me) {
            match self.trees.get_mut(peer) {
                Some(tree) => tree.add_hash(point, &hash),
                None => {
                    let tree = self.trees.entry(peer.clone()).or_default();
                    tree.add_hash(point, &hash);
                }
            }
        }
        true
    }
}

/// Whether two views place every key on the same nodes.
pub(crate) fn same_placement(a: &View, b: &View) -> bool {
    a.ring == b.ring && a.known == b.known && a.placement_rule() == b.placement_rule()
}

/// Keys a build reads at a time.
const BUILD_STEP: usize = 1024;

/// A build under way.
struct Build {
    built: Built,
    /// Every key up to here has been read.
    cursor: Vec<u8>,
    /// Keys after the cursor changed since the build began, not read yet: the build reads
    /// them before its cursor passes them (a step's list of keys may have missed them).
    pending: std::collections::BTreeSet<Vec<u8>>,
    /// Keys after the cursor read already (pending ones): their changes are the watcher's.
    read: std::collections::HashSet<Vec<u8>>,
}

impl Build {
    fn has_read(&self, key: &[u8]) -> bool {
        key <= self.cursor.as_slice() || self.read.contains(key)
    }
}

#[derive(Default)]
struct State {
    /// The trees of the last placement built.
    current: Option<Built>,
    /// Trees being built.
    building: Option<Build>,
    /// Keys not owned on the current placement that were written since it became current
    /// (the handoff pushes them again), unless there were more than [`CHANGED_ORPHANS`].
    changed_orphans: ChangedOrphans,
    /// During a pass over the tombstones: the oldest tombstone written since it began.
    pass_floor: Option<u64>,
}

/// At most this many orphans written since the last handoff are remembered; beyond, the
/// handoff makes a whole pass again.
pub(crate) const CHANGED_ORPHANS: usize = 100_000;

/// Orphans written since the handoff last took them.
#[derive(Debug, Default, PartialEq)]
pub(crate) enum ChangedOrphans {
    /// These keys.
    Keys(std::collections::BTreeSet<Vec<u8>>),
    /// More than [`CHANGED_ORPHANS`]: any of them.
    #[default]
    Overflowed,
}

/// This node's anti-entropy trees, kept as the data changes.
pub(crate) struct KeptTrees {
    me: NodeId,
    config: ReplicationConfig,
    state: Mutex<State>,
    /// One build at a time.
    build_turn: Mutex<()>,
}

impl KeptTrees {
    /// Trees for `me`, told of every change of `store`'s data from now on; none is built yet.
    pub(crate) fn watch(me: NodeId, config: ReplicationConfig, store: &Store) -> Arc<KeptTrees> {
        let kept = Arc::new(KeptTrees {
            me,
            config,
            state: Mutex::default(),
            build_turn: Mutex::new(()),
        });
        if !store.watch_replicas(kept.clone()) {
            tracing::error!("the store already has a watcher: anti-entropy trees would go stale");
        }
        kept
    }

    /// The trees for `view`'s placement: the kept ones, or built now (one pass over the
    /// data, blocking) when the placement changed since.
    pub(crate) fn for_view(&self, view: &Arc<View>, store: &Store) -> Result<Built, StoreError> {
        self.read(view, store, Built::clone)
    }

    /// `f` of the tree shared with `peer` on `view`'s placement (empty if it shares
    /// nothing), as [`KeptTrees::for_view`] without copying the trees.
    pub(crate) fn with_tree<R>(
        &self,
        view: &Arc<View>,
        store: &Store,
        peer: &NodeId,
        f: impl Fn(&Leaves) -> R,
    ) -> Result<R, StoreError> {
        let empty = Leaves::default();
        self.read(view, store, |b| f(b.trees.get(peer).unwrap_or(&empty)))
    }

    /// `f` of the trees for `view`'s placement, built first if need be.
    fn read<R>(
        &self,
        view: &Arc<View>,
        store: &Store,
        f: impl Fn(&Built) -> R,
    ) -> Result<R, StoreError> {
        if let Some(r) = self.current_for(view, &f) {
            return Ok(r);
        }
        let _turn = self.build_turn.lock().unwrap_or_else(|e| e.into_inner());
        // Another caller may have built them while this one waited.
        if let Some(r) = self.current_for(view, &f) {
            return Ok(r);
        }
        self.lock().building = Some(Build {
            built: Built::new(view.clone()),
            cursor: Vec::new(),
            pending: Default::default(),
            read: Default::default(),
        });
        loop {
            let read = self.build(store);
            let mut state = self.lock();
            if let Err(e) = read {
                state.building = None;
                return Err(e);
            }
            // Taken with the lock held, so no change comes between the last read and the
            // trees becoming current.
            if state
                .building
                .as_ref()
                .is_some_and(|b| b.pending.is_empty())
            {
                let build = state.building.take().expect("set above");
                let r = f(&build.built);
                state.current = Some(build.built);
                // Whatever the handoff of the earlier placement had yet to push is read again
                // by the new one's first pass.
                state.changed_orphans = ChangedOrphans::Keys(Default::default());
                return Ok(r);
            }
        }
    }

    /// Reads every key once, in steps, into the build under way, until none is left to read
    /// (a key written meanwhile may be pending again when it returns).
    fn build(&self, store: &Store) -> Result<(), StoreError> {
        loop {
            let after = self
                .lock()
                .building
                .as_ref()
                .expect("building")
                .cursor
                .clone();
            let keys = store.replica_keys_after(&after, BUILD_STEP)?;
            let Some(last) = keys.last().cloned() else {
                // The end: only keys written since the last step are left.
                if !self.read_pending(store, None)? {
                    return Ok(());
                }
                continue;
            };
            for key in keys {
                self.read_key(store, &key)?;
            }
            // The cursor may pass `last` once no pending key before it is left unread.
            while self.read_pending(store, Some(&last))? {}
            let mut state = self.lock();
            let b = state.building.as_mut().expect("building");
            if b.pending.range(..=last.clone()).next().is_some() {
                continue;
            }
            b.read.retain(|k| *k > last);
            b.cursor = last;
        }
    }

    /// Reads the pending keys up to `upto` (all without); whether there were any.
    fn read_pending(&self, store: &Store, upto: Option<&Vec<u8>>) -> Result<bool, StoreError> {
        let keys: Vec<Vec<u8>> = {
            let state = self.lock();
            let b = state.building.as_ref().expect("building");
            match upto {
                Some(last) => b.pending.range(..=last.clone()).cloned().collect(),
                None => b.pending.iter().cloned().collect(),
            }
        };
        for key in &keys {
            self.read_key(store, key)?;
        }
        Ok(!keys.is_empty())
    }

    /// Adds `key` as it is now to the build, unless the build has read it already.
    fn read_key(&self, store: &Store, key: &[u8]) -> Result<(), StoreError> {
        store.replica_read_watched(key, |bytes| {
            let mut state = self.lock();
            let b = state.building.as_mut().expect("building");
            b.pending.remove(key);
            if b.has_read(key) {
                return;
            }
            if let Some(bytes) = bytes {
                b.built.toggle(&self.me, &self.config, key, bytes, true);
            }
            b.read.insert(key.to_vec());
        })
    }

    /// The orphans written since the last call, if the kept trees are for `view`'s
    /// placement (`None` otherwise); the handoff gives back those it could not push.
    pub(crate) fn take_changed_orphans(&self, view: &View) -> Option<ChangedOrphans> {
        let mut state = self.lock();
        let current = state.current.as_ref()?;
        if !same_placement(&current.view, view) {
            return None;
        }
        Some(std::mem::replace(
            &mut state.changed_orphans,
            ChangedOrphans::Keys(Default::default()),
        ))
    }

    /// Gives back orphans the handoff could not push (taken for `view`'s placement).
    pub(crate) fn give_back_changed_orphans(&self, view: &View, keys: Vec<Vec<u8>>) {
        let mut state = self.lock();
        if state
            .current
            .as_ref()
            .is_some_and(|c| same_placement(&c.view, view))
        {
            for key in keys {
                state.note_changed_orphan(&key);
            }
        }
    }

    /// Whether `key` was written since the handoff last took the changed orphans (called with
    /// the key's stripe held, this is exact).
    pub(crate) fn is_changed_orphan(&self, key: &[u8]) -> bool {
        match &self.lock().changed_orphans {
            ChangedOrphans::Keys(keys) => keys.contains(key),
            ChangedOrphans::Overflowed => true,
        }
    }

    /// A time no tombstone held was written before, if the kept trees are for `view`'s
    /// placement (`u64::MAX`: none held).
    pub(crate) fn tombstone_floor(&self, view: &View) -> Option<u64> {
        self.current_for(view, |b| b.tombstone_floor)
    }

    /// A pass over every tombstone begins: tombstones written from now on are remembered
    /// for [`KeptTrees::end_pass`].
    pub(crate) fn begin_pass(&self) {
        self.lock().pass_floor = Some(u64::MAX);
    }

    /// The pass ends, having found no tombstone older than `oldest` (`None`: it failed).
    /// The floor of `view`'s trees becomes that, or the oldest tombstone written during
    /// the pass.
    pub(crate) fn end_pass(&self, view: &View, oldest: Option<u64>) {
        let mut state = self.lock();
        let during = state.pass_floor.take().unwrap_or(0);
        if let (Some(oldest), Some(current)) = (oldest, state.current.as_mut())
            && same_placement(&current.view, view)
        {
            current.tombstone_floor = oldest.min(during);
        }
    }

    /// How many tombstones this node holds, if the kept trees are for `view`'s placement.
    pub(crate) fn tombstones(&self, view: &View) -> Option<u64> {
        self.current_for(view, |b| b.tombstones)
    }

    /// How many entries this node holds but does not own, if the kept trees are for `view`'s
    /// placement.
    pub(crate) fn orphans(&self, view: &View) -> Option<u64> {
        self.current_for(view, |b| b.orphans)
    }

    /// `f` of the kept trees, if they are for `view`'s placement.
    fn current_for<R>(&self, view: &View, f: impl Fn(&Built) -> R) -> Option<R> {
        let state = self.lock();
        state
            .current
            .as_ref()
            .filter(|b| same_placement(&b.view, view))
            .map(f)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl State {
    fn note_changed_orphan(&mut self, key: &[u8]) {
        if let ChangedOrphans::Keys(keys) = &mut self.changed_orphans {
            keys.insert(key.to_vec());
            if keys.len() > CHANGED_ORPHANS {
                self.changed_orphans = ChangedOrphans::Overflowed;
            }
        }
    }
}

impl ReplicaWatch for KeptTrees {
    fn changed(&self, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        let mut state = self.lock();
        // Whether the key is written and not owned here (on the current placement).
        let apply = |built: &mut Built| {
            if let Some(old) = old {
                built.toggle(&self.me, &self.config, key, old, false);
            }
            new.is_some_and(|new| !built.toggle(&self.me, &self.config, key, new, true))
        };
        if let Some(built) = &mut state.current
            && apply(built)
        {
            state.note_changed_orphan(key);
        }
        if let (Some(floor), Some(new)) = (&mut state.pass_floor, new)
            && let Ok(entry) = Entry::decode(new)
            && let Some(end) = entry.ends()
        {
            *floor = (*floor).min(end);
        }
        if let Some(b) = &mut state.building {
            if b.has_read(key) {
                apply(&mut b.built);
            } else {
                b.pending.insert(key.to_vec());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rand::{RngExt, SeedableRng};

    use super::*;
    use crate::placement::View;
    use crate::replication::{Quorum, Version};
    use crate::ring::RingNode;

    fn view(nodes: &[&str]) -> Arc<View> {
        let ring = Ring::new(
            nodes.iter().map(|n| RingNode {
                node: n.parse().expect("a node name"),
                tags: Default::default(),
            }),
            64,
        );
        Arc::new(View::of(ring, nodes.len()))
    }

    /// The trees of `view` built from scratch: every entry read, its owners found, its hash
    /// added to the tree of each other owner.
    fn scratch(
        store: &Store,
        view: &View,
        me: &NodeId,
        config: &ReplicationConfig,
    ) -> (BTreeMap<NodeId, Leaves>, u64, u64) {
        let (mut trees, mut orphans, mut tombstones) =
            (rustc_hash::FxHashMap::<NodeId, Leaves>::default(), 0, 0);
        for record in store.replica_iter() {
            let (key, bytes) = record.expect("readable");
            let entry = Entry::decode(&bytes).expect("an entry");
            tombstones += u64::from(entry.ends().is_some());
            let n = view.cap(config.quorum(namespace_of(&key)).n.get() as usize);
            let owners = view.replicas(&key, n);
            if !owners.contains(me) {
                orphans += 1;
                continue;
            }
            for peer in owners.iter().filter(|p| *p != me) {
                trees.entry(peer.clone()).or_default().add(
                    Ring::point(&key),
                    &key,
                    entry.version,
                    entry.value.is_none(),
                );
            }
        }
        (trees_held(&trees), orphans, tombstones)
    }

    /// The trees that hold something (leaves and fine ranges both compared).
    fn trees_held(trees: &rustc_hash::FxHashMap<NodeId, Leaves>) -> BTreeMap<NodeId, Leaves> {
        trees
            .iter()
            .filter(|(_, t)| !t.is_empty())
            .map(|(p, t)| (p.clone(), t.clone()))
            .collect()
    }

    /// Writes, deletes (tombstones) and collections of random keys, as a replica takes them.
    fn churn(store: &Store, seed: u64, ops: usize) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        for _ in 0..ops {
            let ns = if rng.random_bool(0.2) { "one" } else { "many" };
            let key = format!("{ns}\0k{}", rng.random_range(0..400)).into_bytes();
            match rng.random_range(0..10) {
                // Collection: the key goes if it still holds what was read.
                0 => {
                    if let Some(held) = store.replica_get(&key).expect("readable") {
                        store.replica_remove_if(&key, &held).expect("removable");
                    }
                }
                op => {
                    let entry = Entry {
                        version: Version {
                            token: 0,
                            hlc: rng.random(),
                            node: 1,
                        },
                        value: (op > 2).then(|| b"value".to_vec()),
                        fences: Vec::new(),
                        expires: None,
                    };
                    store
                        .replica_update(&key, |_| (Some(entry.encode()), ()))
                        .expect("writable");
                }
            }
        }
    }

    #[test]
    fn kept_trees_equal_trees_built_from_scratch_through_writes_and_ring_changes() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(dir.path()).expect("a store");
        let mut config = ReplicationConfig::default();
        config
            .namespaces
            .insert("one".into(), Quorum::new(1, 1, 1).expect("valid"));
        let me: NodeId = "b".parse().expect("a node name");
        let kept = KeptTrees::watch(me.clone(), config.clone(), &store);
        churn(&store, 1, 500);
        let rings = [
            view(&["a", "b", "c"]),
            view(&["a", "b", "c", "d", "e"]),
            view(&["b", "d"]),
            view(&["a", "b", "c", "d"]),
            view(&["b"]),
            view(&["a", "b", "c"]),
        ];
        for (round, v) in rings.iter().enumerate() {
            // A build while another thread writes: every change lands once, before or
            // after the build's cursor.
            let built = std::thread::scope(|s| {
                let writer = s.spawn(|| churn(&store, 100 + round as u64, 2_000));
                let built = kept.for_view(v, &store).expect("built");
                writer.join().expect("the writer finished");
                built
            });
            assert!(same_placement(&built.view, v));
            churn(&store, 200 + round as u64, 1_000);
            let now = kept.for_view(v, &store).expect("kept");
            let (want, orphans, tombstones) = scratch(&store, v, &me, &config);
            assert!(tombstones > 0, "round {round}: the test deletes something");
            assert!(
                !want.is_empty() || v.ring.nodes().len() == 1,
                "round {round}: the test shares something"
            );
            assert_eq!(
                trees_held(&now.trees),
                want,
                "round {round}: the kept trees drifted"
            );
            assert_eq!(now.orphans, orphans, "round {round}: orphans");
            assert_eq!(now.tombstones, tombstones, "round {round}: tombstones");
        }
    }

    #[test]
    fn the_tombstone_floor_falls_as_tombstones_come_and_rises_only_after_a_pass() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(dir.path()).expect("a store");
        let me: NodeId = "a".parse().expect("a node name");
        let kept = KeptTrees::watch(me, ReplicationConfig::default(), &store);
        let v = view(&["a", "b"]);
        let write = |key: &str, ms: u64, deleted: bool| {
            let entry = Entry {
                version: Version::at(ms << 16),
                value: (!deleted).then(|| b"value".to_vec()),
                fences: Vec::new(),
                expires: None,
            };
            let key = format!("many\0{key}").into_bytes();
            store
                .replica_update(&key, |_| (Some(entry.encode()), ()))
                .expect("writable");
            (key, entry.encode())
        };
        kept.for_view(&v, &store).expect("built");
        let floor = || kept.tombstone_floor(&v).expect("current");
        write("live", 10, false);
        assert_eq!(floor(), u64::MAX, "no tombstone");
        write("x", 500, true);
        assert_eq!(floor(), 500);
        let (old, bytes) = write("y", 200, true);
        assert_eq!(floor(), 200);
        // Collected: the floor stays (a lower bound) until a pass finds the oldest left.
        store.replica_remove_if(&old, &bytes).expect("removable");
        assert_eq!(floor(), 200);
        kept.begin_pass();
        write("z", 300, true); // written while the pass runs, behind its cursor
        kept.end_pass(&v, Some(500));
        assert_eq!(floor(), 300);
        kept.begin_pass();
        kept.end_pass(&v, Some(500));
        assert_eq!(floor(), 500);
        // A pass that failed changes nothing.
        write("w", 100, true);
        kept.begin_pass();
        kept.end_pass(&v, None);
        assert_eq!(floor(), 100);
        // New trees (another placement) find the oldest in their build.
        let w = view(&["a", "b", "c"]);
        kept.for_view(&w, &store).expect("built");
        assert_eq!(kept.tombstone_floor(&w), Some(100));
    }

    #[test]
    fn a_change_the_watcher_misses_shows_as_a_difference() {
        // The control: a write that bypasses the watcher leaves the kept trees behind, and
        // the comparison above catches it.
        let dir = tempfile::tempdir().expect("a temp dir");
        let store = Store::open(dir.path()).expect("a store");
        let config = ReplicationConfig::default();
        let me: NodeId = "a".parse().expect("a node name");
        let v = view(&["a", "b"]);
        // Built like `KeptTrees::watch`, but never registered with the store.
        let unwatched = KeptTrees {
            me: me.clone(),
            config: config.clone(),
            state: Mutex::default(),
            build_turn: Mutex::new(()),
        };
        churn(&store, 7, 300);
        let before = unwatched.for_view(&v, &store).expect("built");
        assert_eq!(
            trees_held(&before.trees),
            scratch(&store, &v, &me, &config).0
        );
        churn(&store, 8, 300);
        let after = unwatched.for_view(&v, &store).expect("kept");
        assert_ne!(
            trees_held(&after.trees),
            scratch(&store, &v, &me, &config).0
        );
    }
}
