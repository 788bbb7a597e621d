//! The Wasm runtime's configuration: per-invocation limits and the instance pool.

use std::num::{NonZeroU32, NonZeroU64};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The Wasm runtime: per-invocation limits and the instance pool.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Wall-clock limit of one invocation (one HTTP request, or one map/combine/reduce call)
    /// unless the function's manifest says otherwise. Default 10 s.
    /// A guest past its deadline is stopped at the next epoch tick and the request gets 504.
    #[serde(with = "crate::millis")]
    pub default_timeout: Duration,
    /// Linear-memory cap of one instance unless the function's manifest says otherwise.
    /// Default 128 MiB. Growth past it fails, and the invocation ends with a clear error.
    pub default_memory_bytes: NonZeroU64,
    /// Upper bound for a per-function memory cap. Default 1 GiB.
    pub max_memory_bytes: NonZeroU64,
    /// Upper bound for a per-function timeout. Default 5 minutes.
    #[serde(with = "crate::millis")]
    pub max_timeout: Duration,
    /// Instances alive at once (the pooling allocator's slot count). Default 256.
    /// Requests beyond it wait for a free slot. Each slot reserves address space, not memory.
    pub max_instances: NonZeroU32,
    /// How often the epoch ticks: the granularity of deadlines and of fair yielding between
    /// guests sharing a thread. Default 10 ms. Shorter is fairer and costs more wake-ups.
    #[serde(with = "crate::millis")]
    pub epoch_tick: Duration,
    /// Largest output a single map or reduce call may emit, in bytes of records (and all the
    /// `combine` calls of one map task together). Default 256 MiB; more than 4 GiB fails
    /// the task. A map task's output is held about twice while it is sorted.
    pub max_emit_bytes: NonZeroU64,
    /// Bytes at the start of each pooled linear memory kept resident between instances: the
    /// pages written there are reset to the module's initial contents by copying, rather than
    /// returned with madvise and faulted back in (copy-on-write) by the next instance. Default
    /// 8 MiB (128 KiB in the edge profile). With `pagemap_scan` only the pages written are
    /// reset: those the slot holds a copy of, written by this instance or by an earlier one in
    /// the slot (wasmtime 48 does not write-protect them between instances, so a slot that
    /// served a long-lived `--reuse` instance copies back more for every later one;
    /// bench/RESULTS.md, session 27). Without it (or on a kernel older than 6.7) every
    /// instance pays a memset of this size, so keep it small there. Larger serves big guests
    /// (a JavaScript or Python runtime writes a megabyte or more of its memory image per
    /// request) without page faults; the cost is memory: each slot keeps what its guests wrote
    /// in this range resident, up to `max_instances` times this size at worst. 0 turns it off.
    pub memory_keep_resident_bytes: usize,
    /// Whether to find the written pages with Linux's `PAGEMAP_SCAN` (kernel 6.7 or later;
    /// unused elsewhere), so that only those are reset in the kept-resident range (at most 32
    /// runs of them; past the 32nd, the rest of the memory is returned with madvise).
    /// Default true. It is what makes a large `memory_keep_resident_bytes` cheap; wasmtime
    /// still calls it under evaluation and leaves it off by default.
    pub pagemap_scan: bool,
    /// Bytes of each pooled table (the guest's function-pointer tables) kept resident between
    /// instances and reset with memset rather than returned with madvise. Default 16 KiB
    /// (2,048 entries). Without it every instance page-faults its tables back in: the
    /// `hello` benchmark took 180 times more page faults and p50 went from 21 to 28 µs.
    pub table_keep_resident_bytes: usize,
    /// The most compiled modules may take on disk (the data directory's `cache/`). Default
    /// 1 GiB. Beyond it the least recently used go, and are compiled again when next needed
    /// (a compile takes from milliseconds for a small Rust guest to seconds for a JavaScript
    /// or Python runtime); the one just compiled always stays.
    pub compiled_cache_bytes: u64,
    /// How long an instance of a function deployed with `--reuse` is kept without a request
    /// before it is dropped. Default 30 s. Longer keeps more instances (and their memory) for
    /// functions called now and then; an idle instance also gives its slot up to any request
    /// that finds none free.
    #[serde(with = "crate::millis")]
    pub reuse_idle: Duration,
    /// Processes of one thread each that serve the HTTP handlers using only WASI (no Weft
    /// key-value, lock or log import: the components of other toolchains, such as JavaScript
    /// and Python ones) with a fresh instance per request, each process an address space of
    /// its own. Default 0: every guest runs in the node. One per CPU serves large components
    /// run fresh faster: a copy-on-write fault in a process running on several CPUs
    /// interrupts each of them to flush its TLB (fresh JavaScript 2.8 times as fast on 2
    /// CPUs; bench/RESULTS.md, session 28). The cost is a hop over a Unix socket per request
    /// (about 35 µs of CPU), a copy of each such module's code per process, and
    /// `max_instances` slots per process. So components smaller than
    /// `guest_process_min_bytes`, and functions deployed with `--reuse` (whose instances
    /// fault little), stay in the node. A process that dies is started again; while none is
    /// ready, requests run in the node. `/metrics` counts them (`weft_guest_processes`).
    pub guest_processes: u32,
    /// The smallest component (in bytes, as deployed) that runs in a guest process; smaller
    /// ones run in the node. Default 1 MiB: `hello` (147 KB) serves 34,000 requests a second
    /// in the node and 20,000 through guest processes, a JavaScript component (12.8 MB) 840
    /// in the node and 2,300 through them (bench/RESULTS.md, session 28).
    pub guest_process_min_bytes: u64,
    /// Test only (`test-switches`): keep idle instances by module instead of by function and
    /// deployment, so that another function of the same module takes them (and sees what they
    /// hold), to show that the isolation test fails without the separation.
    #[cfg(feature = "test-switches")]
    #[serde(skip)]
    pub unsafe_share_instances_across_functions: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            default_timeout: Duration::from_secs(10),
            default_memory_bytes: NonZeroU64::new(128 << 20).expect("non-zero"),
            max_memory_bytes: NonZeroU64::new(1 << 30).expect("non-zero"),
            max_timeout: Duration::from_secs(300),
            max_instances: NonZeroU32::new(256).expect("non-zero"),
            epoch_tick: Duration::from_millis(10),
            max_emit_bytes: NonZeroU64::new(256 << 20).expect("non-zero"),
            memory_keep_resident_bytes: 8 << 20,
            pagemap_scan: true,
            table_keep_resident_bytes: 16 << 10,
            compiled_cache_bytes: 1 << 30,
            reuse_idle: Duration::from_secs(30),
            guest_processes: 0,
            guest_process_min_bytes: 1 << 20,
            #[cfg(feature = "test-switches")]
            unsafe_share_instances_across_functions: false,
        }
    }
}

/// What kind of component a function is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FunctionKind {
    /// Exports `wasi:http/incoming-handler`; invoked through `/fn/{name}/...`.
    Http,
    /// Exports `weft:plugin/task`; run by `POST /v1/jobs`.
    Mapreduce,
    /// A WASI 0.1 program made a component at deploy (it exports `wasi:cli/run`): invoked
    /// through `/fn/{name}/...` the CGI way.
    Wagi,
}

impl std::fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FunctionKind::Http => "http",
            FunctionKind::Mapreduce => "mapreduce",
            FunctionKind::Wagi => "wagi",
        })
    }
}

/// Per-function limits from the manifest; `None` means the node's default.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionLimits {
    /// Wall-clock limit of one invocation, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// Linear-memory cap of one instance, in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Requests one instance may serve in sequence (`weft deploy --reuse N`); none (or 1): a
    /// fresh instance per request. See `runtime::reuse` for what reuse keeps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<std::num::NonZeroU32>,
    /// Where its requests run when the node has guest processes (`weft deploy --run-in`);
    /// none: chosen by size (`guest_process_min_bytes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_in: Option<RunIn>,
}

/// Where an HTTP handler's requests run on a node with guest processes
/// (`RuntimeConfig::guest_processes`); on a node without them, every request runs in the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunIn {
    /// In a guest process whatever its size (only for a handler that imports nothing of
    /// `weft:plugin` and does not reuse its instances).
    Process,
    /// In the node whatever its size.
    Node,
}

impl std::fmt::Display for RunIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RunIn::Process => "process",
            RunIn::Node => "node",
        })
    }
}
