//! Serving HTTP handlers in guest processes, one address space per process.
//!
//! With `guest_processes = N` (RuntimeConfig), the node starts N copies of its own executable
//! as `weft __weft-guest-process`, each with one thread, and sends them the requests of HTTP
//! handlers that use nothing but WASI (no Weft key-value, lock or log import: the components
//! of other toolchains, such as componentize-js's and componentize-py's), are at least
//! `guest_process_min_bytes` and are deployed without `--reuse`. Why: every instance's
//! first writes to its memory image are copy-on-write faults, and a fault in a process whose
//! threads run on several CPUs sends a TLB shootdown to each of the others. A fresh JavaScript
//! instance took 1,792 µs of CPU in a two-thread node on two CPUs against 687 µs in a node on
//! one (bench/RESULTS.md, session 27). Processes of one thread each use every CPU and send none.
//! The hop costs about 35 µs of CPU per request, more than small components and reused
//! instances (which fault little) save, so those stay in the node (RESULTS, session 28).
//!
//! Each process is joined to the node by a Unix socket pair (the child's stdin), carrying one
//! HTTP/2 connection: the node is its client, the child serves it. A request carries its call
//! (function, module, limits, configuration) in [`CALL_HEADER`]; a module reaches a child
//! once, as its compiled artifact (`PUT /module/{digest}`), before the first request that needs
//! it. A failure before the response head comes back as a [`RuntimeError`] (status 500 and
//! [`FAILED_HEADER`]), so the node answers and counts it as it would its own; a failure after
//! it ends the body with trailers so marked, and the node cuts the client's body short
//! ([`ProcessBody`]), as it does its own guests'. A child that dies is started again (its
//! in-flight requests fail with an error naming it); while none is ready, requests run in
//! the node. A child ends when its socket closes, so it never outlives its node.

use std::collections::{BTreeMap, HashMap};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt;
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::{FunctionLimits, GuestState, RunIn};
use super::{InvocationLimits, Prepared, Runtime, RuntimeConfig, RuntimeError};

mod guest;
use crate::id::{Digest, FunctionName};
use crate::metrics::Metrics;
use crate::tasks::Tasks;
pub use guest::guest_main;

/// The first argument that makes `weft` a guest process (not a command anyone types).
pub const GUEST_ARG: &str = "__weft-guest-process";

/// The request header carrying the call to a guest process; the node replaces any a client sent.
const CALL_HEADER: &str = "x-weft-guest-call";
/// How many modules a guest process holds, in its answers to the node's module requests.
const MODULES_HEADER: &str = "x-weft-guest-modules";

/// Marks a guest process's answer as a failure before the response head: its body is the error.
const FAILED_HEADER: &str = "x-weft-guest-failed";

/// The largest compiled artifact a guest process takes (a Python runtime's is about 60 MB).
const MAX_ARTIFACT: usize = 1 << 30;
/// The largest head either side takes: the client's head (at most the gateway's
/// `max_header_bytes`) and the call with the function's configuration, or the guest's answer.
const MAX_HEAD: u32 = 16 << 20;

/// How often the node pings each guest process over its link, busy or idle.
const PING_EVERY: Duration = Duration::from_secs(2);
/// The least time a guest process may take to answer a ping before the node takes it for
/// stuck (stopped, or its thread blocked), ends its link and starts another ([`ping_timeout`]).
const PING_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a guest process may take to answer a ping: [`PING_TIMEOUT`], or twice the time
/// `max_instances` busy guests take to yield once each, if longer. A healthy process answers
/// within about that round: its guests yield to its one thread at every epoch tick (256 of
/// them at the default 10 ms tick take 2.6 s).
fn ping_timeout(config: &RuntimeConfig) -> Duration {
    (config.epoch_tick * config.max_instances.get() * 2).max(PING_TIMEOUT)
}

/// The executable guest processes run as, if the embedder said.
static EXECUTABLE: OnceLock<PathBuf> = OnceLock::new();

/// Makes `guest_processes` start children of `exe`, which must handle [`GUEST_ARG`] through
/// [`guest_main`]. Only the first call counts. The `weft` binary calls it with itself.
pub fn guest_processes_from(exe: PathBuf) {
    let _ = EXECUTABLE.set(exe);
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type OutBody = UnsyncBoxBody<Bytes, BoxError>;

/// What a guest process is asked to run.
#[derive(Serialize, Deserialize)]
struct Call {
    function: FunctionName,
    digest: Digest,
    timeout_ms: u64,
    memory_bytes: u64,
    config: Arc<BTreeMap<String, String>>,
}

/// The node's side: its guest processes, each started again when it ends.
pub(super) struct Processes {
    members: Vec<Arc<Member>>,
    /// Whether a module may run in a guest process (it imports nothing of Weft's).
    eligible: Mutex<HashMap<Digest, bool>>,
    restarts: AtomicU64,
    served: AtomicU64,
    /// The node's, to count responses cut by a guest's failure after its head.
    metrics: Arc<Metrics>,
    /// The node's: where the processes' keepers, log readers and module drops run.
    tasks: Tasks,
}

/// One guest process slot: the process running in it now, if it is ready.
#[derive(Default)]
struct Member {
    current: Mutex<Option<Arc<Conn>>>,
}

/// A running guest process, as the node talks to it.
struct Conn {
    pid: u32,
    send: hyper::client::conn::http2::SendRequest<OutBody>,
    /// The modules it has (or is being sent).
    loaded: Mutex<HashMap<Digest, Arc<tokio::sync::OnceCell<()>>>>,
    in_flight: AtomicUsize,
    /// The modules it holds, as it said after its last load or drop ([`MODULES_HEADER`]).
    modules: AtomicUsize,
}

/// Counts a request as in flight on a guest process while held.
struct InFlight(Arc<Conn>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Processes {
    /// Starts `config.guest_processes` guest processes, each kept running by a task on `tasks`.
    pub(super) fn start(
        config: &RuntimeConfig,
        cache_dir: &Path,
        tasks: &Tasks,
        metrics: &Arc<Metrics>,
    ) -> Result<Option<Arc<Self>>, RuntimeError> {
        if config.guest_processes == 0 {
            return Ok(None);
        }
        let exe = EXECUTABLE.get().ok_or_else(|| {
            RuntimeError::Host(
                "guest_processes is set, but this program cannot start guest processes (only the `weft` binary can; a library user calls runtime::guest_processes_from first)".into(),
            )
        })?;
        let mut child_config = config.clone();
        child_config.guest_processes = 0;
        let args = [
            GUEST_ARG.to_string(),
            serde_json::to_string(&child_config).expect("the runtime config serializes"),
            cache_dir.display().to_string(),
        ];
        let processes = Arc::new(Processes {
            members: (0..config.guest_processes)
                .map(|_| Arc::default())
                .collect(),
            eligible: Mutex::default(),
            restarts: AtomicU64::new(0),
            served: AtomicU64::new(0),
            metrics: metrics.clone(),
            tasks: tasks.clone(),
        });
        for (n, member) in processes.members.iter().enumerate() {
            let keep = Keep {
                n,
                exe: exe.clone(),
                args: args.clone(),
                member: member.clone(),
                processes: Arc::downgrade(&processes),
                ping_timeout: ping_timeout(config),
                tasks: tasks.clone(),
            };
            tasks.spawn(keep.run());
        }
        Ok(Some(processes))
    }

    /// A ready guest process for `pre`'s module, the least busy, or `None` if the module
    /// imports Weft's interfaces (it runs in the node) or no process is ready.
    fn pick(&self, digest: Digest, pre: &ProxyPre<GuestState>) -> Option<Arc<Conn>> {
        let eligible = *self
            .eligible
            .lock()
            .expect("not poisoned")
            .entry(digest)
            .or_insert_with(|| weft_import(pre).is_none());
        if !eligible {
            return None;
        }
        self.members
            .iter()
            .filter_map(|m| m.current.lock().expect("not poisoned").clone())
            .min_by_key(|c| c.in_flight.load(Ordering::Relaxed))
    }

    /// Has every process drop the modules not in `keep` (sent again if asked for later).
    pub(super) fn keep_modules(&self, keep: &std::collections::HashSet<Digest>) {
        self.eligible
            .lock()
            .expect("not poisoned")
            .retain(|digest, _| keep.contains(digest));
        for member in &self.members {
            let Some(conn) = member.current.lock().expect("not poisoned").clone() else {
                continue;
            };
            let dropped: Vec<Digest> = {
                let mut loaded = conn.loaded.lock().expect("not poisoned");
                let dropped = loaded
                    .keys()
                    .filter(|d| !keep.contains(d))
                    .copied()
                    .collect();
                loaded.retain(|digest, _| keep.contains(digest));
                dropped
            };
            if dropped.is_empty() {
                continue;
            }
            self.tasks.spawn(async move {
                for digest in dropped {
                    if let Err(e) = unload(&conn, digest).await {
                        tracing::warn!(pid = conn.pid, error = %e, "could not drop a module in a guest process");
                    }
                }
            });
        }
    }

    /// Modules the ready processes hold, summed over them, as they said last.
    pub(super) fn modules(&self) -> usize {
        self.members
            .iter()
            .filter_map(|m| m.current.lock().expect("not poisoned").clone())
            .map(|c| c.modules.load(Ordering::Relaxed))
            .sum()
    }
}

/// The first of Weft's interfaces (key-value, locks, log) `pre`'s component imports, if any:
/// only the node serves them.
fn weft_import(pre: &ProxyPre<GuestState>) -> Option<String> {
    let instance_pre = pre.instance_pre();
    instance_pre
        .component()
        .component_type()
        .imports(instance_pre.engine())
        .map(|(name, _)| name)
        .find(|name| name.starts_with("weft:plugin/"))
        .map(str::to_string)
}

/// A guest process chosen to run one request ([`Runtime::guest_process`]), counted as busy
/// with it from the choice on.
pub struct GuestProcess {
    in_flight: InFlight,
    processes: Arc<Processes>,
    digest: Digest,
    pre: ProxyPre<GuestState>,
}

impl GuestProcess {
    /// Runs `request` there, as [`Runtime::handle_http`] would in the node.
    pub async fn handle<B>(
        self,
        function: &FunctionName,
        limits: InvocationLimits,
        config: Arc<BTreeMap<String, String>>,
        request: http::Request<B>,
    ) -> Result<http::Response<ProcessBody>, RuntimeError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: std::fmt::Debug,
    {
        self.processes.served.fetch_add(1, Ordering::Relaxed);
        let call = Call {
            function: function.clone(),
            digest: self.digest,
            timeout_ms: limits.timeout.as_millis() as u64,
            memory_bytes: limits.memory_bytes,
            config,
        };
        let response = send(&self.in_flight.0, call, &self.pre, request).await?;
        let metrics = self.processes.metrics.clone();
        Ok(response.map(|inner| ProcessBody { inner, metrics }))
    }
}

/// A response body from a guest process. A guest that fails after its head ends its body
/// with trailers marked [`FAILED_HEADER`] (not a reset, which would drop a head still
/// queued), and this body then ends in an error, as [`super::http::GuestBody`] does.
pub struct ProcessBody {
    inner: Incoming,
    metrics: Arc<Metrics>,
}

impl http_body::Body for ProcessBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        match polled {
            std::task::Poll::Ready(Some(Ok(frame)))
                if frame
                    .trailers_ref()
                    .is_some_and(|t| t.contains_key(FAILED_HEADER)) =>
            {
                self.metrics.response_cut();
                std::task::Poll::Ready(Some(Err(
                    "the handler failed before finishing its response body".into(),
                )))
            }
            other => other.map(|f| f.map(|f| f.map_err(BoxError::from))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Sends `request` with its `call` to the guest process on `conn`, and reads a failure
/// before the head back as the error it was there.
async fn send<B>(
    conn: &Conn,
    call: Call,
    pre: &ProxyPre<GuestState>,
    request: http::Request<B>,
) -> Result<http::Response<Incoming>, RuntimeError>
where
    B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
    B::Error: std::fmt::Debug,
{
    let stopped_by = |e: String| {
        RuntimeError::Host(format!(
            "guest process {} stopped before answering function `{}` (it is started again): {e}",
            conn.pid, call.function
        ))
    };
    let stopped = |e: hyper::Error| stopped_by(e.to_string());
    let loading = conn
        .loaded
        .lock()
        .expect("not poisoned")
        .entry(call.digest)
        .or_default()
        .clone();
    loading
        .get_or_try_init(|| load(conn, call.digest, pre.instance_pre().component()))
        .await?;
    let (mut parts, body) = request.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = format!("http://guest{target}")
        .parse()
        .map_err(|e| RuntimeError::Host(format!("the request's target: {e}")))?;
    parts.version = http::Version::HTTP_2;
    // Replaces whatever a client sent under that name.
    parts.headers.insert(
        CALL_HEADER,
        // JSON escapes control characters; from_bytes takes the UTF-8 of the rest.
        http::HeaderValue::from_bytes(&serde_json::to_vec(&call).expect("a call serializes"))
            .map_err(|e| RuntimeError::Host(format!("the call's header: {e}")))?,
    );
    let body = body
        .map_err(|e| BoxError::from(format!("{e:?}")))
        .boxed_unsync();
    let response = conn
        .send
        .clone()
        .send_request(http::Request::from_parts(parts, body))
        .await
        .map_err(stopped)?;
    if !response.headers().contains_key(FAILED_HEADER) {
        return Ok(response);
    }
    Err(failure(response, |e| stopped_by(e.to_string())).await)
}

/// The error a guest process answered with (`failed` says what went wrong reading it).
async fn failure(
    response: http::Response<Incoming>,
    failed: impl Fn(String) -> RuntimeError,
) -> RuntimeError {
    match response.into_body().collect().await {
        Ok(body) => serde_json::from_slice(&body.to_bytes())
            .unwrap_or_else(|e| failed(format!("its error does not read: {e}"))),
        Err(e) => failed(e.to_string()),
    }
}

/// Sends a module's compiled artifact to a guest process.
async fn load(conn: &Conn, digest: Digest, component: &Component) -> Result<(), RuntimeError> {
    let artifact = component
        .serialize()
        .map_err(|e| RuntimeError::Host(format!("serializing module {digest}: {e}")))?;
    let body = Full::new(Bytes::from(artifact)).map_err(|never| match never {});
    let failed = |e: String| {
        RuntimeError::Host(format!(
            "sending module {digest} to guest process {}: {e}",
            conn.pid
        ))
    };
    about_module(conn, http::Method::PUT, digest, body.boxed_unsync(), failed).await
}

/// Tells a guest process to drop a module.
async fn unload(conn: &Conn, digest: Digest) -> Result<(), RuntimeError> {
    let body = http_body_util::Empty::new().map_err(|never| match never {});
    let failed = |e: String| {
        RuntimeError::Host(format!(
            "dropping module {digest} in guest process {}: {e}",
            conn.pid
        ))
    };
    about_module(
        conn,
        http::Method::DELETE,
        digest,
        body.boxed_unsync(),
        failed,
    )
    .await
}

/// The node's own request about a module, `METHOD /module/{digest}` without a call, and the
/// error the process answered, if it did (`failed` says what went wrong otherwise).
async fn about_module(
    conn: &Conn,
    method: http::Method,
    digest: Digest,
    body: OutBody,
    failed: impl Fn(String) -> RuntimeError,
) -> Result<(), RuntimeError> {
    let request = http::Request::builder()
        .method(method)
        .uri(format!("http://guest/module/{digest}"))
        .body(body)
        .expect("a valid request");
    let response = conn
        .send
        .clone()
        .send_request(request)
        .await
        .map_err(|e| failed(e.to_string()))?;
    if response.status().is_success() {
        let held = response
            .headers()
            .get(MODULES_HEADER)
            .and_then(|v| v.to_str().ok()?.parse().ok());
        if let Some(held) = held {
            conn.modules.store(held, Ordering::Relaxed);
        }
        return Ok(());
    }
    Err(failure(response, failed).await)
}

/// Keeps one guest process running.
struct Keep {
    n: usize,
    exe: PathBuf,
    args: [String; 3],
    member: Arc<Member>,
    processes: std::sync::Weak<Processes>,
    /// [`ping_timeout`].
    ping_timeout: Duration,
    tasks: Tasks,
}

impl Keep {
    async fn run(self) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let started = Instant::now();
            match self.start().await {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(process = self.n, error = %e, "could not start a guest process")
                }
            }
            let Some(processes) = self.processes.upgrade() else {
                return;
            };
            processes.restarts.fetch_add(1, Ordering::Relaxed);
            drop(processes);
            if started.elapsed() > Duration::from_secs(10) {
                backoff = Duration::from_millis(100);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// Starts the process and serves with it until it ends.
    async fn start(&self) -> Result<(), String> {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| format!("making its socket: {e}"))?;
        let mut child = tokio::process::Command::new(&self.exe)
            .args(&self.args)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.exe.display()))?;
        let pid = child.id().unwrap_or_default();
        if let Some(stderr) = child.stderr.take() {
            // The child's log lines go to the node's log.
            let n = self.n;
            self.tasks.spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    tracing::info!(process = n, pid, "{line}");
                }
            });
        }
        ours.set_nonblocking(true)
            .map_err(|e| format!("its socket: {e}"))?;
        let io = tokio::net::UnixStream::from_std(ours).map_err(|e| format!("its socket: {e}"))?;
        let (mut send, connection) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(1 << 20)
            .initial_connection_window_size(8 << 20)
            .max_header_list_size(MAX_HEAD)
            // Both ends are this executable: h2's limits on resets (against a peer that
            // floods them) would only close the link under load (at 1,024 over its life).
            .max_local_error_reset_streams(None)
            .timer(TokioTimer::new())
            .keep_alive_interval(PING_EVERY)
            .keep_alive_timeout(self.ping_timeout)
            .keep_alive_while_idle(true)
            .handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("greeting it: {e}"))?;
        let mut connection = std::pin::pin!(connection);
        tokio::select! {
            ready = send.ready() => ready.map_err(|e| format!("greeting it: {e}"))?,
            status = child.wait() => return Err(format!("it exited at start: {}", describe(status))),
            end = &mut connection => return Err(format!("its connection ended at start: {end:?}")),
        }
        let conn = Arc::new(Conn {
            pid,
            send,
            loaded: Mutex::default(),
            in_flight: AtomicUsize::new(0),
            modules: AtomicUsize::new(0),
        });
        *self.member.current.lock().expect("not poisoned") = Some(conn);
        tracing::info!(process = self.n, pid, "guest process ready");
        let ended = tokio::select! {
            status = child.wait() => describe(status),
            // A failed ping ends the connection too: the process is killed as `child` drops.
            end = &mut connection => match end {
                Ok(()) => "it closed its connection".to_string(),
                Err(e) => format!("its connection failed: {e}"),
            },
        };
        *self.member.current.lock().expect("not poisoned") = None;
        tracing::warn!(
            process = self.n,
            pid,
            "guest process ended: {ended}; starting another"
        );
        Ok(())
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => s.to_string(),
        Err(e) => format!("waiting for it failed: {e}"),
    }
}

impl Runtime {
    /// The guest process to run a request of `pre`'s module in (`guest_processes`), if any:
    /// none when none are configured or ready, when the module imports Weft's interfaces
    /// (key-value, locks, log), which only the node serves, when the function reuses its
    /// instances, or asks to run in the node, or asks nothing and is smaller than
    /// `guest_process_min_bytes`.
    pub fn guest_process(
        &self,
        digest: Digest,
        pre: &ProxyPre<GuestState>,
        module_bytes: u64,
        limits: &FunctionLimits,
    ) -> Option<GuestProcess> {
        let processes = self.processes.as_ref()?;
        let chosen = match limits.run_in {
            Some(RunIn::Process) => true,
            Some(RunIn::Node) => false,
            None => module_bytes >= self.config.guest_process_min_bytes,
        };
        if !chosen || limits.reuse.is_some() {
            return None;
        }
        let conn = processes.pick(digest, pre)?;
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        Some(GuestProcess {
            in_flight: InFlight(conn),
            processes: processes.clone(),
            digest,
            pre: pre.clone(),
        })
    }

    /// Why a function prepared as `prepared` cannot ask to run in a guest process
    /// (`weft deploy --run-in process`), if it cannot.
    pub fn cannot_run_in_process(prepared: &Prepared, limits: &FunctionLimits) -> Option<String> {
        let Prepared::Http(pre) = prepared else {
            return Some(format!(
                "run_in=process is for wasi:http handlers; this component is a {} function",
                prepared.kind()
            ));
        };
        if limits.reuse.is_some() {
            return Some(
                "give reuse or run_in=process, not both: instances are reused only in the node"
                    .into(),
            );
        }
        weft_import(pre).map(|name| {
            format!("run_in=process is for handlers that use only WASI; this component imports `{name}`, which only the node serves")
        })
    }

    /// Appends the modules held in memory, and the guest processes' metrics (zeros when
    /// there are none).
    pub fn render_module_metrics(&self, out: &mut String) {
        use crate::metrics::{Kind, single};
        single(
            out,
            "weft_modules_prepared",
            Kind::Gauge,
            "Compiled modules held in the node's memory (those deployments name as current or as a rollback's target, and any loaded since the last change).",
            self.prepared_count(),
        );
        let p = self.processes.as_deref();
        let ready = p.map_or(0, |p| {
            p.members
                .iter()
                .filter(|m| m.current.lock().expect("not poisoned").is_some())
                .count()
        });
        single(
            out,
            "weft_guest_processes",
            Kind::Gauge,
            "Guest processes ready to serve requests (guest_processes).",
            ready,
        );
        single(
            out,
            "weft_guest_process_requests_total",
            Kind::Counter,
            "Requests sent to a guest process to run.",
            p.map_or(0, |p| p.served.load(Ordering::Relaxed)),
        );
        single(
            out,
            "weft_guest_process_restarts_total",
            Kind::Counter,
            "Guest processes started again after theirs ended (crashed, was killed, or stopped answering pings).",
            p.map_or(0, |p| p.restarts.load(Ordering::Relaxed)),
        );
        single(
            out,
            "weft_guest_process_modules",
            Kind::Gauge,
            "Compiled modules the ready guest processes hold, summed over them.",
            p.map_or(0, Processes::modules),
        );
    }
}
