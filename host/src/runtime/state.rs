//! Per-invocation guest state: the WASI context (no ambient authority), the memory limiter,
//! guest output routed to the node's log, and the host side of the Weft imports.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, ResourceLimiter};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::RuntimeError;
use super::holding::{GuestLocks, HandlerLock, Holding};
use crate::id::FunctionName;
use crate::replication::{Failure, Gate, KvHandle, ReplicationError};

use super::bindings::handler::weft::plugin::{kv, log};

/// How much guest stdout/stderr one invocation may write to the node's log.
const MAX_LOG_BYTES: usize = 64 << 10;
/// How much of the guest's stderr is kept to explain a failure.
const STDERR_TAIL: usize = 2 << 10;
/// The most resources (requests, headers, streams...) an instance may still hold after
/// answering and be reused. A guest whose garbage collector keeps the requests it has served
/// would otherwise hold every one of them: StarlingMonkey (componentize-js) never dropped its
/// request objects in 120,000 requests, and the node's memory and the scan of the table in
/// [`GuestState::reusable`] grew with them.
pub const MAX_HELD_RESOURCES: usize = 1024;

/// What of the cluster an invocation may use.
#[derive(Default)]
pub struct Access {
    /// Its key-value namespace.
    pub kv: Option<KvHandle>,
    /// The lock service.
    pub locks: Option<GuestLocks>,
    /// The lock a lock-protected handler runs under.
    pub handler: Option<HandlerLock>,
    /// The output gate of a lock-protected handler's line: its key-value reads and writes go
    /// through it while it holds no lock of its own.
    pub gate: Option<Gate>,
    /// Set, by the first, when a write was refused or not made because a lock was lost: what
    /// to tell the caller, who keeps a clone to look at after the call.
    pub fenced: Option<Arc<OnceLock<String>>>,
    /// Dropped with the guest's store: its receiver learns that the guest has ended (returned,
    /// failed or was stopped), whatever the response said and whenever it was sent.
    pub finished: Option<tokio::sync::oneshot::Sender<()>>,
    /// The function's configuration (`wasi:config/store`), given at deploy.
    pub config: Arc<BTreeMap<String, String>>,
    /// For a WASI 0.1 program served the CGI way: its environment, stdin and stdout.
    pub cgi: Option<Cgi>,
}

/// What a CGI program sees of its request, and where its response goes.
pub struct Cgi {
    /// The request's meta-variables and headers.
    pub env: Vec<(String, String)>,
    /// The request body.
    pub stdin: bytes::Bytes,
    /// The response, printed.
    pub stdout: wasmtime_wasi::p2::pipe::MemoryOutputPipe,
}

/// The `T` of every `Store<T>`.
pub struct GuestState {
    pub(super) function: FunctionName,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: DenyOutgoing,
    pub(super) table: ResourceTable,
    pub(super) limiter: Limiter,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// What the invocation may still write to the node's log (shared with its stdout and stderr).
    log_budget: Arc<AtomicUsize>,
    pub(super) kv: Option<KvHandle>,
    /// The lock service as the guest may use it (`None`: not available to this call).
    pub(super) locks: Option<GuestLocks>,
    /// The locks the invocation holds: the handler's own and its guards'.
    pub(super) holding: Vec<Holding>,
    /// The lock-protected handler's own lock.
    pub(super) handler_lock: Option<HandlerLock>,
    /// See [`Access::gate`].
    gate: Option<Gate>,
    /// A random id naming this invocation as a lock holder, made when first needed.
    pub(super) invocation: Option<u64>,
    /// See [`Access::fenced`].
    fenced: Option<Arc<OnceLock<String>>>,
    /// See [`Access::finished`].
    _finished: Option<tokio::sync::oneshot::Sender<()>>,
    /// Pair records emitted by the current map/combine/reduce call.
    pub(super) emitted: Vec<u8>,
    pub(super) emit_limit: Option<u64>,
    pub(super) emit_overflow: bool,
    /// See [`Access::config`].
    pub(super) config: Arc<BTreeMap<String, String>>,
}

impl GuestState {
    pub(super) fn new(
        function: FunctionName,
        memory_bytes: u64,
        access: Access,
        emit_limit: Option<u64>,
    ) -> Self {
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let budget = Arc::new(AtomicUsize::new(MAX_LOG_BYTES));
        // No preopened directories, no environment, no arguments; sockets and name lookup are
        // off by default in WasiCtx and stay off.
        let mut wasi = WasiCtx::builder();
        wasi.stderr(GuestLog {
            function: function.clone(),
            stream: "stderr",
            tail: Some(stderr.clone()),
            budget: budget.clone(),
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
        match access.cgi {
            // A CGI program: the request in its environment and stdin, its stdout kept; its
            // only argument is its name.
            Some(cgi) => {
                wasi.envs(&cgi.env)
                    .args(&[function.as_str()])
                    .stdin(wasmtime_wasi::p2::pipe::MemoryInputPipe::new(cgi.stdin))
                    .stdout(cgi.stdout);
            }
            None => {
                wasi.stdout(GuestLog {
                    function: function.clone(),
                    stream: "stdout",
                    tail: None,
                    budget: budget.clone(),
                });
            }
        }
        let wasi = wasi.build();
        let handler = access.handler.clone();
        let mut state = GuestState {
            function,
            wasi,
            http: WasiHttpCtx::new(),
            hooks: DenyOutgoing,
            table: ResourceTable::new(),
            limiter: Limiter {
                max: memory_bytes as usize,
                hit: false,
            },
            stderr,
            log_budget: budget,
            kv: access.kv,
            locks: access.locks,
            holding: Vec::new(),
            handler_lock: None,
            gate: access.gate,
            invocation: None,
            fenced: access.fenced,
            _finished: access.finished,
            emitted: Vec::new(),
            emit_limit,
            emit_overflow: false,
            config: access.config,
        };
        if let Some(h) = handler {
            state.hold_lock(h.lock.clone(), h.token, h.lost.clone());
            state.handler_lock = Some(h);
        }
        state
    }

    /// Makes a reused instance's state that of a new invocation with `access` (a plain HTTP
    /// handler's: no handler lock, gate, fence or CGI): the guest's kv and lock handles, its
    /// log budget and its stderr tail start afresh; its linear memory is the guest's business.
    pub(super) fn renew(&mut self, access: Access) {
        debug_assert!(access.handler.is_none() && access.gate.is_none() && access.cgi.is_none());
        self.kv = access.kv;
        self.locks = access.locks;
        self.holding.clear();
        self.handler_lock = None;
        self.gate = None;
        self.invocation = None;
        self.fenced = None;
        self._finished = None;
        self.config = access.config;
        self.limiter.hit = false;
        self.stderr.lock().expect("not poisoned").clear();
        self.log_budget.store(MAX_LOG_BYTES, Ordering::Relaxed);
    }

    /// Whether the instance may serve another request: it holds no lock, left no response body
    /// open (a body it neither finished nor dropped ends only with its store; reused, the client
    /// would wait for it), and holds at most [`MAX_HELD_RESOURCES`] resources. Whether it let go
    /// of its request's body is the caller's to check ([`super::http`]).
    pub(super) fn reusable(&mut self) -> bool {
        use wasmtime_wasi_http::p2::body::HostOutgoingBody;
        if !self.holding.is_empty() {
            return false;
        }
        let mut held = 0;
        for entry in self.table.iter_mut() {
            held += 1;
            if held > MAX_HELD_RESOURCES || entry.downcast_mut::<HostOutgoingBody>().is_some() {
                return false;
            }
        }
        true
    }

    /// The last bytes the guest wrote to stderr, as text.
    pub(super) fn stderr_tail(&self) -> String {
        let buf = self.stderr.lock().expect("not poisoned");
        String::from_utf8_lossy(&buf).trim().to_string()
    }

    /// Takes what the current call emitted.
    pub(super) fn take_emitted(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.emitted)
    }
}

/// Caps linear memory growth and remembers whether the cap was hit, so the failure can be
/// reported as what it is rather than as the guest's reaction to a failed allocation.
pub(super) struct Limiter {
    max: usize,
    pub(super) hit: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max {
            self.hit = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

impl WasiView for GuestState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for GuestState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// Outgoing HTTP is not granted to guests (no ambient network authority).
struct DenyOutgoing;

impl WasiHttpHooks for DenyOutgoing {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// Guest stdout or stderr: complete lines go to the node's log tagged with the function;
/// stderr's tail is also kept to explain a trap.
struct GuestLog {
    function: FunctionName,
    stream: &'static str,
    tail: Option<Arc<Mutex<Vec<u8>>>>,
    /// Bytes the invocation may still log, shared by stdout, stderr and every handle to them.
    budget: Arc<AtomicUsize>,
}

impl IsTerminal for GuestLog {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestLog {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            function: self.function.clone(),
            stream: self.stream,
            tail: self.tail.clone(),
            line: Vec::new(),
            budget: self.budget.clone(),
        })
    }
}

struct LineWriter {
    function: FunctionName,
    stream: &'static str,
    tail: Option<Arc<Mutex<Vec<u8>>>>,
    line: Vec<u8>,
    budget: Arc<AtomicUsize>,
}

impl LineWriter {
    fn emit_line(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        tracing::info!(target: "weft::guest", function = %self.function, stream = self.stream, "{}", text.trim_end());
        self.line.clear();
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if let Some(tail) = &self.tail {
            let mut t = tail.lock().expect("not poisoned");
            t.extend_from_slice(buf);
            let excess = t.len().saturating_sub(STDERR_TAIL);
            t.drain(..excess);
        }
        let room = self.budget.load(Ordering::Relaxed);
        if room > 0 {
            let take = buf.len().min(room);
            self.budget.fetch_sub(take, Ordering::Relaxed);
            for &b in &buf[..take] {
                if b == b'\n' {
                    self.emit_line();
                } else {
                    self.line.push(b);
                }
            }
            if take == room {
                self.emit_line();
                tracing::warn!(function = %self.function, "guest output beyond {MAX_LOG_BYTES} bytes per invocation dropped");
            }
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.line.is_empty() {
            self.emit_line();
        }
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.line.is_empty() {
            self.emit_line();
        }
    }
}

impl log::Host for GuestState {
    fn log(&mut self, level: log::Level, message: String) {
        let message = truncate(&message, 4 << 10);
        let f = &self.function;
        match level {
            log::Level::Trace => tracing::trace!(target: "weft::guest", function = %f, "{message}"),
            log::Level::Debug => tracing::debug!(target: "weft::guest", function = %f, "{message}"),
            log::Level::Info => tracing::info!(target: "weft::guest", function = %f, "{message}"),
            log::Level::Warn => tracing::warn!(target: "weft::guest", function = %f, "{message}"),
            log::Level::Error => tracing::error!(target: "weft::guest", function = %f, "{message}"),
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl GuestState {
    fn kv_space(&self) -> Result<&KvHandle, kv::Error> {
        self.kv.as_ref().ok_or_else(|| {
            kv::Error::Unavailable("key-value storage is not available to this call".into())
        })
    }

    /// The handle to write through, unless a lock the invocation holds was lost: then the
    /// write is not even tried.
    fn kv_to_write(&mut self) -> Result<KvHandle, kv::Error> {
        let fencing = self.kv.as_ref().is_none_or(KvHandle::fencing);
        if fencing && let Some((key, token)) = super::holding::lost(&self.holding) {
            let message = format!(
                "lock `{key}` (token {token}) was lost: its lease ran out before it was renewed, so this write was not made"
            );
            self.report_fenced(&message);
            return Err(kv::Error::Fenced(message));
        }
        self.kv_space().cloned()
    }

    /// The output gate to read and write through, if the invocation has one and holds no
    /// lock but the handler's. One that holds more writes around the gate, as any other
    /// invocation does, once everything written through the gate is acknowledged.
    async fn through_gate(&mut self) -> Result<Option<Gate>, kv::Error> {
        let Some(gate) = self.gate.clone() else {
            return Ok(None);
        };
        if self.holding.len() <= 1 {
            return Ok(Some(gate));
        }
        match gate.drain().await {
            Ok(()) => Ok(None),
            Err(why) => Err(self.closed(why)),
        }
    }

    /// Forgets what the gate keeps of `key`, written around it.
    fn around_gate(&self, key: &[u8]) {
        if let Some(gate) = &self.gate {
            gate.forget(key);
        }
    }

    /// A closed gate as the guest sees it.
    fn closed(&mut self, why: Failure) -> kv::Error {
        if why.is_fenced() {
            self.report_fenced(why.message());
            kv::Error::Fenced(why.message().to_string())
        } else {
            kv::Error::Unavailable(why.message().to_string())
        }
    }

    fn report_fenced(&self, message: &str) {
        if let Some(f) = &self.fenced {
            let _ = f.set(message.to_string());
        }
    }

    /// `set` and `set-with-ttl`: through the line's gate when the handler is lock-protected.
    async fn set_for(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Option<Duration>,
    ) -> Result<(), kv::Error> {
        if let Some(gate) = self.through_gate().await? {
            if let Err(e) = crate::replication::check_ttl(ttl) {
                return Err(self.failed(e));
            }
            return gate
                .set(&key, Some(value), ttl)
                .await
                .map_err(|e| self.failed(e));
        }
        let kv = self.kv_to_write()?;
        self.around_gate(&key);
        kv.set(&key, &value, ttl).await.map_err(|e| self.failed(e))
    }

    /// Replaces the value under `key` with what `f` makes of it, atomically with respect to
    /// the function's other invocations: through the line's gate when the handler is
    /// lock-protected (the line runs one request of the key at a time, and the gate writes on
    /// condition of the version it read), else by compare-and-set.
    pub(super) async fn update<T>(
        &mut self,
        key: Vec<u8>,
        f: impl Fn(Option<&[u8]>) -> Result<(Vec<u8>, T), ReplicationError>,
    ) -> Result<T, kv::Error> {
        if let Some(gate) = self.through_gate().await? {
            let old = gate.get(&key).await.map_err(|e| self.failed(e))?;
            let (new, answer) = f(old.as_deref()).map_err(|e| self.failed(e))?;
            gate.set(&key, Some(new), None)
                .await
                .map_err(|e| self.failed(e))?;
            return Ok(answer);
        }
        let kv = self.kv_to_write()?;
        self.around_gate(&key);
        kv.update(&key, f).await.map_err(|e| self.failed(e))
    }

    /// A key-value failure as the guest sees it (the limits are checked by the store); a
    /// refused write is remembered, to tell the caller.
    fn failed(&mut self, e: ReplicationError) -> kv::Error {
        match e {
            ReplicationError::TooLarge(m) => kv::Error::TooLarge(m),
            e @ (ReplicationError::Fenced { .. } | ReplicationError::LockLost(_)) => {
                let message = e.to_string();
                self.report_fenced(&message);
                kv::Error::Fenced(message)
            }
            e => kv::Error::Unavailable(e.to_string()),
        }
    }
}

impl kv::Host for GuestState {
    async fn get(&mut self, key: Vec<u8>) -> Result<Option<Vec<u8>>, kv::Error> {
        if let Some(gate) = self.through_gate().await? {
            return gate.get(&key).await.map_err(|e| self.failed(e));
        }
        let kv = self.kv_space()?.clone();
        kv.get(&key).await.map_err(|e| self.failed(e))
    }

    async fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> Result<(), kv::Error> {
        self.set_for(key, value, None).await
    }

    async fn set_with_ttl(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Result<(), kv::Error> {
        self.set_for(key, value, Some(Duration::from_millis(ttl_ms)))
            .await
    }

    async fn delete(&mut self, key: Vec<u8>) -> Result<bool, kv::Error> {
        if let Some(gate) = self.through_gate().await? {
            let existed = gate.get(&key).await.map_err(|e| self.failed(e))?.is_some();
            gate.set(&key, None, None)
                .await
                .map_err(|e| self.failed(e))?;
            return Ok(existed);
        }
        let kv = self.kv_to_write()?;
        self.around_gate(&key);
        kv.delete(&key).await.map_err(|e| self.failed(e))
    }

    async fn increment(&mut self, key: Vec<u8>, delta: i64) -> Result<i64, kv::Error> {
        self.update(key, |old| {
            Ok(crate::replication::add_to_counter(old, delta))
        })
        .await
    }
}

impl super::bindings::task::weft::plugin::emit::Host for GuestState {
    fn emit(&mut self, pairs: Vec<u8>) -> wasmtime::Result<()> {
        if let Some(limit) = self.emit_limit
            && (self.emitted.len() + pairs.len()) as u64 > limit
        {
            self.emit_overflow = true;
            wasmtime::bail!("emitted more than {limit} bytes in one call");
        }
        if self.emitted.is_empty() {
            self.emitted = pairs;
        } else {
            self.emitted.extend_from_slice(&pairs);
        }
        Ok(())
    }
}

/// WASI (p2) without ambient authority, wasi:http (incoming; outgoing denied), kv and log.
pub(super) fn http_linker(engine: &Engine) -> Result<Linker<GuestState>, RuntimeError> {
    let mut linker = Linker::new(engine);
    let err = |e: wasmtime::Error| RuntimeError::Host(format!("building the linker: {e}"));
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(err)?;
    super::bindings::handler::HandlerImports::add_to_linker::<_, HasSelf<GuestState>>(
        &mut linker,
        |s| s,
    )
    .map_err(err)?;
    super::bindings::keyvalue::Imports::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |s| s)
        .map_err(err)?;
    super::bindings::config::Imports::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |s| s)
        .map_err(err)?;
    Ok(linker)
}

/// WASI (p2) without ambient authority, and nothing else: a WASI 0.1 program served the CGI
/// way (its preview1 calls go through the adapter to these).
pub(super) fn wagi_linker(engine: &Engine) -> Result<Linker<GuestState>, RuntimeError> {
    let mut linker = Linker::new(engine);
    let err = |e: wasmtime::Error| RuntimeError::Host(format!("building the linker: {e}"));
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
    Ok(linker)
}

/// WASI (p2) without ambient authority, log and emit.
pub(super) fn task_linker(engine: &Engine) -> Result<Linker<GuestState>, RuntimeError> {
    let mut linker = Linker::new(engine);
    let err = |e: wasmtime::Error| RuntimeError::Host(format!("building the linker: {e}"));
    wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
    super::bindings::task::Mapreduce::add_to_linker::<_, HasSelf<GuestState>>(&mut linker, |s| s)
        .map_err(err)?;
    Ok(linker)
}
