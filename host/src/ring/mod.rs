//! Consistent hashing with virtual nodes over blake3: which nodes hold a key.
//!
//! Pure: no I/O, no clocks, no tokio.
//! A `Ring` is built from a member list alone, so every node with the same member list computes
//! the same placement, whatever order it learnt the members in.
//!
//! Each node contributes `vnodes` tokens on a circle of `u64` points.
//! A key's point is the start of its blake3 digest; the key belongs to the first token at or after
//! that point (wrapping at the end), and its replicas are the first distinct nodes met walking on.
//! Adding or removing a node therefore only moves the keys on the arcs that node gains or loses.

use crate::id::NodeId;

#[cfg(test)]
mod tests;

/// Virtual nodes per node unless configured.
///
/// More virtual nodes even out the nodes' shares (the spread shrinks like `1/sqrt(vnodes)`) at the
/// cost of memory (16 bytes per token: 1.6 MB for 100 nodes) and build time.
/// With this value and 3 to 100 nodes, no node's share as primary or as one of three replicas
/// exceeds 1.15 times the average, and a joining or leaving node moves within 10% of its ideal
/// fraction of the keys (see the tests).
/// Smaller values meet those bounds for some sets of names only; 1024 met them for every set tried.
pub const DEFAULT_VNODES: u32 = 1024;

/// One node on the ring.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingNode {
    /// The node's name, which also seeds its tokens.
    pub node: NodeId,
    /// Labels that `TagRule` can ask for, such as `server`.
    pub tags: Vec<String>,
}

/// Where replicas must go beyond plain ring order.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TagRule {
    /// When set, at least one of a key's replicas is a node with this tag (if any node has it):
    /// e.g. keep a copy on a `server` node when edge nodes are flaky.
    pub require_tag: Option<String>,
}

/// The placement of keys on a fixed set of nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    /// The distinct nodes, sorted by name; a token's `u32` indexes this.
    nodes: Vec<RingNode>,
    /// `(token, node index)` sorted by token, then by node index (that is, by name).
    tokens: Vec<(u64, u32)>,
}

/// The number of points on the circle, as a `u128` so arc lengths can sum to it.
const CIRCLE: u128 = 1 << 64;

impl Ring {
    /// Builds the ring.
    /// Duplicate node names are counted once, with the union of their tags so that the result
    /// does not depend on the input order.
    /// `vnodes` is clamped to at least 1.
    pub fn new(nodes: impl IntoIterator<Item = RingNode>, vnodes: u32) -> Ring {
        let mut nodes: Vec<RingNode> = nodes.into_iter().collect();
        nodes.sort_by(|a, b| a.node.cmp(&b.node));
        nodes.dedup_by(|dup, kept| {
            let same = dup.node == kept.node;
            if same {
                kept.tags.append(&mut dup.tags);
            }
            same
        });
        for n in &mut nodes {
            n.tags.sort();
            n.tags.dedup();
        }
        let vnodes = vnodes.max(1);
        let mut tokens = Vec::with_capacity(nodes.len() * vnodes as usize);
        for (index, n) in (0u32..).zip(&nodes) {
            tokens.extend((0..vnodes).map(|i| (token(&n.node, i), index)));
        }
        // Indices follow name order, so this also breaks ties between equal tokens by name.
        tokens.sort_unstable();
        Ring { nodes, tokens }
    }

    /// The point of a key on the ring: the first 8 bytes (big-endian `u64`) of blake3(key).
    pub fn point(key: &[u8]) -> u64 {
        head_u64(blake3::hash(key))
    }

    /// The nodes holding `key`: walking clockwise from the key's point, the first `n` distinct
    /// nodes.
    /// `n` is clamped to the number of nodes (an empty ring gives an empty vec).
    /// The first is the primary.
    pub fn replicas(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        self.replicas_at(Self::point(key), n)
    }

    /// Like `replicas`, honouring `placement`: if none of the first `n` has the required tag and
    /// some node has it, the last of the `n` is replaced by the first node clockwise that has the
    /// tag.
    /// The order is otherwise as in `replicas`.
    pub fn replicas_placed(&self, key: &[u8], n: usize, placement: &TagRule) -> Vec<NodeId> {
        let start = self.start(Self::point(key));
        let mut out = self.walk(start, n);
        if let Some(tag) = &placement.require_tag {
            let tagged = |i: u32| self.nodes[i as usize].tags.contains(tag);
            if !out.is_empty()
                && !out.iter().any(|&i| tagged(i))
                && self.nodes.iter().any(|n| n.tags.contains(tag))
            {
                let found = (0..self.tokens.len())
                    .map(|step| self.tokens[(start + step) % self.tokens.len()].1)
                    .find(|&i| tagged(i));
                if let (Some(found), Some(last)) = (found, out.last_mut()) {
                    *last = found;
                }
            }
        }
        self.names(out)
    }

    /// Same as `replicas` but for a precomputed point, so callers hashing once can reuse it.
    pub fn replicas_at(&self, point: u64, n: usize) -> Vec<NodeId> {
        self.names(self.walk(self.start(point), n))
    }

    /// Each node's share of the key space as primary (fractions summing to 1), sorted by name.
    pub fn shares(&self) -> Vec<(NodeId, f64)> {
        let mut owned = vec![0u128; self.nodes.len()];
        for (i, &(_, node)) in self.tokens.iter().enumerate() {
            owned[node as usize] += self.arc(i);
        }
        self.fractions(owned, 1)
    }

    /// Each node's share of replicas with replication factor `n`: the fraction of the key space
    /// for which the node is among the `n` replicas, divided by `n` (so they sum to 1 when
    /// `n <= len`; `n = 0` gives zeros).
    /// Sorted by name.
    pub fn replica_shares(&self, n: usize) -> Vec<(NodeId, f64)> {
        let n = n.min(self.nodes.len());
        let mut held = vec![0u128; self.nodes.len()];
        if n > 0 {
            for i in 0..self.tokens.len() {
                let arc = self.arc(i);
                for node in self.walk(i, n) {
                    held[node as usize] += arc;
                }
            }
        }
        self.fractions(held, n.max(1))
    }

    /// The circle cut into ranges of points with the same first `n` replicas: `(first point,
    /// last point, replicas)`, in point order (the range that wraps past the top is cut in
    /// two). Empty for an empty ring.
    pub fn ranges(&self, n: usize) -> Vec<(u64, u64, Vec<NodeId>)> {
        let mut out = Vec::with_capacity(self.tokens.len() + 1);
        let Some(&(top, _)) = self.tokens.last() else {
            return out;
        };
        let first = self.names(self.walk(0, n));
        out.push((0, self.tokens[0].0, first.clone()));
        for i in 1..self.tokens.len() {
            let (from, to) = (self.tokens[i - 1].0, self.tokens[i].0);
            if from != to {
                out.push((from + 1, to, self.names(self.walk(i, n))));
            }
        }
        if top != u64::MAX {
            out.push((top + 1, u64::MAX, first));
        }
        out
    }

    /// The nodes on the ring, sorted by name.
    pub fn nodes(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.node.clone()).collect()
    }

    /// A digest of what places keys: the nodes, their tags and the virtual nodes per node.
    /// Two rings place every key alike when their fingerprints are equal.
    pub fn fingerprint(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(&(self.tokens.len() as u64).to_le_bytes());
        for n in &self.nodes {
            h.update(&(n.node.as_str().len() as u64).to_le_bytes());
            h.update(n.node.as_str().as_bytes());
            for t in &n.tags {
                h.update(&(t.len() as u64).to_le_bytes());
                h.update(t.as_bytes());
            }
            h.update(&u64::MAX.to_le_bytes());
        }
        *h.finalize().as_bytes()
    }

    /// The number of distinct nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the ring has no nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Whether `node` is on the ring.
    pub fn contains(&self, node: &NodeId) -> bool {
        self.nodes.binary_search_by(|n| n.node.cmp(node)).is_ok()
    }

    /// The index of the first token at or after `point`, wrapping to 0 past the end.
    fn start(&self, point: u64) -> usize {
        let i = self.tokens.partition_point(|&(t, _)| t < point);
        if i == self.tokens.len() { 0 } else { i }
    }

    /// The first `n` distinct nodes (clamped to `len`) met walking clockwise from token `start`.
    /// Visits only the tokens up to the last node found.
    fn walk(&self, start: usize, n: usize) -> Vec<u32> {
        let n = n.min(self.nodes.len());
        let mut out = Vec::with_capacity(n);
        if n == 0 {
            return out;
        }
        let mut seen = vec![0u64; self.nodes.len().div_ceil(64)];
        let ring = self.tokens[start..].iter().chain(&self.tokens[..start]);
        for &(_, node) in ring {
            let (word, bit) = (node as usize / 64, 1u64 << (node % 64));
            if seen[word] & bit == 0 {
                seen[word] |= bit;
                out.push(node);
                if out.len() == n {
                    break;
                }
            }
        }
        out
    }

    /// The number of points on the arc ending at token `i`: those after the previous token, up to
    /// and including this one.
    /// The arcs sum to `CIRCLE`.
    fn arc(&self, i: usize) -> u128 {
        let here = self.tokens[i].0;
        match i.checked_sub(1) {
            Some(prev) => u128::from(here - self.tokens[prev].0),
            None => {
                let last = self.tokens[self.tokens.len() - 1].0;
                CIRCLE - u128::from(last - here)
            }
        }
    }

    /// Per-node point counts as fractions of `per * CIRCLE`, paired with the node names.
    fn fractions(&self, counts: Vec<u128>, per: usize) -> Vec<(NodeId, f64)> {
        let whole = CIRCLE as f64 * per as f64;
        self.nodes
            .iter()
            .zip(counts)
            .map(|(n, c)| (n.node.clone(), c as f64 / whole))
            .collect()
    }

    fn names(&self, indices: Vec<u32>) -> Vec<NodeId> {
        indices
            .into_iter()
            .map(|i| self.nodes[i as usize].node.clone())
            .collect()
    }
}

/// The token of virtual node `i` of `node`: blake3 of the name, a 0 byte and `i` big-endian.
fn token(node: &NodeId, i: u32) -> u64 {
    let mut h = blake3::Hasher::new();
    h.update(node.as_str().as_bytes());
    h.update(&[0]);
    h.update(&i.to_be_bytes());
    head_u64(h.finalize())
}

/// The first 8 bytes of a digest, big-endian.
fn head_u64(hash: blake3::Hash) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_be_bytes(head)
}
