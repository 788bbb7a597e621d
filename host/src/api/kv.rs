//! `/v1/kv/{ns}/{key}`: the replicated key-value store for users (guests use their `kv`
//! import). Values travel as raw bytes; versions in the `x-weft-version` header, the time a
//! value has left to live (written with `?ttl=`) in `x-weft-ttl-ms`.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::{ApiError, App, Query, read_body};
use crate::replication::{Expect, Fence, MAX_VALUE, Namespace, Overrides, Version};

/// The header carrying a value's version.
pub const VERSION_HEADER: &str = "x-weft-version";

/// The header carrying the milliseconds a value has left to live, when it was written with a
/// TTL.
pub const TTL_HEADER: &str = "x-weft-ttl-ms";

/// Query parameters of reads.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReadParams {
    /// Replicas that must answer (default: the namespace's `r`).
    r: Option<u8>,
    /// Only this node's own copy, without asking any other (diagnostics).
    #[serde(default)]
    local: bool,
    /// Read under this lock (with `token`): the replicas asked refuse later writes under an
    /// earlier grant, and refuse the read if the lock was granted again since.
    lock: Option<String>,
    /// The fencing token of the lock's grant.
    token: Option<u64>,
}

/// Query parameters of writes and deletes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WriteParams {
    /// Replicas that must flush the write (default: the namespace's `w`).
    w: Option<u8>,
    /// Only if the key is at this version (as returned by a read).
    if_version: Option<String>,
    /// Only if the key is absent.
    #[serde(default)]
    if_absent: bool,
    /// The value expires this long after the write (`30s`, `5m`, `1h`): from then on the key
    /// reads as absent on every node. Without it the value does not expire.
    ttl: Option<String>,
    /// Made under this lock (with `token`): refused if the lock was granted again since.
    lock: Option<String>,
    /// The fencing token of the lock's grant.
    token: Option<u64>,
}

/// Query parameters of scans.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScanParams {
    /// Only keys starting with this.
    #[serde(default)]
    prefix: String,
    /// From this key on (inclusive): the `next` of the previous page.
    #[serde(default)]
    start: String,
    /// At most this many keys (default 100, at most 10,000).
    limit: Option<usize>,
}

/// The answer to a write.
#[derive(Debug, Serialize, Deserialize)]
pub struct Written {
    /// The version written.
    pub version: String,
}

/// One key of a scan. Text keys and values are given as strings; others in hex.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScanEntry {
    /// The key, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The key in hex, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_hex: Option<String>,
    /// The value, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The value in hex, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value_hex: Option<String>,
    /// Its version.
    pub version: String,
    /// The milliseconds it has left to live, when it was written with a TTL.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ttl_ms: Option<u64>,
}

/// A page of a scan.
#[derive(Debug, Serialize, Deserialize)]
pub struct ScanPage {
    /// The keys, in order.
    pub entries: Vec<ScanEntry>,
    /// Where the next page starts, if the limit cut this one short.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Nodes that did not answer: keys only they hold are missing.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub missing: Vec<String>,
}

pub(crate) async fn get(
    State(app): State<Arc<App>>,
    Path((ns, key)): Path<(String, String)>,
    Query(params): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let ns: Namespace = ns.parse()?;
    let fences = fences_of(&app, params.lock, params.token, params.r.is_some()).await?;
    let r = &app.cluster.replication;
    let found = if params.local {
        r.local_entry(&ns, key.as_bytes())?
            .and_then(|e| e.read(crate::replication::now_ms()))
    } else {
        r.get(
            &ns,
            key.as_bytes(),
            &fences,
            Overrides {
                r: params.r,
                ..Overrides::default()
            },
        )
        .await?
    };
    let Some(read) = found else {
        return Err(ApiError::NotFound(format!(
            "no key `{key}` in namespace `{ns}`"
        )));
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        VERSION_HEADER,
        HeaderValue::from_str(&read.version.to_string()).expect("hex is a valid header"),
    );
    if let Some(left) = ttl_left(read.expires) {
        headers.insert(TTL_HEADER, HeaderValue::from(left));
    }
    Ok((headers, read.value).into_response())
}

/// The milliseconds left before `expires` (Unix ms), if the value expires.
fn ttl_left(expires: Option<u64>) -> Option<u64> {
    expires.map(|at| at.saturating_sub(crate::replication::now_ms()))
}

pub(crate) async fn put(
    State(app): State<Arc<App>>,
    Path((ns, key)): Path<(String, String)>,
    Query(params): Query<WriteParams>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Written>, ApiError> {
    let ns: Namespace = ns.parse()?;
    let value = read_body(body, &headers, MAX_VALUE, "value", app.limits.body_timeout).await?;
    write(&app, ns, key, Some(value.to_vec()), params).await
}

pub(crate) async fn delete(
    State(app): State<Arc<App>>,
    Path((ns, key)): Path<(String, String)>,
    Query(params): Query<WriteParams>,
) -> Result<Json<Written>, ApiError> {
    let ns: Namespace = ns.parse()?;
    if params.ttl.is_some() {
        return Err(ApiError::BadRequest(
            "a deletion takes no ttl: give ttl to a write (PUT)".into(),
        ));
    }
    write(&app, ns, key, None, params).await
}

async fn write(
    app: &App,
    ns: Namespace,
    key: String,
    value: Option<Vec<u8>>,
    params: WriteParams,
) -> Result<Json<Written>, ApiError> {
    if ns.as_str().starts_with("sys.") {
        return Err(ApiError::BadRequest(format!(
            "namespace `{ns}` is kept by Weft itself (names starting with `sys.` are reserved); choose another namespace"
        )));
    }
    let expect = match (params.if_version, params.if_absent) {
        (Some(_), true) => {
            return Err(ApiError::BadRequest(
                "give if_version or if_absent, not both".into(),
            ));
        }
        (Some(v), false) => Some(Expect::Version(
            v.parse::<Version>().map_err(ApiError::BadRequest)?,
        )),
        (None, true) => Some(Expect::Absent),
        (None, false) => None,
    };
    let ttl = match params.ttl.as_deref().map(crate::millis::parse).transpose() {
        Ok(ttl) => ttl,
        Err(e) => return Err(ApiError::BadRequest(format!("ttl: {e}"))),
    };
    let fences = fences_of(app, params.lock, params.token, params.w.is_some()).await?;
    let version = app
        .cluster
        .replication
        .put(
            &ns,
            key.as_bytes(),
            value,
            expect,
            &fences,
            Overrides {
                w: params.w,
                ttl,
                ..Overrides::default()
            },
        )
        .await?;
    Ok(Json(Written {
        version: version.to_string(),
    }))
}

/// The lock a read or write is made under, from its `lock` and `token` parameters. The token
/// must be one the lock service could have issued (at most the group's last applied entry),
/// so a made-up token cannot raise a lock's mark above every real holder's; and the
/// namespace's quorums stand (fencing relies on `r + w > n`).
async fn fences_of(
    app: &App,
    lock: Option<String>,
    token: Option<u64>,
    quorum_given: bool,
) -> Result<Vec<Fence>, ApiError> {
    let (lock, token) = match (lock, token) {
        (Some(lock), Some(token)) if token > 0 => (lock.parse()?, token),
        (None, None) => return Ok(Vec::new()),
        _ => {
            return Err(ApiError::BadRequest(
                "a fenced read or write needs both lock=KEY and token=T (the token its acquisition returned, above 0)".into(),
            ));
        }
    };
    if quorum_given {
        return Err(ApiError::BadRequest(
            "r and w cannot be changed for a read or write under a lock: fencing relies on the namespace's quorums".into(),
        ));
    }
    let consensus = &app.cluster.consensus;
    let applied = || consensus.applied_index();
    if token > applied() {
        // This node may lag: catch up with the leader, then look again.
        consensus.read(|_| ()).await?;
    }
    if token > applied() {
        return Err(ApiError::BadRequest(format!(
            "token {token} was never issued (the lock service is at {}): use the token `weft lock acquire` returned",
            applied()
        )));
    }
    Ok(vec![Fence { lock, token }])
}

pub(crate) async fn scan(
    State(app): State<Arc<App>>,
    Path(ns): Path<String>,
    Query(params): Query<ScanParams>,
) -> Result<(StatusCode, Json<ScanPage>), ApiError> {
    let ns: Namespace = ns.parse()?;
    let limit = params.limit.unwrap_or(100);
    let page = scan_page(&app, &ns, &params.prefix, &params.start, limit).await?;
    Ok((StatusCode::OK, Json(page)))
}

/// One page of a namespace's live keys from `start` on, those starting with `prefix`.
pub(crate) async fn scan_page(
    app: &App,
    ns: &Namespace,
    prefix: &str,
    start: &str,
    limit: usize,
) -> Result<ScanPage, ApiError> {
    if !(1..=10_000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and 10000, not {limit}"
        )));
    }
    let page = app
        .cluster
        .replication
        .scan(ns, prefix.as_bytes(), start.as_bytes(), limit)
        .await?;
    let missing = page.missing;
    // Keys are taken as text here, so a page boundary in a binary key is approximated.
    let next = page.next.map(|k| String::from_utf8_lossy(&k).into_owned());
    let entries = page
        .entries
        .into_iter()
        .map(|(k, read)| {
            let (key, key_hex) = text_or_hex(k);
            let (value, value_hex) = text_or_hex(read.value);
            ScanEntry {
                key,
                key_hex,
                value,
                value_hex,
                version: read.version.to_string(),
                ttl_ms: ttl_left(read.expires),
            }
        })
        .collect();
    Ok(ScanPage {
        entries,
        next,
        missing,
    })
}

fn text_or_hex(bytes: Vec<u8>) -> (Option<String>, Option<String>) {
    match String::from_utf8(bytes) {
        Ok(s) => (Some(s), None),
        Err(e) => (
            None,
            Some(e.into_bytes().iter().map(|b| format!("{b:02x}")).collect()),
        ),
    }
}
