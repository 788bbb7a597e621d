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
