//! The guest process's side: `weft __weft-guest-process`, started by its node, serving the
//! node's requests over the socket on its stdin ([`super`] says how the two talk).

use std::collections::HashMap;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use wasmtime::component::Component;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use super::{BoxError, CALL_HEADER, Call, FAILED_HEADER, GUEST_ARG, MAX_ARTIFACT, MAX_HEAD};
use super::{MODULES_HEADER, OutBody};
use crate::id::Digest;
use crate::metrics::Metrics;
use crate::runtime::{Access, FunctionKind, GuestState, InvocationLimits, Prepared};
use crate::runtime::{Runtime, RuntimeConfig, RuntimeError};
use crate::tasks::Tasks;

/// The guest process: `weft __weft-guest-process CONFIG CACHE_DIR`, its stdin a socket to
/// its node. Serves until the node closes the socket.
pub fn guest_main() -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("WEFT_LOG").unwrap_or_else(|_| {
                tracing_subscriber::EnvFilter::new("info,cranelift=warn,wasmtime=warn")
            }),
        )
        .with_ansi(false)
        .without_time()
        .with_writer(std::io::stderr)
        .try_init();
    let args: Vec<String> = std::env::args().skip(2).collect();
    let [config, cache_dir] = args.as_slice() else {
        eprintln!("usage: weft {GUEST_ARG} CONFIG CACHE_DIR (started by a node, not by hand)");
        return ExitCode::from(2);
    };
    let config: RuntimeConfig = match serde_json::from_str(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("the runtime configuration does not parse: {e}");
            return ExitCode::from(2);
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(config, PathBuf::from(cache_dir))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("guest process: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: RuntimeConfig, cache_dir: PathBuf) -> Result<(), String> {
    let socket = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .map_err(|e| format!("its socket: {e}"))?;
    let socket = std::os::unix::net::UnixStream::from(socket);
    socket
        .set_nonblocking(true)
        .map_err(|e| format!("its socket (is stdin a socket?): {e}"))?;
    let socket =
        tokio::net::UnixStream::from_std(socket).map_err(|e| format!("its socket: {e}"))?;
    let runtime = Arc::new(
        Runtime::new(
            config,
            cache_dir,
            Arc::new(Metrics::default()),
            Tasks::new(tokio_util::sync::CancellationToken::new()),
        )
        .map_err(|e| e.to_string())?,
    );
    let modules: Arc<Mutex<HashMap<Digest, ProxyPre<GuestState>>>> = Arc::default();
    let service = hyper::service::service_fn(move |request| {
        let runtime = runtime.clone();
        let modules = modules.clone();
        async move {
            let response = match answer(&runtime, &modules, request).await {
                Ok(response) => response,
                Err(e) => failed(&e),
            };
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .max_concurrent_streams(u32::MAX)
        .max_header_list_size(MAX_HEAD)
        .max_local_error_reset_streams(None)
        .max_pending_accept_reset_streams(None)
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(8 << 20)
        .serve_connection(TokioIo::new(socket), service)
        .await
        .map_err(|e| format!("the connection to the node: {e}"))
}

/// A failure before the response head, as the node reads it.
fn failed(error: &RuntimeError) -> http::Response<OutBody> {
    let body = serde_json::to_vec(error).expect("an error serializes");
    http::Response::builder()
        .status(http::StatusCode::INTERNAL_SERVER_ERROR)
        .header(FAILED_HEADER, "1")
        .body(
            Full::new(Bytes::from(body))
                .map_err(|n| match n {})
                .boxed_unsync(),
        )
        .expect("a valid response")
}

async fn answer(
    runtime: &Runtime,
    modules: &Mutex<HashMap<Digest, ProxyPre<GuestState>>>,
    request: http::Request<Incoming>,
) -> Result<http::Response<OutBody>, RuntimeError> {
    // Every guest request carries its call, which the node sets over anything a client sent;
    // only the node's own module uploads come without one. (Judged by the path, a client's
    // `/fn/NAME/module/...` would have been taken for an artifact to load.)
    if !request.headers().contains_key(CALL_HEADER) {
        let digest = request
            .uri()
            .path()
            .strip_prefix("/module/")
            .ok_or_else(|| {
                RuntimeError::Host("a request with neither a call nor a module".into())
            })?;
        let digest: Digest = digest
            .parse()
            .map_err(|e| RuntimeError::Host(format!("a module's digest: {e}")))?;
        let done = |held: usize| {
            http::Response::builder()
                .header(MODULES_HEADER, held)
                .body(
                    http_body_util::Empty::new()
                        .map_err(|n| match n {})
                        .boxed_unsync(),
                )
                .expect("a valid response")
        };
        if request.method() == http::Method::DELETE {
            // Requests already running it keep their own reference.
            let mut modules = modules.lock().expect("not poisoned");
            modules.remove(&digest);
            return Ok(done(modules.len()));
        }
        let artifact = http_body_util::Limited::new(request.into_body(), MAX_ARTIFACT)
            .collect()
            .await
            .map_err(|e| RuntimeError::Host(format!("reading module {digest}: {e}")))?
            .to_bytes();
        let pre = runtime.load_artifact(digest, &artifact)?;
        let mut modules = modules.lock().expect("not poisoned");
        modules.insert(digest, pre);
        return Ok(done(modules.len()));
    }
    let (mut parts, body) = request.into_parts();
    let call: Call = parts
        .headers
        .remove(CALL_HEADER)
        .and_then(|v| serde_json::from_slice(v.as_bytes()).ok())
        .ok_or_else(|| RuntimeError::Host("a request without its call".into()))?;
    let pre = modules
        .lock()
        .expect("not poisoned")
        .get(&call.digest)
        .cloned()
        .ok_or_else(|| {
            RuntimeError::Host(format!(
                "module {} was not sent to this guest process",
                call.digest
            ))
        })?;
    // The request as the guest would see it in the node (`api::invoke`).
    parts.uri = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .parse()
        .map_err(|e| RuntimeError::Host(format!("the request's target: {e}")))?;
    parts.version = http::Version::HTTP_11;
    let limits = InvocationLimits {
        timeout: Duration::from_millis(call.timeout_ms),
        memory_bytes: call.memory_bytes,
    };
    let slot = runtime.slot().await?;
    let access = Access {
        config: call.config,
        ..Access::default()
    };
    let response = runtime
        .handle_http(
            &call.function,
            &pre,
            limits,
            access,
            http::Request::from_parts(parts, body),
            slot,
        )
        .await?;
    let mut response = response.map(|inner| Marked { inner, done: false }.boxed_unsync());
    // Only this process marks a failure: a guest's own header of that name would turn its
    // answer into one.
    response.headers_mut().remove(FAILED_HEADER);
    Ok(response)
}

/// The guest's response body as a guest process sends it: a failure becomes trailers
/// marked [`FAILED_HEADER`] (see [`ProcessBody`]); the guest's own trailers of that name are
/// dropped.
struct Marked<B> {
    inner: B,
    done: bool,
}

impl<B> http_body::Body for Marked<B>
where
    B: http_body::Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.done {
            return std::task::Poll::Ready(None);
        }
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        std::task::Poll::Ready(match futures::ready!(polled) {
            Some(Ok(frame)) => Some(Ok(match frame.into_trailers() {
                Ok(mut trailers) => {
                    trailers.remove(FAILED_HEADER);
                    http_body::Frame::trailers(trailers)
                }
                Err(frame) => frame,
            })),
            Some(Err(_)) => {
                self.done = true;
                let mut trailers = http::HeaderMap::new();
                trailers.insert(FAILED_HEADER, http::HeaderValue::from_static("1"));
                Some(Ok(http_body::Frame::trailers(trailers)))
            }
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.done || self.inner.is_end_stream()
    }
}

impl Runtime {
    /// Links a compiled artifact the node sent (a guest process's way to get its modules).
    fn load_artifact(
        &self,
        digest: Digest,
        artifact: &[u8],
    ) -> Result<ProxyPre<GuestState>, RuntimeError> {
        // SAFETY: the artifact was serialized by the node that started this process, running
        // this very executable with an engine of this configuration, and came over a private
        // socket pair; wasmtime also checks its header against the engine.
        #[allow(unsafe_code)]
        let component = unsafe { Component::deserialize(&self.engine, artifact) }
            .map_err(|e| RuntimeError::Host(format!("loading module {digest}: {e}")))?;
        match self.link(&component, Some(FunctionKind::Http))? {
            Prepared::Http(pre) => Ok(pre),
            _ => Err(RuntimeError::Host(format!(
                "module {digest} is not an HTTP handler"
            ))),
        }
    }
}
