//! Map/reduce jobs across the cluster.
//!
//! [`plan`] splits the input on record boundaries into content-addressed chunks (stored as
//! blobs on the ring before the job starts). The node that takes a job becomes its
//! coordinator: it holds the job's lock (`weft.job:{id}`) and records the job in the metadata
//! group ([`ledger`]); [`coordinator`] drives the pure state machine ([`state`]), sending map
//! attempts to nodes that hold their chunks and reducers to their partitions' owners
//! ([`worker`], over the job service's messages in [`wire`]). Reducers pull map output from
//! the nodes that hold it and store their output as blobs; the coordinator commits each
//! partition's output once, fenced by its token. Should the coordinator die, another node
//! takes the lock with a larger token and continues from what was recorded.

mod config;
pub mod coordinator;
pub mod guest;
pub mod ledger;
pub mod plan;
pub mod pool;
pub mod records;
pub mod spill;
pub mod state;
mod summary;
pub mod wire;
pub mod worker;

pub use config::JobsConfig;
#[cfg(feature = "test-switches")]
pub use config::JobsSwitches;
pub use summary::{Top, record_order};

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::FutureExt;
use futures::StreamExt;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::blobs::{BlobError, Blobs};
use crate::consensus::{Command, Consensus, ConsensusError, Outcome};
use crate::id::{Digest, FunctionName, JobId, NodeId};
use crate::locks::{LockError, Locks};
use crate::membership::MemberSet;
use crate::metrics::Metrics;
use crate::placement::Placement;
use crate::rpc::Router;
use crate::runtime::Runtime;
use crate::store::{Store, StoreError};
use crate::tasks::Tasks;
use plan::InputChunk;
use state::Progress;
use wire::{JobsWire, Request, Response};

/// About how many bytes of group records one `combine` or `reduce` call carries.
const GROUP_BATCH_BYTES: usize = 256 << 10;

/// Why a cancelled job ended.
const CANCELLED: &str = "cancelled by a client";

/// How many output records a job's summary shows.
const TOP: usize = 10;

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Tasks are running.
    Running,
    /// Every reducer committed its output.
    Succeeded,
    /// A task failed for good, or the node restarted while the job ran.
    Failed,
    /// Cancelled by a client (`POST /v1/jobs/{id}/cancel`): running tasks were stopped;
    /// reducers that had committed keep their output.
    Cancelled,
}

/// One output record, decoded for humans: JSON where the bytes are JSON, else text.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The key.
    pub key: serde_json::Value,
    /// The value.
    pub value: serde_json::Value,
}

/// What `GET /v1/jobs/{id}` returns.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobRecord {
    /// The job.
    pub id: JobId,
    /// The map/reduce function.
    pub function: FunctionName,
    /// The module that ran.
    pub digest: Digest,
    /// Where the job is.
    pub status: JobStatus,
    /// Why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Task counts.
    pub progress: Progress,
    /// Input size in bytes.
    pub input_bytes: u64,
    /// Input bytes of the map tasks finished so far.
    #[serde(default)]
    pub mapped_bytes: u64,
    /// Bytes of map output (keys and values) handed to the shuffle so far.
    #[serde(default)]
    pub shuffled_bytes: u64,
    /// Bytes of map output written to disk because the node held its budget already.
    #[serde(default)]
    pub spilled_bytes: u64,
    /// Milliseconds from the start until the last map task finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub map_ms: Option<u64>,
    /// Bytes of map output reducers pulled from other nodes so far.
    #[serde(default)]
    pub fetched_bytes: u64,
    /// Attempts started on each node (by this coordinator).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tasks_by_node: std::collections::BTreeMap<NodeId, u32>,
    /// The node coordinating the job (the holder of its lock), or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<NodeId>,
    /// Reducer partitions.
    pub reducers: u32,
    /// Output records committed.
    pub output_records: u64,
    /// The records with the largest numeric values (or the first records by key when values
    /// are not numbers).
    pub top: Vec<OutputRecord>,
    /// Wall-clock time so far, or in all, in milliseconds.
    pub elapsed_ms: u64,
}

/// How long a coordinator's hold on its job's lock lasts unless renewed (it renews every
/// third of it): a dead coordinator's job is taken over within about this, plus the lock
/// service's delay after a leader change.
pub const JOB_LEASE: Duration = Duration::from_secs(5);

/// How often every node looks for jobs whose coordinator is gone.
const TAKEOVER_CHECK: Duration = Duration::from_millis(500);

/// How often every node drops map output of jobs that have ended.
const SWEEP: Duration = Duration::from_secs(5);

/// Why a job's service call failed.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The metadata group failed.
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
    /// The lock service failed.
    #[error(transparent)]
    Lock(#[from] LockError),
    /// Reading stored output failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The job's lock was taken by another coordinator.
    #[error("job {0} is coordinated by another node now")]
    Superseded(JobId),
}

/// Everything needed to start a job.
pub struct JobSpec {
    /// The function.
    pub function: FunctionName,
    /// Its module.
    pub digest: Digest,
    /// Time limit of one guest call.
    pub timeout: Duration,
    /// Memory cap of one instance, in bytes.
    pub memory_bytes: u64,
    /// Reducer partitions (at least 1).
    pub reducers: u32,
    /// The input, cut on record boundaries, each chunk stored as a blob.
    pub chunks: Vec<InputChunk>,
}

/// What the job service is wired to.
pub struct JobsWiring {
    /// The engine.
    pub runtime: Arc<Runtime>,
    /// Records of jobs from before jobs were recorded in the metadata group.
    pub store: Store,
    /// Input, modules and output.
    pub blobs: Blobs,
    /// Where keys and nodes are.
    pub placement: Placement,
    /// The metadata group.
    pub consensus: Consensus,
    /// The lock service (a job's coordinator holds the job's lock).
    pub locks: Locks,
    /// The member set (free capacity, who is down).
    pub members: tokio::sync::watch::Receiver<MemberSet>,
    /// The node's metrics.
    pub metrics: Arc<Metrics>,
    /// Background tasks.
    pub tasks: Tasks,
    /// Where map output spills.
    pub spill: spill::SpillDir,
    /// The threads guests run on.
    pub pool: pool::TaskPool,
}

/// The node's side of every job: the jobs it coordinates, and its worker.
pub struct Jobs {
    store: Store,
    blobs: Blobs,
    consensus: Consensus,
    locks: Locks,
    members: tokio::sync::watch::Receiver<MemberSet>,
    metrics: Arc<Metrics>,
    worker: worker::Worker,
    /// Live records of the jobs this node coordinates.
    live: Mutex<HashMap<JobId, JobRecord>>,
    /// The cancellation of each job this node coordinates.
    cancels: Mutex<HashMap<JobId, CancellationToken>>,
    /// How many jobs this node coordinated have ended: changes whenever one ends.
    ended: tokio::sync::watch::Sender<u64>,
    /// How many tasks of one job a node runs at once.
    tasks_per_node: usize,
    schedule: state::Schedule,
    tasks: Tasks,
    #[cfg(feature = "test-switches")]
    switches: JobsSwitches,
    /// Whether `switches.stop_before_first_commit` has stopped the process already.
    #[cfg(feature = "test-switches")]
    stopped_once: std::sync::atomic::AtomicBool,
}

impl Jobs {
    /// The job service; jobs of an earlier version that were running when the node stopped
    /// are marked failed. Every node looks for jobs whose coordinator is gone, and takes
    /// them over.
    pub async fn new(w: JobsWiring, config: JobsConfig) -> Result<Arc<Self>, StoreError> {
        for mut job in w.store.jobs::<JobRecord>()? {
            if job.status == JobStatus::Running {
                job.status = JobStatus::Failed;
                job.error =
                    Some("the node restarted while the job was running; submit it again".into());
                w.store.put_job(job.id, &job).await?;
            }
        }
        let tasks_per_node = config.tasks_per_node.map_or_else(
            || {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(2)
            },
            |n| n.get(),
        );
        #[cfg(feature = "test-switches")]
        let switches = config.unsafe_switches;
        let worker = worker::Worker::new(
            w.runtime,
            w.blobs.clone(),
            w.placement,
            w.metrics.clone(),
            w.spill,
            w.pool,
            config,
        );
        let jobs = Arc::new(Jobs {
            store: w.store,
            blobs: w.blobs,
            consensus: w.consensus,
            locks: w.locks,
            members: w.members,
            metrics: w.metrics,
            worker,
            live: Mutex::default(),
            cancels: Mutex::default(),
            ended: tokio::sync::watch::Sender::new(0),
            tasks_per_node,
            schedule: state::Schedule::default(),
            tasks: w.tasks,
            #[cfg(feature = "test-switches")]
            switches,
            #[cfg(feature = "test-switches")]
            stopped_once: std::sync::atomic::AtomicBool::new(false),
        });
        let watcher = jobs.clone();
        jobs.tasks
            .spawn(async move { watcher.take_over_orphans().await });
        let sweeper = jobs.clone();
        jobs.tasks.spawn(async move { sweeper.sweep().await });
        Ok(jobs)
    }

    /// Answers other nodes' job requests.
    pub fn serve(self: &Arc<Self>, router: &Router) {
        let this = self.clone();
        router.register_streaming::<JobsWire, _>(move |_, request| {
            let jobs = this.clone();
            async move {
                match request {
                    Request::Fetch {
                        job,
                        task,
                        attempt,
                        partition,
                    } => jobs.worker.fetch(job, task, attempt, partition).await,
                    Request::Status { job } => {
                        let record = jobs.live.lock().expect("not poisoned").get(&job).cloned();
                        let json = record.map(|r| serde_json::to_vec(&r).expect("serializes"));
                        Ok((Response::Status(json), futures::stream::empty().boxed()))
                    }
                    other => {
                        // Attempts run in tasks of their own, so a caller that goes away
                        // does not cut one short halfway through a commit.
                        let worker = jobs.worker.clone();
                        let answer = jobs
                            .tasks
                            .spawn_joined(async move { worker.handle(other).await })
                            .await
                            .map_err(|e| format!("the attempt's task failed: {e}"))?;
                        Ok((answer, futures::stream::empty().boxed()))
                    }
                }
            }
            .boxed()
        });
    }

    /// Takes a job: this node becomes its coordinator (holding its lock), records it in the
    /// metadata group, starts it in the background and returns its first record.
    pub async fn submit(self: &Arc<Self>, spec: JobSpec) -> Result<JobRecord, JobError> {
        let id = JobId::random();
        let recorded = ledger::Spec {
            function: spec.function,
            digest: spec.digest,
            timeout_ms: spec.timeout.as_millis() as u64,
            memory_bytes: spec.memory_bytes,
            reducers: spec.reducers.max(1),
            chunks: spec.chunks,
            submitted_ms: unix_ms(),
        };
        let (_, grant) = self.take_lock(id).await?;
        let written = self
            .fenced(
                id,
                grant.token,
                vec![crate::consensus::Write {
                    key: ledger::spec_key(id),
                    value: Some(ledger::encode(&recorded)),
                    expect: Some(0),
                }],
            )
            .await?;
        if !written {
            return Err(JobError::Superseded(id));
        }
        Ok(self.start(id, recorded, grant.token, ledger::Recorded::default()))
    }

    /// Takes job `id`'s lock for this node, without waiting: its holder coordinates the job
    /// (or deletes it).
    async fn take_lock(
        &self,
        id: JobId,
    ) -> Result<(crate::id::LockKey, crate::locks::Grant), JobError> {
        let key = ledger::lock_key(id);
        let grant = self
            .locks
            .acquire(
                &key,
                Some(self.worker.me().to_string()),
                JOB_LEASE,
                Duration::ZERO,
            )
            .await?;
        Ok((key, grant))
    }

    /// Starts coordinating job `id` under `token`, from what was recorded of it.
    fn start(
        self: &Arc<Self>,
        id: JobId,
        spec: ledger::Spec,
        token: u64,
        recorded: ledger::Recorded,
    ) -> JobRecord {
        let record = coordinator::first_record(id, &spec, &recorded, self.worker.me());
        self.live
            .lock()
            .expect("not poisoned")
            .insert(id, record.clone());
        let cancel = self.tasks.token().child_token();
        self.cancels
            .lock()
            .expect("not poisoned")
            .insert(id, cancel.clone());
        let jobs = self.clone();
        self.tasks.spawn(async move {
            coordinator::run(&jobs, id, spec, token, recorded, cancel).await;
            jobs.live.lock().expect("not poisoned").remove(&id);
            jobs.cancels.lock().expect("not poisoned").remove(&id);
            jobs.ended.send_modify(|n| *n += 1);
        });
        record
    }

    /// Writes `writes` together, fenced by the job's lock under `token`: `Ok(false)` when
    /// the lock is no longer held under it (nothing was written).
    async fn fenced(
        &self,
        id: JobId,
        token: u64,
        writes: Vec<crate::consensus::Write>,
    ) -> Result<bool, ConsensusError> {
        self.fenced_as(self.consensus.proposal_id(), id, token, writes)
            .await
    }

    /// [`Jobs::fenced`] as proposal `proposal`: tries of one commit under one id apply once.
    async fn fenced_as(
        &self,
        proposal: crate::consensus::ProposalId,
        id: JobId,
        token: u64,
        writes: Vec<crate::consensus::Write>,
    ) -> Result<bool, ConsensusError> {
        #[cfg(feature = "test-switches")]
        if self.switches.no_fencing {
            let _ = proposal;
            return self.unfenced(writes).await;
        }
        let command = Command::Fenced {
            lock: ledger::lock_key(id).to_string(),
            token,
            writes,
        };
        match self.consensus.propose_as(proposal, command).await? {
            (_, Outcome::Written { .. }) => Ok(true),
            (_, Outcome::Fenced { .. }) => Ok(false),
            (_, Outcome::Conflict { current }) => Err(ConsensusError::Failed(format!(
                "a job register was at revision {current}, not the one expected"
            ))),
            (_, other) => Err(ConsensusError::Failed(format!(
                "a fenced write did {other:?}"
            ))),
        }
    }

    /// Test only: `writes` one by one, whoever holds the job's lock.
    #[cfg(feature = "test-switches")]
    async fn unfenced(&self, writes: Vec<crate::consensus::Write>) -> Result<bool, ConsensusError> {
        for w in writes {
            let command = Command::Write {
                key: w.key,
                value: w.value,
                expect: w.expect,
            };
            match self.consensus.propose(command).await? {
                (_, Outcome::Written { .. }) => {}
                (_, Outcome::Conflict { current }) => {
                    return Err(ConsensusError::Failed(format!(
                        "a job register was at revision {current}, not the one expected"
                    )));
                }
                (_, other) => {
                    return Err(ConsensusError::Failed(format!("a write did {other:?}")));
                }
            }
        }
        Ok(true)
    }

    /// Test only: stops this process here, once, if the test asked for it, and returns only
    /// once it has been continued (SIGCONT). A signal sent to the process may be taken by
    /// another of its threads, and this one could run on, and commit, before the stop lands:
    /// waiting for the continue signal rules that out.
    async fn pause_before_commit(&self) {
        #[cfg(feature = "test-switches")]
        if self.switches.stop_before_first_commit
            && !self
                .stopped_once
                .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            use tokio::signal::unix::{SignalKind, signal};
            let cont = rustix::process::Signal::CONT.as_raw();
            let mut continued = signal(SignalKind::from_raw(cont)).ok();
            tracing::warn!("test switch: this process stops itself before a job commit");
            let _ = rustix::process::kill_process(
                rustix::process::getpid(),
                rustix::process::Signal::STOP,
            );
            if let Some(continued) = continued.as_mut() {
                continued.recv().await;
            }
        }
    }

    /// Every node: takes the lock of any running job that no node holds (its coordinator
    /// died or was cut off), and continues the job from what was recorded.
    async fn take_over_orphans(self: Arc<Self>) {
        let mut tick = tokio::time::interval(TAKEOVER_CHECK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.consensus.in_no_group() {
                continue;
            }
            let orphans: Vec<JobId> = self.consensus.read_local(|s| {
                ledger::jobs(&s.registers)
                    .into_iter()
                    .filter(|id| {
                        s.registers.get(&ledger::end_key(*id)).is_none()
                            && s.locks.get(ledger::lock_key(*id).as_str()).is_none()
                    })
                    .collect()
            });
            for id in orphans {
                if self.cancels.lock().expect("not poisoned").contains_key(&id) {
                    continue;
                }
                if let Err(e) = self.take_over(id).await {
                    tracing::debug!(job = %id, error = %e, "could not take over a job");
                }
            }
        }
    }

    /// Drops the map output this node holds of jobs that have ended: a job's coordinator
    /// tells every node when it ends, but a node that was down or cut off then, or a message
    /// lost, would otherwise hold it until the process stops.
    async fn sweep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(SWEEP);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for job in self.worker.held_jobs().await {
                let ended = self
                    .consensus
                    .read_local(|s| s.registers.get(&ledger::end_key(job)).is_some());
                if ended {
                    tracing::debug!(job = %job, "dropping map output of an ended job");
                    self.worker.forget(job).await;
                }
            }
        }
    }

    async fn take_over(self: &Arc<Self>, id: JobId) -> Result<(), JobError> {
        let (key, grant) = self.take_lock(id).await?;
        let recorded = self
            .consensus
            .read(|s| ledger::read(&s.registers, id))
            .await?;
        match (&recorded.spec, &recorded.end) {
            (Some(spec), None) => {
                tracing::info!(job = %id, token = grant.token, maps = recorded.maps.len(), reduces = recorded.reduces.len(), "taking over a job whose coordinator is gone");
                let spec = spec.clone();
                self.start(id, spec, grant.token, recorded);
            }
            _ => {
                self.locks.release(&key, grant.token).await?;
            }
        }
        Ok(())
    }

    /// Cancels a running job: `Ok(Some(true))` if it was running (its coordinator stops its
    /// tasks and it ends `cancelled`), `Ok(Some(false))` if it had already ended, `None` if
    /// there is no such job.
    pub async fn cancel(&self, id: JobId) -> Result<Option<bool>, JobError> {
        // A job this node coordinated may show as ended (its live record) a moment before its
        // coordinator lets go of its cancel handle: it has ended, as a read says.
        let ended_here = self
            .live
            .lock()
            .expect("not poisoned")
            .get(&id)
            .is_some_and(|r| r.status != JobStatus::Running);
        if ended_here {
            return Ok(Some(false));
        }
        let local = self.cancels.lock().expect("not poisoned").get(&id).cloned();
        if let Some(cancel) = local {
            // Recorded too, so a coordinator that takes over does not run it on.
            self.consensus
                .propose(Command::Write {
                    key: ledger::cancel_key(id),
                    value: Some(vec![]),
                    expect: None,
                })
                .await?;
            cancel.cancel();
            return Ok(Some(true));
        }
        let recorded = self
            .consensus
            .read(|s| ledger::read(&s.registers, id))
            .await?;
        if recorded.spec.is_none() {
            return Ok(self.store.job::<JobRecord>(id)?.map(|_| false));
        }
        if recorded.end.is_some() {
            return Ok(Some(false));
        }
        self.consensus
            .propose(Command::Write {
                key: ledger::cancel_key(id),
                value: Some(vec![]),
                expect: None,
            })
            .await?;
        Ok(Some(true))
    }

    /// Forgets an ended job: its records in the metadata group (spec, commits, end) are
    /// removed in one fenced batch under the job's lock, taken for it. `Ok(Some(false))` if it
    /// is still running, `None` if there is no such job. Its output blobs stay on disk (blobs
    /// are not collected yet).
    pub async fn delete(&self, id: JobId) -> Result<Option<bool>, JobError> {
        let recorded = self
            .consensus
            .read(|s| ledger::read(&s.registers, id))
            .await?;
        if recorded.spec.is_none() {
            return Ok(None);
        }
        if recorded.end.is_none() {
            return Ok(Some(false));
        }
        let (key, grant) = self.take_lock(id).await?;
        let keys: Vec<String> = self.consensus.read_local(|s| {
            s.registers
                .scan(&ledger::spec_key(id))
                .map(|(k, _)| k.clone())
                .collect()
        });
        let writes = keys
            .into_iter()
            .map(|key| crate::consensus::Write {
                key,
                value: None,
                expect: None,
            })
            .collect();
        let deleted = self.fenced(id, grant.token, writes).await;
        let _ = self.locks.release(&key, grant.token).await;
        if !deleted? {
            return Err(JobError::Superseded(id));
        }
        Ok(Some(true))
    }

    /// A job's record: live from its coordinator while it runs, else as recorded.
    pub async fn get(&self, id: JobId) -> Result<Option<JobRecord>, JobError> {
        if let Some(r) = self.live.lock().expect("not poisoned").get(&id) {
            return Ok(Some(r.clone()));
        }
        let (recorded, holder) = self
            .consensus
            .read(|s| {
                let holder = s
                    .locks
                    .get(ledger::lock_key(id).as_str())
                    .and_then(|l| l.holder.parse::<NodeId>().ok());
                (ledger::read(&s.registers, id), holder)
            })
            .await?;
        let Some(spec) = &recorded.spec else {
            return Ok(self.store.job(id)?);
        };
        if let Some(end) = recorded.end {
            return Ok(Some(end));
        }
        if let Some(holder) = holder.clone().filter(|h| h != self.worker.me())
            && let Some(addr) = self.worker.placement().view().addr(&holder)
        {
            let asked = crate::rpc::call::<JobsWire>(
                self.worker.placement().transport(),
                addr,
                &Request::Status { job: id },
            )
            .await;
            if let Ok(Response::Status(Some(json))) = asked
                && let Ok(record) = serde_json::from_slice(&json)
            {
                return Ok(Some(record));
            }
        }
        Ok(Some(coordinator::first_record(
            id,
            spec,
            &recorded,
            holder.as_ref().unwrap_or(self.worker.me()),
        )))
    }

    /// A job's record once it has ended, or as it is after `wait` if it is still running.
    pub async fn ended_within(
        &self,
        id: JobId,
        wait: Duration,
    ) -> Result<Option<JobRecord>, JobError> {
        // Subscribed before the first look, so an end in between is not missed.
        let mut ended = self.ended.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let record = self.get(id).await?;
            if record
                .as_ref()
                .is_none_or(|r| r.status != JobStatus::Running)
                || tokio::time::Instant::now() >= deadline
            {
                return Ok(record);
            }
            // A job coordinated elsewhere ends in the metadata group: look again shortly.
            let again = tokio::time::Instant::now() + Duration::from_millis(100);
            tokio::select! {
                _ = ended.changed() => {}
                () = tokio::time::sleep_until(again.min(deadline)) => {}
            }
        }
    }

    /// Every job.
    pub async fn list(&self) -> Result<Vec<JobRecord>, JobError> {
        let mut all: HashMap<JobId, JobRecord> = self
            .store
            .jobs::<JobRecord>()?
            .into_iter()
            .map(|j| (j.id, j))
            .collect();
        let ids = self.consensus.read(|s| ledger::jobs(&s.registers)).await?;
        for id in ids {
            if let Some(r) = self.get(id).await? {
                all.insert(id, r);
            }
        }
        let mut all: Vec<_> = all.into_values().collect();
        all.sort_by_key(|j| j.id);
        Ok(all)
    }

    /// A job's full output, as JSON lines in pieces; `None` if there is no such job.
    pub async fn output(
        &self,
        id: JobId,
    ) -> Result<Option<BoxStream<'static, Result<Bytes, JobError>>>, JobError> {
        let recorded = self
            .consensus
            .read(|s| ledger::read(&s.registers, id))
            .await?;
        if recorded.spec.is_none() {
            if self.store.job::<JobRecord>(id)?.is_none() {
                return Ok(None);
            }
            let lines = self.store.output_of(id).map(|r| {
                r.map(|mut line| {
                    line.push(b'\n');
                    Bytes::from(line)
                })
                .map_err(JobError::from)
            });
            return Ok(Some(futures::stream::iter(lines).boxed()));
        }
        let segments: Vec<Digest> = recorded
            .reduces
            .into_iter()
            .flat_map(|(_, c)| c.segments)
            .collect();
        let blobs = self.blobs.clone();
        Ok(Some(
            futures::stream::iter(segments)
                .then(move |d| {
                    let blobs = blobs.clone();
                    async move { Ok(Bytes::from(blobs.get(d).await?)) }
                })
                .boxed(),
        ))
    }

    /// Appends the job service's metrics.
    pub fn render_metrics(&self, out: &mut String) {
        self.worker.render_metrics(out);
    }

    /// Nodes a job's tasks may run on now, with how many tasks each may run: the members
    /// that are not down, none on a node that announced no free instance.
    fn nodes(&self) -> Vec<(NodeId, usize)> {
        let members = self.members.borrow();
        members
            .members
            .iter()
            .filter(|m| m.state != crate::membership::MemberState::Down)
            .map(|m| {
                let slots = if m.free == Some(0) && !m.is_self {
                    0
                } else {
                    self.tasks_per_node
                };
                (m.node.clone(), slots)
            })
            .collect()
    }
}

/// Milliseconds since the Unix epoch.
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Nodes that may be told to forget a job: every member not down.
fn forget_all(jobs: &Arc<Jobs>, id: JobId) {
    let nodes: HashSet<NodeId> = jobs.nodes().into_iter().map(|(n, _)| n).collect();
    for node in nodes {
        let jobs = jobs.clone();
        jobs.clone().tasks.spawn(async move {
            let _ = coordinator::order(&jobs, &node, Request::Forget { job: id }).await;
        });
    }
}
