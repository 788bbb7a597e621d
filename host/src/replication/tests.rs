//! Pure tests of the replica's rules.

use super::replica::decide;
use super::*;

fn e(hlc: u64, value: Option<&str>) -> Entry {
    Entry {
        version: v(hlc),
        value: value.map(|v| v.as_bytes().to_vec()),
        fences: Vec::new(),
        expires: None,
    }
}

fn v(hlc: u64) -> Version {
    Version::at(hlc)
}

/// An entry written under lock `a` with `token`.
fn fenced(token: u64, hlc: u64, value: &str) -> Entry {
    Entry {
        version: Version { token, ..v(hlc) },
        value: Some(value.as_bytes().to_vec()),
        fences: vec![Fence {
            lock: "a".parse().unwrap(),
            token,
        }],
        expires: None,
    }
}

#[test]
fn a_write_under_a_later_grant_wins_over_a_newer_clock() {
    // The holder of token 7 wrote last by the clock, but token 8 was granted after it.
    let late = fenced(8, 100, "later holder");
    let early = fenced(7, 900, "earlier holder");
    assert_eq!(
        decide(Some(&late), &early),
        (false, PutOutcome::Stale(late.version))
    );
    assert_eq!(decide(Some(&early), &late), (true, PutOutcome::Applied));
    // An unfenced write stays below a fenced one, whatever its clock.
    assert!(!decide(Some(&early), &e(5_000, Some("plain"))).0);
}

#[test]
fn entries_stored_by_the_earlier_format_still_read() {
    // Before fencing an entry was postcard's (hlc, node, value).
    let old = postcard::to_stdvec(&((0x1234_0000_u64 << 16, 7u64), Some(b"v".to_vec()))).unwrap();
    assert!(
        old[0] >= 0x80,
        "a real clock's varint starts with a high byte"
    );
    let read = Entry::decode(&old).unwrap();
    assert_eq!(read.version.hlc, 0x1234_0000_u64 << 16);
    assert_eq!((read.version.node, read.version.token), (7, 0));
    assert_eq!(read.value.as_deref(), Some(&b"v"[..]));
    // And the current format reads back what it wrote, fences included.
    let now = fenced(42, 0x55 << 16, "x");
    assert_eq!(Entry::decode(&now.encode()).unwrap(), now);
    assert!(Entry::decode(&[1, 0xff]).is_err());
    // The version alone reads the same from both formats, without the value.
    assert_eq!(Entry::version_of(&old).unwrap(), read.version);
    assert_eq!(Entry::version_of(&now.encode()).unwrap(), now.version);
    let tombstone = Entry {
        value: None,
        ..fenced(3, 0x66 << 16, "gone")
    };
    assert_eq!(
        Entry::version_of(&tombstone.encode()).unwrap(),
        tombstone.version
    );
    assert!(Entry::version_of(&[1, 0xff]).is_err());
    // Before expiry, an entry was format 1 and postcard's (version, value, fences).
    let fenced_format = [
        vec![1],
        postcard::to_stdvec(&(now.version, now.value.clone(), now.fences.clone())).unwrap(),
    ]
    .concat();
    assert_eq!(Entry::decode(&fenced_format).unwrap(), now);
    assert_eq!(Entry::version_of(&fenced_format).unwrap(), now.version);
    // The current format keeps the expiry.
    let expiring = Entry {
        expires: Some(123_456),
        ..now.clone()
    };
    assert_eq!(Entry::decode(&expiring.encode()).unwrap(), expiring);
    assert_eq!(expiring.encode()[0], 2);
}

#[test]
fn an_entry_ends_when_deleted_or_expired() {
    let at = |ms: u64| Version::at(ms << 16);
    let value = Entry {
        version: at(1_000),
        ..e(0, Some("v"))
    };
    let expiring = Entry {
        expires: Some(5_000),
        ..value.clone()
    };
    let tombstone = Entry {
        value: None,
        ..value.clone()
    };
    // (entry, ends, live at 4,999 ms, live at 5,000 ms)
    for (entry, ends, before, after) in [
        (&value, None, true, true),
        (&expiring, Some(5_000), true, false),
        (&tombstone, Some(1_000), false, false),
    ] {
        assert_eq!(entry.ends(), ends, "{entry:?}");
        assert_eq!(entry.is_live(4_999), before, "{entry:?}");
        assert_eq!(entry.is_live(5_000), after, "{entry:?}");
        assert_eq!(entry.clone().read(4_999).is_some(), before, "{entry:?}");
        assert_eq!(entry.clone().read(5_000).is_some(), after, "{entry:?}");
    }
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
