//! Node metrics in the Prometheus text format, kept in a few maps behind one mutex each.
//! Updates are a map lookup and an add; nothing here is on a path hotter than an invocation.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::membership::MemberSet;
use crate::transport;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

/// Every metric the node exports.
#[derive(Default)]
pub struct Metrics {
    invocations: Mutex<BTreeMap<(String, &'static str), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    cache: Mutex<BTreeMap<&'static str, u64>>,
    compile_nanos: AtomicU64,
    jobs: Mutex<BTreeMap<&'static str, u64>>,
    responses_cut: AtomicU64,
}

impl Metrics {
    /// Records one invocation of `function` that ended with `outcome` ("ok", "timeout", ...).
    pub fn invocation(&self, function: &str, outcome: &'static str, elapsed: Duration) {
        *self
            .invocations
            .lock()
            .expect("not poisoned")
            .entry((function.to_string(), outcome))
            .or_default() += 1;
        let secs = elapsed.as_secs_f64();
        let mut latency = self.latency.lock().expect("not poisoned");
        let h = latency.entry(function.to_string()).or_default();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// A compiled module was found in the memory (`"memory"`) or disk (`"disk"`) cache.
    pub fn cache_hit(&self, tier: &'static str) {
        *self
            .cache
            .lock()
            .expect("not poisoned")
            .entry(tier)
            .or_default() += 1;
    }

    /// A module had to be compiled.
    pub fn cache_miss(&self) {
        *self
            .cache
            .lock()
            .expect("not poisoned")
            .entry("miss")
            .or_default() += 1;
    }

    /// Time spent compiling.
    pub fn compile_seconds(&self, elapsed: Duration) {
        self.compile_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// A guest failed after sending its response head, so its body was cut short.
    pub fn response_cut(&self) {
        self.responses_cut.fetch_add(1, Ordering::Relaxed);
    }

    /// A job reached `state`.
    pub fn job(&self, state: &'static str) {
        *self
            .jobs
            .lock()
            .expect("not poisoned")
            .entry(state)
            .or_default() += 1;
    }

    /// The Prometheus text exposition; `instances` is the number of live instances.
    pub fn render(&self, instances: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP weft_invocations_total Invocations by function and outcome."
        );
        let _ = writeln!(out, "# TYPE weft_invocations_total counter");
        for ((f, outcome), n) in self.invocations.lock().expect("not poisoned").iter() {
            let _ = writeln!(
                out,
                "weft_invocations_total{{function=\"{f}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        let errors: u64 = self
            .invocations
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|((_, o), _)| *o != "ok")
            .map(|(_, n)| n)
            .sum();
        let _ = writeln!(
            out,
            "# HELP weft_invocation_errors_total Invocations that did not end well."
        );
        let _ = writeln!(out, "# TYPE weft_invocation_errors_total counter");
        let _ = writeln!(out, "weft_invocation_errors_total {errors}");
        let _ = writeln!(
            out,
            "# HELP weft_invocation_duration_seconds Invocation latency by function."
        );
        let _ = writeln!(out, "# TYPE weft_invocation_duration_seconds histogram");
        for (f, h) in self.latency.lock().expect("not poisoned").iter() {
            for (bound, n) in BUCKETS.iter().zip(h.counts) {
                let _ = writeln!(
                    out,
                    "weft_invocation_duration_seconds_bucket{{function=\"{f}\",le=\"{bound}\"}} {n}"
                );
            }
            let _ = writeln!(
                out,
                "weft_invocation_duration_seconds_bucket{{function=\"{f}\",le=\"+Inf\"}} {}",
                h.count
            );
            let _ = writeln!(
                out,
                "weft_invocation_duration_seconds_sum{{function=\"{f}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                out,
                "weft_invocation_duration_seconds_count{{function=\"{f}\"}} {}",
                h.count
            );
        }
        let _ = writeln!(
            out,
            "# HELP weft_responses_cut_total Responses whose guest failed after sending the head (deadline, trap, memory): the client saw the body end in an error."
        );
        let _ = writeln!(out, "# TYPE weft_responses_cut_total counter");
        let _ = writeln!(
            out,
            "weft_responses_cut_total {}",
            self.responses_cut.load(Ordering::Relaxed)
        );
        let _ = writeln!(out, "# HELP weft_instances Live Wasm instances.");
        let _ = writeln!(out, "# TYPE weft_instances gauge");
        let _ = writeln!(out, "weft_instances {instances}");
        let _ = writeln!(
            out,
            "# HELP weft_module_cache_total Compiled-module lookups by result (memory, disk, miss)."
        );
        let _ = writeln!(out, "# TYPE weft_module_cache_total counter");
        for (tier, n) in self.cache.lock().expect("not poisoned").iter() {
            let _ = writeln!(out, "weft_module_cache_total{{result=\"{tier}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP weft_compile_seconds_total Time spent compiling modules."
        );
        let _ = writeln!(out, "# TYPE weft_compile_seconds_total counter");
        let _ = writeln!(
            out,
            "weft_compile_seconds_total {}",
            self.compile_nanos.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "# HELP weft_jobs_total Map/reduce jobs by final state."
        );
        let _ = writeln!(out, "# TYPE weft_jobs_total counter");
        for (state, n) in self.jobs.lock().expect("not poisoned").iter() {
            let _ = writeln!(out, "weft_jobs_total{{state=\"{state}\"}} {n}");
        }
        out
    }
}

/// Appends membership and transport metrics.
pub fn render_cluster(out: &mut String, set: &MemberSet, wire: &transport::Stats) {
    use crate::membership::MemberState;
    let _ = writeln!(
        out,
        "# HELP weft_members Cluster members by state, as this node sees them (itself included)."
    );
    let _ = writeln!(out, "# TYPE weft_members gauge");
    for (label, state) in [
        ("alive", MemberState::Alive),
        ("suspect", MemberState::Suspect),
        ("down", MemberState::Down),
    ] {
        let _ = writeln!(
            out,
            "weft_members{{state=\"{label}\"}} {}",
            set.count(state)
        );
    }
    let d = &set.stats;
    for (name, help, value) in [
        ("weft_probes_total", "Probe rounds started.", d.probes),
        (
            "weft_probes_failed_total",
            "Probes with no answer, direct or indirect.",
            d.probes_failed,
        ),
        (
            "weft_suspicions_total",
            "Suspicions started or learned.",
            d.suspicions,
        ),
        (
            "weft_suspicions_refuted_total",
            "Suspicions that ended with the member alive (false positives avoided).",
            d.refuted,
        ),
        (
            "weft_suspicions_extended_total",
            "Suspicions extended because the suspect answered a direct check.",
            d.extended,
        ),
        (
            "weft_members_declared_down_total",
            "Members this node saw declared down.",
            d.declared_down,
        ),
        (
            "weft_late_timers_total",
            "Membership timers that fired late (this node was stalled).",
            d.late_timers,
        ),
        (
            "weft_gossip_impostors_total",
            "Gossip dropped because its sender claimed a name its certificate does not carry.",
            d.impostors,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {value}");
    }
    let _ = writeln!(
        out,
        "# HELP weft_local_health Local health score (0 is healthy); stretches this node's timeouts."
    );
    let _ = writeln!(out, "# TYPE weft_local_health gauge");
    let _ = writeln!(out, "weft_local_health {}", d.health);
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    let _ = writeln!(out, "# HELP weft_gossip_bytes_total Gossip payload bytes.");
    let _ = writeln!(out, "# TYPE weft_gossip_bytes_total counter");
    let _ = writeln!(
        out,
        "weft_gossip_bytes_total{{direction=\"sent\"}} {}",
        load(&wire.gossip_bytes_sent)
    );
    let _ = writeln!(
        out,
        "weft_gossip_bytes_total{{direction=\"received\"}} {}",
        load(&wire.gossip_bytes_received)
    );
    for (name, help, c) in [
        (
            "weft_gossip_dropped_total",
            "Gossip datagrams dropped (no connection yet, queue full, or test loss).",
            &wire.gossip_dropped,
        ),
        (
            "weft_frames_accepted_total",
            "Frames from peers that passed every check.",
            &wire.frames_accepted,
        ),
        (
            "weft_frames_rejected_total",
            "Frames from peers refused (version, cluster, size, truncation).",
            &wire.frames_rejected,
        ),
        (
            "weft_handshakes_failed_total",
            "QUIC handshakes refused (no or foreign certificate, expired, timeout).",
            &wire.handshakes_failed,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(out, "{name} {}", load(c));
    }
}

/// Appends the replicated store's and module distribution's counters.
pub fn render_replication(
    out: &mut String,
    status: &crate::replication::Status,
    modules: &crate::functions::ModuleStats,
) {
    for (name, value) in &status.counters {
        let metric = format!("weft_kv_{name}_total");
        let _ = writeln!(
            out,
            "# HELP {metric} Replicated key-value store: {}.",
            name.replace('_', " ")
        );
        let _ = writeln!(out, "# TYPE {metric} counter");
        let _ = writeln!(out, "{metric} {value}");
    }
    for (name, help, value) in [
        (
            "weft_kv_entries",
            "Entries (tombstones included) this node holds.",
            status.keys as u64,
        ),
        (
            "weft_kv_hints",
            "Writes held for replicas that did not take them.",
            status.hints as u64,
        ),
        (
            "weft_ring_nodes",
            "Nodes on this node's ring.",
            status.nodes.len() as u64,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        let _ = writeln!(out, "{name} {value}");
    }
    for (name, help, c) in [
        (
            "weft_modules_fetched_total",
            "Modules fetched from other nodes.",
            &modules.fetched,
        ),
        (
            "weft_modules_corrupt_total",
            "Module copies from other nodes that did not match their digest.",
            &modules.corrupt,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} counter");
        let _ = writeln!(
            out,
            "{name} {}",
            c.load(std::sync::atomic::Ordering::Relaxed)
        );
    }
}
