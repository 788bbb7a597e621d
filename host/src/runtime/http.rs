//! Invoking an HTTP handler through `wasi:http/incoming-handler`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use http_body_util::Full;
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use super::state::GuestState;
use super::{InvocationLimits, Runtime, RuntimeError, Slot, classify, with_deadline};
use crate::id::FunctionName;
use crate::replication::KvHandle;

/// A response produced by a guest; its body streams from the guest as it runs.
pub type HttpResponse = http::Response<HyperOutgoingBody>;

impl Runtime {
    /// Runs one request through a fresh instance of `pre`, in the instance slot `slot`.
    ///
    /// The guest runs in its own task so it can keep streaming the body after the head is sent;
    /// the instance slot is held until the guest returns.
    pub async fn handle_http(
        &self,
        function: &FunctionName,
        pre: &ProxyPre<GuestState>,
        limits: InvocationLimits,
        kv: Option<KvHandle>,
        request: http::Request<Full<Bytes>>,
        slot: Slot,
    ) -> Result<HttpResponse, RuntimeError> {
        let mut store = self.store(function, limits, kv, None);
        let host = |e: wasmtime::Error| RuntimeError::Host(super::chain(&e));
        let (tx, rx) = tokio::sync::oneshot::channel();
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
        let task = tokio::spawn(async move {
            let _slot = slot;
            let result = with_deadline(limits, async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await
            })
            .await;
            let result = result.map_err(|e| classify(&name, limits, store.data(), e));
            if let Err(e) = &result
                && head_sent.load(Ordering::Acquire)
            {
                tracing::warn!(function = %name, error = %e, "guest failed after sending its response head");
            }
            result
        });

        match rx.await {
            // The head is out; the guest's task goes on streaming the body by itself.
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(RuntimeError::Guest {
                function: function.clone(),
                message: format!("the handler answered with the error code {code:?}"),
            }),
            Err(_) => match task.await {
                Ok(Ok(())) => Err(RuntimeError::Guest {
                    function: function.clone(),
                    message: "the handler returned without setting a response".into(),
                }),
                Ok(Err(e)) => Err(e),
                Err(join) => Err(RuntimeError::Host(format!(
                    "the invocation task failed: {join}"
                ))),
            },
        }
    }
}
