//! `ANY /fn/{name}/{*path}`: running an HTTP handler.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http_body_util::Full;

use super::{ApiError, App, read_body};
use crate::id::FunctionName;
use crate::replication::{KvHandle, Namespace};
use crate::runtime::{Prepared, RuntimeError};

pub(crate) async fn invoke(State(app): State<Arc<App>>, request: Request) -> Response {
    let started = Instant::now();
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
    let result = call(&app, name, below, request).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ApiError::Runtime(RuntimeError::Timeout { .. })) => "timeout",
        Err(ApiError::Runtime(RuntimeError::MemoryLimit { .. })) => "memory",
        Err(ApiError::Runtime(RuntimeError::Trap { .. })) => "trap",
        Err(ApiError::Runtime(RuntimeError::Busy(_))) => "busy",
        Err(ApiError::NotFound(_) | ApiError::BadRequest(_)) => return result.into_response(),
        Err(_) => "error",
    };
    if let Ok(function) = name.parse::<FunctionName>() {
        app.metrics
            .invocation(function.as_str(), outcome, started.elapsed());
    }
    result.into_response()
}

async fn call(app: &App, name: &str, path: &str, request: Request) -> Result<Response, ApiError> {
    let name: FunctionName = name.parse()?;
    let active = app.active(&name).await?;
    let Prepared::Http(pre) = &active.prepared else {
        return Err(ApiError::BadRequest(format!(
            "function `{name}` is a map/reduce task, not an HTTP handler; run it with POST /v1/jobs"
        )));
    };
    // Take the instance slot first: requests waiting for one hold no buffered body.
    let slot = app.runtime.slot().await?;
    let (parts, body) = request.into_parts();
    let body = read_body(
        body,
        &parts.headers,
        app.limits.max_request_body.get(),
        "request body",
    )
    .await?;

    // The guest gets the client's request as it came, with the target below the route.
    let mut parts = parts;
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
    let request = http::Request::from_parts(parts, Full::new(body));

    let limits = app.runtime.limits(&active.deployment.limits);
    let ns = match &active.deployment.kv_namespace {
        Some(ns) => ns.parse()?,
        None => Namespace::of_function(&name),
    };
    let kv = Some(KvHandle::new(app.cluster.replication.clone(), ns));
    let response = app
        .runtime
        .handle_http(&name, pre, limits, kv, request, slot)
        .await?;
    Ok(response.map(Body::new))
}
