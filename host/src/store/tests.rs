//! The store's own tests.

use super::*;

#[tokio::test]
async fn modules_of_an_earlier_version_are_listed_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.modules.insert(b"digest", &b"bytes"[..]).unwrap();
    assert_eq!(store.legacy_modules().unwrap(), vec![b"bytes".to_vec()]);
    store.drop_legacy_modules().await.unwrap();
    assert!(store.legacy_modules().unwrap().is_empty());
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

#[tokio::test]
async fn fenced_updates_keep_the_highest_token_and_refuse_lower_ones_durably() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let put = |key: &[u8], fences: &[FenceMark<'_>], check: bool, value: &[u8]| {
            let value = value.to_vec();
            store
                .replica_update_fenced(key, fences, check, |_| (Some(value.clone()), ()))
                .unwrap()
                .map(|((), _rose)| ())
        };
        assert_eq!(put(b"a\0k", &[(b"L", 5)], true, b"five"), Ok(()));
        assert_eq!(store.fence_seen(b"L").unwrap(), 5);
        // Equal tokens are the same holder; a higher one raises the mark.
        assert_eq!(put(b"a\0k", &[(b"L", 5)], true, b"five again"), Ok(()));
        assert_eq!(put(b"a\0j", &[(b"L", 9), (b"M", 2)], true, b"nine"), Ok(()));
        // A lower token is refused for any key, and nothing changes: not the data, not the
        // other lock's mark.
        assert_eq!(
            put(b"a\0new", &[(b"M", 3), (b"L", 8)], true, b"stale"),
            Err((b"L".to_vec(), 9))
        );
        assert_eq!(store.replica_get(b"a\0new").unwrap(), None);
        assert_eq!(store.fence_seen(b"M").unwrap(), 2);
        // A copy (check off) is taken, and still raises what it carries.
        assert_eq!(
            put(b"a\0copy", &[(b"L", 7), (b"M", 4)], false, b"copy"),
            Ok(())
        );
        assert_eq!(
            store.replica_get(b"a\0copy").unwrap(),
            Some(b"copy".to_vec())
        );
        assert_eq!(store.fence_seen(b"L").unwrap(), 9);
        assert_eq!(store.fence_seen(b"M").unwrap(), 4);
        store.flush().await.unwrap();
    }
    // The marks survive a restart.
    let store = Store::open(dir.path()).unwrap();
    assert_eq!(store.fence_seen(b"L").unwrap(), 9);
    assert_eq!(store.fence_seen(b"unknown").unwrap(), 0);
    assert_eq!(
        store
            .replica_update_fenced(b"a\0k", &[(b"L", 6)], true, |_| (Some(vec![]), ()))
            .unwrap(),
        Err((b"L".to_vec(), 9))
    );
    // Whether a mark rose, even when the entry is left as it was (then flush all the same).
    assert_eq!(
        store
            .replica_update_fenced(b"a\0k", &[(b"L", 10)], true, |_| (None, ()))
            .unwrap(),
        Ok(((), true))
    );
    assert_eq!(
        store
            .replica_update_fenced(b"a\0k", &[(b"L", 10)], true, |_| (None, ()))
            .unwrap(),
        Ok(((), false))
    );
}

/// Entry and hint counts kept on write agree with a scan of the trees, after writes,
/// replacements, removals and hints from several threads racing on the same keys, and again
/// after the store is opened anew (counted from the trees then).
#[tokio::test]
async fn counts_kept_on_write_agree_with_a_scan() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let scanned = |s: &Store| {
        let mut hints: std::collections::BTreeMap<String, usize> = Default::default();
        for target in ["n1", "n2", "n3"] {
            hints.insert(
                target.into(),
                s.hints_for(target, usize::MAX).unwrap().len(),
            );
        }
        (s.data.iter().count(), s.hints.iter().count(), hints)
    };
    let counted = |s: &Store| {
        let mut hints: std::collections::BTreeMap<String, usize> = Default::default();
        for target in ["n1", "n2", "n3"] {
            hints.insert(target.into(), s.hint_count_for(target));
        }
        (s.replica_len(), s.hint_count(), hints)
    };
    on_four_threads(3000, |x| {
        churn(&store, x, 5, |key, value| {
            let target = ["n1", "n2", "n3"][((x >> 40) % 3) as usize];
            if (x >> 50) % 5 == 3 {
                store.put_hint(target, key, value, |_, _| true).unwrap();
            } else {
                store.remove_hint(target, key, value).unwrap();
            }
        });
    });
    let (entries, hints, by_target) = scanned(&store);
    assert!(
        entries > 0 && hints > 0,
        "the workload left entries and hints"
    );
    assert_eq!(counted(&store), (entries, hints, by_target.clone()));
    drop(store);
    let again = Store::open(dir.path()).unwrap();
    assert_eq!(counted(&again), (entries, hints, by_target));
}

/// Calls `op` `n` times on each of four threads at once, with a pseudo-random number each
/// time (a different sequence per thread).
fn on_four_threads(n: usize, op: impl Fn(u64) + Sync) {
    std::thread::scope(|scope| {
        for t in 0..4u64 {
            let op = &op;
            scope.spawn(move || {
                let mut x = t + 1;
                for _ in 0..n {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    op(x);
                }
            });
        }
    });
}

/// One step of a workload racing on 200 keys and 3 values, picked by `x` (pseudo-random):
/// of `kinds` kinds of step, two in `kinds` write the value, one removes the key if it holds
/// the value, and the rest call `other` with the key and the value.
fn churn(store: &Store, x: u64, kinds: u64, other: impl FnOnce(&[u8], &[u8])) {
    let key = format!("k{}", (x >> 33) % 200).into_bytes();
    let value = ((x >> 20) % 3).to_le_bytes().to_vec();
    match (x >> 50) % kinds {
        0 | 1 => {
            store
                .replica_update(&key, |_| (Some(value.clone()), ()))
                .unwrap();
        }
        2 => {
            store.replica_remove_if(&key, &value).unwrap();
        }
        _ => other(&key, &value),
    }
}

/// A made-up ring point: the first eight bytes of the key's blake3 hash.
fn point(key: &[u8]) -> u64 {
    u64::from_be_bytes(blake3::hash(key).as_bytes()[..8].try_into().unwrap())
}

/// The keys of `data` with a point in `from..=to`, by reading them all.
fn keys_by_scan(s: &Store, from: u64, to: u64) -> Vec<Vec<u8>> {
    let mut keys: Vec<(u64, Vec<u8>)> = s
        .data
        .iter()
        .keys()
        .map(|k| k.unwrap().to_vec())
        .map(|k| (point(&k), k))
        .filter(|(p, _)| (from..=to).contains(p))
        .collect();
    keys.sort();
    keys.into_iter().map(|(_, k)| k).collect()
}

/// The keys the index by point finds in `from..=to`, each with its stored bytes as read.
fn keys_between(s: &Store, from: u64, to: u64) -> Vec<Vec<u8>> {
    s.replica_peek_between(from, to, |k, bytes| {
        assert_eq!(s.data.get(k).unwrap().as_deref(), Some(bytes), "{k:?}");
        Some(k.to_vec())
    })
    .unwrap()
}

/// The index by point lists the keys of a range as reading every key finds them, after
/// writes and removals racing from several threads; entries written before the index was
/// asked for are indexed then, and an index that lost an entry is rebuilt when the store opens.
#[test]
fn the_index_by_point_lists_the_keys_of_a_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for i in 0..50 {
        store
            .replica_update(format!("before{i}").as_bytes(), |_| {
                (Some(b"v".to_vec()), ())
            })
            .unwrap();
    }
    assert!(!store.replicas_indexed());
    assert!(store.index_replicas(point).unwrap());
    assert!(!store.index_replicas(point).unwrap(), "set once");
    on_four_threads(2000, |x| {
        let key = format!("k{}", (x >> 33) % 300).into_bytes();
        let value = ((x >> 20) % 2).to_le_bytes().to_vec();
        if (x >> 50) % 3 == 0 {
            store.replica_remove_if(&key, &value).unwrap();
        } else {
            store
                .replica_update(&key, |_| (Some(value.clone()), ()))
                .unwrap();
        }
    });
    let ranges = [
        (0, u64::MAX),
        (0, 1 << 62),
        (1 << 63, (1 << 63) + (1 << 61)),
        (u64::MAX - (1 << 60), u64::MAX),
    ];
    for (from, to) in ranges {
        let want = keys_by_scan(&store, from, to);
        assert!(!want.is_empty(), "the range {from}..={to} holds keys");
        assert_eq!(keys_between(&store, from, to), want);
    }
    // An index entry lost (as in a crash between the two writes) is found at the next open.
    let lost = store.points.iter().keys().next().unwrap().unwrap();
    store.points.remove(lost).unwrap();
    assert_ne!(
        keys_between(&store, 0, u64::MAX),
        keys_by_scan(&store, 0, u64::MAX)
    );
    drop(store);
    let again = Store::open(dir.path()).unwrap();
    again.index_replicas(point).unwrap();
    assert_eq!(
        keys_between(&again, 0, u64::MAX),
        keys_by_scan(&again, 0, u64::MAX)
    );
}

/// The contents of the journaled trees.
fn journaled_trees(s: &Store) -> [Vec<Record>; 3] {
    let all = |t: &sled::Tree| {
        t.iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
            .collect()
    };
    [all(&s.data), all(&s.points), all(&s.fences)]
}

fn segments(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir.join("journal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    found.sort();
    found
}

/// What a crash leaves: the journal's segments, and a database that never saw the changes
/// (sled flushes only at checkpoints). Opening the store redoes them: the data, its index and
/// the fences come back as they were, counted, and the replayed segments are deleted.
#[tokio::test]
async fn opening_the_store_redoes_the_journal() {
    let crashed = tempfile::tempdir().unwrap();
    drop(Store::open(crashed.path()).unwrap());

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    store.index_replicas(point).unwrap();
    on_four_threads(1500, |x| {
        churn(&store, x, 4, |_, _| {
            let lock = format!("L{}", (x >> 40) % 5).into_bytes();
            let token = (x >> 44) % 100;
            store
                .fence_raise(&[(&lock, token)], false)
                .unwrap()
                .unwrap();
        });
    });
    store.commit().await.unwrap();
    let want = journaled_trees(&store);
    assert!(
        want.iter().all(|t| !t.is_empty()),
        "the workload left data, index and fences"
    );
    for segment in segments(dir.path()) {
        std::fs::copy(
            &segment,
            crashed
                .path()
                .join("journal")
                .join(segment.file_name().unwrap()),
        )
        .unwrap();
    }
    let entries = store.replica_len();
    drop(store);

    let again = Store::open(crashed.path()).unwrap();
    assert_eq!(journaled_trees(&again), want);
    assert_eq!(again.replica_len(), entries);
    assert_eq!(
        segments(crashed.path()).len(),
        1,
        "the replayed segments are deleted"
    );
    again.index_replicas(point).unwrap();
    assert_eq!(
        keys_between(&again, 0, u64::MAX),
        keys_by_scan(&again, 0, u64::MAX)
    );
}

/// A full segment is checkpointed: sled flushed, then the segment deleted, while commits go on.
#[tokio::test]
async fn full_segments_are_checkpointed_and_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        journal_segment_bytes: 4096,
        ..StoreConfig::default()
    };
    let store = Store::open_with(dir.path(), &config).unwrap();
    for i in 0..500u32 {
        store
            .replica_update(&i.to_be_bytes(), |_| (Some(vec![7; 100]), ()))
            .unwrap();
        store.commit().await.unwrap();
    }
    let stats = store.journal_stats().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    // A checkpoint counts once its segment is deleted.
    while segments(dir.path()).len() > 1
        || stats.checkpoints.load(std::sync::atomic::Ordering::Relaxed) < 10
    {
        assert!(
            std::time::Instant::now() < deadline,
            "{:?}",
            segments(dir.path())
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // About 500 x 120 bytes in segments of 4 KiB: a dozen or more, all but the last deleted.
    assert!(stats.checkpoints.load(std::sync::atomic::Ordering::Relaxed) >= 10);
    assert_eq!(
        stats.changes.load(std::sync::atomic::Ordering::Relaxed),
        500
    );
    assert!(stats.syncs.load(std::sync::atomic::Ordering::Relaxed) >= 500);
}
