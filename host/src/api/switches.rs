//! Test only (`test-switches`): routes that let process-level tests drive what they cannot
//! reach from outside a process: a network partition, and the metadata group's registers
//! (the register workload of the linearizability test, and what a job's coordinators
//! recorded).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

use super::{ApiError, App, Query};
use crate::consensus::{Command, Outcome};

/// `PUT /v1/test-switches/partition`: cuts this node off from these QUIC addresses (an empty
/// list heals it).
pub(crate) async fn partition(
    State(app): State<Arc<App>>,
    Json(peers): Json<Vec<SocketAddr>>,
) -> Json<usize> {
    app.cluster.transport.partition_for_tests(&peers);
    Json(peers.len())
}

/// A register as the workload sees it.
#[derive(Debug, Serialize)]
pub(crate) struct RegisterView {
    value: Option<String>,
    revision: u64,
}

/// `GET /v1/test-switches/register/{key}`: a read through the group (linearizable unless
/// the node runs with `--local-reads-for-tests`).
pub(crate) async fn read(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
) -> Result<Json<RegisterView>, ApiError> {
    let key = format!("test/{key}");
    let view = app
        .cluster
        .consensus
        .read(|s| match s.registers.get(&key) {
            Some(r) => RegisterView {
                value: Some(String::from_utf8_lossy(&r.value).into_owned()),
                revision: r.revision,
            },
            None => RegisterView {
                value: None,
                revision: 0,
            },
        })
        .await?;
    Ok(Json(view))
}

/// Query of a register write.
#[derive(Debug, Deserialize)]
pub(crate) struct WriteParams {
    /// Write only if the register is at this revision (0: absent).
    expect: Option<u64>,
}

/// What a register write did.
#[derive(Debug, Serialize)]
pub(crate) struct WriteView {
    /// The write applied at this revision.
    written: Option<u64>,
    /// The register was at this revision instead.
    conflict: Option<u64>,
}

/// `PUT /v1/test-switches/register/{key}?expect=REV`: a (conditional) write.
pub(crate) async fn write(
    State(app): State<Arc<App>>,
    Path(key): Path<String>,
    Query(params): Query<WriteParams>,
    body: Bytes,
) -> Result<Json<WriteView>, ApiError> {
    let command = Command::Write {
        key: format!("test/{key}"),
        value: Some(body.to_vec()),
        expect: params.expect,
    };
    let view = match app.cluster.consensus.propose(command).await? {
        (_, Outcome::Written { revision }) => WriteView {
            written: Some(revision),
            conflict: None,
        },
        (_, Outcome::Conflict { current }) => WriteView {
            written: None,
            conflict: Some(current),
        },
        (_, other) => return Err(ApiError::Internal(format!("a write did {other:?}"))),
    };
    Ok(Json(view))
}

/// Query of a register listing.
#[derive(Debug, Deserialize)]
pub(crate) struct ListParams {
    /// The keys' prefix (any register, not only the workload's).
    prefix: String,
}

/// `GET /v1/test-switches/registers?prefix=P`: every register whose key starts with `P`, with
/// its revision, read through the group.
pub(crate) async fn list(
    State(app): State<Arc<App>>,
    Query(params): Query<ListParams>,
) -> Result<Json<Vec<(String, u64)>>, ApiError> {
    let listed = app
        .cluster
        .consensus
        .read(|s| {
            s.registers
                .scan(&params.prefix)
                .map(|(k, r)| (k.clone(), r.revision))
                .collect()
        })
        .await?;
    Ok(Json(listed))
}
