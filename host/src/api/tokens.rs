//! Scoped tokens over HTTP (`/v1/tokens`, admin scope): create, list, revoke.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

use super::{ApiError, App, Query};
use crate::id::TokenId;
use crate::tokens::{Created, NewToken, TokenInfo};

/// `POST /v1/tokens` parameters.
#[derive(serde::Deserialize)]
pub(crate) struct CreateParams {
    scope: Option<String>,
    namespace: Option<String>,
    #[serde(default)]
    name: String,
    expires: Option<String>,
}

/// Creates a token; its text is in the answer and nowhere else.
pub(crate) async fn create(
    State(app): State<Arc<App>>,
    Query(params): Query<CreateParams>,
) -> Result<(StatusCode, Json<Created>), ApiError> {
    let scope = params
        .scope
        .ok_or_else(|| {
            ApiError::BadRequest(
                "say what the token allows: `scope` read, invoke, deploy or admin".into(),
            )
        })?
        .parse()
        .map_err(ApiError::BadRequest)?;
    let namespace = params.namespace.map(|n| n.parse()).transpose()?;
    let expires_in = params
        .expires
        .map(|e| crate::millis::parse(&e))
        .transpose()
        .map_err(|e| ApiError::BadRequest(format!("expires: {e}")))?;
    let new = NewToken {
        scope,
        namespace,
        name: params.name,
        expires_in,
    };
    Ok((StatusCode::CREATED, Json(app.tokens.create(new).await?)))
}

/// Every scoped token (never their secrets).
pub(crate) async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<TokenInfo>>, ApiError> {
    Ok(Json(app.tokens.list().await?))
}

/// Revokes a token: 204, or 404 for an id no token has.
pub(crate) async fn revoke(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: TokenId = id.parse()?;
    app.tokens.revoke(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}
