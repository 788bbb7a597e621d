//! Invoking an HTTP handler through `wasi:http/incoming-handler`.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::reuse::Warm;
use super::state::GuestState;
use super::{InvocationLimits, Runtime, RuntimeError, Slot, classify, with_deadline};
use crate::id::FunctionName;
use crate::tasks::Tasks;

/// A response produced by a guest; its body streams from the guest as it runs.
pub type HttpResponse = http::Response<GuestBody>;

/// A response body streamed from a guest. It ends cleanly only once the guest has returned
/// successfully: when the guest fails after its head was sent (deadline, trap, memory), the
/// body ends in an error, so the client sees a broken stream (an aborted chunked body, a
/// connection closed short of its `Content-Length`), never a complete-looking response.
/// (wasmtime's own body ends cleanly when the guest's store is dropped mid-body.)
pub struct GuestBody {
    inner: HyperOutgoingBody,
    /// The guest's outcome: `true` once it returned successfully.
    outcome: Option<tokio::sync::oneshot::Receiver<bool>>,
}

impl http_body::Body for GuestBody {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, wasmtime_wasi_http::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(None) => {}
            other => return other,
        }
        let Some(outcome) = self.outcome.as_mut() else {
            return Poll::Ready(None);
        };
        let ok = match Pin::new(outcome).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(r) => r.unwrap_or(false),
        };
        self.outcome = None;
        if ok {
            Poll::Ready(None)
        } else {
            Poll::Ready(Some(Err(wasmtime_wasi_http::Error::InternalError(Some(
                "the handler failed before finishing its response body".into(),
            )))))
        }
    }

    fn is_end_stream(&self) -> bool {
        self.outcome.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Why a request body stopped before its end, as the guest reading it is told: a body is
/// streamed into the guest as the client sends it, so these reach the guest as a failed read
/// (`wasi:http`'s `error-code`), and the caller decides what the client is answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BodyFault {
    /// It passed the limit of this many bytes.
    TooLarge(u64),
    /// It did not arrive in time.
    TooSlow,
    /// The client's connection failed while sending it.
    Broken(String),
}

/// A request body that says when the guest is done with it: read to its end, or dropped. A
/// body still open is the client's connection, which cannot go on to its next request until
/// the body is, so an instance that kept one (in a resource it never dropped) is not reused;
/// one that keeps only a request whose body was empty or read whole may be (JavaScript
/// runtimes keep the request object until their garbage collector frees it).
struct Watched<B> {
    inner: B,
    /// Set once the body has ended or is dropped; only kept for an instance that may be reused.
    released: Option<Arc<AtomicBool>>,
}

impl<B: http_body::Body> Watched<B> {
    /// `inner`, watched if `watch`; the flag it sets, if so.
    fn new(inner: B, watch: bool) -> (Self, Option<Arc<AtomicBool>>) {
        let released = watch.then(|| Arc::new(AtomicBool::new(inner.is_end_stream())));
        let watched = Watched {
            inner,
            released: released.clone(),
        };
        (watched, released)
    }

    fn release(&self) {
        if let Some(released) = &self.released {
            released.store(true, Ordering::Release);
        }
    }
}

impl<B: http_body::Body + Unpin> http_body::Body for Watched<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None)) || self.inner.is_end_stream() {
            self.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        if let Some(released) = &self.released {
            released.store(true, Ordering::Release);
        }
    }
}

impl From<BodyFault> for wasmtime_wasi_http::Error {
    fn from(fault: BodyFault) -> Self {
        match fault {
            BodyFault::TooLarge(limit) => {
                wasmtime_wasi_http::Error::HttpRequestBodySize(Some(limit))
            }
            BodyFault::TooSlow => wasmtime_wasi_http::Error::ConnectionReadTimeout,
            BodyFault::Broken(e) => wasmtime_wasi_http::Error::InternalError(Some(e)),
        }
    }
}

type GuestRun = Pin<Box<dyn Future<Output = Result<(), RuntimeError>> + Send>>;
type Head = Result<
    http::Response<HyperOutgoingBody>,
    wasmtime_wasi_http::p2::bindings::http::types::ErrorCode,
>;

/// A guest's run, polled by the request that started it until the guest hands over its
/// response head: a guest that ends in the poll in which it hands its head over (most do)
/// runs to its end without a task of its own, and without another worker thread woken to run
/// it and then to wake the request. Whatever is left of it after the head (streaming the body)
/// goes on in its own task, as does a guest whose client went away before the head, so while
/// the node runs a guest always runs to its end. The run is counted among the node's tasks
/// wherever it is polled, so that shutdown waits for it.
///
/// The head goes out when the guest next yields after handing it over: at once for a guest
/// that ends or waits for I/O, and within one epoch tick (`[runtime] epoch_tick`) for one
/// that computes on, as the deadline's check yields at each tick.
struct Inline<'a> {
    guest: Option<GuestRun>,
    /// Borrowed, not cloned: a clone of the node's cancellation token takes its lock.
    tasks: &'a Tasks,
}

impl<'a> Inline<'a> {
    fn new(
        guest: impl Future<Output = Result<(), RuntimeError>> + Send + 'static,
        tasks: &'a Tasks,
    ) -> Self {
        Inline {
            guest: Some(Box::pin(tasks.track(guest))),
            tasks,
        }
    }

    /// Moves what is left of the guest's run, if anything, to a task of its own (none once the
    /// node's runtime is gone: the run is dropped with it).
    fn hand_over(&mut self) {
        if let Some(guest) = self.guest.take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            self.tasks.spawn_joined(guest);
        }
    }

    /// Runs the guest until it has handed over its head (through `head`) or ended without
    /// one. A guest that panics ends in an error, as its own task would have.
    async fn until_head(&mut self, mut head: tokio::sync::oneshot::Receiver<Head>) -> Answer {
        // Set if the guest dropped its response-outparam unset: only its end can come then.
        let mut head_gone = false;
        let mut answered = None;
        let ended = std::future::poll_fn(|cx| {
            let guest = self
                .guest
                .as_mut()
                .expect("polled until it ends, not after");
            let polled =
                std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guest.as_mut().poll(cx)));
            match polled {
                Ok(Poll::Ready(result)) => return Poll::Ready(Some(result)),
                Err(panic) => {
                    let said = (panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    let panicked = RuntimeError::Host(format!("the invocation panicked: {said}"));
                    return Poll::Ready(Some(Err(panicked)));
                }
                Ok(Poll::Pending) => {}
            }
            if !head_gone {
                match Pin::new(&mut head).poll(cx) {
                    Poll::Ready(Ok(h)) => {
                        answered = Some(h);
                        return Poll::Ready(None);
                    }
                    Poll::Ready(Err(_)) => head_gone = true,
                    Poll::Pending => {}
                }
            }
            Poll::Pending
        })
        .await;
        match ended {
            Some(result) => {
                self.guest = None;
                match head.try_recv() {
                    Ok(h) => Answer::Head(h),
                    Err(_) => Answer::Ended(result),
                }
            }
            None => {
                self.hand_over();
                Answer::Head(
                    answered.expect("set when the poll above ends without the guest's end"),
                )
            }
        }
    }
}

/// How a guest's run answered its request.
enum Answer {
    /// With a head (or an error code in its place); its body streams from the guest.
    Head(Head),
    /// The guest ended without handing over a head.
    Ended(Result<(), RuntimeError>),
}

impl Drop for Inline<'_> {
    fn drop(&mut self) {
        // Still here: the request was dropped (its client went away) before the guest's head.
        self.hand_over();
    }
}

impl Runtime {
    /// Runs one request through a fresh instance of `pre` in the instance slot `slot`, or
    /// through the instance that comes with the slot (a function deployed with `--reuse`), and
    /// keeps the instance for the function's next request if the slot says so and it may serve
    /// more.
    ///
    /// The guest runs in this request's task until it hands over its response head, and in
    /// its own task after that ([`Inline`]), so it can keep streaming the body; the instance
    /// slot is held until the guest returns. The request's body is read by the
    /// guest as it reads it: nothing here buffers it.
    pub async fn handle_http<B>(
        &self,
        function: &FunctionName,
        pre: &ProxyPre<GuestState>,
        limits: InvocationLimits,
        access: super::Access,
        request: http::Request<B>,
        slot: Slot,
    ) -> Result<HttpResponse, RuntimeError>
    where
        B: http_body::Body<Data = Bytes> + Send + Unpin + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let Slot {
            permit,
            warm,
            reuse,
        } = slot;
        let (mut store, warm_proxy, served) = match warm {
            Some(Warm {
                mut store,
                proxy,
                served,
            }) => {
                store.data_mut().renew(access);
                super::arm_deadline(&mut store, limits.timeout);
                self.metrics.instance_reused();
                (store, Some(proxy), served)
            }
            None => (self.store(function, limits, access, None), None, 0),
        };
        let host = |e: wasmtime::Error| RuntimeError::Host(super::chain(&e));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let (request, body_released) = {
            let (parts, body) = request.into_parts();
            let (body, released) = Watched::new(body, reuse.is_some());
            (http::Request::from_parts(parts, body), released)
        };
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, request)
            .map_err(host)?;
        // Set when the guest hands over its response head; from then on the guest's task reports
        // its own failures (they can only cut the body short), and nobody waits for it.
        let head_sent = Arc::new(AtomicBool::new(false));
        let sent = head_sent.clone();
        let out = store
            .data_mut()
            .http()
            .new_response_outparam_from_callback(move |response| {
                sent.store(true, Ordering::Release);
                let _ = tx.send(response);
            })
            .map_err(host)?;
        let pre = pre.clone();
        let name = function.clone();
        let metrics = self.metrics.clone();
        let idle = self.idle.clone();
        let (outcome_tx, outcome) = tokio::sync::oneshot::channel();
        let guest = async move {
            let result = with_deadline(limits, async {
                let proxy = match warm_proxy {
                    Some(proxy) => proxy,
                    None => pre.instantiate_async(&mut store).await?,
                };
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await?;
                Ok(proxy)
            })
            .await;
            let result = result.map_err(|e| classify(&name, limits, store.data(), e));
            let sent = head_sent.load(Ordering::Acquire);
            if let Err(e) = &result
                && sent
            {
                metrics.response_cut();
                tracing::warn!(function = %name, error = %e, "guest failed after sending its response head; the client's body ends in an error");
            }
            let _ = outcome_tx.send(result.is_ok());
            match (result, reuse) {
                // Only an instance that answered and returned cleanly serves again.
                (Ok(proxy), Some(reuse))
                    if sent
                        && served + 1 < reuse.max.get()
                        && body_released.is_some_and(|r| r.load(Ordering::Acquire))
                        && store.data_mut().reusable() =>
                {
                    let warm = Warm {
                        store,
                        proxy,
                        served: served + 1,
                    };
                    idle.put(&name, warm, reuse, permit);
                    Ok(())
                }
                (result, _) => {
                    // The instance's pool slot is free before its permit is.
                    drop(store);
                    drop(permit);
                    result.map(drop)
                }
            }
        };
        let mut guest = Inline::new(guest, &self.tasks);
        match guest.until_head(rx).await {
            // The head is out; whatever is left of the guest streams the body by itself.
            Answer::Head(Ok(response)) => Ok(response.map(|inner| GuestBody {
                inner,
                outcome: Some(outcome),
            })),
            Answer::Head(Err(code)) => Err(RuntimeError::Guest {
                function: function.clone(),
                message: format!("the handler answered with the error code {code:?}"),
            }),
            Answer::Ended(Ok(())) => Err(RuntimeError::Guest {
                function: function.clone(),
                message: "the handler returned without setting a response".into(),
            }),
            Answer::Ended(Err(e)) => Err(e),
        }
    }
}
