//! Property tests for the ring, as seeded loops so every failure reproduces.

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

use super::*;

fn id(name: &str) -> NodeId {
    name.parse().unwrap()
}

fn node(name: &str, tags: &[&str]) -> RingNode {
    RingNode {
        node: id(name),
        tags: tags.iter().map(|t| t.to_string()).collect(),
    }
}

/// `node-1` to `node-k`, untagged.
fn cluster(k: usize) -> Vec<RingNode> {
    (1..=k).map(|i| node(&format!("node-{i}"), &[])).collect()
}

fn keys(rng: &mut StdRng, count: usize) -> Vec<[u8; 16]> {
    (0..count).map(|_| rng.random()).collect()
}

/// The first 8 bytes of blake3(bytes), big-endian, computed without the module's helpers.
fn blake3_head(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(blake3::hash(bytes).as_bytes()[..8].try_into().unwrap())
}

/// Asserts that no share exceeds `limit` times the average `1/k`.
fn check_balance(k: usize, shares: &[(NodeId, f64)], limit: f64, what: &str) -> f64 {
    assert_eq!(shares.len(), k);
    let total: f64 = shares.iter().map(|s| s.1).sum();
    assert!(
        (total - 1.0).abs() < 1e-9,
        "K={k}: {what} shares sum to {total}"
    );
    let (worst, share) = shares.iter().max_by(|a, b| a.1.total_cmp(&b.1)).unwrap();
    let ratio = share * k as f64;
    assert!(
        ratio <= limit,
        "K={k}: {worst}'s {what} share is {ratio:.4} times the average (limit {limit})"
    );
    ratio
}

#[test]
fn default_vnodes_balance_every_cluster_size() {
    let (mut primary, mut replica) = (0f64, 0f64);
    for k in 3..=100 {
        let ring = Ring::new(cluster(k), DEFAULT_VNODES);
        primary = primary.max(check_balance(k, &ring.shares(), 1.15, "primary"));
        replica = replica.max(check_balance(
            k,
            &ring.replica_shares(3),
            1.15,
            "replica (n=3)",
        ));
    }
    eprintln!(
        "largest share / average, 3 to 100 nodes: primary {primary:.3}, replicas {replica:.3}"
    );
}

/// For every arc on which `before` and `after` disagree about the primary, its length, keyed by
/// (old owner, new owner).
/// Exact: walks the tokens of both rings in order, and each arc between consecutive tokens of
/// either ring has one owner in each (the next token of that ring, wrapping).
fn moved(before: &Ring, after: &Ring) -> BTreeMap<(NodeId, NodeId), u128> {
    let (a, b) = (&before.tokens, &after.tokens);
    let last = a[a.len() - 1].0.max(b[b.len() - 1].0);
    let (mut i, mut j, mut prev) = (0, 0, None);
    let mut out = BTreeMap::new();
    while i < a.len() || j < b.len() {
        let p = a
            .get(i)
            .map_or(u64::MAX, |t| t.0)
            .min(b.get(j).map_or(u64::MAX, |t| t.0));
        let arc = match prev {
            Some(prev) => u128::from(p - prev),
            None => CIRCLE - u128::from(last - p),
        };
        let from = &before.nodes[a.get(i).unwrap_or(&a[0]).1 as usize].node;
        let to = &after.nodes[b.get(j).unwrap_or(&b[0]).1 as usize].node;
        if from != to {
            *out.entry((from.clone(), to.clone())).or_insert(0) += arc;
        }
        while a.get(i).is_some_and(|t| t.0 == p) {
            i += 1;
        }
        while b.get(j).is_some_and(|t| t.0 == p) {
            j += 1;
        }
        prev = Some(p);
    }
    out
}

/// Checks one membership change: keys move only from `gone` or only to `new`, the moved
/// fraction equals that node's share, and it is within 10% of `ideal`.
fn check_move(
    k: usize,
    before: &Ring,
    after: &Ring,
    changed: &NodeId,
    ideal: f64,
    rng: &mut StdRng,
) -> f64 {
    let joined = after.contains(changed);
    // A join may only move keys to the new node, a leave only from the old one.
    let allowed = |from: &NodeId, to: &NodeId| if joined { to } else { from } == changed;
    let moves = moved(before, after);
    for (from, to) in moves.keys() {
        assert!(
            allowed(from, to),
            "K={k}: changing {changed} moved keys from {from} to {to}"
        );
    }
    let fraction = moves.values().sum::<u128>() as f64 / CIRCLE as f64;
    let ring = if joined { after } else { before };
    let share = ring
        .shares()
        .into_iter()
        .find(|s| &s.0 == changed)
        .unwrap()
        .1;
    assert!(
        (fraction - share).abs() < 1e-12,
        "K={k}: moved {fraction} but {changed} owns {share}"
    );
    assert!(
        (fraction - ideal).abs() <= 0.1 * ideal,
        "K={k}: changing {changed} moved {:.4} of the ideal fraction",
        fraction / ideal
    );
    for key in keys(rng, 20_000) {
        let (from, to) = (&before.replicas(&key, 1)[0], &after.replicas(&key, 1)[0]);
        if from != to {
            assert!(
                allowed(from, to),
                "K={k}: key {key:?} moved from {from} to {to}"
            );
        }
    }
    (fraction - ideal).abs() / ideal
}

#[test]
fn membership_changes_move_only_the_changed_nodes_keys() {
    let mut rng = StdRng::seed_from_u64(1);
    let mut ring = Ring::new(cluster(3), DEFAULT_VNODES);
    let (mut join, mut leave) = (0f64, 0f64);
    for k in 3..=100 {
        let new = id(&format!("node-{}", k + 1));
        let grown = Ring::new(cluster(k + 1), DEFAULT_VNODES);
        join = join.max(check_move(
            k,
            &ring,
            &grown,
            &new,
            1.0 / (k + 1) as f64,
            &mut rng,
        ));

        let gone = id(&format!("node-{}", rng.random_range(1..=k)));
        let shrunk = Ring::new(
            cluster(k).into_iter().filter(|n| n.node != gone),
            DEFAULT_VNODES,
        );
        leave = leave.max(check_move(
            k,
            &ring,
            &shrunk,
            &gone,
            1.0 / k as f64,
            &mut rng,
        ));
        ring = grown;
    }
    eprintln!("moved fraction off the ideal, 3 to 100 nodes: join {join:.3}, leave {leave:.3}");
}

#[test]
fn placement_does_not_depend_on_input_order() {
    let mut rng = StdRng::seed_from_u64(2);
    for k in [1, 2, 5, 17] {
        let ring = Ring::new(cluster(k), 64);
        let mut shuffled = cluster(k);
        shuffled.shuffle(&mut rng);
        // Duplicates are counted once.
        shuffled.extend(cluster(k).into_iter().take(2));
        let other = Ring::new(shuffled, 64);
        assert_eq!(other.nodes(), ring.nodes());
        assert_eq!(other.fingerprint(), ring.fingerprint());
        assert_eq!(other.shares(), ring.shares());
        assert_eq!(other.replica_shares(3), ring.replica_shares(3));
        for key in keys(&mut rng, 1_000) {
            assert_eq!(
                other.replicas(&key, 3),
                ring.replicas(&key, 3),
                "K={k} key {key:?}"
            );
        }
    }
}

/// The replicas by definition, in O(ring): nodes by their nearest token at or after the point,
/// ties by name.
fn replicas_model(ring: &Ring, point: u64, n: usize) -> Vec<NodeId> {
    let mut nearest: BTreeMap<&NodeId, u64> = BTreeMap::new();
    for &(token, i) in &ring.tokens {
        let d = nearest
            .entry(&ring.nodes[i as usize].node)
            .or_insert(u64::MAX);
        *d = (*d).min(token.wrapping_sub(point));
    }
    let mut order: Vec<(u64, &NodeId)> = nearest.into_iter().map(|(n, d)| (d, n)).collect();
    order.sort();
    order.into_iter().take(n).map(|(_, n)| n.clone()).collect()
}

#[test]
fn replicas_are_the_first_distinct_nodes_clockwise() {
    let mut rng = StdRng::seed_from_u64(3);
    for k in 0..=12 {
        let ring = Ring::new(cluster(k), 16);
        assert_eq!((ring.len(), ring.is_empty()), (k, k == 0));
        for key in keys(&mut rng, 200) {
            let point = Ring::point(&key);
            for n in 0..=k + 2 {
                let got = ring.replicas(&key, n);
                assert_eq!(
                    got,
                    replicas_model(&ring, point, n),
                    "K={k} n={n} key {key:?}"
                );
                assert_eq!(got, ring.replicas_at(point, n));
                assert_eq!(got.len(), n.min(k));
                let mut distinct = got.clone();
                distinct.sort();
                distinct.dedup();
                assert_eq!(distinct.len(), got.len(), "K={k} n={n}: {got:?}");
                if n > 0 && k > 0 {
                    assert_eq!(got[0], ring.replicas(&key, 1)[0]);
                }
                assert!(got.iter().all(|n| ring.contains(n)));
            }
        }
    }
}

#[test]
fn ranges_cover_the_circle_once_with_their_points_replicas() {
    let mut rng = StdRng::seed_from_u64(5);
    for k in 0..=6 {
        let ring = Ring::new(cluster(k), 8);
        let ranges = ring.ranges(3);
        if k == 0 {
            assert!(ranges.is_empty());
            continue;
        }
        // Contiguous from 0 to the top, in order.
        assert_eq!(ranges[0].0, 0);
        assert_eq!(ranges.last().unwrap().1, u64::MAX);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].1.checked_add(1), Some(pair[1].0), "K={k}");
        }
        // Each range's ends and random points inside it have its replicas.
        for (from, to, replicas) in &ranges {
            assert!(from <= to);
            let inside = rng.random_range(*from..=*to);
            for point in [*from, *to, inside] {
                assert_eq!(&ring.replicas_at(point, 3), replicas, "K={k} point {point}");
            }
        }
    }
}

#[test]
fn a_point_on_a_token_belongs_to_that_token() {
    for k in 1..=6 {
        let ring = Ring::new(cluster(k), 8);
        let mut points = vec![0, u64::MAX];
        for &(t, _) in &ring.tokens {
            points.extend([t, t.wrapping_add(1), t.wrapping_sub(1)]);
        }
        for point in points {
            for n in 0..=k {
                let expected = replicas_model(&ring, point, n);
                assert_eq!(
                    ring.replicas_at(point, n),
                    expected,
                    "K={k} n={n} point {point}"
                );
            }
        }
    }
}

#[test]
fn small_rings() {
    let empty = Ring::new([], DEFAULT_VNODES);
    assert_eq!(empty.replicas(b"k", 3), Vec::<NodeId>::new());
    assert_eq!(empty.shares(), vec![]);
    assert_eq!(empty.replica_shares(3), vec![]);
    assert!(!empty.contains(&id("a")));

    // vnodes is clamped to 1, and a single token owns the whole circle.
    let one = Ring::new([node("a", &[])], 0);
    assert_eq!(one.replicas(b"k", 3), vec![id("a")]);
    assert_eq!(one.shares(), vec![(id("a"), 1.0)]);
    assert_eq!(one.replica_shares(3), vec![(id("a"), 1.0)]);
    assert_eq!(one.replica_shares(0), vec![(id("a"), 0.0)]);

    let two = Ring::new([node("b", &[]), node("a", &[])], 8);
    assert_eq!(two.nodes(), vec![id("a"), id("b")]);
    assert_eq!(two.replica_shares(2), vec![(id("a"), 0.5), (id("b"), 0.5)]);
    assert!(two.contains(&id("b")) && !two.contains(&id("c")));
}

#[test]
fn placement_keeps_a_copy_on_a_tagged_node() {
    let mut rng = StdRng::seed_from_u64(4);
    let server = TagRule {
        require_tag: Some("server".to_string()),
    };
    let mut nodes = cluster(8);
    nodes.push(node("big-1", &["server", "ssd"]));
    nodes.push(node("big-2", &["server"]));
    let ring = Ring::new(nodes, 64);
    let untagged = Ring::new(cluster(10), 64);
    let is_server = |n: &NodeId| n.as_str().starts_with("big-");
    let (mut replaced, mut kept) = (0, 0);
    for key in keys(&mut rng, 2_000) {
        let plain = ring.replicas(&key, 3);
        let placed = ring.replicas_placed(&key, 3, &server);
        assert!(placed.iter().any(is_server), "key {key:?}: {placed:?}");
        if plain.iter().any(is_server) {
            assert_eq!(placed, plain);
            kept += 1;
        } else {
            assert_eq!(placed[..2], plain[..2]);
            assert_ne!(placed[2], plain[2]);
            // The first server clockwise from the key, which is the nearest in the model.
            let servers = replicas_model(&ring, Ring::point(&key), 10);
            assert_eq!(Some(&placed[2]), servers.iter().find(|n| is_server(n)));
            replaced += 1;
        }
        assert_eq!(ring.replicas_placed(&key, 3, &TagRule::default()), plain);
        assert_eq!(ring.replicas_placed(&key, 0, &server), vec![]);
        let plain = untagged.replicas(&key, 3);
        assert_eq!(untagged.replicas_placed(&key, 3, &server), plain);
    }
    assert!(replaced > 0 && kept > 0, "replaced {replaced}, kept {kept}");
}

#[test]
fn duplicate_names_merge_their_tags() {
    let server = TagRule {
        require_tag: Some("server".to_string()),
    };
    let check = |nodes: Vec<RingNode>| {
        let ring = Ring::new(nodes, 16);
        assert_eq!(ring.len(), 2);
        assert_eq!(ring.replicas_placed(b"k", 1, &server), vec![id("a")]);
    };
    check(vec![node("a", &["server"]), node("b", &[]), node("a", &[])]);
    check(vec![node("a", &[]), node("b", &[]), node("a", &["server"])]);
}

#[test]
fn the_fingerprint_changes_with_whatever_places_keys() {
    let base = Ring::new(cluster(3), 64);
    let others = [
        Ring::new(cluster(4), 64),
        Ring::new(cluster(2), 64),
        Ring::new(cluster(3), 65),
        Ring::new(
            cluster(3).into_iter().enumerate().map(|(i, n)| {
                if i == 1 {
                    node(n.node.as_str(), &["server"])
                } else {
                    n
                }
            }),
            64,
        ),
    ];
    for (i, other) in others.iter().enumerate() {
        assert_ne!(other.fingerprint(), base.fingerprint(), "case {i}");
    }
    assert_eq!(Ring::new(cluster(3), 64).fingerprint(), base.fingerprint());
}

#[test]
fn hashing_is_pinned() {
    // A change here reshuffles every key in a running cluster.
    assert_eq!(Ring::point(b"hello"), blake3_head(b"hello"));
    assert_eq!(Ring::point(b"hello"), 0xea8f_163d_b386_8292);
    let ring = Ring::new([node("node-1", &[])], 2);
    let mut expected = vec![
        (blake3_head(b"node-1\0\0\0\0\0"), 0),
        (blake3_head(b"node-1\0\0\0\0\x01"), 0),
    ];
    expected.sort();
    assert_eq!(ring.tokens, expected);
}
