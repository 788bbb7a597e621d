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

use super::{ApiError, App, Query, check_declared_length, read_body, too_large};
use crate::blobs::{Census, MAX_ASKED};
use crate::id::{Digest, FunctionName, JobId};
use crate::mapreduce::plan::{
    CHUNK_BYTES, Cut, InputChunk, MAX_CHUNK_BYTES, MIN_CHUNK_BYTES, Records,
};
use crate::mapreduce::{JobRecord, JobSpec};
use crate::runtime::Prepared;

/// Most reducer partitions a job may ask for.
const MAX_REDUCERS: u32 = 1024;

/// The content type of a job submission whose body lists input chunks already uploaded
/// (`{"chunks": [{"digest": ..., "size": ...}, ...]}`) instead of being the input.
pub const CHUNKS_CONTENT_TYPE: &str = "application/vnd.weft.chunks+json";

/// The largest input chunk one upload may carry: 64 MiB, the largest chunk size a job may
/// ask for (a chunk is about its job's chunk size, more only when one record is longer).
pub const MAX_CHUNK_UPLOAD: u64 = MAX_CHUNK_BYTES as u64;

/// The most chunks one job may have: the list is recorded in one entry of the metadata
/// group (64 GiB of input in chunks of the default 4 MiB).
const MAX_CHUNKS: usize = 16_384;

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
    /// For a plain body: the target chunk size in bytes (default 4 MiB).
    chunk_size: Option<usize>,
    /// For a plain body: what a record is, `lines` (default) or `length-prefixed`.
    records: Option<String>,
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
    let chunk_size = params.chunk_size.unwrap_or(CHUNK_BYTES);
    if !(MIN_CHUNK_BYTES..=MAX_CHUNK_BYTES).contains(&chunk_size) {
        return Err(ApiError::BadRequest(format!(
            "chunk_size must be between {MIN_CHUNK_BYTES} and {MAX_CHUNK_BYTES} bytes, not {chunk_size}"
        )));
    }
    let active = app.active(&function).await?;
    let Prepared::Task(_) = &active.prepared else {
        return Err(ApiError::BadRequest(format!(
            "function `{function}` is an HTTP handler, not a map/reduce task; invoke it at /fn/{function}/"
        )));
    };

    let limit = app.limits.max_job_input.get();
    let records: Records = match &params.records {
        Some(r) => r.parse().map_err(ApiError::BadRequest)?,
        None => Records::Lines,
    };
    let chunks = if is_chunk_list(&headers) {
        chunk_list(&app, &headers, body, limit).await?
    } else {
        let cut = Cut {
            size: chunk_size,
            records,
        };
        store_input(&app, &headers, body, limit, cut).await?
    };
    let limits = app.runtime.limits(&active.deployment.limits);
    let spec = JobSpec {
        function,
        digest: active.deployment.digest,
        timeout: limits.timeout,
        memory_bytes: limits.memory_bytes,
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
        .is_some_and(|v| {
            v.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .eq_ignore_ascii_case(CHUNKS_CONTENT_TYPE)
        })
}

/// The largest list of chunks a submission may send: 64 MiB.
const MAX_LIST: usize = 64 << 20;

/// The largest question of which chunks are missing.
const MAX_QUESTION: usize = MAX_ASKED * 80 + 1024;

/// A submission's list of chunks, each held by some node at the size listed.
async fn chunk_list(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    limit: u64,
) -> Result<Vec<InputChunk>, ApiError> {
    let bytes = read_body(
        body,
        headers,
        MAX_LIST,
        "list of chunks",
        app.limits.body_timeout,
    )
    .await?;
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
    let total = list
        .chunks
        .iter()
        .try_fold(0u64, |sum, c| sum.checked_add(c.size));
    if total.is_none_or(|t| t > limit) {
        return Err(too_large("job input", limit));
    }
    for batch in list.chunks.chunks(MAX_ASKED) {
        let digests: Vec<Digest> = batch.iter().map(|c| c.digest).collect();
        let census = app.cluster.blobs.census(&digests).await?;
        let absent: Vec<usize> = (0..batch.len())
            .filter(|&i| census.sizes[i].is_none())
            .collect();
        if let Some(&first) = absent.first() {
            return Err(absent_chunks(&census, absent.len(), batch[first].digest));
        }
        for (c, size) in batch.iter().zip(&census.sizes) {
            if *size != Some(c.size) {
                return Err(ApiError::BadRequest(format!(
                    "input chunk {} is {} bytes, not {} as listed",
                    c.digest,
                    size.unwrap_or_default(),
                    c.size
                )));
            }
        }
    }
    Ok(list.chunks)
}

/// Chunks no node answered for: 400, or 503 when some replicas did not answer.
fn absent_chunks(census: &Census, absent: usize, first: Digest) -> ApiError {
    if census.silent.is_empty() {
        ApiError::BadRequest(format!(
            "{absent} of the input chunks are held by no node (the first: {first}); upload them with PUT /v1/jobs/input/{{digest}} first"
        ))
    } else {
        ApiError::Unavailable(format!(
            "{absent} of the input chunks were found on no node that answered (the first: {first}); these did not answer: {}; try again",
            census.silent.join("; ")
        ))
    }
}

/// A plain submission's body: the input itself, cut into chunks as it arrives (so it never
/// sits in one buffer) and each stored as a blob.
async fn store_input(
    app: &App,
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    cut: Cut,
) -> Result<Vec<InputChunk>, ApiError> {
    check_declared_length(headers, limit, "job input")?;
    let chunk_size = cut.size;
    let mut chunker = cut.chunker();
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
        if chunks.len() > MAX_CHUNKS {
            return Err(ApiError::BadRequest(format!(
                "the input makes more than {MAX_CHUNKS} chunks of {chunk_size} bytes: ask for larger chunks (chunk_size)"
            )));
        }
    }
    if let Some(chunk) = chunker
        .finish()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?
    {
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
    let bytes = read_body(
        body,
        &headers,
        limit as usize,
        "input chunk",
        app.limits.body_timeout,
    )
    .await?;
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

/// `POST /v1/jobs/input/missing`: which of the digests have fewer copies than a chunk
/// uploaded now would get (none, or too few after the ring changed): what to upload.
pub(crate) async fn missing_chunks(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Digests>, ApiError> {
    let bytes = read_body(
        body,
        &headers,
        MAX_QUESTION,
        "list of digests",
        app.limits.body_timeout,
    )
    .await?;
    let asked: Digests = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadRequest(format!(
            "the body must be {{\"digests\": [HEX, ...]}} (at most {MAX_ASKED}): {e}"
        ))
    })?;
    let census = app.cluster.blobs.census(&asked.digests).await?;
    let digests = census.short().map(|i| asked.digests[i]).collect();
    Ok(Json(Digests { digests }))
}

/// Query parameters of `GET /v1/jobs/{id}` (others are ignored, as before there were any).
#[derive(Debug, Deserialize)]
pub(crate) struct ShowParams {
    /// Wait up to this many milliseconds (at most [`MAX_WAIT_MS`]) for a running job to end
    /// before answering, so a client learns of the end at once instead of at its next poll.
    wait_ms: Option<u64>,
}

/// The longest `GET /v1/jobs/{id}?wait_ms=` waits.
const MAX_WAIT_MS: u64 = 30_000;

pub(crate) async fn show(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Query(params): Query<ShowParams>,
) -> Result<Json<JobRecord>, ApiError> {
    let id: JobId = id.parse()?;
    let wait = std::time::Duration::from_millis(params.wait_ms.unwrap_or(0).min(MAX_WAIT_MS));
    app.jobs
        .ended_within(id, wait)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no job with id {id}")))
}

/// `POST /v1/jobs/{id}/cancel`: stops a running job (202 with its record; it ends
/// `cancelled` once its tasks are stopped); 409 if it had already ended.
pub(crate) async fn cancel(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<JobRecord>), ApiError> {
    let id: JobId = id.parse()?;
    let found = app.jobs.cancel(id).await?;
    let record = app.jobs.get(id).await?;
    match (found, record) {
        (Some(true), Some(r)) => Ok((StatusCode::ACCEPTED, Json(r))),
        (Some(false), Some(r)) => Err(ApiError::Conflict(format!(
            "job {id} already ended ({}); only a running job can be cancelled",
            format!("{:?}", r.status).to_lowercase()
        ))),
        _ => Err(ApiError::NotFound(format!("no job with id {id}"))),
    }
}

/// `DELETE /v1/jobs/{id}`: forgets an ended job (204); 409 while it runs.
pub(crate) async fn delete(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let id: JobId = id.parse()?;
    match app.jobs.delete(id).await? {
        Some(true) => Ok(StatusCode::NO_CONTENT),
        Some(false) => Err(ApiError::Conflict(format!(
            "job {id} is still running; cancel it first (POST /v1/jobs/{id}/cancel)"
        ))),
        None => Err(ApiError::NotFound(format!("no job with id {id}"))),
    }
}

pub(crate) async fn list(State(app): State<Arc<App>>) -> Result<Json<Vec<JobRecord>>, ApiError> {
    Ok(Json(app.jobs.list().await?))
}

/// The output as JSON lines (`{"key":...,"value":...}`), streamed from its blobs.
pub(crate) async fn output(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id: JobId = id.parse()?;
    let lines = app
        .jobs
        .output(id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no job with id {id}")))?;
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(lines),
    )
        .into_response())
}
