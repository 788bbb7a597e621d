//! The cluster's deny list over HTTP (`/v1/denied`, admin scope).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiError, App, Query};
use crate::denylist::DeniedNode;
use crate::id::NodeId;

/// `PUT /v1/denied/{node}` parameters.
#[derive(serde::Deserialize)]
pub(crate) struct DenyParams {
    #[serde(default)]
    reason: String,
}

/// Denies a node: every node refuses it once this returns.
pub(crate) async fn deny(
    State(app): State<Arc<App>>,
    Path(node): Path<String>,
    Query(params): Query<DenyParams>,
) -> Result<Json<DeniedNode>, ApiError> {
    let node: NodeId = node.parse()?;
    let me = app
        .cluster
        .membership
        .members()
        .members
        .first()
        .map(|m| m.node.clone());
    if me.as_ref() == Some(&node) {
        return Err(ApiError::BadRequest(format!(
            "`{node}` is the node you asked: ask another node to deny it"
        )));
    }
    Ok(Json(app.cluster.denylist.deny(&node, params.reason).await?))
}

/// Takes a node off the list (204), or 404 if it was not on it.
pub(crate) async fn allow(
    State(app): State<Arc<App>>,
    Path(node): Path<String>,
) -> Result<StatusCode, ApiError> {
    let node: NodeId = node.parse()?;
    if app.cluster.denylist.allow(&node).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("node `{node}` is not denied")))
    }
}

/// The denied nodes.
pub(crate) async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<DeniedNode>>, ApiError> {
    Ok(Json(app.cluster.denylist.list().await?))
}
