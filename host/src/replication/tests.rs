//! Pure tests of the replica's rules.

use super::replica::decide;
use super::*;

fn e(hlc: u64, value: Option<&str>) -> Entry {
    Entry {
        version: Version { hlc, node: 1 },
        value: value.map(|v| v.as_bytes().to_vec()),
    }
}

fn v(hlc: u64) -> Version {
    Version { hlc, node: 1 }
}

#[test]
fn the_newest_version_wins_and_older_writes_learn_of_it() {
    let cases = [
        // current, incoming, stored?, answer
        (None, e(5, Some("a")), true, PutOutcome::Applied),
        (
            Some(e(5, Some("a"))),
            e(6, Some("b")),
            true,
            PutOutcome::Applied,
        ),
        (
            Some(e(6, Some("b"))),
            e(5, Some("a")),
            false,
            PutOutcome::Stale(v(6)),
        ),
        (
            Some(e(5, Some("a"))),
            e(5, Some("a")),
            false,
            PutOutcome::Applied,
        ),
        // A tombstone is a version like any other: an older write does not resurrect the key.
        (
            Some(e(7, None)),
            e(6, Some("old")),
            false,
            PutOutcome::Stale(v(7)),
        ),
        (
            Some(e(7, None)),
            e(8, Some("new")),
            true,
            PutOutcome::Applied,
        ),
    ];
    for (i, (current, incoming, stored, answer)) in cases.into_iter().enumerate() {
        assert_eq!(
            decide(current.as_ref(), &incoming),
            (stored, answer),
            "case {i}"
        );
    }
}

#[test]
fn namespaces_are_checked_and_keep_keys_apart() {
    for good in ["a", "fn.counter", "users-2", "x_y.z"] {
        assert!(good.parse::<Namespace>().is_ok(), "{good}");
    }
    for bad in ["", ".a", "A", "a/b", "a b", &"n".repeat(65)] {
        assert!(bad.parse::<Namespace>().is_err(), "{bad:?}");
    }
    let a: Namespace = "a".parse().unwrap();
    let ab: Namespace = "ab".parse().unwrap();
    assert_ne!(a.key(b"bc"), ab.key(b"c"));
    assert_eq!(namespace_of(&a.key(b"k")), "a");
}
