//! What `/v1/status` shows of the ring and replication.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};

use super::{PeerSync, Replicator, now_ms};
use crate::id::NodeId;

impl Replicator {
    /// What `/v1/status` shows of replication.
    pub fn status(&self) -> Status {
        let view = self.view();
        let c = &self.inner.config;
        let n = view.cap(c.default.n.get() as usize);
        let replica_shares: HashMap<NodeId, f64> =
            view.ring.replica_shares(n).into_iter().collect();
        let nodes = view
            .ring
            .shares()
            .into_iter()
            .map(|(node, share)| RingShare {
                replica_share: replica_shares.get(&node).copied().unwrap_or(0.0),
                hints: self.inner.store.hint_count_for(node.as_str()),
                sync: self
                    .inner
                    .peers
                    .lock()
                    .expect("not poisoned")
                    .get(&node)
                    .cloned(),
                node,
                share,
            })
            .collect();
        let s = &self.inner.stats;
        let last = self.inner.last_in_sync_ms.load(Ordering::Relaxed);
        Status {
            node: self.inner.me.clone(),
            default: c.default.to_string(),
            namespaces: c
                .namespaces
                .iter()
                .map(|(k, v)| (k.clone(), v.to_string()))
                .collect(),
            vnodes: c.vnodes,
            nodes,
            in_transition: !view.earlier.is_empty(),
            ring_changed_ms_ago: view.changed.elapsed().as_millis() as u64,
            keys: self.inner.store.replica_len(),
            hints: self.inner.store.hint_count(),
            anti_entropy_interval_ms: c.anti_entropy_interval.as_millis() as u64,
            anti_entropy_rounds: s.ae_rounds.load(Ordering::Relaxed),
            anti_entropy_lag_ms: (last > 0).then(|| now_ms().saturating_sub(last)),
            clock_ahead_ms: self
                .inner
                .clock
                .lock()
                .expect("not poisoned")
                .ahead_ms(now_ms()),
            counters: [
                ("reads", &s.reads),
                ("writes", &s.writes),
                ("unavailable", &s.unavailable),
                ("stale_retries", &s.stale_retries),
                ("read_repairs", &s.read_repairs),
                ("hints_stored", &s.hints_stored),
                ("hints_delivered", &s.hints_delivered),
                ("anti_entropy_pulled", &s.ae_pulled),
                ("anti_entropy_pushed", &s.ae_pushed),
                ("write_batches", &s.write_batches),
                ("batched_writes", &s.batched_writes),
                ("anti_entropy_bytes_sent", &s.ae_bytes_sent),
                ("anti_entropy_bytes_received", &s.ae_bytes_received),
                ("handed_off", &s.handed_off),
                ("handoff_pushed", &s.handoff_pushed),
                ("transitions_ended", &s.transitions_ended),
                ("tombstones_collected", &s.tombstones_collected),
                ("hints_expired", &s.hints_expired),
                ("fenced", &s.fenced),
                ("fenced_writes", &s.fenced_writes),
                ("gate_batches", &s.gate_batches),
                ("gate_writes", &s.gate_writes),
            ]
            .into_iter()
            .chain(self.inner.store.journal_stats().into_iter().flat_map(|j| {
                [
                    ("journal_changes", &j.changes),
                    ("journal_syncs", &j.syncs),
                    ("journal_bytes", &j.bytes),
                    ("journal_checkpoints", &j.checkpoints),
                ]
            }))
            .map(|(k, v)| (k.to_string(), v.load(Ordering::Relaxed)))
            .collect(),
        }
    }
}

/// One node's place on the ring, for `/v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RingShare {
    /// The node.
    pub node: NodeId,
    /// Its share of the key space as primary (0 to 1).
    pub share: f64,
    /// Its share of all replicas (0 to 1).
    pub replica_share: f64,
    /// Hints this node holds for it.
    pub hints: usize,
    /// The last anti-entropy exchange with it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sync: Option<PeerSync>,
}

/// The ring and replication as one node sees them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    /// The node answering.
    pub node: NodeId,
    /// The default N/R/W.
    pub default: String,
    /// N/R/W of particular namespaces.
    pub namespaces: BTreeMap<String, String>,
    /// Virtual nodes per node.
    pub vnodes: u32,
    /// Every node on the ring, by name.
    pub nodes: Vec<RingShare>,
    /// Whether earlier rings are still consulted.
    pub in_transition: bool,
    /// Time since the ring last changed.
    pub ring_changed_ms_ago: u64,
    /// Entries (tombstones included) held by this node.
    pub keys: usize,
    /// Hints held by this node.
    pub hints: usize,
    /// Anti-entropy period.
    pub anti_entropy_interval_ms: u64,
    /// Anti-entropy rounds completed.
    pub anti_entropy_rounds: u64,
    /// Time since this node last found every peer in sync (none yet: `null`).
    pub anti_entropy_lag_ms: Option<u64>,
    /// How far this node's version clock runs ahead of its wall clock.
    pub clock_ahead_ms: u64,
    /// Counters.
    pub counters: BTreeMap<String, u64>,
}

impl Status {
    /// Appends the replicated store's metrics.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{Kind, single};
        for (name, value) in &self.counters {
            single(
                out,
                &format!("weft_kv_{name}_total"),
                Kind::Counter,
                &format!("Replicated key-value store: {}.", name.replace('_', " ")),
                value,
            );
        }
        for (name, help, value) in [
            (
                "weft_kv_entries",
                "Entries (tombstones included) this node holds.",
                self.keys,
            ),
            (
                "weft_kv_hints",
                "Writes held for replicas that did not take them.",
                self.hints,
            ),
            (
                "weft_ring_nodes",
                "Nodes on this node's ring.",
                self.nodes.len(),
            ),
        ] {
            single(out, name, Kind::Gauge, help, value);
        }
    }
}
