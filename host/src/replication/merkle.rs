//! The hash tree two replicas compare in anti-entropy. Pure.
//!
//! The key space is cut into [`LEAVES`] ranges by the top bits of each key's ring point, and
//! each of those into [`FINE`]` / LEAVES` finer ranges by the next bits. A leaf (and a fine
//! range) is the XOR of blake3 hashes of the `(key, version)` pairs in its range, so it does
//! not depend on the order entries are added in. The root is a binary blake3 tree over the
//! leaves. Two replicas holding the same versions of the same keys have equal roots; where
//! they differ, the differing leaves say which fine ranges to compare, and the differing fine
//! ranges which keys. Fine ranges are kept only where they hold something, so a tree costs
//! memory for the ranges a node shares with a peer, not for the whole circle.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::version::Version;

/// Leaves of the tree (ranges of the ring).
pub const LEAVES: usize = 1024;

/// Fine ranges of the ring (each leaf holds `FINE / LEAVES` of them).
pub const FINE: usize = 65_536;

/// The leaf holding a key whose ring point is `point`.
pub fn leaf_of(point: u64) -> usize {
    (point >> (64 - LEAVES.trailing_zeros())) as usize
}

/// The fine range holding a key whose ring point is `point`.
pub fn fine_of(point: u64) -> u16 {
    (point >> (64 - FINE.trailing_zeros())) as u16
}

/// The fine ranges of leaf `leaf` (none for a leaf past the last, as a malformed peer may
/// name).
pub fn fine_in(leaf: u16) -> std::ops::Range<u32> {
    if usize::from(leaf) >= LEAVES {
        return 0..0;
    }
    let per = (FINE / LEAVES) as u32;
    u32::from(leaf) * per..(u32::from(leaf) + 1) * per
}

/// The first and last ring point of fine range `fine`.
pub fn fine_points(fine: u16) -> (u64, u64) {
    let shift = 64 - FINE.trailing_zeros();
    let from = u64::from(fine) << shift;
    (from, from | ((1u64 << shift) - 1))
}

/// A tree's leaves, and its fine ranges (kept locally, never sent whole).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Leaves {
    top: Vec<[u8; 32]>,
    /// The fine ranges that hold something.
    #[serde(skip)]
    fine: rustc_hash::FxHashMap<u16, [u8; 32]>,
}

impl std::fmt::Debug for Leaves {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Leaves(root {})",
            blake3::Hash::from(self.root()).to_hex()
        )
    }
}

impl Default for Leaves {
    fn default() -> Self {
        Leaves {
            top: vec![[0; 32]; LEAVES],
            fine: Default::default(),
        }
    }
}

fn xor(into: &mut [u8; 32], hash: &[u8; 32]) {
    for (a, b) in into.iter_mut().zip(hash) {
        *a ^= b;
    }
}

/// The hash of an entry in a tree: `deleted` whether it is a tombstone.
pub fn entry_hash(key: &[u8], version: Version, deleted: bool) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&(key.len() as u64).to_le_bytes());
    h.update(key);
    h.update(&version.token.to_le_bytes());
    h.update(&version.hlc.to_le_bytes());
    h.update(&version.node.to_le_bytes());
    h.update(&[deleted as u8]);
    *h.finalize().as_bytes()
}

impl Leaves {
    /// Adds an entry: `point` is the key's ring point, `deleted` whether it is a tombstone.
    /// Adding it again takes it back out.
    pub fn add(&mut self, point: u64, key: &[u8], version: Version, deleted: bool) {
        self.add_hash(point, &entry_hash(key, version, deleted));
    }

    /// Adds (or takes back out) an entry by its [`entry_hash`], for a caller adding one entry
    /// to several trees.
    pub fn add_hash(&mut self, point: u64, hash: &[u8; 32]) {
        xor(&mut self.top[leaf_of(point)], hash);
        let fine = fine_of(point);
        let range = self.fine.entry(fine).or_default();
        xor(range, hash);
        if *range == [0; 32] {
            self.fine.remove(&fine);
        }
    }

    /// The root of the tree over the leaves.
    pub fn root(&self) -> [u8; 32] {
        let mut level: Vec<[u8; 32]> = self.top.clone();
        while level.len() > 1 {
            level = level
                .chunks(2)
                .map(|pair| {
                    let mut h = blake3::Hasher::new();
                    for node in pair {
                        h.update(node);
                    }
                    *h.finalize().as_bytes()
                })
                .collect();
        }
        level[0]
    }

    /// The leaves (ranges) where `self` and `other` differ. A malformed `other` (wrong
    /// number of leaves) differs everywhere.
    pub fn differing(&self, other: &Leaves) -> Vec<u16> {
        if other.top.len() != LEAVES {
            return (0..LEAVES as u16).collect();
        }
        (0..LEAVES)
            .filter(|&i| self.top[i] != other.top[i])
            .map(|i| i as u16)
            .collect()
    }

    /// The fine ranges of `leaves` that hold something, with their hashes.
    pub fn fine(&self, leaves: &[u16]) -> Vec<(u16, [u8; 32])> {
        leaves
            .iter()
            .flat_map(|&leaf| fine_in(leaf))
            .filter_map(|f| self.fine.get(&(f as u16)).map(|h| (f as u16, *h)))
            .collect()
    }

    /// The fine ranges of `leaves` where `self` differs from `theirs` (another tree's
    /// [`Leaves::fine`] of the same leaves).
    pub fn differing_fine(&self, leaves: &[u16], theirs: &[(u16, [u8; 32])]) -> Vec<u16> {
        let theirs: HashMap<u16, [u8; 32]> = theirs.iter().copied().collect();
        let zero = [0; 32];
        leaves
            .iter()
            .flat_map(|&leaf| fine_in(leaf))
            .map(|f| f as u16)
            .filter(|f| self.fine.get(f).unwrap_or(&zero) != theirs.get(f).unwrap_or(&zero))
            .collect()
    }

    /// The leaves alone (what a peer is sent).
    pub fn top_only(&self) -> Leaves {
        Leaves {
            top: self.top.clone(),
            fine: Default::default(),
        }
    }

    /// Whether the tree holds nothing.
    pub fn is_empty(&self) -> bool {
        self.top.iter().all(|l| *l == [0; 32])
    }
}

/// Takes `leaves` in order while what they hold fits `budget` bytes (`size` of each item),
/// and at least one leaf: the leaves covered and their items. `read` reads one leaf and is
/// called only when its turn comes, so at most one leaf past the budget is ever read.
pub(crate) fn cover<T, E>(
    leaves: &[u16],
    budget: usize,
    size: impl Fn(&T) -> usize,
    mut read: impl FnMut(u16) -> Result<Vec<T>, E>,
) -> Result<(Vec<u16>, Vec<T>), E> {
    let (mut covered, mut out, mut total) = (Vec::new(), Vec::new(), 0);
    for &leaf in leaves {
        let found = read(leaf)?;
        let bytes: usize = found.iter().map(&size).sum();
        if total + bytes > budget && !covered.is_empty() {
            break;
        }
        total += bytes;
        covered.push(leaf);
        out.extend(found);
    }
    Ok((covered, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `cover` over leaves holding `held[leaf]` items of 10 bytes each: the leaves covered,
    /// how many items came back, and the leaves read.
    fn check_cover(held: &[usize], budget: usize, want: (&[u16], usize, &[u16])) {
        let leaves: Vec<u16> = (0..held.len() as u16).collect();
        let mut read = Vec::new();
        let (covered, items) = cover::<u8, ()>(
            &leaves,
            budget,
            |_| 10,
            |leaf| {
                read.push(leaf);
                Ok(vec![0; held[leaf as usize]])
            },
        )
        .unwrap();
        assert_eq!(
            (covered.as_slice(), items.len(), read.as_slice()),
            want,
            "held {held:?}, budget {budget}"
        );
    }

    #[test]
    fn an_answer_covers_whole_leaves_within_its_budget_and_reads_one_leaf_past_it_at_most() {
        // Everything fits.
        check_cover(&[1, 2, 3], usize::MAX, (&[0, 1, 2], 6, &[0, 1, 2]));
        // Exactly at the budget, then one leaf over it: that leaf is read, not answered,
        // and no leaf after it is read.
        check_cover(&[1, 2, 3, 4], 30, (&[0, 1], 3, &[0, 1, 2]));
        // A first leaf bigger than the budget is still answered (or nothing would progress).
        check_cover(&[5, 1], 20, (&[0], 5, &[0, 1]));
        // Empty leaves cost nothing.
        check_cover(&[0, 0, 2, 0], 20, (&[0, 1, 2, 3], 2, &[0, 1, 2, 3]));
        check_cover(&[], 20, (&[], 0, &[]));
    }

    fn v(hlc: u64) -> Version {
        Version::at(hlc)
    }

    fn tree(entries: &[(u64, &str, u64, bool)]) -> Leaves {
        let mut t = Leaves::default();
        for &(point, key, hlc, deleted) in entries {
            t.add(point, key.as_bytes(), v(hlc), deleted);
        }
        t
    }

    #[test]
    fn equal_sets_in_any_order_have_equal_roots() {
        let a = tree(&[
            (1, "a", 1, false),
            (u64::MAX, "b", 2, false),
            (1 << 60, "c", 3, true),
        ]);
        let b = tree(&[
            (1 << 60, "c", 3, true),
            (1, "a", 1, false),
            (u64::MAX, "b", 2, false),
        ]);
        assert_eq!(a.root(), b.root());
        assert!(a.differing(&b).is_empty());
        assert!(Leaves::default().is_empty() && !a.is_empty());
    }

    #[test]
    fn a_different_version_or_a_tombstone_shows_in_the_root_and_its_leaf() {
        let base = tree(&[(5, "a", 1, false), (u64::MAX, "b", 2, false)]);
        let newer = tree(&[(5, "a", 9, false), (u64::MAX, "b", 2, false)]);
        let deleted = tree(&[(5, "a", 1, true), (u64::MAX, "b", 2, false)]);
        let missing = tree(&[(u64::MAX, "b", 2, false)]);
        for other in [&newer, &deleted, &missing] {
            assert_ne!(base.root(), other.root());
            assert_eq!(base.differing(other), vec![0]);
        }
        assert_eq!(leaf_of(u64::MAX), LEAVES - 1);
    }

    #[test]
    fn fine_ranges_say_which_part_of_a_differing_leaf_differs() {
        let (per, step) = ((FINE / LEAVES) as u64, 1u64 << 48);
        // Two keys in leaf 3, in its fine ranges 0 and 5; one in leaf 9.
        let (p0, p5, p9) = (3 * per * step, (3 * per + 5) * step + 7, 9 * per * step);
        let a = tree(&[
            (p0, "a", 1, false),
            (p5, "b", 1, false),
            (p9, "c", 1, false),
        ]);
        let b = tree(&[
            (p0, "a", 1, false),
            (p5, "b", 2, false),
            (p9, "c", 1, false),
        ]);
        assert_eq!(a.differing(&b), vec![3]);
        let fine_b = b.fine(&[3]);
        assert_eq!(fine_b.len(), 2);
        assert_eq!(a.differing_fine(&[3], &fine_b), vec![(3 * per + 5) as u16]);
        // A key only one side holds, and one whose copies took it back out.
        let missing = tree(&[(p0, "a", 1, false), (p9, "c", 1, false)]);
        assert_eq!(
            a.differing_fine(&[3], &missing.fine(&[3])),
            vec![(3 * per + 5) as u16]
        );
        let mut gone = a.clone();
        gone.add(p5, b"b", v(1), false);
        assert_eq!(gone, missing);
        assert_eq!(fine_of(p5), (3 * per + 5) as u16);
        // A leaf past the last (a malformed peer's) holds no fine range.
        assert!(fine_in(LEAVES as u16).is_empty() && a.fine(&[u16::MAX]).is_empty());
        for f in [0u16, 1, 4097, u16::MAX] {
            let (from, to) = fine_points(f);
            assert_eq!((fine_of(from), fine_of(to)), (f, f));
            assert!(fine_in(leaf_of(from) as u16).contains(&u32::from(f)));
            assert!(from == 0 || fine_of(from - 1) == f - 1);
            assert!(to == u64::MAX || fine_of(to + 1) == f + 1);
        }
    }

    #[test]
    fn a_malformed_peer_tree_differs_everywhere() {
        let short = Leaves {
            top: vec![[0; 32]; 3],
            fine: Default::default(),
        };
        assert_eq!(Leaves::default().differing(&short).len(), LEAVES);
    }
}
