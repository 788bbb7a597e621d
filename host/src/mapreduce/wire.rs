//! The job service's messages between nodes: a coordinator orders map and reduce attempts,
//! reducers fetch map output from the nodes that hold it, and the coordinator tells every
//! node to forget a job's map output when the job ends.

use serde::{Deserialize, Serialize};

use super::plan::InputChunk;
use crate::id::{Digest, FunctionName, JobId, NodeId};
use crate::rpc::Wire;

/// The job service on the router.
pub struct JobsWire;

impl Wire for JobsWire {
    const NAME: &'static str = "jobs";
    const TAG: u8 = 8;
    const VERSION: u8 = 1;
    type Request = Request;
    type Response = Response;
}

/// One attempt of one task, unique across coordinators: the coordinator's fencing token and
/// its attempt number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptId {
    /// The token under which the coordinator holds the job's lock.
    pub token: u64,
    /// The coordinator's attempt number for the task.
    pub n: u32,
}

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.token, self.n)
    }
}

/// What every attempt of a job runs.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Program {
    /// The function, for logs and errors.
    pub function: FunctionName,
    /// Its module.
    pub digest: Digest,
    /// Time limit of one guest call, in milliseconds.
    pub timeout_ms: u64,
    /// Memory cap of one instance, in bytes.
    pub memory_bytes: u64,
}

/// Where one map task's output is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    /// The map task.
    pub task: usize,
    /// The attempt whose output is used.
    pub attempt: AttemptId,
    /// The node holding it.
    pub node: NodeId,
}

/// A request to another node's job service.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    /// Run a map attempt and hold its output until the job ends; answered by
    /// [`Response::Mapped`] or [`Response::Failed`].
    Map {
        /// The job.
        job: JobId,
        /// The map task (the chunk's index).
        task: usize,
        /// The attempt.
        attempt: AttemptId,
        /// What to run.
        program: Program,
        /// The input chunk.
        chunk: InputChunk,
        /// How many partitions to cut the output into.
        reducers: u32,
    },
    /// Run a reduce attempt over the output of every map task, and store its output as
    /// blobs; answered by [`Response::Reduced`] or [`Response::Failed`].
    Reduce {
        /// The job.
        job: JobId,
        /// The partition.
        partition: u32,
        /// The attempt.
        attempt: AttemptId,
        /// What to run.
        program: Program,
        /// Where each map task's output is, in task order.
        sources: Vec<Source>,
    },
    /// Stream one partition of a map attempt's output: the head is [`Response::Run`], then the
    /// run's pair records follow in pieces.
    Fetch {
        /// The job.
        job: JobId,
        /// The map task.
        task: usize,
        /// The attempt.
        attempt: AttemptId,
        /// The partition.
        partition: u32,
    },
    /// The job ended: drop its map output.
    Forget {
        /// The job.
        job: JobId,
    },
    /// A running job's record, as its coordinator sees it ([`Response::Status`]).
    Status {
        /// The job.
        job: JobId,
    },
}

/// What a map attempt produced.
#[derive(Debug, Serialize, Deserialize)]
pub struct Mapped {
    /// Bytes of keys and values handed to the shuffle.
    pub shuffled: u64,
    /// Bytes of pair records written to disk, beyond the node's memory budget.
    pub spilled: u64,
}

/// What a reduce attempt produced.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reduced {
    /// Its output: blobs of JSON lines, in order.
    pub segments: Vec<Digest>,
    /// How many output records.
    pub records: u64,
    /// Bytes of map output pulled from other nodes.
    pub fetched: u64,
    /// Its best records for the job's summary, as JSON (`[OutputRecord]`).
    pub top: Vec<u8>,
}

/// The answer.
#[derive(Debug, Serialize, Deserialize)]
pub enum Response {
    /// A map attempt's output is held.
    Mapped(Mapped),
    /// A reduce attempt's output is stored.
    Reduced(Reduced),
    /// The attempt failed.
    Failed {
        /// Why.
        error: String,
        /// Whether the guest failed (a trap, a limit, malformed output), not the node.
        guest: bool,
        /// The map tasks whose output a reducer could not read.
        lost: Vec<usize>,
    },
    /// The size of the run whose pieces follow, or `None` when this node does not hold that
    /// attempt's output (and nothing follows).
    Run(Option<u64>),
    /// Done.
    Done,
    /// The job's record as JSON, if this node coordinates it.
    Status(Option<Vec<u8>>),
}
