//! Deploying, listing, rolling back and deleting functions.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::{ApiError, App, Query, read_body};
use crate::functions::{Consistency, Deployment, FunctionRecord, RouteKey};
use crate::id::{Digest, FunctionName};
use crate::runtime::{FunctionKind, FunctionLimits, RunIn, Runtime};

/// Query parameters of `PUT /v1/functions/{name}`: the function's manifest.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeployParams {
    /// `http` or `mapreduce`; detected from the component's exports when absent.
    kind: Option<FunctionKind>,
    /// Wall-clock limit per invocation in milliseconds.
    timeout_ms: Option<u64>,
    /// Memory cap per instance in MiB.
    memory_mb: Option<u64>,
    /// Share this key-value namespace instead of the function's own (`fn.NAME`).
    kv_namespace: Option<String>,
    /// Run each request on the owner of its key: `path:N`, `header:NAME` or `query:NAME`.
    route_key: Option<String>,
    /// A lock-protected handler: each request runs on its key's owner, under the key's lock
    /// (`path:N`, `header:NAME` or `query:NAME`).
    lock: Option<String>,
    /// How long a request may wait for its lock (`250ms`, `5s`, ...; default 5 s).
    lock_wait: Option<String>,
    /// Show callers the details of failures (trap, backtrace, guest stderr); default false.
    debug: Option<bool>,
    /// The function's configuration for `wasi:config/store`: a JSON object of strings.
    config: Option<String>,
    /// Requests one instance may serve in sequence (instance reuse); default 1, a fresh
    /// instance per request.
    reuse: Option<u32>,
    /// Where requests run on a node with guest processes: `process`, `node`, or `auto`
    /// (the default: by size).
    run_in: Option<String>,
}

/// The most requests one instance may serve (`reuse`).
const MAX_REUSE: u32 = 1_000_000;

/// Most configuration a deployment may carry, keys and values together: 64 KiB.
const MAX_CONFIG_BYTES: usize = 64 << 10;

/// The `config` parameter of a deploy: a JSON object whose values are strings.
fn parse_config(
    text: Option<&str>,
) -> Result<std::collections::BTreeMap<String, String>, ApiError> {
    let Some(text) = text else {
        return Ok(Default::default());
    };
    if text.len() > MAX_CONFIG_BYTES {
        return Err(ApiError::BadRequest(format!(
            "config is {} bytes; at most {MAX_CONFIG_BYTES} are allowed",
            text.len()
        )));
    }
    let config: std::collections::BTreeMap<String, String> =
        serde_json::from_str(text).map_err(|e| {
            ApiError::BadRequest(format!(
                "config must be a JSON object of strings, such as {{\"greeting\":\"hi\"}}: {e}"
            ))
        })?;
    if config.contains_key("") {
        return Err(ApiError::BadRequest("config has an empty key".into()));
    }
    Ok(config)
}

/// One function in listings.
#[derive(Debug, Serialize, Deserialize)]
pub struct FunctionView {
    /// Its name.
    pub name: FunctionName,
    /// The module that serves.
    pub digest: Digest,
    /// What it is.
    pub kind: FunctionKind,
    /// Module size in bytes.
    pub size: u64,
    /// 1-based number of the serving version.
    pub version: usize,
    /// Versions remembered.
    pub versions: usize,
    /// Limits of the serving version.
    pub limits: FunctionLimits,
    /// Whether callers see the details of failures.
    #[serde(default)]
    pub debug: bool,
    /// Where a request's key comes from, for a handler run on its key's owner.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route_key: Option<String>,
    /// Where a request's lock key comes from, for a lock-protected handler.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock: Option<String>,
    /// How long its requests wait for their lock, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_wait_ms: Option<u64>,
    /// The keys of its configuration (`wasi:config`); the values are not shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_keys: Vec<String>,
    /// When the serving version was deployed (ms since the Unix epoch).
    pub deployed_at_ms: u64,
}

impl From<&FunctionRecord> for FunctionView {
    fn from(r: &FunctionRecord) -> Self {
        let d = r.active();
        FunctionView {
            name: r.name.clone(),
            digest: d.digest,
            kind: d.kind,
            size: d.size,
            version: r.current + 1,
            versions: r.history.len(),
            limits: d.limits.clone(),
            debug: d.debug,
            route_key: d.route_key.as_ref().map(ToString::to_string),
            lock: d.lock_key.as_ref().map(ToString::to_string),
            lock_wait_ms: d.lock_key.as_ref().map(|_| {
                d.lock_wait_ms
                    .unwrap_or(crate::functions::DEFAULT_LOCK_WAIT_MS)
            }),
            config_keys: d.config.keys().cloned().collect(),
            deployed_at_ms: d.deployed_at_ms,
        }
    }
}

pub(crate) async fn deploy(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(params): Query<DeployParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<FunctionView>), ApiError> {
    let name: FunctionName = name.parse()?;
    let bytes = read_body(
        body,
        &headers,
        app.limits.max_module_bytes.get(),
        "module",
        app.limits.body_timeout,
    )
    .await?;
    if bytes.is_empty() {
        return Err(ApiError::BadRequest(
            "the request body is empty; send the component's bytes".into(),
        ));
    }
    // A WASI 0.1 program is made a component here, once; every node runs the component.
    let bytes = if crate::runtime::wagi::is_core_module(&bytes) {
        let module = bytes.clone();
        let made = tokio::task::spawn_blocking(move || crate::runtime::wagi::componentize(&module))
            .await
            .map_err(|e| ApiError::Internal(format!("componentizing failed: {e}")))?;
        bytes::Bytes::from(made.map_err(ApiError::BadRequest)?)
    } else {
        bytes
    };
    let limits = manifest_limits(&app, &params)?;
    if let Some(ns) = &params.kv_namespace {
        ns.parse::<crate::replication::Namespace>()?;
    }
    let route_key = params
        .route_key
        .as_deref()
        .map(str::parse::<RouteKey>)
        .transpose()
        .map_err(ApiError::BadRequest)?;
    let config = parse_config(params.config.as_deref())?;
    // Compile and link before storing anything, so a bad module leaves no trace.
    let digest = Digest::of(&bytes);
    let rt = app.runtime.clone();
    let compile_bytes = bytes.clone();
    let prepared =
        tokio::task::spawn_blocking(move || rt.prepare(digest, &compile_bytes, params.kind))
            .await
            .map_err(|e| ApiError::Internal(format!("compilation task failed: {e}")))??;
    let lock = params
        .lock
        .as_deref()
        .map(str::parse::<RouteKey>)
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("lock: {e}")))?;
    let lock_wait_ms = match &params.lock_wait {
        None => None,
        Some(_) if lock.is_none() => {
            return Err(ApiError::BadRequest(
                "lock_wait is for lock-protected handlers: give lock too".into(),
            ));
        }
        Some(w) => {
            let max = app.cluster.locks.config().max_wait;
            match crate::millis::parse(w) {
                Ok(d) if !d.is_zero() && d <= max => Some(d.as_millis() as u64),
                Ok(d) => {
                    return Err(ApiError::BadRequest(format!(
                        "lock_wait must be above 0 and at most {}, not {}",
                        crate::millis::show(max),
                        crate::millis::show(d)
                    )));
                }
                Err(e) => return Err(ApiError::BadRequest(format!("lock_wait: {e}"))),
            }
        }
    };
    if lock.is_some() && route_key.is_some() {
        return Err(ApiError::BadRequest(
            "give lock or route_key, not both: a lock-protected handler runs on its lock key's owner".into(),
        ));
    }
    if (route_key.is_some() || lock.is_some()) && prepared.kind() != FunctionKind::Http {
        return Err(ApiError::BadRequest(
            "route_key and lock are for HTTP handlers; this component is a map/reduce task".into(),
        ));
    }
    if limits.reuse.is_some() && prepared.kind() != FunctionKind::Http {
        return Err(ApiError::BadRequest(format!(
            "reuse is for wasi:http handlers; this component is a {} function, which gets a fresh instance for every call",
            prepared.kind()
        )));
    }
    if limits.reuse.is_some() && lock.is_some() {
        return Err(ApiError::BadRequest(
            "give reuse or lock, not both: each request of a lock-protected handler runs with its own lock and fencing token in a fresh instance".into(),
        ));
    }
    if limits.run_in == Some(RunIn::Process) {
        if lock.is_some() {
            return Err(ApiError::BadRequest(
                "give lock or run_in=process, not both: a lock-protected handler runs in the node that holds its lock".into(),
            ));
        }
        if let Some(why) = Runtime::cannot_run_in_process(&prepared, &limits) {
            return Err(ApiError::BadRequest(why));
        }
    }
    let deployment = Deployment {
        digest,
        kind: prepared.kind(),
        size: bytes.len() as u64,
        limits,
        lock_key: lock,
        lock_wait_ms,
        route_key: route_key.clone(),
        kv_namespace: params.kv_namespace.clone(),
        debug: params.debug.unwrap_or(false),
        config,
        deployed_at_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    };
    let record = app
        .functions
        .deploy(&name, deployment, bytes.clone())
        .await?;
    app.invalidate(&name);
    tracing::info!(function = %name, %digest, kind = %prepared.kind(), "deployed");
    Ok((StatusCode::CREATED, Json(FunctionView::from(&record))))
}

/// The manifest's limits, refused with 400 when zero or above the node's maxima.
fn manifest_limits(app: &App, params: &DeployParams) -> Result<FunctionLimits, ApiError> {
    let c = app.runtime.config();
    if let Some(t) = params.timeout_ms {
        let max = c.max_timeout.as_millis() as u64;
        if !(1..=max).contains(&t) {
            return Err(ApiError::BadRequest(format!(
                "timeout_ms must be between 1 and {max}, not {t}"
            )));
        }
    }
    if let Some(m) = params.memory_mb {
        let max = c.max_memory_bytes.get() >> 20;
        if !(1..=max).contains(&m) {
            return Err(ApiError::BadRequest(format!(
                "memory_mb must be between 1 and {max}, not {m}"
            )));
        }
    }
    let reuse = match params.reuse {
        None | Some(1) => None,
        Some(n @ 2..=MAX_REUSE) => std::num::NonZeroU32::new(n),
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "reuse must be between 1 and {MAX_REUSE}, not {n}"
            )));
        }
    };
    let run_in = match params.run_in.as_deref() {
        None | Some("auto") => None,
        Some("process") => Some(RunIn::Process),
        Some("node") => Some(RunIn::Node),
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "run_in must be `process`, `node` or `auto`, not `{other}`"
            )));
        }
    };
    Ok(FunctionLimits {
        timeout_ms: params.timeout_ms,
        memory_bytes: params.memory_mb.map(|mb| mb << 20),
        reuse,
        run_in,
    })
}

/// Query parameters of registry reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadParams {
    /// Read this node's copy, which may lag, instead of a linearizable read.
    #[serde(default)]
    local: bool,
}

impl ReadParams {
    fn consistency(&self) -> Consistency {
        if self.local {
            Consistency::Local
        } else {
            Consistency::Linearizable
        }
    }
}

pub(crate) async fn list(
    State(app): State<Arc<App>>,
    Query(params): Query<ReadParams>,
) -> Result<Json<Vec<FunctionView>>, ApiError> {
    Ok(Json(
        app.functions
            .list(params.consistency())
            .await?
            .iter()
            .map(FunctionView::from)
            .collect(),
    ))
}

pub(crate) async fn show(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
    Query(params): Query<ReadParams>,
) -> Result<Json<FunctionRecord>, ApiError> {
    let name: FunctionName = name.parse()?;
    let (record, _) = app
        .functions
        .record(&name, params.consistency())
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no function named `{name}`")))?;
    Ok(Json(record))
}

pub(crate) async fn rollback(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<Json<FunctionView>, ApiError> {
    let name: FunctionName = name.parse()?;
    let record = app.functions.rollback(&name).await?;
    app.invalidate(&name);
    tracing::info!(function = %name, digest = %record.active().digest, "rolled back");
    Ok(Json(FunctionView::from(&record)))
}

pub(crate) async fn delete(
    State(app): State<Arc<App>>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let name: FunctionName = name.parse()?;
    app.functions.delete(&name).await?;
    app.invalidate(&name);
    Ok(StatusCode::NO_CONTENT)
}
