//! A model of anti-entropy at a size no test machine holds: 100 nodes with 10 million keys
//! each. Test only.
//!
//! It uses the real ring (1024 virtual nodes a node), the real ranges of the tree
//! (`merkle::leaf_of`, `merkle::fine_of`), the real budget of an answer (`merkle::cover` with
//! `ANSWER_BYTES`) and the real wire encoding of every message, and counts instead of
//! reading: how many entries each node holds in each fine range it shares with each peer
//! follows from the ring's geometry (keys hash uniformly), so no key is stored. Divergent keys
//! are real keys placed on the real ring; each was missed by one of its three replicas. A
//! round is what `anti_entropy_round` does: every node sends every peer the root of their
//! tree; a pair whose trees differ sends the leaves, gets the fine ranges of the differing
//! leaves back, lists both sides' versions of the differing fine ranges (as many as fit one
//! answer per exchange) and moves the entries one side lacks.
//!
//! `cargo test -p weft-host --lib replication::model -- --nocapture` prints the table;
//! `WEFT_LONG=1` adds a million divergent keys.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::merkle::{FINE, LEAVES, Leaves, cover, fine_in, fine_of, fine_points, leaf_of};
use super::wire::{KvWire, Request, Response};
use super::{ANSWER_BYTES, Entry, Version};
use crate::id::NodeId;
use crate::ring::{DEFAULT_VNODES, Ring, RingNode};

const NODES: usize = 100;
const KEYS_PER_NODE: f64 = 10_000_000.0;
const N: usize = 3;
/// A key of the model is 16 bytes; a value 100.
const KEY: usize = 16;
const VALUE: usize = 100;

/// A pair of nodes by index, the smaller first.
type Pair = (u16, u16);

fn pair(a: u16, b: u16) -> Pair {
    (a.min(b), a.max(b))
}

/// How many keys each pair of nodes holds in common in each fine range.
struct Geometry {
    shared: Vec<HashMap<Pair, f64>>,
}

impl Geometry {
    fn of(ring: &Ring, index: &HashMap<NodeId, u16>) -> Geometry {
        // Every key is on N of the nodes.
        let distinct_keys = NODES as f64 * KEYS_PER_NODE / N as f64;
        let per_point = distinct_keys / 2f64.powi(64);
        let mut shared = vec![HashMap::new(); FINE];
        for (from, to, owners) in ring.ranges(N) {
            let owners: Vec<u16> = owners.iter().map(|o| index[o]).collect();
            // A range may span fine ranges: cut it at their edges.
            let mut at = from;
            loop {
                let fine = fine_of(at);
                let end = to.min(fine_points(fine).1);
                let keys = (end - at) as f64 * per_point + per_point;
                for (i, &a) in owners.iter().enumerate() {
                    for &b in &owners[i + 1..] {
                        *shared[fine as usize].entry(pair(a, b)).or_insert(0.0) += keys;
                    }
                }
                if end == to {
                    break;
                }
                at = end + 1;
            }
        }
        Geometry { shared }
    }

    fn keys(&self, pair: Pair, fine: u16) -> f64 {
        self.shared[fine as usize]
            .get(&pair)
            .copied()
            .unwrap_or(0.0)
    }
}

/// The encoded size of each message of an exchange.
struct Sizes {
    root: u64,
    leaves: u64,
    /// A fine range's hash in an answer.
    fine: f64,
    version: f64,
    entry: f64,
}

impl Sizes {
    fn new() -> Sizes {
        let from: NodeId = "node-042".parse().unwrap();
        let request = |r: &Request| crate::rpc::encode_request::<KvWire>(r).len() as u64;
        let response = |r: &Response| postcard::to_stdvec(r).unwrap().len() as u64;
        let root = request(&Request::AeRoot {
            from: from.clone(),
            root: [7; 32],
        }) + response(&Response::AeSame(true));
        let leaves = request(&Request::AeLeaves {
            from: from.clone(),
            leaves: Leaves::default(),
        });
        let fine = |n: u16| {
            let ask = request(&Request::AeVersions {
                from: from.clone(),
                fine: (0..n).map(|f| f * 60).collect(),
            });
            let answer = response(&Response::AeFine {
                differing: (0..n).map(|f| f * 60).collect(),
                fine: (0..n).map(|f| (f * 60, [3; 32])).collect(),
            });
            ask + answer
        };
        let version = Version {
            token: 0,
            hlc: 1_780_000_000_000 << 16,
            node: u64::MAX / 3,
        };
        let one = |n: usize| {
            let have: Vec<_> = (0..n).map(|_| (vec![1u8; KEY], version)).collect();
            response(&Response::AeDiff {
                differing: vec![],
                have,
            })
        };
        let entry = Entry {
            version,
            value: Some(vec![2; VALUE]),
            fences: vec![],
            expires: None,
        };
        let push = |n: usize| {
            request(&Request::KvPush {
                entries: (0..n).map(|_| (vec![1u8; KEY], entry.clone())).collect(),
                hinted: false,
            })
        };
        Sizes {
            root,
            leaves,
            fine: (fine(1000) - fine(0)) as f64 / 1000.0,
            version: (one(1000) - one(0)) as f64 / 1000.0,
            entry: (push(1000) - push(0)) as f64 / 1000.0,
        }
    }
}

/// What one node did in one round.
#[derive(Default, Clone, Copy)]
struct Work {
    /// Versions read from its store (both when it asked and when it answered).
    versions: f64,
    /// Entries it sent or took.
    entries: f64,
    /// Bytes it sent or received.
    bytes: f64,
    /// Exchanges with differing trees it took part in.
    differing: u64,
}

/// One row of the table: `divergent` keys after a fault, and each node's work to repair them.
struct Row {
    divergent: usize,
    mean: Work,
    max: Work,
    /// The most rounds any pair needed (its differing leaves over more than one answer).
    rounds: usize,
}

fn round(ring: &Ring, index: &HashMap<NodeId, u16>, geo: &Geometry, divergent: usize) -> Row {
    let sizes = Sizes::new();
    // Which fine ranges differ between which pairs, and how many keys each lacks.
    let mut differs: HashMap<Pair, BTreeMap<u16, u64>> = HashMap::new();
    for i in 0..divergent {
        let key = format!("divergent-{i:08}");
        let point = Ring::point(key.as_bytes());
        let owners: Vec<u16> = ring
            .replicas_at(point, N)
            .iter()
            .map(|o| index[o])
            .collect();
        let missed = owners[i % N];
        for &holder in owners.iter().filter(|&&o| o != missed) {
            let leaves = differs.entry(pair(holder, missed)).or_default();
            *leaves.entry(fine_of(point)).or_default() += 1;
        }
    }
    let mut work = vec![Work::default(); NODES];
    // Every node asks every peer whether their roots agree.
    for w in &mut work {
        w.bytes += 2.0 * (NODES - 1) as f64 * sizes.root as f64;
    }
    let mut rounds = 1;
    for (&(a, b), ranges) in &differs {
        // The leaves that differ, and the fine ranges in them the answering side holds.
        let leaves: BTreeSet<u16> = ranges
            .keys()
            .map(|&f| leaf_of(fine_points(f).0) as u16)
            .collect();
        let held = leaves
            .iter()
            .flat_map(|&l| fine_in(l))
            .filter(|&f| geo.keys((a, b), f as u16) >= 1.0)
            .count() as f64;
        let mut bytes = sizes.leaves as f64 + held * sizes.fine;
        let wanted: Vec<u16> = ranges.keys().copied().collect();
        let mut left: &[u16] = &wanted;
        let (mut versions, mut exchanges) = (0.0, 0);
        while !left.is_empty() {
            // One exchange: the versions of as many differing fine ranges as fit one
            // answer, from each side.
            let (covered, counts) = cover(
                left,
                ANSWER_BYTES,
                |&n: &f64| (n * sizes.version) as usize,
                |fine| Ok::<_, ()>(vec![geo.keys((a, b), fine)]),
            )
            .unwrap();
            let read: f64 = counts.iter().sum();
            versions += read;
            bytes += 2.0 * read * sizes.version;
            left = &left[covered.len()..];
            exchanges += 1;
        }
        rounds = rounds.max(exchanges);
        let moved = ranges.values().sum::<u64>() as f64;
        for side in [a, b] {
            let w = &mut work[side as usize];
            w.versions += versions;
            w.entries += moved;
            w.bytes += bytes + moved * sizes.entry;
            w.differing += 1;
        }
    }
    let n = NODES as f64;
    let mean = Work {
        versions: work.iter().map(|w| w.versions).sum::<f64>() / n,
        entries: work.iter().map(|w| w.entries).sum::<f64>() / n,
        bytes: work.iter().map(|w| w.bytes).sum::<f64>() / n,
        differing: work.iter().map(|w| w.differing).sum::<u64>() / NODES as u64,
    };
    let max = Work {
        versions: work.iter().map(|w| w.versions).fold(0.0, f64::max),
        entries: work.iter().map(|w| w.entries).fold(0.0, f64::max),
        bytes: work.iter().map(|w| w.bytes).fold(0.0, f64::max),
        differing: work.iter().map(|w| w.differing).max().unwrap_or(0),
    };
    Row {
        divergent,
        mean,
        max,
        rounds,
    }
}

#[test]
fn anti_entropy_work_per_node_grows_with_the_keys_that_differ_not_with_the_keys_held() {
    let nodes: Vec<RingNode> = (0..NODES)
        .map(|i| RingNode {
            node: format!("node-{i:03}").parse().unwrap(),
            tags: vec![],
        })
        .collect();
    let ring = Ring::new(nodes, DEFAULT_VNODES);
    let index: HashMap<NodeId, u16> = ring.nodes().into_iter().zip(0..).collect();
    let geo = Geometry::of(&ring, &index);

    // The geometry holds every node's keys: each node 10 million, shared with two peers each.
    let mut held = vec![0.0; NODES];
    for range in &geo.shared {
        for (&(a, b), &keys) in range {
            held[a as usize] += keys / 2.0;
            held[b as usize] += keys / 2.0;
        }
    }
    let total: f64 = held.iter().sum();
    assert!(
        (total / NODES as f64 / KEYS_PER_NODE - 1.0).abs() < 1e-6,
        "{total}"
    );
    assert!(
        held.iter().all(|&h| h > 0.8 * KEYS_PER_NODE),
        "shares: {held:?}"
    );

    let mut sizes = vec![0, 10, 100, 1_000, 10_000, 100_000];
    if std::env::var_os("WEFT_LONG").is_some() {
        sizes.push(1_000_000);
    }
    let rows: Vec<Row> = sizes
        .iter()
        .map(|&d| round(&ring, &index, &geo, d))
        .collect();
    println!(
        "{NODES} nodes, {KEYS_PER_NODE} keys a node, N = {N}, {LEAVES} leaves of {} fine ranges, answers of {ANSWER_BYTES} bytes",
        FINE / LEAVES
    );
    println!(
        "| divergent keys | versions read per node (mean / max) | per divergent key | entries moved per node | bytes per node (mean / max) | bytes per divergent key | exchanges with differing trees per node | rounds |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for r in &rows {
        let per = |x: f64| {
            if r.divergent == 0 {
                "-".to_string()
            } else {
                format!("{:.0}", x * NODES as f64 / r.divergent as f64)
            }
        };
        println!(
            "| {} | {:.0} / {:.0} | {} | {:.1} | {:.0} / {:.0} | {} | {} | {} |",
            r.divergent,
            r.mean.versions,
            r.max.versions,
            per(r.mean.versions),
            r.mean.entries,
            r.mean.bytes,
            r.max.bytes,
            per(r.mean.bytes),
            r.mean.differing,
            r.rounds
        );
    }

    // Idle: no entry read, nothing but roots sent.
    let idle = &rows[0];
    assert_eq!(idle.max.versions, 0.0);
    assert_eq!(idle.max.bytes, idle.mean.bytes);
    assert!(idle.mean.bytes < 20_000.0, "{}", idle.mean.bytes);
    // Beyond the roots, the work grows with the divergent keys: per divergent key it stays
    // the same (within a quarter) up to 10,000 of them and never grows faster; as more of the
    // fine ranges differ, ranges are shared by several divergent keys and it grows slower.
    let per_key = |r: &Row| {
        (
            r.mean.versions / r.divergent as f64,
            (r.mean.bytes - idle.mean.bytes) / r.divergent as f64,
        )
    };
    let base = per_key(&rows[1]);
    for r in &rows[1..] {
        let (versions, bytes) = per_key(r);
        let ratios = (versions / base.0, bytes / base.1);
        assert!(
            ratios.0 <= 1.25 && ratios.1 <= 1.25,
            "work per divergent key at {}: {ratios:.2?} times that at 10",
            r.divergent
        );
        if r.divergent <= 10_000 {
            assert!(
                ratios.0 >= 0.75 && ratios.1 >= 0.75,
                "work per divergent key at {}: {ratios:.2?} times that at 10",
                r.divergent
            );
        }
        assert!(r.rounds <= 2, "{} rounds at {}", r.rounds, r.divergent);
        // A full pass (what a round read before the trees were kept) reads every key held.
        if r.divergent <= 1_000 {
            assert!(r.max.versions < KEYS_PER_NODE / 20.0, "{}", r.max.versions);
        }
    }
}
