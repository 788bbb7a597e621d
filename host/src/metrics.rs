//! Node metrics in the Prometheus text format, kept in a few maps behind one mutex each.
//! Updates are a map lookup and an add; nothing here is on a path hotter than an invocation.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0, 30.0,
];

/// A latency histogram in the exposition's buckets.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&mut self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                self.counts[i] += 1;
            }
        }
        self.sum += secs;
        self.count += 1;
    }
}

/// Appends a histogram family: one histogram per `labels` (in the exposition's syntax, or
/// empty).
pub fn histograms<'a>(
    out: &mut String,
    name: &str,
    help: &str,
    series: impl IntoIterator<Item = (String, &'a Histogram)>,
) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (labels, h) in series {
        let sep = if labels.is_empty() { "" } else { "," };
        let plain = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        for (bound, n) in BUCKETS.iter().zip(h.counts) {
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{bound}\"}} {n}");
        }
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {}", h.count);
        let _ = writeln!(out, "{name}_sum{plain} {}", h.sum);
        let _ = writeln!(out, "{name}_count{plain} {}", h.count);
    }
}

/// Every metric the node exports.
#[derive(Default)]
pub struct Metrics {
    invocations: Mutex<BTreeMap<(String, &'static str), u64>>,
    latency: Mutex<BTreeMap<String, Histogram>>,
    cache: Mutex<BTreeMap<&'static str, u64>>,
    compile_nanos: AtomicU64,
    compiles: Mutex<BTreeMap<&'static str, u64>>,
    cache_evictions: AtomicU64,
    cache_disk_bytes: AtomicU64,
    jobs: Mutex<BTreeMap<&'static str, u64>>,
    job_tasks: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    job_bytes: Mutex<BTreeMap<&'static str, u64>>,
    job_task_seconds: Mutex<BTreeMap<&'static str, Histogram>>,
    job_commits: Mutex<BTreeMap<&'static str, u64>>,
    responses_cut: AtomicU64,
    instance_reuses: AtomicU64,
    instances_idle: AtomicU64,
    locked: Mutex<BTreeMap<(String, &'static str), u64>>,
    lock_waits: Mutex<BTreeMap<String, Histogram>>,
    connections_open: AtomicU64,
    connections_closed: Mutex<BTreeMap<&'static str, u64>>,
}

/// Counts a client connection as open while it is held.
pub struct OpenConnection<'a>(&'a Metrics);

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.0.connections_open.fetch_sub(1, Ordering::Relaxed);
    }
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
        let mut latency = self.latency.lock().expect("not poisoned");
        latency
            .entry(function.to_string())
            .or_default()
            .observe(elapsed);
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

    /// A compiled module was removed from the disk cache to keep it within its budget.
    pub fn cache_evicted(&self) {
        self.cache_evictions.fetch_add(1, Ordering::Relaxed);
    }

    /// What the compiled modules on disk take now.
    pub fn cache_disk_bytes(&self, bytes: u64) {
        self.cache_disk_bytes.store(bytes, Ordering::Relaxed);
    }

    /// A module was compiled, in a child process (`"child"`) or on the node's own threads
    /// (`"node"`), taking `elapsed`.
    pub fn compiled(&self, process: &'static str, elapsed: Duration) {
        self.compile_nanos
            .fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
        *self
            .compiles
            .lock()
            .expect("not poisoned")
            .entry(process)
            .or_default() += 1;
    }

    /// A client connection opened; it counts as open until the returned guard is dropped.
    pub fn connection_opened(&self) -> OpenConnection<'_> {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self)
    }

    /// The gateway closed a client connection for `reason`: `"too_many_connections"`,
    /// `"header_timeout"` or `"headers_too_large"`.
    pub fn connection_closed(&self, reason: &'static str) {
        *self
            .connections_closed
            .lock()
            .expect("not poisoned")
            .entry(reason)
            .or_default() += 1;
    }

    /// A guest failed after sending its response head, so its body was cut short.
    pub fn response_cut(&self) {
        self.responses_cut.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was served by an instance that served an earlier one (`--reuse`).
    pub fn instance_reused(&self) {
        self.instance_reuses.fetch_add(1, Ordering::Relaxed);
    }

    /// Instances kept idle for the next request of their function, now.
    pub fn instances_idle(&self, n: usize) {
        self.instances_idle.store(n as u64, Ordering::Relaxed);
    }

    /// A request of the lock-protected handler `function` ran (`"acquired"`: its lock was
    /// taken for it; `"reused"`: held from the request before), lost its lock while it ran
    /// (`"lost"`), or found the lock busy past its wait (`"busy"`); `waited` until its turn.
    pub fn locked(&self, function: &str, outcome: &'static str, waited: Option<Duration>) {
        *self
            .locked
            .lock()
            .expect("not poisoned")
            .entry((function.to_string(), outcome))
            .or_default() += 1;
        if let Some(waited) = waited {
            let mut waits = self.lock_waits.lock().expect("not poisoned");
            waits
                .entry(function.to_string())
                .or_default()
                .observe(waited);
        }
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

    /// A map or reduce task attempt (`phase`) ended with `outcome` ("done", "failed").
    pub fn job_task(&self, phase: &'static str, outcome: &'static str) {
        *self
            .job_tasks
            .lock()
            .expect("not poisoned")
            .entry((phase, outcome))
            .or_default() += 1;
    }

    /// A finished attempt of `phase` ("map", "reduce") took `took`, from its coordinator's
    /// order to the answer.
    pub fn job_task_took(&self, phase: &'static str, took: Duration) {
        self.job_task_seconds
            .lock()
            .expect("not poisoned")
            .entry(phase)
            .or_default()
            .observe(took);
    }

    /// A coordinator's commit to the metadata group was `outcome`: "written", "refused" (the
    /// job's lock is no longer held under the coordinator's token), or "failed" (no answer
    /// within the coordinator's patience).
    pub fn job_commit(&self, outcome: &'static str) {
        *self
            .job_commits
            .lock()
            .expect("not poisoned")
            .entry(outcome)
            .or_default() += 1;
    }

    /// `bytes` more of `kind` ("mapped": input of finished maps, "shuffled": map output
    /// handed to the shuffle, "spilled": map output written to disk).
    pub fn job_bytes(&self, kind: &'static str, bytes: u64) {
        *self
            .job_bytes
            .lock()
            .expect("not poisoned")
            .entry(kind)
            .or_default() += bytes;
    }

    /// The Prometheus text exposition of these metrics; `instances` is the number of live
    /// instances.
    pub fn render(&self, instances: usize) -> String {
        let mut out = String::new();
        let invocations = self.invocations.lock().expect("not poisoned").clone();
        family(
            &mut out,
            "weft_invocations_total",
            Kind::Counter,
            "Invocations by function and outcome.",
            invocations
                .iter()
                .map(|((f, outcome), n)| (format!("function=\"{f}\",outcome=\"{outcome}\""), n)),
        );
        let errors: u64 = invocations
            .iter()
            .filter(|((_, o), _)| *o != "ok")
            .map(|(_, n)| n)
            .sum();
        single(
            &mut out,
            "weft_invocation_errors_total",
            Kind::Counter,
            "Invocations that did not end well.",
            errors,
        );
        histograms(
            &mut out,
            "weft_invocation_duration_seconds",
            "Invocation latency by function.",
            self.latency
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(f, h)| (format!("function=\"{f}\""), h)),
        );
        single(
            &mut out,
            "weft_responses_cut_total",
            Kind::Counter,
            "Responses whose guest failed after sending the head (deadline, trap, memory): the client saw the body end in an error.",
            self.responses_cut.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "weft_instance_reuses_total",
            Kind::Counter,
            "Requests served by an instance that had served an earlier request of its function (deployed with --reuse).",
            self.instance_reuses.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "weft_instances_idle",
            Kind::Gauge,
            "Instances kept for the next request of their function (deployed with --reuse).",
            self.instances_idle.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "weft_http_connections",
            Kind::Gauge,
            "Client connections open on the HTTP API.",
            self.connections_open.load(Ordering::Relaxed),
        );
        family(
            &mut out,
            "weft_http_connections_closed_total",
            Kind::Counter,
            "Client connections the gateway closed, by reason: too_many_connections (answered 503), header_timeout (a request head that did not arrive whole in time), headers_too_large (answered 431).",
            self.connections_closed
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(reason, n)| (format!("reason=\"{reason}\""), *n)),
        );
        single(
            &mut out,
            "weft_instances",
            Kind::Gauge,
            "Live Wasm instances.",
            instances,
        );
        family(
            &mut out,
            "weft_module_cache_total",
            Kind::Counter,
            "Compiled-module lookups by result (memory, disk, miss).",
            self.cache
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(tier, n)| (format!("result=\"{tier}\""), *n)),
        );
        single(
            &mut out,
            "weft_module_cache_evictions_total",
            Kind::Counter,
            "Compiled modules removed from disk, least recently used first, to keep the cache within compiled_cache_bytes.",
            self.cache_evictions.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "weft_module_cache_disk_bytes",
            Kind::Gauge,
            "Bytes the compiled modules on disk take.",
            self.cache_disk_bytes.load(Ordering::Relaxed),
        );
        single(
            &mut out,
            "weft_compile_seconds_total",
            Kind::Counter,
            "Time spent compiling modules.",
            self.compile_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        );
        family(
            &mut out,
            "weft_module_compiles_total",
            Kind::Counter,
            "Modules compiled, by where: child (a short-lived compiler process, the weft binary's way) or node (the node's own threads).",
            self.compiles
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(process, n)| (format!("process=\"{process}\""), *n)),
        );
        family(
            &mut out,
            "weft_locked_requests_total",
            Kind::Counter,
            "Requests of lock-protected handlers by function and outcome: acquired (the lock was taken for it), reused (held from the request before), lost (the lock was lost while it ran; answered 503), busy (not its turn within the lock wait; answered 503).",
            self.locked
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|((f, o), n)| (format!("function=\"{f}\",outcome=\"{o}\""), *n)),
        );
        histograms(
            &mut out,
            "weft_locked_wait_seconds",
            "How long requests of lock-protected handlers waited for their turn and lock, by function.",
            self.lock_waits
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(f, h)| (format!("function=\"{f}\""), h)),
        );
        family(
            &mut out,
            "weft_jobs_total",
            Kind::Counter,
            "Map/reduce jobs by final state.",
            self.jobs
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(state, n)| (format!("state=\"{state}\""), *n)),
        );
        family(
            &mut out,
            "weft_job_tasks_total",
            Kind::Counter,
            "Map/reduce task attempts by phase and outcome.",
            self.job_tasks
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|((phase, outcome), n)| {
                    (format!("phase=\"{phase}\",outcome=\"{outcome}\""), *n)
                }),
        );
        histograms(
            &mut out,
            "weft_job_task_seconds",
            "How long finished map/reduce task attempts took, from the coordinator's order to the answer, by phase.",
            self.job_task_seconds
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(phase, h)| (format!("phase=\"{phase}\""), h)),
        );
        family(
            &mut out,
            "weft_job_commits_total",
            Kind::Counter,
            "Commits of job coordinators to the metadata group by outcome: written, refused (the job's lock is no longer held under the coordinator's token), or failed (no answer in time).",
            self.job_commits
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(outcome, n)| (format!("outcome=\"{outcome}\""), *n)),
        );
        family(
            &mut out,
            "weft_job_bytes_total",
            Kind::Counter,
            "Map/reduce bytes by kind: input of finished map tasks (mapped), map output handed to the shuffle (shuffled), map output written to disk, records and all (spilled).",
            self.job_bytes
                .lock()
                .expect("not poisoned")
                .iter()
                .map(|(kind, n)| (format!("kind=\"{kind}\""), *n)),
        );
        out
    }
}

/// The type of a metric family.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// Only ever grows.
    Counter,
    /// Goes up and down.
    Gauge,
}

/// Appends a metric family: its help, its type, and one sample per `(labels, value)`, where
/// `labels` is in the exposition's syntax (`a="x",b="y"`) or empty.
pub fn family<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: Kind,
    help: &str,
    samples: impl IntoIterator<Item = (String, V)>,
) {
    let kind = match kind {
        Kind::Counter => "counter",
        Kind::Gauge => "gauge",
    };
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {value}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {value}");
        }
    }
}

/// Appends a metric family of one sample without labels.
pub fn single<V: std::fmt::Display>(
    out: &mut String,
    name: &str,
    kind: Kind,
    help: &str,
    value: V,
) {
    family(out, name, kind, help, [(String::new(), value)]);
}
