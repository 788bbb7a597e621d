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
        // current, incoming, expect, stored?, answer
        (None, e(5, Some("a")), None, true, PutOutcome::Applied),
        (
            Some(e(5, Some("a"))),
            e(6, Some("b")),
            None,
            true,
            PutOutcome::Applied,
        ),
        (
            Some(e(6, Some("b"))),
            e(5, Some("a")),
            None,
            false,
            PutOutcome::Stale(v(6)),
        ),
        (
            Some(e(5, Some("a"))),
            e(5, Some("a")),
            None,
            false,
            PutOutcome::Applied,
        ),
        // A tombstone is a version like any other: an older write does not resurrect the key.
        (
            Some(e(7, None)),
            e(6, Some("old")),
            None,
            false,
            PutOutcome::Stale(v(7)),
        ),
        (
            Some(e(7, None)),
            e(8, Some("new")),
            None,
            true,
            PutOutcome::Applied,
        ),
    ];
    for (i, (current, incoming, expect, stored, answer)) in cases.into_iter().enumerate() {
        assert_eq!(
            decide(current.as_ref(), &incoming, expect),
            (stored, answer),
            "case {i}"
        );
    }
}

#[test]
fn conditional_writes_compare_the_live_version() {
    let cases = [
        (None, Expect::Absent, true, PutOutcome::Applied),
        (Some(e(7, None)), Expect::Absent, true, PutOutcome::Applied),
        (
            Some(e(5, Some("a"))),
            Expect::Absent,
            false,
            PutOutcome::Conflict(Some(v(5))),
        ),
        (
            Some(e(5, Some("a"))),
            Expect::Version(v(5)),
            true,
            PutOutcome::Applied,
        ),
        (
            Some(e(5, Some("a"))),
            Expect::Version(v(4)),
            false,
            PutOutcome::Conflict(Some(v(5))),
        ),
        (
            None,
            Expect::Version(v(4)),
            false,
            PutOutcome::Conflict(None),
        ),
    ];
    for (i, (current, expect, stored, answer)) in cases.into_iter().enumerate() {
        let incoming = e(9, Some("new"));
        assert_eq!(
            decide(current.as_ref(), &incoming, Some(expect)),
            (stored, answer),
            "case {i}"
        );
    }
    // A retried conditional write that already landed is acknowledged, not a conflict.
    let landed = e(9, Some("new"));
    assert_eq!(
        decide(Some(&landed), &landed, Some(Expect::Version(v(5)))),
        (false, PutOutcome::Applied)
    );
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
