//! `ANY /fn/{name}/{*path}`: running an HTTP handler.
//!
//! A handler runs where the request lands, unless its manifest names a route key: then the
//! request runs on the node that owns that key in the function's key-value namespace, next to
//! its data, forwarded over QUIC. A lock-protected handler is routed the same way by its lock
//! key, and runs there under the key's lock ([`super::locked`]). The answer says which node
//! ran it (`x-weft-node`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use futures::FutureExt;
use http_body_util::{BodyExt, Full, Limited};

use super::streamed::Streamed;
use super::wire::{Forwarded, ForwardedAnswer, InvokeWire};
use super::{ApiError, App, check_declared_length, locked, read_body, told, too_large, too_slow};
use crate::id::FunctionName;
use crate::placement::Route;
use crate::replication::{KvHandle, Namespace};
use crate::rpc::Router;
use crate::runtime::{Access, BodyFault, GuestLocks, Reuse};
use crate::runtime::{Prepared, RuntimeError, wagi};

/// The header naming the node that ran the handler.
pub const NODE_HEADER: &str = "x-weft-node";

/// Largest response body sent back for a forwarded request (it travels in one frame).
const MAX_FORWARDED_BODY: usize = 15 << 20;

pub(crate) async fn invoke(State(app): State<Arc<App>>, request: Request) -> Response {
    // The raw (still percent-encoded) path: the guest sees exactly what the client sent below
    // `/fn/{name}`. Function names are plain ASCII, so the raw name is the name.
    let raw = request
        .uri()
        .path()
        .strip_prefix("/fn/")
        .unwrap_or_default()
        .to_string();
    let (name, below) = match raw.find('/') {
        Some(i) => (&raw[..i], &raw[i..]),
        None => (raw.as_str(), "/"),
    };
    let (parts, body) = request.into_parts();
    let started = Instant::now();
    let result = call(&app, name, below, parts, Incoming::Stream(body)).await;
    measured(&app, name, started, result)
}

/// Counts the outcome of a call that began at `started` in the metrics, and answers with it.
///
/// A plain function rather than a wrapper future: an `async fn` that takes the call's future
/// holds it twice, and every request's future would be copied at twice its size.
fn measured(
    app: &App,
    name: &str,
    started: Instant,
    result: Result<Response, ApiError>,
) -> Response {
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ApiError::Runtime(e) | ApiError::Redacted { error: e, .. }) => match e {
            RuntimeError::Timeout { .. } => "timeout",
            RuntimeError::MemoryLimit { .. } => "memory",
            RuntimeError::Trap { .. } => "trap",
            RuntimeError::Busy(_) => "busy",
            _ => "error",
        },
        Err(ApiError::NotFound(_) | ApiError::BadRequest(_)) => return result.into_response(),
        Err(_) => "error",
    };
    if let Ok(function) = name.parse::<FunctionName>() {
        app.metrics
            .invocation(function.as_str(), outcome, started.elapsed());
    }
    result.into_response()
}

/// A request body: still arriving from a client, or already read (forwarded from another
/// node, which runs here whatever its key).
enum Incoming {
    Stream(Body),
    Read(bytes::Bytes),
}

async fn call(
    app: &Arc<App>,
    name: &str,
    path: &str,
    parts: http::request::Parts,
    body: Incoming,
) -> Result<Response, ApiError> {
    let name: FunctionName = name.parse()?;
    let active = app.active(&name).await?;
    if let Prepared::Wagi(pre) = &active.prepared {
        let slot = app.runtime.slot().await?;
        let body = read_whole(app, body, &parts.headers).await?;
        let env = wagi::environment(&wagi::CgiRequest {
            function: name.as_str(),
            method: parts.method.as_str(),
            path,
            query: parts.uri.query().unwrap_or(""),
            headers: &parts.headers,
            body_len: body.len(),
        });
        let limits = app.runtime.limits(&active.deployment.limits);
        let out = app
            .runtime
            .handle_wagi(&name, pre, limits, env, body, slot)
            .await
            .map_err(|e| told(&name, e, active.deployment.debug))?;
        let mut response = Response::builder().status(out.status);
        for (k, v) in &out.headers {
            response = response.header(k, v);
        }
        let response = response
            .body(Body::from(out.body))
            .map_err(|e| ApiError::Internal(format!("the program's response: {e}")))?;
        return Ok(ran_here(app, response));
    }
    let Prepared::Http(pre) = &active.prepared else {
        return Err(ApiError::BadRequest(format!(
            "function `{name}` is a map/reduce task, not an HTTP handler; run it with POST /v1/jobs"
        )));
    };
    let ns = match &active.deployment.kv_namespace {
        Some(ns) => ns.parse()?,
        None => Namespace::of_function(&name),
    };
    let deployment = &active.deployment;
    // A lock-protected handler is routed by its lock key.
    let route = deployment
        .lock_key
        .as_ref()
        .or(deployment.route_key.as_ref());
    let lock_key = match &deployment.lock_key {
        Some(template) => Some(
            template
                .extract(path, parts.uri.query(), &parts.headers)
                .ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "function `{name}` runs each request under the lock of its key, taken from {template}, and this request has none"
                    ))
                })?,
        ),
        None => None,
    };
    let body = match (body, route) {
        (Incoming::Stream(stream), Some(route)) => {
            // Boxed, as few requests take this way and its future is large.
            let routed = Box::pin(route_to_owner(
                app, &name, &active, &ns, route, path, &parts, stream,
            ));
            match routed.await? {
                Routed::Answered(response) => return Ok(response),
                Routed::Here(body) => body,
            }
        }
        (body, _) => body,
    };
    if let Some(key) = lock_key {
        // Its turn comes before its instance slot: requests waiting in line hold no slot.
        let body = read_whole(app, body, &parts.headers).await?;
        let request = guest_request(parts, path, Full::new(body))?;
        let call = locked::Locked {
            name: name.clone(),
            active: active.clone(),
            ns,
            key,
        };
        // Run to its end whatever the client does: a turn ends only once its handler has.
        let owned = app.clone();
        let run = app
            .runtime
            .tasks()
            .spawn_joined(async move { locked::run(&owned, call, request).await });
        let response = run
            .await
            .map_err(|e| ApiError::Internal(format!("a lock-protected request failed: {e}")))??;
        return Ok(ran_here(app, response));
    }
    let reuse = deployment.limits.reuse.map(|max| Reuse {
        max,
        digest: deployment.digest,
        deployed_at_ms: deployment.deployed_at_ms,
    });
    // A keyed request's body has the same limit wherever it lands: it is read whole when it is
    // forwarded to its key's owner.
    let limit = match route {
        Some(_) => app.limits.max_buffered_request_body.get() as u64,
        None => app.limits.max_request_body.get(),
    };
    let body = match body {
        Incoming::Stream(stream) => {
            check_declared_length(&parts.headers, limit, "request body")?;
            stream
        }
        Incoming::Read(bytes) => Body::from(bytes),
    };
    let limits = app.runtime.limits(&deployment.limits);
    let config = Arc::new(deployment.config.clone());
    // The body streams into the guest as the client sends it, from when the guest can start.
    let body_timeout = app.limits.body_timeout;
    let streamed = move || {
        let (body, fault) = Streamed::new(body, limit, body_timeout);
        guest_request(parts, path, body).map(|request| (request, fault))
    };
    // A handler using only WASI runs in a guest process when the node has them.
    let process =
        app.runtime
            .guest_process(deployment.digest, pre, deployment.size, &deployment.limits);
    let (answer, fault) = match process {
        Some(process) => {
            let (request, fault) = streamed()?;
            let answer = process
                .handle(&name, limits, config, request)
                .await
                .map(|response| response.map(Body::new));
            (answer, fault)
        }
        None => {
            let slot = app.runtime.slot_for(&name, reuse).await?;
            let (request, fault) = streamed()?;
            let access = Access {
                kv: Some(KvHandle::new(app.cluster.replication.clone(), ns.clone())),
                locks: Some(GuestLocks {
                    locks: app.cluster.locks.clone(),
                    scope: ns,
                }),
                handler: None,
                gate: None,
                fenced: None,
                finished: None,
                config,
                cgi: None,
            };
            let answer = app
                .runtime
                .handle_http(&name, pre, limits, access, request, slot)
                .await
                .map(|response| response.map(Body::new));
            (answer, fault)
        }
    };
    // A body that stopped short before the guest answered is what the client is told about:
    // the guest's answer (if any) is its reaction to a failed read.
    if let Some(fault) = fault.get() {
        return Err(match fault {
            BodyFault::TooLarge(limit) => too_large("request body", *limit),
            BodyFault::TooSlow => too_slow("request body", app.limits.body_timeout),
            BodyFault::Broken(e) => {
                ApiError::BadRequest(format!("could not read the request body: {e}"))
            }
        });
    }
    let response = answer.map_err(|e| told(&name, e, deployment.debug))?;
    Ok(ran_here(app, response))
}

/// A request's whole body, for the handlers that get it whole: WAGI programs, lock-protected
/// handlers, and requests forwarded to their key's owner.
async fn read_whole(
    app: &App,
    body: Incoming,
    headers: &http::HeaderMap,
) -> Result<bytes::Bytes, ApiError> {
    match body {
        Incoming::Stream(stream) => {
            read_body(
                stream,
                headers,
                app.limits.max_buffered_request_body.get(),
                "request body",
                app.limits.body_timeout,
            )
            .await
        }
        Incoming::Read(bytes) => Ok(bytes),
    }
}

/// The request the guest gets: the client's as it came, with the target below the route.
fn guest_request<B>(
    mut parts: http::request::Parts,
    path: &str,
    body: B,
) -> Result<http::Request<B>, ApiError> {
    let target = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    parts.uri = target
        .parse()
        .map_err(|e| ApiError::BadRequest(format!("bad request target: {e}")))?;
    parts.version = http::Version::HTTP_11;
    parts
        .headers
        .entry(http::header::HOST)
        .or_insert(http::HeaderValue::from_static("localhost"));
    Ok(http::Request::from_parts(parts, body))
}

/// Marks a response with the node that ran the handler.
fn ran_here(app: &App, mut response: Response) -> Response {
    response.headers_mut().insert(
        NODE_HEADER,
        http::HeaderValue::from_str(app.cluster.replication.me().as_str())
            .expect("node names are valid header values"),
    );
    response
}

enum Routed {
    Answered(Response),
    Here(Incoming),
}

/// Forwards a keyed request to its key's owner, unless this node owns it (or the owner
/// cannot be reached, and this node serves it rather than fail).
#[allow(clippy::too_many_arguments)]
async fn route_to_owner(
    app: &App,
    name: &FunctionName,
    active: &super::Active,
    ns: &Namespace,
    route: &crate::functions::RouteKey,
    path: &str,
    parts: &http::request::Parts,
    stream: Body,
) -> Result<Routed, ApiError> {
    let key = route
        .extract(path, parts.uri.query(), &parts.headers)
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "function `{name}` runs each request on the owner of its key, taken from {route}, and this request has none"
            ))
        })?;
    // The owner is the key's first replica in the function's namespace.
    let n = app.cluster.replication.config().quorum(ns.as_str()).n.get() as usize;
    let placement = &app.cluster.placement;
    let Route::Owner(owner, addr) = placement.route(&ns.key(key.as_bytes()), n) else {
        return Ok(Routed::Here(Incoming::Stream(stream)));
    };
    let bytes = read_body(
        stream,
        &parts.headers,
        app.limits.max_buffered_request_body.get(),
        "request body",
        app.limits.body_timeout,
    )
    .await?;
    let target = match parts.uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let request = Forwarded {
        function: name.clone(),
        method: parts.method.to_string(),
        target,
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body: bytes.to_vec(),
    };
    // The owner's own deadline (and, for a lock-protected handler, its wait for its turn),
    // plus time for the request and answer to travel.
    let d = &active.deployment;
    let turn = d.lock_key.as_ref().map_or(Duration::ZERO, |_| {
        Duration::from_millis(
            d.lock_wait_ms
                .unwrap_or(crate::functions::DEFAULT_LOCK_WAIT_MS),
        )
    });
    let within = app.runtime.limits(&d.limits).timeout + turn + Duration::from_secs(5);
    match placement
        .forward::<InvokeWire>(&owner, addr, &request, within)
        .await
    {
        Ok(Some(answer)) => Ok(Routed::Answered(answer_response(answer))),
        Ok(None) => Ok(Routed::Here(Incoming::Read(bytes))),
        Err(e) => Err(ApiError::GatewayTimeout(format!(
            "{e}; it may have run the request, so it was not run again here"
        ))),
    }
}

/// A forwarded answer as a response to the client.
fn answer_response(answer: ForwardedAnswer) -> Response {
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        http::StatusCode::from_u16(answer.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
    let headers = response.headers_mut();
    for (k, v) in answer.headers {
        if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.as_bytes()),
            http::HeaderValue::from_bytes(&v),
        ) {
            headers.append(k, v);
        }
    }
    response
}

/// Runs the requests other nodes forward to this one, the owner of their keys.
pub fn serve(router: &Router, app: Arc<App>) {
    router.register::<InvokeWire, _>(move |_, forwarded| {
        let app = app.clone();
        async move { Ok(run_forwarded(app, forwarded).await) }.boxed()
    });
}

/// Runs one forwarded request here and answers with the whole response (errors included).
async fn run_forwarded(app: Arc<App>, f: Forwarded) -> ForwardedAnswer {
    let response = match forwarded_parts(&f) {
        Ok(parts) => {
            let path = f.target.split('?').next().unwrap_or("/").to_string();
            let name = f.function.to_string();
            let started = Instant::now();
            let result = call(&app, &name, &path, parts, Incoming::Read(f.body.into())).await;
            measured(&app, &name, started, result)
        }
        Err(e) => e.into_response(),
    };
    let (parts, body) = response.into_parts();
    let body = match Limited::new(body, MAX_FORWARDED_BODY).collect().await {
        Ok(b) => b.to_bytes().to_vec(),
        Err(e) => {
            return ForwardedAnswer {
                        status: 502,
                        headers: vec![("content-type".into(), b"application/json".to_vec())],
                        body: serde_json::json!({
                            "error": format!("the handler's answer could not be sent back from the key's owner: {e} (at most {MAX_FORWARDED_BODY} bytes)")
                        })
                        .to_string()
                        .into_bytes(),
                    };
        }
    };
    ForwardedAnswer {
        status: parts.status.as_u16(),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect(),
        body,
    }
}

/// The request head of a forwarded request.
fn forwarded_parts(f: &Forwarded) -> Result<http::request::Parts, ApiError> {
    let bad = |what: &str| ApiError::BadRequest(format!("malformed forwarded request: {what}"));
    let mut request = http::Request::builder()
        .method(f.method.as_str())
        .uri(format!("/fn/{}{}", f.function, f.target));
    for (k, v) in &f.headers {
        request = request.header(k.as_str(), v.as_slice());
    }
    let (parts, ()) = request.body(()).map_err(|_| bad("head"))?.into_parts();
    Ok(parts)
}
