//! The HTTP API (axum): functions, invocation, jobs, members, health and metrics.
//!
//! This is the one place that maps errors to HTTP status codes ([`ApiError`]).

mod denied;
mod functions;
mod gateway;
pub(crate) use gateway::serve;

pub use functions::FunctionView;
pub use invoke::{NODE_HEADER, serve as serve_forwarded};
pub use kv::{ScanEntry, ScanPage, TTL_HEADER, VERSION_HEADER, Written};
mod invoke;
mod jobs;
pub use jobs::{CHUNKS_CONTENT_TYPE, ChunkList, Digests, MAX_CHUNK_UPLOAD};
mod kv;
mod locked;
mod locks;
mod streamed;
#[cfg(feature = "test-switches")]
mod switches;
mod tokens;
mod ui;
pub mod wire;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, delete, get, post, put};

use crate::blobs::BlobError;
use crate::config::Limits;
use crate::functions::Deployment;
use crate::functions::{Functions, FunctionsError};
use crate::id::{FunctionName, IdError};
use crate::mapreduce::Jobs;
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::replication::{ReplicationError, Replicator};
use crate::runtime::{Prepared, Runtime, RuntimeError};
use crate::store::StoreError;
use crate::transport::Transport;

/// Shared state of the API.
pub struct App {
    pub(crate) runtime: Arc<Runtime>,
    pub(crate) jobs: Arc<Jobs>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) limits: Limits,
    pub(crate) cluster: Cluster,
    pub(crate) functions: Functions,
    pub(crate) tokens: crate::tokens::Tokens,
    /// Functions ready to invoke, by name; refreshed on deploy, rollback and delete.
    active: RwLock<HashMap<FunctionName, Arc<Active>>>,
    /// Bumped by every invalidation, so a load that raced with a deploy is not cached.
    generation: std::sync::atomic::AtomicU64,
    /// One cold load (fetch and compile) at a time, so concurrent first calls compile once.
    loading: tokio::sync::Mutex<()>,
    /// The lines of lock-protected requests running here.
    lines: locked::Lines,
}

/// The node's place in the cluster, as the API shows it.
pub struct Cluster {
    /// The member set.
    pub membership: Membership,
    /// The QUIC endpoint (for its counters).
    pub transport: Transport,
    /// The replicated key-value store.
    pub replication: Replicator,
    /// The blob service (for its counters).
    pub blobs: crate::blobs::Blobs,
    /// Where keys live (keyed invocations go to their key's owner).
    pub placement: crate::placement::Placement,
    /// This node's member of the metadata group.
    pub consensus: crate::consensus::Consensus,
    /// The lock service.
    pub locks: crate::locks::Locks,
    /// The nodes every node refuses.
    pub denylist: crate::denylist::DenyList,
    /// Cancelled when the node stops: answers that last (the dashboard's live pages) end
    /// with it instead of holding the server's shutdown up.
    pub stopping: tokio_util::sync::CancellationToken,
}

/// A function's current deployment, compiled and linked.
pub(crate) struct Active {
    pub(crate) deployment: Deployment,
    pub(crate) prepared: Prepared,
    /// The revision of the registry record it came from.
    version: u64,
}

impl App {
    /// The API's state.
    pub fn new(
        functions: Functions,
        runtime: Arc<Runtime>,
        jobs: Arc<Jobs>,
        metrics: Arc<Metrics>,
        limits: Limits,
        tokens: crate::tokens::Tokens,
        cluster: Cluster,
    ) -> Arc<Self> {
        Arc::new(App {
            functions,
            loading: tokio::sync::Mutex::new(()),
            runtime,
            jobs,
            metrics,
            limits,
            cluster,
            tokens,
            active: RwLock::default(),
            generation: Default::default(),
            lines: Default::default(),
        })
    }

    /// The current deployment of `name`, compiled (from the disk cache when possible). A
    /// cached deployment serves as long as this node's copy of the registry record has the
    /// version it came from; a deploy on any node changes that version.
    pub(crate) async fn active(&self, name: &FunctionName) -> Result<Arc<Active>, ApiError> {
        match self.cached(name) {
            Some(a) => Ok(a),
            // Boxed: the load's future is large, and every request's future would carry it.
            None => Box::pin(self.load_active(name)).await,
        }
    }

    /// The cached deployment of `name`, if it is still the one this node's registry names.
    fn cached(&self, name: &FunctionName) -> Option<Arc<Active>> {
        let local = self.functions.local_version(name);
        let cache = self.active.read().expect("not poisoned");
        cache
            .get(name)
            .filter(|a| Some(a.version) == local)
            .cloned()
    }

    /// Loads and compiles the current deployment of `name`, one load at a time.
    async fn load_active(&self, name: &FunctionName) -> Result<Arc<Active>, ApiError> {
        let _turn = self.loading.lock().await;
        if let Some(a) = self.cached(name) {
            return Ok(a);
        }
        let generation = self.generation.load(std::sync::atomic::Ordering::SeqCst);
        let Some((record, version)) = self
            .functions
            .record(name, crate::functions::Consistency::Local)
            .await?
        else {
            // Deleted (on another node, if this one had it cached). No other load runs now,
            // so unlike `invalidate` nothing needs telling.
            let stale = self.active.write().expect("not poisoned").remove(name);
            if stale.is_some() {
                drop(stale);
                self.forget_unused_modules();
            }
            return Err(ApiError::NotFound(format!("no function named `{name}`")));
        };
        let deployment = record.active().clone();
        let prepared = if let Some(p) = self.runtime.prepared(deployment.digest) {
            p
        } else {
            let bytes = self.functions.module(deployment.digest).await?;
            let rt = self.runtime.clone();
            let (digest, kind) = (deployment.digest, deployment.kind);
            tokio::task::spawn_blocking(move || rt.prepare(digest, &bytes, Some(kind)))
                .await
                .map_err(|e| ApiError::Internal(format!("compilation task failed: {e}")))??
        };
        let active = Arc::new(Active {
            deployment,
            prepared,
            version,
        });
        {
            let mut cache = self.active.write().expect("not poisoned");
            if self.generation.load(std::sync::atomic::Ordering::SeqCst) == generation {
                cache.insert(name.clone(), active.clone());
            }
        }
        // The deployment this one replaced may have been the last to name its module.
        self.forget_unused_modules();
        Ok(active)
    }

    /// Lets go of the compiled modules that no deployment names as current or as the one a
    /// rollback would restore (a redeployed or deleted function's older versions), here and
    /// in the guest processes: each is freed once the requests running it end, and loaded
    /// from the disk cache if a later rollback names it. The deployments this node serves
    /// are kept too, even where its copy of the registry lags (their modules are held by the
    /// cache of deployments anyway).
    fn forget_unused_modules(&self) {
        let mut keep = self.functions.digests_in_use();
        keep.extend(
            self.active
                .read()
                .expect("not poisoned")
                .values()
                .map(|a| a.deployment.digest),
        );
        self.runtime.keep_modules(&keep);
    }

    /// Forgets the cached deployment of `name` (after deploy, rollback or delete), and the
    /// modules no deployment names any longer.
    pub(crate) fn invalidate(&self, name: &FunctionName) {
        {
            let mut cache = self.active.write().expect("not poisoned");
            self.generation
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            cache.remove(name);
        }
        self.forget_unused_modules();
    }
}

/// The router with every route, each with the scope of token it needs (none for the routes
/// anyone may call: invocations, health, metrics, members, status and the function list).
pub fn router(app: Arc<App>) -> Router {
    use crate::tokens::Scope::{Admin, Deploy, Invoke, Read};
    let need = |scope| middleware::from_fn_with_state((app.clone(), scope), authorize);
    let routes = Router::new()
        .route("/v1/functions", get(functions::list))
        .route(
            "/v1/functions/{name}",
            get(functions::show).merge(
                put(functions::deploy)
                    .delete(functions::delete)
                    .route_layer(need(Deploy)),
            ),
        )
        .route(
            "/v1/functions/{name}/rollback",
            post(functions::rollback).route_layer(need(Deploy)),
        )
        // Jobs' records and output are the users' data.
        .route(
            "/v1/jobs",
            get(jobs::list)
                .route_layer(need(Read))
                .merge(post(jobs::submit).route_layer(need(Invoke))),
        )
        .route(
            "/v1/jobs/{id}",
            get(jobs::show)
                .route_layer(need(Read))
                .merge(delete(jobs::delete).route_layer(need(Invoke))),
        )
        .route(
            "/v1/jobs/{id}/output",
            get(jobs::output).route_layer(need(Read)),
        )
        .route(
            "/v1/jobs/{id}/cancel",
            post(jobs::cancel).route_layer(need(Invoke)),
        )
        .route(
            "/v1/jobs/input/missing",
            post(jobs::missing_chunks).route_layer(need(Invoke)),
        )
        .route(
            "/v1/jobs/input/{digest}",
            put(jobs::put_chunk).route_layer(need(Invoke)),
        )
        .route("/v1/locks", get(locks::list).route_layer(need(Read)))
        .route(
            "/v1/locks/{key}",
            post(locks::acquire)
                .delete(locks::release)
                .route_layer(need(Invoke)),
        )
        .route(
            "/v1/locks/{key}/renew",
            post(locks::renew).route_layer(need(Invoke)),
        )
        .route("/v1/kv/{ns}", get(kv::scan).route_layer(need(Read)))
        .route(
            "/v1/kv/{ns}/{*key}",
            get(kv::get)
                .route_layer(need(Read))
                .merge(put(kv::put).delete(kv::delete).route_layer(need(Invoke))),
        )
        .route(
            "/v1/tokens",
            get(tokens::list)
                .post(tokens::create)
                .route_layer(need(Admin)),
        )
        .route(
            "/v1/tokens/{id}",
            delete(tokens::revoke).route_layer(need(Admin)),
        )
        .route("/v1/denied", get(denied::list).route_layer(need(Admin)))
        .route(
            "/v1/denied/{node}",
            put(denied::deny)
                .delete(denied::allow)
                .route_layer(need(Admin)),
        );
    #[cfg(feature = "test-switches")]
    let routes = routes
        .route(
            "/v1/test-switches/partition",
            put(switches::partition).route_layer(need(Admin)),
        )
        .route(
            "/v1/test-switches/register/{key}",
            get(switches::read)
                .put(switches::write)
                .route_layer(need(Admin)),
        )
        .route(
            "/v1/test-switches/registers",
            get(switches::list).route_layer(need(Admin)),
        );
    routes
        .route("/fn/{name}", any(invoke::invoke))
        .route("/fn/{name}/", any(invoke::invoke))
        .route("/fn/{name}/{*path}", any(invoke::invoke))
        .route("/v1/members", get(members))
        .route("/v1/status", get(status))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(metrics))
        .merge(ui::routes())
        .method_not_allowed_fallback(|| async {
            ApiError::MethodNotAllowed(
                "this route does not take that method; see the README for the API".into(),
            )
        })
        .fallback(|| async {
            ApiError::NotFound("no such route; see the README for the API".into())
        })
        // Every body limit is enforced by the handler that reads the body.
        .layer(DefaultBodyLimit::disable())
        .with_state(app)
}

async fn metrics(State(app): State<Arc<App>>) -> impl IntoResponse {
    // Each subsystem renders its own.
    let mut text = app.metrics.render(app.runtime.live_instances());
    crate::metrics::single(
        &mut text,
        "weft_runtime_workers",
        crate::metrics::Kind::Gauge,
        "Threads of the async runtime serving this node (worker_threads).",
        tokio::runtime::Handle::current().metrics().num_workers(),
    );
    app.runtime.render_module_metrics(&mut text);
    app.cluster.membership.members().render_metrics(&mut text);
    app.cluster.transport.render_metrics(&mut text);
    app.cluster.replication.status().render_metrics(&mut text);
    app.cluster.blobs.stats().render_metrics(&mut text);
    app.cluster.consensus.render_metrics(&mut text);
    app.cluster.locks.render_metrics(&mut text);
    app.lines.render_metrics(&mut text);
    app.jobs.render_metrics(&mut text);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// The cluster's members as this node sees them.
async fn members(State(app): State<Arc<App>>) -> axum::Json<crate::membership::MemberSet> {
    axum::Json(app.cluster.membership.members())
}

/// What `/v1/status` shows: the ring and replication, and the metadata group, as this node
/// sees them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct NodeStatus {
    /// The ring and replication.
    #[serde(flatten)]
    pub ring: crate::replication::Status,
    /// The metadata group.
    pub consensus: crate::consensus::GroupStatus,
}

async fn status(State(app): State<Arc<App>>) -> axum::Json<NodeStatus> {
    axum::Json(NodeStatus {
        ring: app.cluster.replication.status(),
        consensus: app.cluster.consensus.status(),
    })
}

/// Lets a request through if its bearer token allows `needs` (in the route's key-value
/// namespace, for a token limited to one): 401 without a token that checks out, 403 for one
/// that does but does not allow this. The token itself is never logged.
async fn authorize(
    State((app, needs)): State<(Arc<App>, crate::tokens::Scope)>,
    params: Result<
        axum::extract::Path<HashMap<String, String>>,
        axum::extract::rejection::PathRejection,
    >,
    request: Request,
    next: Next,
) -> Response {
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let namespace = params.ok().and_then(|p| p.0.get("ns").cloned());
    let judged = presented
        .ok_or(crate::tokens::Denied::Missing)
        .and_then(|t| app.tokens.grant(t))
        .and_then(|grant| grant.allows(needs, namespace.as_deref()));
    match judged {
        Ok(()) => next.run(request).await,
        Err(denied) => ApiError::from(denied).into_response(),
    }
}

/// `text` with every byte but letters, digits and `-_.~` percent-encoded: safe in a URL's
/// path segment and its query.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Every error the API returns, with its status code.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400.
    #[error("{0}")]
    BadRequest(String),
    /// 401.
    #[error("{0}")]
    Unauthorized(String),
    /// 403: a token that checks out, but does not allow what was asked.
    #[error("{0}")]
    Forbidden(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 405.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 408.
    #[error("{0}")]
    RequestTimeout(String),
    /// 413.
    #[error("{0}")]
    TooLarge(String),
    /// A guest failed or was stopped.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A guest's failure as its callers see it when the function was not deployed with
    /// `debug`: what kind of failure, and an id under which the node's log holds the rest.
    #[error("{} (error id {id}; the details are in the node's log)", error.summary())]
    Redacted {
        /// The failure, whole.
        error: RuntimeError,
        /// The id logged with it.
        id: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A replicated operation failed.
    #[error(transparent)]
    Replication(#[from] ReplicationError),
    /// 504: the node a request was forwarded to did not answer in time.
    #[error("{0}")]
    GatewayTimeout(String),
    /// 503: a module could not be stored on enough nodes, or fetched from any.
    #[error("{0}")]
    Unavailable(String),
    /// 503 with `Retry-After: 1`: busy now (a lock not granted in time, a lock lost).
    #[error("{0}")]
    RetryLater(String),
    /// 500.
    #[error("{0}")]
    Internal(String),
}

impl From<FunctionsError> for ApiError {
    fn from(e: FunctionsError) -> Self {
        match e {
            e @ FunctionsError::NothingToRollBack(_) => ApiError::Conflict(e.to_string()),
            FunctionsError::Corrupt(e) => ApiError::Internal(e),
            FunctionsError::Consensus(e) => e.into(),
            e @ FunctionsError::Busy(_) => ApiError::Conflict(e.to_string()),
            FunctionsError::NoFunction(name) => {
                ApiError::NotFound(format!("no function named `{name}`"))
            }
            FunctionsError::Module(e @ BlobError::Disk(_)) => ApiError::Internal(e.to_string()),
            FunctionsError::Module(e) => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            e @ BlobError::Disk(_) => ApiError::Internal(e.to_string()),
            e @ BlobError::TooMany { .. } => ApiError::BadRequest(e.to_string()),
            e => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<crate::consensus::ConsensusError> for ApiError {
    fn from(e: crate::consensus::ConsensusError) -> Self {
        use crate::consensus::ConsensusError;
        match e {
            e @ ConsensusError::NoLeader(_) => ApiError::Unavailable(e.to_string()),
            e @ (ConsensusError::Start(_) | ConsensusError::Failed(_)) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

impl From<crate::mapreduce::JobError> for ApiError {
    fn from(e: crate::mapreduce::JobError) -> Self {
        use crate::mapreduce::JobError;
        match e {
            JobError::Store(e) => e.into(),
            JobError::Consensus(e) => e.into(),
            JobError::Lock(e) => e.into(),
            JobError::Blob(e) => e.into(),
            e @ JobError::Superseded(_) => ApiError::Unavailable(e.to_string()),
        }
    }
}

impl From<crate::tokens::Denied> for ApiError {
    fn from(e: crate::tokens::Denied) -> Self {
        if e.is_unauthenticated() {
            ApiError::Unauthorized(e.to_string())
        } else {
            ApiError::Forbidden(e.to_string())
        }
    }
}

impl From<crate::tokens::TokensError> for ApiError {
    fn from(e: crate::tokens::TokensError) -> Self {
        use crate::tokens::TokensError;
        match e {
            e @ TokensError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            e @ TokensError::NoToken(_) => ApiError::NotFound(e.to_string()),
            e @ TokensError::Corrupt(_) => ApiError::Internal(e.to_string()),
            TokensError::Consensus(e) => e.into(),
        }
    }
}

impl From<crate::denylist::DenyError> for ApiError {
    fn from(e: crate::denylist::DenyError) -> Self {
        use crate::denylist::DenyError;
        match e {
            e @ DenyError::Invalid(_) => ApiError::BadRequest(e.to_string()),
            DenyError::Consensus(e) => e.into(),
        }
    }
}

impl From<IdError> for ApiError {
    fn from(e: IdError) -> Self {
        ApiError::BadRequest(e.to_string())
    }
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Runtime(e) | ApiError::Redacted { error: e, .. } => match e {
                RuntimeError::Invalid(_) | RuntimeError::WrongWorld(_) => StatusCode::BAD_REQUEST,
                RuntimeError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                RuntimeError::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
                RuntimeError::MemoryLimit { .. }
                | RuntimeError::Trap { .. }
                | RuntimeError::Guest { .. }
                | RuntimeError::OutputTooLarge { .. }
                | RuntimeError::Host(_) => StatusCode::INTERNAL_SERVER_ERROR,
            },
            ApiError::Replication(e) => match e {
                // Keys come in the path; a value over the limit is refused (413) while its
                // body is read.
                ReplicationError::BadInput(_) | ReplicationError::TooLarge(_) => {
                    StatusCode::BAD_REQUEST
                }
                ReplicationError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
                ReplicationError::Conflict { .. } | ReplicationError::Fenced { .. } => {
                    StatusCode::CONFLICT
                }
                ReplicationError::Remote(_)
                | ReplicationError::LockLost(_)
                | ReplicationError::LineFailed(_) => StatusCode::SERVICE_UNAVAILABLE,
                ReplicationError::Store(_) | ReplicationError::Corrupt(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
            },
            ApiError::Unavailable(_) | ApiError::RetryLater(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Store(_) | ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        // A redacted failure was logged whole, under its id, where it was redacted.
        if status.is_server_error() && !matches!(self, ApiError::Redacted { .. }) {
            tracing::warn!(%status, error = %self, "request failed");
        }
        let mut body = serde_json::json!({ "error": self.to_string() });
        if let ApiError::Redacted { id, .. } = &self {
            body["error_id"] = serde_json::json!(id);
        }
        // A failed conditional write says which version won, so the client can retry.
        if let ApiError::Replication(ReplicationError::Conflict { current }) = &self {
            body["current"] = serde_json::json!(current.map(|v| v.to_string()));
        }
        let retry = matches!(self, ApiError::RetryLater(_));
        let mut response = (status, axum::Json(body)).into_response();
        if retry {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        }
        response
    }
}

/// What the caller is told of a failed invocation: everything when the function was
/// deployed with `debug`; otherwise, for a failure that carries what the guest wrote or did,
/// its kind and an id, while the node's log gets the whole of it under that id.
pub(crate) fn told(function: &FunctionName, error: RuntimeError, debug: bool) -> ApiError {
    if debug || !error.is_private() {
        return ApiError::Runtime(error);
    }
    let id = format!("{:016x}", rand::random::<u64>());
    tracing::warn!(%function, error_id = %id, %error, "invocation failed");
    ApiError::Redacted { error, id }
}

/// The 413 for a body over `limit` bytes.
pub(crate) fn too_large(what: &str, limit: u64) -> ApiError {
    ApiError::TooLarge(format!("{what} is larger than the limit of {limit} bytes"))
}

/// The answer to a body that did not arrive within `within`.
pub(crate) fn too_slow(what: &str, within: std::time::Duration) -> ApiError {
    ApiError::RequestTimeout(format!(
        "the {what} did not arrive within {} s; send it faster or in a smaller piece",
        within.as_secs_f64()
    ))
}

/// Refuses a body whose `Content-Length` is already over `limit`, before reading any of it.
pub(crate) fn check_declared_length(
    headers: &HeaderMap,
    limit: u64,
    what: &str,
) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    match declared {
        Some(len) if len > limit => Err(too_large(what, limit)),
        _ => Ok(()),
    }
}

/// Reads a whole body, refusing it with 413 as soon as it passes `limit` bytes
/// (and before reading anything when Content-Length already says so).
pub(crate) async fn read_body(
    body: axum::body::Body,
    headers: &HeaderMap,
    limit: usize,
    what: &str,
    within: std::time::Duration,
) -> Result<bytes::Bytes, ApiError> {
    check_declared_length(headers, limit as u64, what)?;
    let read = tokio::time::timeout(within, axum::body::to_bytes(body, limit)).await;
    let Ok(read) = read else {
        return Err(too_slow(what, within));
    };
    match read {
        Ok(b) => Ok(b),
        Err(e) => {
            let length_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if length_limit {
                Err(too_large(what, limit as u64))
            } else {
                Err(ApiError::BadRequest(format!(
                    "could not read the {what}: {e}"
                )))
            }
        }
    }
}

/// `axum::extract::Query` whose rejection is an [`ApiError`] (JSON, like every other error).
pub(crate) struct Query<T>(pub T);

impl<T, S> axum::extract::FromRequestParts<S> for Query<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e| ApiError::BadRequest(format!("bad query parameters: {}", e.body_text())))
    }
}
