//! The Wasm runtime: the only module that knows wasmtime.
//!
//! One [`Engine`] with the pooling allocator and epoch interruption serves every function.
//! A deployed component is compiled once, cached on disk under its blake3 digest and the
//! engine's fingerprint, and pre-instantiated ([`InstancePre`](wasmtime::component::InstancePre)).
//! Every invocation gets a fresh instance in a fresh store with its own memory cap and deadline,
//! and a WASI context with no preopened directories, no environment, no arguments and no network.

mod bindings;
mod cache;
mod child;
mod config;
mod holding;
mod http;
mod locks;
mod process;
mod reuse;
mod slots;
mod standard;
mod state;
mod task;
pub(crate) mod wagi;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker};
use wasmtime::{
    Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use cache::Origin;
pub use child::{CHILD_ARG, child_main, compile_in_child};
pub use config::{FunctionKind, FunctionLimits, RunIn, RuntimeConfig};
pub use holding::{GuestLocks, HandlerLock};
pub use http::{BodyFault, HttpResponse};
pub use process::{GUEST_ARG, GuestProcess, ProcessBody, guest_main, guest_processes_from};
pub use reuse::Reuse;
pub use slots::Slot;
pub use state::{Access, GuestState, MAX_HELD_RESOURCES};
pub use task::{TaskInstance, TaskOutput, TaskPre};

use crate::id::{Digest, FunctionName};
use crate::metrics::Metrics;
use crate::tasks::Tasks;

/// Why compiling, instantiating or running a guest failed.
#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
pub enum RuntimeError {
    /// The bytes are not a valid Wasm component.
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    /// The component does not export what its kind requires, or imports what Weft lacks.
    #[error("{0}")]
    WrongWorld(String),
    /// The guest ran past its wall-clock limit.
    #[error("function `{function}` exceeded its time limit of {limit:?} and was stopped")]
    Timeout {
        /// The function.
        function: FunctionName,
        /// Its limit.
        limit: Duration,
    },
    /// The guest tried to grow its memory past its cap.
    #[error(
        "function `{function}` hit its memory limit of {limit_mib} MiB and was stopped{}",
        stderr_suffix(stderr)
    )]
    MemoryLimit {
        /// The function.
        function: FunctionName,
        /// Its cap in MiB.
        limit_mib: u64,
        /// The end of what the guest wrote to stderr.
        stderr: String,
    },
    /// The guest trapped (panic, unreachable, out-of-bounds access...).
    #[error("function `{function}` trapped: {message}{}", stderr_suffix(stderr))]
    Trap {
        /// The function.
        function: FunctionName,
        /// The trap and its wasm backtrace.
        message: String,
        /// The end of what the guest wrote to stderr (a Rust panic message lands there).
        stderr: String,
    },
    /// The guest returned an error of its own.
    #[error("function `{function}` failed: {message}")]
    Guest {
        /// The function.
        function: FunctionName,
        /// Its message.
        message: String,
    },
    /// The guest emitted more output than allowed.
    #[error("function `{function}` emitted more than {limit} bytes of output in one call")]
    OutputTooLarge {
        /// The function.
        function: FunctionName,
        /// The limit in bytes.
        limit: u64,
    },
    /// Every instance slot is busy.
    #[error("the node is at its limit of {0} concurrent instances; retry shortly")]
    Busy(u32),
    /// Something went wrong on the host side.
    #[error("runtime error: {0}")]
    Host(String),
}

impl RuntimeError {
    /// What kind of failure this is, without what the guest wrote or its backtrace.
    pub fn summary(&self) -> String {
        match self {
            RuntimeError::Trap { function, .. } => format!("function `{function}` trapped"),
            RuntimeError::MemoryLimit {
                function,
                limit_mib,
                ..
            } => format!(
                "function `{function}` hit its memory limit of {limit_mib} MiB and was stopped"
            ),
            RuntimeError::Guest { function, .. } => format!("function `{function}` failed"),
            RuntimeError::Host(_) => "the node could not run the function".into(),
            other => other.to_string(),
        }
    }

    /// Whether the message carries what a guest wrote or did (stderr, backtraces, its own
    /// error), which only the function's owner should see.
    pub fn is_private(&self) -> bool {
        matches!(
            self,
            RuntimeError::Trap { .. }
                | RuntimeError::MemoryLimit { .. }
                | RuntimeError::Guest { .. }
                | RuntimeError::Host(_)
        )
    }
}

fn stderr_suffix(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; guest stderr: {}", stderr.trim_end())
    }
}

/// A compiled, linked, pre-instantiated component.
#[derive(Clone)]
pub enum Prepared {
    /// An HTTP handler.
    Http(ProxyPre<GuestState>),
    /// A map/reduce task.
    Task(task::TaskPre),
    /// A WASI 0.1 program, served the CGI way.
    Wagi(CommandPre<GuestState>),
}

impl Prepared {
    /// The kind of function this is.
    pub fn kind(&self) -> FunctionKind {
        match self {
            Prepared::Http(_) => FunctionKind::Http,
            Prepared::Task(_) => FunctionKind::Mapreduce,
            Prepared::Wagi(_) => FunctionKind::Wagi,
        }
    }
}

/// How long past its time limit an invocation may take to be torn down before the host stops
/// waiting for it (a guest blocked in a host call runs no Wasm, so epochs cannot stop it).
const GRACE: Duration = Duration::from_millis(500);

/// The limits of one invocation, resolved from the function's manifest and the node defaults.
#[derive(Clone, Copy, Debug)]
pub struct InvocationLimits {
    /// Wall-clock limit.
    pub timeout: Duration,
    /// Memory cap in bytes.
    pub memory_bytes: u64,
}

/// The engine, the linkers and the compiled-module caches.
pub struct Runtime {
    engine: Engine,
    http_linker: Linker<GuestState>,
    task_linker: Linker<GuestState>,
    wagi_linker: Linker<GuestState>,
    cache: cache::ArtifactCache,
    prepared: Mutex<std::collections::HashMap<Digest, Prepared>>,
    /// One turn per module being compiled: a second caller for the same digest waits for the
    /// first and takes what it prepared, instead of compiling it again beside it.
    compiling: Mutex<std::collections::HashMap<Digest, Arc<Mutex<()>>>>,
    config: RuntimeConfig,
    slots: Arc<tokio::sync::Semaphore>,
    metrics: Arc<Metrics>,
    ticker_stop: Arc<AtomicBool>,
    /// Where guests' tasks run (a guest streams its body from its own task).
    tasks: Tasks,
    /// Instances kept for the next request of functions deployed with `--reuse`.
    idle: Arc<reuse::IdlePool>,
    /// The guest processes that serve WASI-only HTTP handlers (`guest_processes`).
    processes: Option<Arc<process::Processes>>,
}

/// The engine's configuration for `config`: the node's engine and a compiler child's are built
/// from it alike, so that the child's artifacts load in the node.
fn engine_config(config: &RuntimeConfig) -> wasmtime::Config {
    let instances = config.max_instances.get();
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances)
        .total_core_instances(instances.saturating_mul(8))
        .total_memories(instances.saturating_mul(2))
        .total_tables(instances.saturating_mul(4))
        .total_stacks(instances)
        .max_memory_size(config.max_memory_bytes.get() as usize)
        // Keep the start of a reused slot (and its tables) resident and reset what was written
        // there by copy, instead of returning it with madvise and page-faulting it back in on
        // the next instance.
        .linear_memory_keep_resident(config.memory_keep_resident_bytes)
        .table_keep_resident(config.table_keep_resident_bytes)
        .pagemap_scan(match config.pagemap_scan {
            true => wasmtime::Enabled::Auto,
            false => wasmtime::Enabled::No,
        })
        // No batching of what is left to decommit: a slot waiting in the batch holds its
        // memory image, and the image its module's compiled code, which wasmtime's purge of a
        // dropped module does not reach; with batches of 16 every module that had run stayed
        // in memory after it was let go of (35 MB per JavaScript version redeployed).
        .decommit_batch_size(1);
    let mut wasm = wasmtime::Config::new();
    wasm.epoch_interruption(true)
        .wasm_component_model(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    if std::env::var_os("WEFT_PERFMAP").is_some_and(|v| v == "1") {
        // For `perf`: name the compiled guest functions in /tmp/perf-PID.map.
        wasm.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    wasm
}

impl Runtime {
    /// Builds the engine and starts its epoch ticker. Compiled artifacts live in `cache_dir`;
    /// guests' tasks run on `tasks`.
    pub fn new(
        config: RuntimeConfig,
        cache_dir: std::path::PathBuf,
        metrics: Arc<Metrics>,
        tasks: Tasks,
    ) -> Result<Self, RuntimeError> {
        if config.epoch_tick < Duration::from_millis(1)
            || config.default_timeout.is_zero()
            || config.max_timeout.is_zero()
        {
            return Err(RuntimeError::Host(
                "runtime config: epoch_tick must be at least 1 ms, and default_timeout and max_timeout above zero".into(),
            ));
        }
        let engine = Engine::new(&engine_config(&config))
            .map_err(|e| RuntimeError::Host(format!("creating the engine: {e}")))?;

        let http_linker = state::http_linker(&engine)?;
        let task_linker = state::task_linker(&engine)?;
        let wagi_linker = state::wagi_linker(&engine)?;
        let processes = process::Processes::start(&config, &cache_dir, &tasks, &metrics)?;
        let cache = cache::ArtifactCache::new(
            &engine,
            cache_dir,
            config.compiled_cache_bytes,
            metrics.clone(),
        )?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        #[allow(unused_mut)]
        let mut idle = reuse::IdlePool::new(config.reuse_idle, metrics.clone());
        #[cfg(feature = "test-switches")]
        {
            idle.share_across_functions = config.unsafe_share_instances_across_functions;
        }
        let idle = Arc::new(idle);
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let tick = config.epoch_tick;
            let idle = idle.clone();
            // Idle instances are swept about once a second.
            let sweep_every = (1000 / tick.as_millis().max(1)).max(1);
            std::thread::Builder::new()
                .name("weft-epoch".into())
                .spawn(move || {
                    let mut ticks = 0u128;
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(tick);
                        engine.increment_epoch();
                        ticks += 1;
                        if ticks.is_multiple_of(sweep_every) {
                            idle.sweep();
                        }
                    }
                })
                .map_err(|e| RuntimeError::Host(format!("starting the epoch thread: {e}")))?;
        }

        Ok(Runtime {
            engine,
            http_linker,
            task_linker,
            wagi_linker,
            cache,
            prepared: Mutex::default(),
            compiling: Mutex::default(),
            slots: Arc::new(tokio::sync::Semaphore::new(
                config.max_instances.get() as usize
            )),
            config,
            metrics,
            ticker_stop,
            tasks,
            idle,
            processes,
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.config
    }

    /// Compiles (or loads from the disk cache) and links a component, checking that it is of
    /// `expected` kind if given, or detecting its kind otherwise.
    pub fn prepare(
        &self,
        digest: Digest,
        bytes: &[u8],
        expected: Option<FunctionKind>,
    ) -> Result<Prepared, RuntimeError> {
        let turn = self
            .compiling
            .lock()
            .expect("not poisoned")
            .entry(digest)
            .or_default()
            .clone();
        let prepared = {
            // A compile that panicked leaves nothing half done: the next caller compiles.
            let _turn = turn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            self.prepare_in_turn(digest, bytes, expected)
        };
        self.compiling.lock().expect("not poisoned").remove(&digest);
        prepared
    }

    /// `prepare` once it is this caller's turn for `digest`: another caller may have prepared
    /// it meanwhile.
    fn prepare_in_turn(
        &self,
        digest: Digest,
        bytes: &[u8],
        expected: Option<FunctionKind>,
    ) -> Result<Prepared, RuntimeError> {
        if let Some(p) = self.prepared(digest) {
            self.metrics.cache_hit("memory");
            return check_kind(p, expected);
        }
        let (component, origin) =
            self.cache
                .load_or_compile(digest, bytes, &self.config, &self.metrics)?;
        let prepared = self.link(&component, expected)?;
        // Only components that linked are cached: a refused deploy leaves nothing on disk.
        match origin {
            Origin::Disk => {}
            Origin::Child(artifact) => self.cache.store(digest, &component, Some(artifact)),
            Origin::Node => self.cache.store(digest, &component, None),
        }
        self.prepared
            .lock()
            .expect("not poisoned")
            .insert(digest, prepared.clone());
        Ok(prepared)
    }

    /// Drops the prepared components whose digest is not in `keep`, here and in the guest
    /// processes (each is freed once the requests running it end).
    pub fn keep_modules(&self, keep: &std::collections::HashSet<Digest>) {
        self.prepared
            .lock()
            .expect("not poisoned")
            .retain(|digest, _| keep.contains(digest));
        if let Some(processes) = &self.processes {
            processes.keep_modules(keep);
        }
    }

    /// Prepared components held in memory.
    pub fn prepared_count(&self) -> usize {
        self.prepared.lock().expect("not poisoned").len()
    }

    /// The prepared component for `digest`, if it is compiled and linked already.
    pub fn prepared(&self, digest: Digest) -> Option<Prepared> {
        self.prepared
            .lock()
            .expect("not poisoned")
            .get(&digest)
            .cloned()
    }

    /// Where guests' tasks run; the API runs lock-protected requests there too, so that a
    /// client going away does not cut them short.
    pub fn tasks(&self) -> &Tasks {
        &self.tasks
    }

    /// Instances alive right now.
    pub fn live_instances(&self) -> usize {
        self.config.max_instances.get() as usize - self.slots.available_permits()
    }

    fn link(
        &self,
        component: &Component,
        expected: Option<FunctionKind>,
    ) -> Result<Prepared, RuntimeError> {
        let ty = component.component_type();
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let earlier = ty
            .imports(&self.engine)
            .map(|(name, _)| name.to_string())
            .chain(exports.iter().cloned())
            .find(|name| name.starts_with("weft:plugin/") && !name.contains("@0.3."));
        if let Some(name) = earlier {
            return Err(RuntimeError::WrongWorld(format!(
                "the component was built against another version of the guest interface (it uses `{name}`); this node speaks {WIT_PACKAGE} (0.2 added locks and the key-value `fenced` error; 0.3 made map/reduce's emit, combine and reduce carry many records per call): rebuild it with the current weft-sdk (or sdk/wit)"
            )));
        }
        let exports_http = exports
            .iter()
            .any(|e| e.starts_with("wasi:http/incoming-handler@0.2"));
        let exports_task = exports
            .iter()
            .any(|e| e.starts_with("weft:plugin/task@0.3"));
        let exports_run = exports.iter().any(|e| e.starts_with("wasi:cli/run@0.2"));
        let kind = match (expected, exports_http, exports_task) {
            (Some(FunctionKind::Wagi), false, false) | (None, false, false) if exports_run => {
                FunctionKind::Wagi
            }
            (Some(FunctionKind::Http), true, _) | (None, true, false) => FunctionKind::Http,
            (Some(FunctionKind::Mapreduce), _, true) | (None, false, true) => {
                FunctionKind::Mapreduce
            }
            (None, true, true) => {
                return Err(RuntimeError::WrongWorld(
                    "the component exports both wasi:http/incoming-handler and weft:plugin/task; say which it is with ?kind=http or ?kind=mapreduce".into(),
                ));
            }
            (expected, _, _) => {
                let found = if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                };
                return Err(wrong_world(expected, &found));
            }
        };
        let linker = match kind {
            FunctionKind::Http => &self.http_linker,
            FunctionKind::Mapreduce => &self.task_linker,
            FunctionKind::Wagi => &self.wagi_linker,
        };
        let pre = linker.instantiate_pre(component).map_err(|e| {
            RuntimeError::WrongWorld(format!("cannot link the component: {}", chain(&e)))
        })?;
        Ok(match kind {
            FunctionKind::Http => Prepared::Http(ProxyPre::new(pre).map_err(|e| {
                RuntimeError::WrongWorld(format!("not an HTTP handler: {}", chain(&e)))
            })?),
            FunctionKind::Mapreduce => Prepared::Task(task::TaskPre::new(pre)?),
            FunctionKind::Wagi => Prepared::Wagi(CommandPre::new(pre).map_err(|e| {
                RuntimeError::WrongWorld(format!("not a WASI program: {}", chain(&e)))
            })?),
        })
    }

    /// Resolves a function's limits against the node's defaults and maxima.
    pub fn limits(&self, limits: &FunctionLimits) -> InvocationLimits {
        let c = &self.config;
        InvocationLimits {
            timeout: limits
                .timeout_ms
                .map(Duration::from_millis)
                .unwrap_or(c.default_timeout)
                .min(c.max_timeout),
            memory_bytes: limits
                .memory_bytes
                .unwrap_or(c.default_memory_bytes.get())
                .min(c.max_memory_bytes.get()),
        }
    }

    /// A store for one invocation, with its memory cap and deadline armed.
    fn store(
        &self,
        function: &FunctionName,
        limits: InvocationLimits,
        access: Access,
        emit_limit: Option<u64>,
    ) -> Store<GuestState> {
        let data = GuestState::new(function.clone(), limits.memory_bytes, access, emit_limit);
        let mut store = Store::new(&self.engine, data);
        store.limiter(|s| &mut s.limiter);
        arm_deadline(&mut store, limits.timeout);
        store
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
        self.idle.clear();
    }
}

/// The version of the guest interface this host speaks.
const WIT_PACKAGE: &str = "weft:plugin@0.3.0";

/// Classifies the error of a failed call.
fn classify(
    function: &FunctionName,
    limits: InvocationLimits,
    state: &GuestState,
    err: wasmtime::Error,
) -> RuntimeError {
    if state.limiter.hit {
        return RuntimeError::MemoryLimit {
            function: function.clone(),
            limit_mib: limits.memory_bytes >> 20,
            stderr: state.stderr_tail(),
        };
    }
    if state.emit_overflow {
        return RuntimeError::OutputTooLarge {
            function: function.clone(),
            limit: state.emit_limit.unwrap_or(0),
        };
    }
    if matches!(err.downcast_ref::<Trap>(), Some(Trap::Interrupt)) || err.is::<DeadlinePassed>() {
        return RuntimeError::Timeout {
            function: function.clone(),
            limit: limits.timeout,
        };
    }
    RuntimeError::Trap {
        function: function.clone(),
        message: chain(&err),
        stderr: state.stderr_tail(),
    }
}

/// Arms the epoch deadline: every tick the guest yields to the executor (so one busy guest
/// cannot starve others sharing its thread), and past `timeout` it is interrupted.
fn arm_deadline(store: &mut Store<GuestState>, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if Instant::now() >= deadline {
            Ok(UpdateDeadline::Interrupt)
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });
}

/// The wall-clock limit passed while the guest was not running Wasm (blocked in a host call).
#[derive(Debug, thiserror::Error)]
#[error("deadline passed")]
struct DeadlinePassed;

/// Runs `call` under the invocation's wall-clock limit, whether the guest is running Wasm
/// (stopped by the epoch callback) or waiting in a host call (stopped here).
async fn with_deadline<T>(
    limits: InvocationLimits,
    call: impl Future<Output = wasmtime::Result<T>>,
) -> wasmtime::Result<T> {
    match tokio::time::timeout(limits.timeout + GRACE, call).await {
        Ok(r) => r,
        Err(_) => Err(wasmtime::Error::new(DeadlinePassed)),
    }
}

/// An error and its causes on one line.
fn chain(err: &wasmtime::Error) -> String {
    let mut out = String::new();
    for (i, cause) in err.chain().enumerate() {
        if i > 0 {
            out.push_str(": ");
        }
        out.push_str(&cause.to_string());
    }
    out
}

fn check_kind(p: Prepared, expected: Option<FunctionKind>) -> Result<Prepared, RuntimeError> {
    match expected {
        Some(k) if k != p.kind() => Err(wrong_world(Some(k), export_of(p.kind()))),
        _ => Ok(p),
    }
}

/// The export that makes a component of `kind`.
fn export_of(kind: FunctionKind) -> &'static str {
    match kind {
        FunctionKind::Http => "wasi:http/incoming-handler@0.2.x (an HTTP handler)",
        FunctionKind::Mapreduce => "weft:plugin/task@0.3.0 (a map/reduce task)",
        FunctionKind::Wagi => "wasi:cli/run@0.2.x (a WASI program, served the CGI way)",
    }
}

/// The error for a component that lacks the export its kind needs; `found` says what it has.
fn wrong_world(expected: Option<FunctionKind>, found: &str) -> RuntimeError {
    let wanted = match expected {
        Some(FunctionKind::Http) => {
            "it was deployed as an HTTP handler but does not export `wasi:http/incoming-handler@0.2.x`"
        }
        Some(FunctionKind::Mapreduce) => {
            "it was deployed as a map/reduce task but does not export `weft:plugin/task@0.3.0`"
        }
        Some(FunctionKind::Wagi) => {
            "it was deployed as a WAGI program but is not a WASI 0.1 module with `_start`, nor a component exporting only `wasi:cli/run@0.2.x`"
        }
        None => {
            "it exports neither `wasi:http/incoming-handler@0.2.x` (an HTTP handler) nor `weft:plugin/task@0.3.0` (a map/reduce task) nor `wasi:cli/run@0.2.x` (a WASI program; a WASI 0.1 module with `_start` is made one at deploy)"
        }
    };
    RuntimeError::WrongWorld(format!("wrong world: {wanted}; it exports {found}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiled_modules_beyond_the_disk_budget_go_least_recently_used_first() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cache");
        let start = |budget: u64| {
            let metrics = Arc::new(Metrics::default());
            let config = RuntimeConfig {
                compiled_cache_bytes: budget,
                ..RuntimeConfig::default()
            };
            let rt = Runtime::new(config, cache.clone(), metrics.clone(), Tasks::default());
            (rt.unwrap(), metrics)
        };
        let artifacts = || -> Vec<(String, u64)> {
            let mut v: Vec<(String, u64)> = std::fs::read_dir(&cache)
                .unwrap()
                .flatten()
                .map(|e| {
                    (
                        e.file_name().to_string_lossy()[..64].to_string(),
                        e.metadata().unwrap().len(),
                    )
                })
                .collect();
            v.sort();
            v
        };
        let sample = |metrics: &Metrics, name: &str| -> u64 {
            let text = metrics.render(0);
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
                .unwrap_or(0)
        };
        let modules = [
            crate::plugins::HELLO,
            crate::plugins::COUNTER,
            crate::plugins::WORDCOUNT,
        ];
        let digests = modules.map(Digest::of);
        // Unlimited first, to learn what each artifact takes.
        let (rt, _) = start(u64::MAX);
        for (d, m) in digests.iter().zip(modules) {
            rt.prepare(*d, m, None).unwrap();
        }
        let sizes: std::collections::HashMap<String, u64> = artifacts().into_iter().collect();
        assert_eq!(sizes.len(), 3);
        let size = |i: usize| sizes[&digests[i].to_string()];
        drop(rt);
        std::fs::remove_dir_all(&cache).unwrap();

        // Room for the first and either of the others: storing the third evicts the least
        // recently used, which is the first unless it was used again since.
        let budget = size(0) + size(1).max(size(2));
        let (rt, metrics) = start(budget);
        rt.prepare(digests[0], modules[0], None).unwrap();
        rt.prepare(digests[1], modules[1], None).unwrap();
        assert_eq!(artifacts().len(), 2);
        // A restarted node (a new runtime on the same directory) loads the first from disk,
        // which makes it the most recently used.
        drop(rt);
        let (rt, metrics2) = start(budget);
        rt.prepare(digests[0], modules[0], None).unwrap();
        assert_eq!(
            sample(&metrics2, "weft_module_cache_total{result=\"disk\"}"),
            1
        );
        rt.prepare(digests[2], modules[2], None).unwrap();
        let left: Vec<String> = artifacts().into_iter().map(|(d, _)| d).collect();
        let mut expected = vec![digests[0].to_string(), digests[2].to_string()];
        expected.sort();
        assert_eq!(left, expected, "the least recently used (counter) went");
        assert_eq!(sample(&metrics2, "weft_module_cache_evictions_total"), 1);
        assert_eq!(sample(&metrics, "weft_module_cache_evictions_total"), 0);
        let on_disk: u64 = artifacts().iter().map(|(_, s)| s).sum();
        assert_eq!(sample(&metrics2, "weft_module_cache_disk_bytes"), on_disk);

        // The evicted module is compiled again when next needed, and works.
        drop(rt);
        let (rt, metrics3) = start(u64::MAX);
        rt.prepare(digests[1], modules[1], None).unwrap();
        assert_eq!(
            sample(&metrics3, "weft_module_cache_total{result=\"miss\"}"),
            1
        );
    }

    #[test]
    fn concurrent_prepares_of_one_module_compile_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::default());
        let runtime = Runtime::new(
            RuntimeConfig::default(),
            dir.path().join("cache"),
            metrics.clone(),
            Tasks::default(),
        )
        .unwrap();
        let digest = Digest::of(crate::plugins::HELLO);
        let start = std::sync::Barrier::new(4);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    start.wait();
                    runtime
                        .prepare(digest, crate::plugins::HELLO, None)
                        .unwrap();
                });
            }
        });
        let text = metrics.render(0);
        assert!(
            text.contains("weft_module_cache_total{result=\"miss\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("weft_module_cache_total{result=\"memory\"} 3\n"),
            "{text}"
        );
    }
}
