//! The lock service over HTTP: acquire, renew, release, list.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::{ApiError, App, Query};
use crate::id::LockKey;
use crate::locks::{Grant, LockError, LockView};

/// Query parameters of `POST /v1/locks/{key}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcquireParams {
    /// The lease (`10s`, `500ms`); default from the node's configuration.
    lease: Option<String>,
    /// How long to wait in line while another holds the lock (`5s`); default `0s`: answer
    /// 409 at once.
    wait: Option<String>,
    /// Who asks, as shown to others; default a new name for this request. Asking again
    /// under the name of the current holder gives its token back and starts its lease again.
    holder: Option<String>,
}

/// Query parameters naming the holder's token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenParams {
    /// The fencing token the lock was granted under.
    token: u64,
}

fn duration(name: &str, text: Option<&str>, default: Duration) -> Result<Duration, ApiError> {
    match text {
        None => Ok(default),
        Some(t) => {
            crate::millis::parse(t).map_err(|e| ApiError::BadRequest(format!("{name}: {e}")))
        }
    }
}

pub(crate) async fn acquire(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    Query(params): Query<AcquireParams>,
) -> Result<Json<Grant>, ApiError> {
    let key: LockKey = key.parse()?;
    let locks = &app.cluster.locks;
    let lease = duration(
        "lease",
        params.lease.as_deref(),
        locks.config().default_lease,
    )?;
    let wait = duration("wait", params.wait.as_deref(), Duration::ZERO)?;
    Ok(Json(locks.acquire(&key, params.holder, lease, wait).await?))
}

pub(crate) async fn renew(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    Query(params): Query<TokenParams>,
) -> Result<Json<Grant>, ApiError> {
    let key: LockKey = key.parse()?;
    Ok(Json(app.cluster.locks.renew(&key, params.token).await?))
}

pub(crate) async fn release(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    Query(params): Query<TokenParams>,
) -> Result<StatusCode, ApiError> {
    let key: LockKey = key.parse()?;
    app.cluster.locks.release(&key, params.token).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<LockView>>, ApiError> {
    Ok(Json(app.cluster.locks.list().await?))
}

impl From<LockError> for ApiError {
    fn from(e: LockError) -> Self {
        match e {
            LockError::BadInput(m) => ApiError::BadRequest(m),
            e @ (LockError::Held { .. } | LockError::NotHolder { .. }) => {
                ApiError::Conflict(e.to_string())
            }
            LockError::Consensus(e) => e.into(),
        }
    }
}
