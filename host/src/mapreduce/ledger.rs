//! What the metadata group records of a job, pure: register names and their contents.
//!
//! - `job/{id}`: the [`Spec`], written once by the coordinator that took the job.
//! - `job/{id}/map/{task}`: the attempt whose output a map task's reducers read, and where it
//!   is ([`MapCommit`]); replaced when the task runs again after its output was lost.
//! - `job/{id}/reduce/{p}`: the attempt whose output is partition `p`'s ([`ReduceCommit`]),
//!   written only if absent: a partition's output is committed once.
//! - `job/{id}/cancel`: a client asked to cancel (any node writes it; the coordinator acts).
//! - `job/{id}/end`: the final [`JobRecord`]; map commits are removed with it.
//!
//! The coordinator writes all but `cancel` fenced by the job's lock ([`lock_key`]), so a
//! coordinator that lost the lock commits nothing. Values are JSON.

use serde::{Deserialize, Serialize};

use super::plan::InputChunk;
use super::wire::{AttemptId, Program};
use super::{JobRecord, OutputRecord};
use crate::consensus::Registers;
use crate::id::{Digest, FunctionName, JobId, LockKey, NodeId};

/// What a job runs over, as its first coordinator recorded it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Spec {
    /// The function.
    pub function: FunctionName,
    /// Its module.
    pub digest: Digest,
    /// Time limit of one guest call, in milliseconds.
    pub timeout_ms: u64,
    /// Memory cap of one instance, in bytes.
    pub memory_bytes: u64,
    /// Reducer partitions.
    pub reducers: u32,
    /// The input.
    pub chunks: Vec<InputChunk>,
    /// When it was submitted, in milliseconds since the Unix epoch.
    pub submitted_ms: u64,
}

impl Spec {
    /// What its attempts run.
    pub fn program(&self) -> Program {
        Program {
            function: self.function.clone(),
            digest: self.digest,
            timeout_ms: self.timeout_ms,
            memory_bytes: self.memory_bytes,
        }
    }
}

/// Where a finished map task's output is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MapCommit {
    /// The attempt.
    pub attempt: AttemptId,
    /// The node holding its output.
    pub node: NodeId,
}

/// A reducer's committed output.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReduceCommit {
    /// The attempt.
    pub attempt: AttemptId,
    /// Its output: blobs of JSON lines, in order.
    pub segments: Vec<Digest>,
    /// How many records.
    pub records: u64,
    /// Its best records, for the job's summary.
    pub top: Vec<OutputRecord>,
}

/// Everything recorded of one job.
#[derive(Clone, Debug, Default)]
pub struct Recorded {
    /// The spec, once written.
    pub spec: Option<Spec>,
    /// Map commits by task, with the register's revision.
    pub maps: Vec<(usize, MapCommit, u64)>,
    /// Reduce commits by partition.
    pub reduces: Vec<(u32, ReduceCommit)>,
    /// Whether a client asked to cancel.
    pub cancel: bool,
    /// The final record.
    pub end: Option<JobRecord>,
}

/// The job's lock: its holder coordinates it.
pub fn lock_key(id: JobId) -> LockKey {
    format!("weft.job:{id}")
        .parse()
        .expect("a job id makes a valid lock key")
}

/// The prefix of every job's registers.
pub const PREFIX: &str = "job/";

/// The spec's register.
pub fn spec_key(id: JobId) -> String {
    format!("{PREFIX}{id}")
}

/// A map task's register.
pub fn map_key(id: JobId, task: usize) -> String {
    format!("{PREFIX}{id}/map/{task}")
}

/// A reducer's register.
pub fn reduce_key(id: JobId, partition: u32) -> String {
    format!("{PREFIX}{id}/reduce/{partition}")
}

/// The cancel request's register.
pub fn cancel_key(id: JobId) -> String {
    format!("{PREFIX}{id}/cancel")
}

/// The final record's register.
pub fn end_key(id: JobId) -> String {
    format!("{PREFIX}{id}/end")
}

/// JSON of a recorded value.
pub fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("job records serialize")
}

/// What the registers hold of job `id`. Values that do not parse are skipped (logged).
pub fn read(registers: &Registers, id: JobId) -> Recorded {
    let mut r = Recorded::default();
    let base = spec_key(id);
    for (key, reg) in registers.scan(&base) {
        let rest = &key[base.len()..];
        let bad = |e: serde_json::Error| {
            tracing::warn!(register = %key, error = %e, "a job register does not parse");
        };
        if rest.is_empty() {
            r.spec = serde_json::from_slice(&reg.value).map_err(bad).ok();
        } else if let Some(task) = rest.strip_prefix("/map/") {
            if let (Ok(task), Some(c)) = (
                task.parse(),
                serde_json::from_slice(&reg.value).map_err(bad).ok(),
            ) {
                r.maps.push((task, c, reg.revision));
            }
        } else if let Some(p) = rest.strip_prefix("/reduce/") {
            if let (Ok(p), Some(c)) = (
                p.parse(),
                serde_json::from_slice(&reg.value).map_err(bad).ok(),
            ) {
                r.reduces.push((p, c));
            }
        } else if rest == "/cancel" {
            r.cancel = true;
        } else if rest == "/end" {
            r.end = serde_json::from_slice(&reg.value).map_err(bad).ok();
        }
    }
    r.maps.sort_by_key(|(t, _, _)| *t);
    r.reduces.sort_by_key(|(p, _)| *p);
    r
}

/// Every job the registers hold a spec of.
pub fn jobs(registers: &Registers) -> Vec<JobId> {
    registers
        .scan(PREFIX)
        .filter_map(|(key, _)| {
            let rest = &key[PREFIX.len()..];
            (!rest.contains('/')).then(|| rest.parse().ok()).flatten()
        })
        .collect()
}
