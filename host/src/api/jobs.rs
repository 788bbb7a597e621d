//! Map/reduce jobs: submit, watch, read output.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::{ApiError, App, Query, check_declared_length, too_large};
use crate::id::{FunctionName, JobId};
use crate::mapreduce::plan::{CHUNK_BYTES, Chunker};
use crate::mapreduce::{JobRecord, JobSpec};
use crate::runtime::Prepared;

/// Most reducer partitions a job may ask for.
const MAX_REDUCERS: u32 = 1024;

/// Query parameters of `POST /v1/jobs`; the body is the input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SubmitParams {
    /// The map/reduce function.
    function: String,
    /// Reducer partitions; default 4.
    reducers: Option<u32>,
}

pub(crate) async fn submit(
    State(app): State<Arc<App>>,
    Query(params): Query<SubmitParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    let function: FunctionName = params.function.parse()?;
    let reducers = params.reducers.unwrap_or(4);
    if !(1..=MAX_REDUCERS).contains(&reducers) {
        return Err(ApiError::BadRequest(format!(
            "reducers must be between 1 and {MAX_REDUCERS}, not {reducers}"
        )));
    }
    let active = app.active(&function).await?;
    let Prepared::Task(pre) = &active.prepared else {
        return Err(ApiError::BadRequest(format!(
            "function `{function}` is an HTTP handler, not a map/reduce task; invoke it at /fn/{function}/"
        )));
    };

    // Cut the input into chunks as it arrives, so it never has to sit in one buffer.
    let limit = app.limits.max_job_input.get();
    check_declared_length(&headers, limit, "job input")?;
    let mut chunker = Chunker::new(CHUNK_BYTES);
    let mut chunks = Vec::new();
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    while let Some(piece) = stream.next().await {
        let piece = piece
            .map_err(|e| ApiError::BadRequest(format!("could not read the job input: {e}")))?;
        received += piece.len() as u64;
        if received > limit {
            return Err(too_large("job input", limit));
        }
        chunks.extend(chunker.push(&piece));
    }
    chunks.extend(chunker.finish());

    let spec = JobSpec {
        function,
        digest: active.deployment.digest,
        pre: pre.clone(),
        limits: app.runtime.limits(&active.deployment.limits),
        reducers,
        chunks,
    };
    let record = app.jobs.submit(spec).await?;
    Ok((StatusCode::ACCEPTED, Json(record)))
}

pub(crate) async fn show(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Json<JobRecord>, ApiError> {
    let id: JobId = id.parse()?;
    app.jobs
        .get(id)?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job with id {id}")))
}

pub(crate) async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<JobRecord>>, ApiError> {
    Ok(Json(app.jobs.list()?))
}

/// The output as JSON lines (`{"key":...,"value":...}`), streamed from the store.
pub(crate) async fn output(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: JobId = id.parse()?;
    app.jobs
        .get(id)?
        .ok_or_else(|| ApiError::NotFound(format!("no job with id {id}")))?;
    let lines = futures::stream::iter(app.jobs.output(id)).map(|r| {
        r.map(|mut line| {
            line.push(b'\n');
            bytes::Bytes::from(line)
        })
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}
