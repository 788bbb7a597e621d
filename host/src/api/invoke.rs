//! `ANY /fn/{name}/{*path}`: running an HTTP handler.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use http_body_util::Full;

use super::{ApiError, App, read_body};
use crate::id::FunctionName;
use crate::runtime::{Prepared, RuntimeError};

pub(crate) async fn invoke_root(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    run(app, name, String::new(), request).await
}

pub(crate) async fn invoke(
    State(app): State<Arc<App>>,
    Path((name, path)): Path<(String, String)>,
    request: Request,
) -> Response {
    run(app, name, path, request).await
}

async fn run(app: Arc<App>, name: String, path: String, request: Request) -> Response {
    let started = Instant::now();
    let result = call(&app, &name, &path, request).await;
    let outcome = match &result {
        Ok(_) => "ok",
        Err(ApiError::Runtime(RuntimeError::Timeout { .. })) => "timeout",
        Err(ApiError::Runtime(RuntimeError::MemoryLimit { .. })) => "memory",
        Err(ApiError::Runtime(RuntimeError::Trap { .. })) => "trap",
        Err(ApiError::Runtime(RuntimeError::Busy(_))) => "busy",
        Err(ApiError::NotFound(_)) => return result.into_response(),
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
    let (parts, body) = request.into_parts();
    let body = read_body(
        body,
        &parts.headers,
        app.limits.max_request_body.get(),
        "request body",
    )
    .await?;

    // The guest sees the path below /fn/{name}, with the query.
    let mut uri = format!("/{path}");
    if let Some(q) = parts.uri.query() {
        uri.push('?');
        uri.push_str(q);
    }
    let mut builder = http::Request::builder()
        .method(parts.method)
        .uri(uri)
        .version(http::Version::HTTP_11);
    for (k, v) in parts.headers.iter() {
        builder = builder.header(k, v);
    }
    if !parts.headers.contains_key(http::header::HOST) {
        builder = builder.header(http::header::HOST, "localhost");
    }
    let request = builder
        .body(Full::new(body))
        .map_err(|e| ApiError::BadRequest(format!("bad request: {e}")))?;

    let limits = app.runtime.limits(&active.deployment.limits);
    let kv = app.store.kv_space(&name);
    let response = app
        .runtime
        .handle_http(&name, pre, limits, kv, request)
        .await?;
    Ok(response.map(Body::new))
}
