//! Tombstones this node collected lately, so that a copy still on its way cannot bring one
//! back.
//!
//! The primary of a deleted key tells the other owners to drop its tombstone and drops its
//! own copy last. In between, an anti-entropy round of an owner that already dropped it can
//! copy it back from the primary (or a round read before the drop can deliver it after).
//! The key stays deleted either way, but the tombstone lives on and is collected again.
//! Each node therefore remembers, for a while, the exact tombstones it dropped and refuses
//! those copies. Nothing is lost by refusing: every owner agreed to drop that very version.
//! The memory is bounded; a node that forgets (restart, or more than [`REMEMBERED`]
//! collections in one window) at worst collects a tombstone twice.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Version;

/// At most this many collected tombstones are remembered; the oldest are forgotten first.
pub(crate) const REMEMBERED: usize = 65_536;

/// The tombstones this node dropped in the last [`Collected::keep`].
pub(crate) struct Collected {
    keep: Duration,
    inner: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    by_key: HashMap<Vec<u8>, (Version, Instant)>,
    /// Keys in the order they were remembered (a key remembered twice is listed twice).
    order: VecDeque<(Instant, Vec<u8>)>,
}

impl Collected {
    /// Remembers each collection for `keep`.
    pub(crate) fn new(keep: Duration) -> Self {
        Self {
            keep,
            inner: Mutex::default(),
        }
    }

    /// This node dropped the tombstone `version` of `key` at `now`.
    pub(crate) fn remember(&self, key: &[u8], version: Version, now: Instant) {
        let mut m = self.inner.lock().expect("collected");
        m.by_key.insert(key.to_vec(), (version, now));
        m.order.push_back((now, key.to_vec()));
        while let Some((at, _)) = m.order.front() {
            let expired = now.saturating_duration_since(*at) > self.keep;
            if !expired && m.order.len() <= REMEMBERED {
                break;
            }
            let (at, key) = m.order.pop_front().expect("front");
            // Only if the key was not remembered again since.
            if m.by_key.get(&key).is_some_and(|(_, when)| *when == at) {
                m.by_key.remove(&key);
            }
        }
    }

    /// Whether `version` of `key` is a tombstone this node dropped within the last `keep`.
    pub(crate) fn holds(&self, key: &[u8], version: Version, now: Instant) -> bool {
        let m = self.inner.lock().expect("collected");
        m.by_key
            .get(key)
            .is_some_and(|(v, at)| *v == version && now.saturating_duration_since(*at) <= self.keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(hlc: u64) -> Version {
        Version::at(hlc)
    }

    #[test]
    fn exactly_the_collected_version_is_refused_and_only_for_a_while() {
        let c = Collected::new(Duration::from_secs(10));
        let t0 = Instant::now();
        c.remember(b"k", v(5), t0);
        let cases = [
            // key, version, seconds after, refused?
            (&b"k"[..], 5, 0, true),
            (b"k", 5, 10, true),
            (b"k", 5, 11, false),
            (b"k", 6, 1, false),
            (b"k", 4, 1, false),
            (b"other", 5, 1, false),
        ];
        for (i, (key, hlc, after, refused)) in cases.into_iter().enumerate() {
            let now = t0 + Duration::from_secs(after);
            assert_eq!(c.holds(key, v(hlc), now), refused, "case {i}");
        }
    }

    #[test]
    fn memory_stays_bounded_and_forgets_the_oldest_first() {
        let c = Collected::new(Duration::from_secs(3600));
        let t0 = Instant::now();
        for i in 0..REMEMBERED + 10 {
            c.remember(&(i as u64).to_be_bytes(), v(1), t0);
        }
        let m = c.inner.lock().unwrap();
        assert_eq!((m.by_key.len(), m.order.len()), (REMEMBERED, REMEMBERED));
        drop(m);
        assert!(!c.holds(&0u64.to_be_bytes(), v(1), t0));
        assert!(c.holds(&((REMEMBERED + 9) as u64).to_be_bytes(), v(1), t0));
        // A key remembered again is kept by its later time when its first turn expires.
        let late = t0 + Duration::from_secs(3000);
        c.remember(&((REMEMBERED + 9) as u64).to_be_bytes(), v(2), late);
        let later = late + Duration::from_secs(1000);
        c.remember(b"new", v(3), later);
        assert!(c.holds(&((REMEMBERED + 9) as u64).to_be_bytes(), v(2), later));
        let m = c.inner.lock().unwrap();
        assert_eq!(
            m.by_key.len(),
            2,
            "the expired ones went, the renewed one stayed"
        );
    }
}
