//! Map/reduce jobs: upload input chunks, submit, watch, read output.
//!
//! A client (the CLI) cuts its input into chunks itself, asks which chunks no node holds
//! (`POST /v1/jobs/input/missing`), uploads those (`PUT /v1/jobs/input/{digest}`, stored as
//! blobs on the digest's replicas), and submits the job with the list of chunks
//! ([`CHUNKS_CONTENT_TYPE`]): input submitted again uploads nothing. A plain body is still
//! taken as the input itself, cut and stored by the node.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;

use super::{ApiError, App, Query, check_declared_length, too_large};
use crate::blobs::MAX_ASKED;
use crate::id::{Digest, FunctionName, JobId};
use crate::mapreduce::plan::{CHUNK_BYTES, Chunker, InputChunk};
use crate::mapreduce::{JobRecord, JobSpec};
use crate::runtime::Prepared;

/// Most reducer partitions a job may ask for.
const MAX_REDUCERS: u32 = 1024;

/// The content type of a job submission whose body lists input chunks already uploaded
/// (`{"chunks": [{"digest": ..., "size": ...}, ...]}`) instead of being the input.
pub const CHUNKS_CONTENT_TYPE: &str = "application/vnd.weft.chunks+json";

/// The largest input chunk one upload may carry: 64 MiB (a chunk is about
/// [`CHUNK_BYTES`], more only when one record is longer).
pub const MAX_CHUNK_UPLOAD: u64 = 64 << 20;

/// The most chunks one job may have.
const MAX_CHUNKS: usize = 1 << 20;

/// A job's input as a list of uploaded chunks.
#[derive(Debug, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkList {
    /// The chunks, in input order.
    pub chunks: Vec<InputChunk>,
}

/// Digests asked about, or the ones missing.
#[derive(Debug, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digests {
    /// The digests.
    pub digests: Vec<Digest>,
}

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

    let limit = app.limits.max_job_input.get();
    let chunks = if is_chunk_list(&headers) {
        chunk_list(&app, body, limit).await?
    } else {
        store_input(&app, &headers, body, limit).await?
    };
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

fn is_chunk_list(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or_default().trim() == CHUNKS_CONTENT_TYPE)
}

/// A submission's list of chunks, each held by some node.
async fn chunk_list(app: &App, body: Body, limit: u64) -> Result<Vec<InputChunk>, ApiError> {
    let bytes = axum::body::to_bytes(body, 64 << 20)
        .await
        .map_err(|e| ApiError::BadRequest(format!("could not read the list of chunks: {e}")))?;
    let list: ChunkList = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body of a {CHUNKS_CONTENT_TYPE} submission must be {{\"chunks\": [{{\"digest\": HEX, \"size\": BYTES}}, ...]}}: {e}"
        ))
    })?;
    if list.chunks.len() > MAX_CHUNKS {
        return Err(ApiError::BadRequest(format!(
            "{} chunks: a job may have at most {MAX_CHUNKS}",
            list.chunks.len()
        )));
    }
    let total: u64 = list.chunks.iter().map(|c| c.size).sum();
    if total > limit {
        return Err(too_large("job input", limit));
    }
    let digests: Vec<Digest> = list.chunks.iter().map(|c| c.digest).collect();
    let mut missing = 0;
    let mut first = None;
    for batch in digests.chunks(MAX_ASKED) {
        let m = app.cluster.blobs.missing(batch).await?;
        missing += m.len();
        first = first.or(m.first().copied());
    }
    if let Some(first) = first {
        return Err(ApiError::BadRequest(format!(
            "{missing} of the {} input chunks are held by no node (the first: {first}); upload them with PUT /v1/jobs/input/{{digest}} first",
            digests.len()
        )));
    }
    Ok(list.chunks)
}

/// A plain submission's body: the input itself, cut into chunks as it arrives (so it never
/// sits in one buffer) and each stored as a blob.
async fn store_input(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Vec<InputChunk>, ApiError> {
    check_declared_length(headers, limit, "job input")?;
    let mut chunker = Chunker::new(CHUNK_BYTES);
    let mut chunks = Vec::new();
    let mut received = 0u64;
    let mut stream = body.into_data_stream();
    let blobs = &app.cluster.blobs;
    while let Some(piece) = stream.next().await {
        let piece = piece
            .map_err(|e| ApiError::BadRequest(format!("could not read the job input: {e}")))?;
        received += piece.len() as u64;
        if received > limit {
            return Err(too_large("job input", limit));
        }
        for chunk in chunker.push(&piece) {
            blobs.put(chunk.bytes.clone()).await?;
            chunks.push(chunk.input());
        }
    }
    if let Some(chunk) = chunker.finish() {
        blobs.put(chunk.bytes.clone()).await?;
        chunks.push(chunk.input());
    }
    Ok(chunks)
}

/// `PUT /v1/jobs/input/{digest}`: stores one input chunk (its bytes must hash to `digest`) on
/// the digest's replicas.
pub(crate) async fn put_chunk(
    State(app): State<Arc<App>>,
    Path(digest): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<InputChunk>, ApiError> {
    let digest: Digest = digest.parse()?;
    let limit = MAX_CHUNK_UPLOAD.min(app.limits.max_job_input.get());
    check_declared_length(&headers, limit, "an input chunk")?;
    let bytes = axum::body::to_bytes(body, limit as usize)
        .await
        .map_err(|e| {
            match e
                .into_inner()
                .downcast::<http_body_util::LengthLimitError>()
            {
                Ok(_) => too_large("an input chunk", limit),
                Err(e) => ApiError::BadRequest(format!("could not read the input chunk: {e}")),
            }
        })?;
    let actual = Digest::of(&bytes);
    if actual != digest {
        return Err(ApiError::BadRequest(format!(
            "the chunk's bytes hash to {actual}, not to {digest} as its path says (blake3 of the whole body)"
        )));
    }
    let size = bytes.len() as u64;
    app.cluster.blobs.put(bytes).await?;
    Ok(Json(InputChunk { digest, size }))
}

/// `POST /v1/jobs/input/missing`: which of the digests no node holds.
pub(crate) async fn missing_chunks(
    State(app): State<Arc<App>>,
    Json(asked): Json<Digests>,
) -> Result<Json<Digests>, ApiError> {
    let digests = app.cluster.blobs.missing(&asked.digests).await?;
    Ok(Json(Digests { digests }))
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
