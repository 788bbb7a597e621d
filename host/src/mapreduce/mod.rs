//! Map/reduce jobs on one node, across its cores.
//!
//! [`plan`] splits the input on record boundaries into content-addressed chunks (stored as blobs
//! on the ring before the job starts), [`state`] is the pure job state machine, and this
//! module's driver owns one job: it carries out the state machine's actions with Wasm task
//! instances (a map task reads its chunk's blob, from this node's disk or fetched), shuffles map output into reducer partitions
//! (after the combiner), and commits each reducer's output to the store in one batch keyed by
//! (job, partition, sequence), so a retried reducer overwrites rather than duplicates.

pub mod plan;
pub mod records;
pub mod spill;
pub mod state;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::blobs::Blobs;
use crate::id::{Digest, FunctionName, JobId};
use crate::metrics::Metrics;
use crate::runtime::{InvocationLimits, Runtime, RuntimeError, TaskOutput, TaskPre};
use crate::store::Store;
use crate::tasks::Tasks;
use plan::InputChunk;
use records::{Merge, Run};
use state::{Action, Event, JobState, Progress};

/// About how many bytes of group records one `combine` or `reduce` call carries.
const GROUP_BATCH_BYTES: usize = 256 << 10;

/// Map/reduce jobs on a node.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// How many bytes of map output (sorted runs waiting for their reducers) the node's jobs
    /// hold in memory, all together. Default 256 MiB. Beyond it a map task's runs are
    /// written to disk (`<data_dir>/spill`) and its reducers read them through a
    /// [`spill::READ_BUFFER`] each: smaller saves memory, larger saves disk writes and reads.
    pub shuffle_memory_bytes: u64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            shuffle_memory_bytes: 256 << 20,
        }
    }
}

/// A map task's sorted run for one partition, where it waits for its reducer.
enum Held {
    Memory(Run),
    Spilled(spill::SpilledRun),
}

impl Held {
    fn is_empty(&self) -> bool {
        match self {
            Held::Memory(run) => run.bytes().is_empty(),
            Held::Spilled(run) => run.is_empty(),
        }
    }

    fn cursor(&self) -> Result<records::Cursor<'_>, String> {
        match self {
            Held::Memory(run) => Ok(records::Cursor::new(run.bytes())),
            Held::Spilled(run) => run.open(),
        }
    }
}

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

/// The node's jobs: live ones in memory, every one in the store.
pub struct Jobs {
    runtime: Arc<Runtime>,
    store: Store,
    blobs: Blobs,
    metrics: Arc<Metrics>,
    live: Mutex<HashMap<JobId, JobRecord>>,
    /// The cancellation of each live job.
    cancels: Mutex<HashMap<JobId, CancellationToken>>,
    /// How many jobs have ended since the start: changes whenever one ends.
    ended: tokio::sync::watch::Sender<u64>,
    parallelism: usize,
    tasks: Tasks,
    spill: spill::SpillDir,
    config: JobsConfig,
    /// Bytes of map output the node's jobs hold in memory.
    held: std::sync::atomic::AtomicU64,
}

/// Everything needed to start a job.
pub struct JobSpec {
    /// The function.
    pub function: FunctionName,
    /// Its module.
    pub digest: Digest,
    /// Its prepared component.
    pub pre: TaskPre,
    /// Per-call limits.
    pub limits: InvocationLimits,
    /// Reducer partitions (at least 1).
    pub reducers: u32,
    /// The input, cut on record boundaries, each chunk stored as a blob.
    pub chunks: Vec<InputChunk>,
}

impl Jobs {
    /// The job service; jobs that were running when the node stopped are marked failed.
    pub async fn new(
        runtime: Arc<Runtime>,
        store: Store,
        blobs: Blobs,
        metrics: Arc<Metrics>,
        tasks: Tasks,
        spill: spill::SpillDir,
        config: JobsConfig,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        for mut job in store.jobs::<JobRecord>()? {
            if job.status == JobStatus::Running {
                job.status = JobStatus::Failed;
                job.error =
                    Some("the node restarted while the job was running; submit it again".into());
                store.put_job(job.id, &job).await?;
            }
        }
        let parallelism = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2);
        Ok(Arc::new(Jobs {
            runtime,
            store,
            blobs,
            metrics,
            live: Mutex::default(),
            cancels: Mutex::default(),
            ended: tokio::sync::watch::Sender::new(0),
            parallelism,
            tasks,
            spill,
            config,
            held: Default::default(),
        }))
    }

    /// Starts a job in the background and returns its first record.
    pub async fn submit(
        self: &Arc<Self>,
        spec: JobSpec,
    ) -> Result<JobRecord, crate::store::StoreError> {
        let id = JobId::random();
        let record = JobRecord {
            id,
            function: spec.function.clone(),
            digest: spec.digest,
            status: JobStatus::Running,
            error: None,
            progress: Progress {
                maps_total: spec.chunks.len(),
                reduces_total: spec.reducers as usize,
                ..Progress::default()
            },
            input_bytes: spec.chunks.iter().map(|c| c.size).sum(),
            mapped_bytes: 0,
            shuffled_bytes: 0,
            spilled_bytes: 0,
            map_ms: None,
            reducers: spec.reducers,
            output_records: 0,
            top: vec![],
            elapsed_ms: 0,
        };
        self.store.put_job(id, &record).await?;
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
        // A job still running when the node stops is failed at the next start.
        self.tasks
            .spawn(async move { jobs.drive(id, spec, cancel).await });
        Ok(record)
    }

    /// Cancels a running job: its tasks are stopped, and it ends `cancelled`. `Ok(false)`: it
    /// had already ended; `None`: no such job.
    pub fn cancel(&self, id: JobId) -> Result<Option<bool>, crate::store::StoreError> {
        if let Some(cancel) = self.cancels.lock().expect("not poisoned").get(&id) {
            cancel.cancel();
            return Ok(Some(true));
        }
        Ok(self.get(id)?.map(|_| false))
    }

    /// A job's record.
    pub fn get(&self, id: JobId) -> Result<Option<JobRecord>, crate::store::StoreError> {
        if let Some(r) = self.live.lock().expect("not poisoned").get(&id) {
            return Ok(Some(r.clone()));
        }
        self.store.job(id)
    }

    /// A job's record once it has ended, or as it is after `wait` if it is still running.
    pub async fn ended_within(
        &self,
        id: JobId,
        wait: std::time::Duration,
    ) -> Result<Option<JobRecord>, crate::store::StoreError> {
        // Subscribed before the first look, so an end in between is not missed.
        let mut ended = self.ended.subscribe();
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let record = self.get(id)?;
            if record
                .as_ref()
                .is_none_or(|r| r.status != JobStatus::Running)
            {
                return Ok(record);
            }
            if tokio::time::timeout_at(deadline, ended.changed())
                .await
                .is_err()
            {
                return self.get(id);
            }
        }
    }

    /// Every job.
    pub fn list(&self) -> Result<Vec<JobRecord>, crate::store::StoreError> {
        let mut all: HashMap<JobId, JobRecord> = self
            .store
            .jobs::<JobRecord>()?
            .into_iter()
            .map(|j| (j.id, j))
            .collect();
        for (id, r) in self.live.lock().expect("not poisoned").iter() {
            all.insert(*id, r.clone());
        }
        let mut all: Vec<_> = all.into_values().collect();
        all.sort_by_key(|j| j.id);
        Ok(all)
    }

    /// A job's full output, as JSON lines.
    pub fn output(
        &self,
        id: JobId,
    ) -> impl Iterator<Item = Result<Vec<u8>, crate::store::StoreError>> + use<> {
        self.store.output_of(id)
    }

    fn update(&self, id: JobId, f: impl FnOnce(&mut JobRecord)) {
        if let Some(r) = self.live.lock().expect("not poisoned").get_mut(&id) {
            f(r);
        }
    }

    async fn drive(self: Arc<Self>, id: JobId, spec: JobSpec, cancel: CancellationToken) {
        let started = Instant::now();
        let chunks: Arc<Vec<InputChunk>> = Arc::new(spec.chunks);
        let reducers = spec.reducers.max(1);
        let mut state = JobState::new(chunks.len(), reducers, self.parallelism);
        // Each partition's sorted runs, with the map task that made them.
        let mut shuffle: Vec<Vec<(usize, Held)>> = (0..reducers).map(|_| Vec::new()).collect();
        let mut frozen: Option<Vec<Arc<Vec<Held>>>> = None;
        // Bytes of this job's runs held in memory (counted in `self.held` too).
        let mut held = 0u64;
        let mut spilled = 0u64;
        let mut top = Top::new(TOP);
        let mut tasks: JoinSet<(Event, Option<Done>)> = JoinSet::new();
        let (mut mapped, mut shuffled, mut map_ms) = (0u64, 0u64, None);
        let spill_dir = self.spill.job(id);
        let mut actions = state.start();
        let outcome = loop {
            let mut end = None;
            for action in actions.drain(..) {
                match action {
                    Action::StartMap { task, attempt } => {
                        let (rt, name, pre, limits, chunk, blobs) = (
                            self.runtime.clone(),
                            spec.function.clone(),
                            spec.pre.clone(),
                            spec.limits,
                            chunks[task],
                            self.blobs.clone(),
                        );
                        tasks.spawn(async move {
                            let mapped = match blobs.get(chunk.digest).await {
                                Ok(bytes) if bytes.len() as u64 != chunk.size => {
                                    Err(RuntimeError::Host(format!(
                                        "input chunk {} is {} bytes, not the {} the job's list of chunks says",
                                        chunk.digest,
                                        bytes.len(),
                                        chunk.size
                                    )))
                                }
                                Ok(bytes) => {
                                    map_task(&rt, &name, &pre, limits, &bytes, reducers).await
                                }
                                Err(e) => Err(RuntimeError::Host(format!(
                                    "reading input chunk {}: {e}",
                                    chunk.digest
                                ))),
                            };
                            match mapped {
                                Ok(buckets) => {
                                    (Event::MapDone { task, attempt }, Some(Done::Map(buckets)))
                                }
                                Err(e) => (
                                    Event::MapFailed {
                                        task,
                                        attempt,
                                        error: e.to_string(),
                                    },
                                    None,
                                ),
                            }
                        });
                    }
                    Action::StartReduce { partition, attempt } => {
                        // Runs in task order, so a key's values reach reduce in the input's order.
                        let inputs = frozen.get_or_insert_with(|| {
                            std::mem::take(&mut shuffle)
                                .into_iter()
                                .map(|mut runs| {
                                    runs.sort_by_key(|(task, _)| *task);
                                    Arc::new(runs.into_iter().map(|(_, run)| run).collect())
                                })
                                .collect()
                        });
                        let input = inputs[partition as usize].clone();
                        let (rt, name, pre, limits, store) = (
                            self.runtime.clone(),
                            spec.function.clone(),
                            spec.pre.clone(),
                            spec.limits,
                            self.store.clone(),
                        );
                        tasks.spawn(async move {
                            match reduce_task(
                                &rt, &store, id, &name, &pre, limits, partition, &input,
                            )
                            .await
                            {
                                Ok(records) => (
                                    Event::ReduceDone { partition, attempt },
                                    Some(Done::Reduce(records)),
                                ),
                                Err(e) => (
                                    Event::ReduceFailed {
                                        partition,
                                        attempt,
                                        error: e.to_string(),
                                    },
                                    None,
                                ),
                            }
                        });
                    }
                    Action::Succeed => end = Some(Ok(())),
                    Action::Fail(e) => end = Some(Err(e)),
                }
            }
            if let Some(end) = end {
                break end;
            }
            let joined = tokio::select! {
                joined = tasks.join_next() => joined,
                () = cancel.cancelled() => break Err(CANCELLED.to_string()),
            };
            let Some(joined) = joined else {
                break Err(
                    "internal error: no task is running and the job is not finished".to_string(),
                );
            };
            let (event, done) = match joined {
                Ok(r) => r,
                Err(e) => break Err(format!("a task panicked: {e}")),
            };
            let (phase, outcome) = match &event {
                Event::MapDone { .. } => ("map", "done"),
                Event::MapFailed { .. } => ("map", "failed"),
                Event::ReduceDone { .. } => ("reduce", "done"),
                Event::ReduceFailed { .. } => ("reduce", "failed"),
            };
            self.metrics.job_task(phase, outcome);
            // Output of an attempt the state machine no longer runs (late, duplicate) is dropped.
            match done.filter(|_| state.is_current(&event)) {
                Some(Done::Map(runs)) => {
                    let Event::MapDone { task, attempt } = event else {
                        unreachable!("map output comes with MapDone")
                    };
                    mapped += chunks[task].size;
                    self.metrics.job_bytes("mapped", chunks[task].size);
                    // Keys and values, without the records' length fields.
                    let bytes: u64 = runs
                        .iter()
                        .map(|r| (r.bytes().len() - 8 * r.pairs()) as u64)
                        .sum();
                    shuffled += bytes;
                    self.metrics.job_bytes("shuffled", bytes);
                    let size: u64 = runs.iter().map(|r| r.bytes().len() as u64).sum();
                    let budget = self.config.shuffle_memory_bytes;
                    let reserved = self
                        .held
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                            (held + size <= budget).then_some(held + size)
                        })
                        .is_ok();
                    let runs: Vec<Held> = if !reserved {
                        let dir = spill_dir.clone();
                        let written = tokio::task::spawn_blocking(move || {
                            spill::write(&dir, task, attempt, &runs)
                        })
                        .await;
                        match written {
                            Ok(Ok(written)) => {
                                spilled += size;
                                self.metrics.job_bytes("spilled", size);
                                written.into_iter().map(Held::Spilled).collect()
                            }
                            Ok(Err(e)) => {
                                break Err(format!(
                                    "spilling map output to {}: {e}",
                                    spill_dir.display()
                                ));
                            }
                            Err(e) => break Err(format!("spilling map output: {e}")),
                        }
                    } else {
                        held += size;
                        runs.into_iter().map(Held::Memory).collect()
                    };
                    for (p, run) in runs.into_iter().enumerate() {
                        if !run.is_empty() {
                            shuffle[p].push((task, run));
                        }
                    }
                }
                Some(Done::Reduce(records)) => top.add(records),
                None => {}
            }
            actions = state.on(event);
            let (progress, count) = (state.progress(), top.count);
            let elapsed_ms = started.elapsed().as_millis() as u64;
            if progress.maps_done == progress.maps_total {
                map_ms.get_or_insert(elapsed_ms);
            }
            self.update(id, |r| {
                r.progress = progress;
                r.output_records = count;
                r.elapsed_ms = elapsed_ms;
                r.mapped_bytes = mapped;
                r.shuffled_bytes = shuffled;
                r.spilled_bytes = spilled;
                r.map_ms = map_ms;
            });
        };
        tasks.abort_all();
        drop((shuffle, frozen));
        self.held.fetch_sub(held, Ordering::Relaxed);
        // Also after a failed spill, which may have left part of a file.
        let dir = spill_dir.clone();
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        if let Ok(Err(e)) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(job = %id, dir = %spill_dir.display(), error = %e, "could not remove the job's spilled map output");
        }

        let progress = state.progress();
        let record = {
            let mut live = self.live.lock().expect("not poisoned");
            let r = live.get_mut(&id).expect("a live job has a record");
            r.progress = progress;
            r.elapsed_ms = started.elapsed().as_millis() as u64;
            r.output_records = top.count;
            r.top = top.best();
            match &outcome {
                Ok(()) => r.status = JobStatus::Succeeded,
                Err(e) if e == CANCELLED => {
                    r.status = JobStatus::Cancelled;
                    r.error = Some(e.clone());
                }
                Err(e) => {
                    r.status = JobStatus::Failed;
                    r.error = Some(e.clone());
                }
            }
            r.clone()
        };
        self.metrics.job(match record.status {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Cancelled => "cancelled",
            _ => "failed",
        });
        match &outcome {
            Ok(()) => {
                tracing::info!(job = %id, function = %spec.function, records = top.count, elapsed = ?started.elapsed(), "job succeeded")
            }
            Err(e) => {
                tracing::warn!(job = %id, function = %spec.function, error = %e, "job failed")
            }
        }
        if let Err(e) = self.store.put_job(id, &record).await {
            tracing::error!(job = %id, error = %e, "could not store the job's final record");
        }
        self.live.lock().expect("not poisoned").remove(&id);
        self.cancels.lock().expect("not poisoned").remove(&id);
        self.ended.send_modify(|n| *n += 1);
    }
}

enum Done {
    /// A map task's output: one sorted run per reducer partition.
    Map(Vec<Run>),
    Reduce(Vec<OutputRecord>),
}

/// A guest's output that is not well-formed pair records fails its call.
fn malformed(function: &FunctionName, step: &str) -> impl Fn(String) -> RuntimeError {
    move |e| RuntimeError::Guest {
        function: function.clone(),
        message: format!("{step} emitted {e}"),
    }
}

/// Runs map (and the combiner) over one chunk; returns one sorted run per reducer partition.
async fn map_task(
    rt: &Runtime,
    function: &FunctionName,
    pre: &TaskPre,
    limits: InvocationLimits,
    chunk: &[u8],
    reducers: u32,
) -> Result<Vec<Run>, RuntimeError> {
    let mut instance = rt.instantiate_task(function, pre, limits).await?;
    let mut pairs: TaskOutput = instance.map(chunk).await?;
    let mut step = "map";
    if instance.has_combiner() {
        let sorted = sorted_runs(std::mem::take(&mut pairs), 1)
            .await
            .map_err(malformed(function, step))?;
        let mut merge = Merge::new(&sorted);
        let mut groups = Vec::new();
        // All of one map task's combine calls together may emit what one call may.
        let limit = rt.config().max_emit_bytes.get();
        while merge
            .next_groups(&mut groups, GROUP_BATCH_BYTES)
            .map_err(RuntimeError::Host)?
            > 0
        {
            pairs.extend(instance.combine(&groups).await?);
            if pairs.len() as u64 > limit {
                return Err(RuntimeError::OutputTooLarge {
                    function: function.clone(),
                    limit,
                });
            }
        }
        step = "combine";
    }
    sorted_runs(pairs, reducers)
        .await
        .map_err(malformed(function, step))
}

/// [`records::sorted_runs`] on a blocking thread: sorting a large output takes long enough to
/// hold up the other tasks of an async worker.
async fn sorted_runs(pairs: TaskOutput, partitions: u32) -> Result<Vec<Run>, String> {
    tokio::task::spawn_blocking(move || records::sorted_runs(&pairs, partitions))
        .await
        .map_err(|e| format!("sorting map output failed: {e}"))?
}

/// Runs one reducer over its partition's runs, many keys per call, and commits its output in
/// one batch.
#[allow(clippy::too_many_arguments)]
async fn reduce_task(
    rt: &Runtime,
    store: &Store,
    job: JobId,
    function: &FunctionName,
    pre: &TaskPre,
    limits: InvocationLimits,
    partition: u32,
    input: &[Held],
) -> Result<Vec<OutputRecord>, RuntimeError> {
    let mut instance = rt.instantiate_task(function, pre, limits).await?;
    // Reading spilled runs is blocking file I/O: on a multi-threaded runtime this worker's
    // other tasks move to another thread meanwhile.
    let spilled = input.iter().any(|h| matches!(h, Held::Spilled(_)));
    let blocking = |read: &mut dyn FnMut() -> Result<usize, String>| {
        let multi = tokio::runtime::Handle::try_current()
            .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
        if spilled && multi {
            tokio::task::block_in_place(read)
        } else {
            read()
        }
    };
    let mut merge = None;
    blocking(&mut || {
        let cursors = input.iter().map(Held::cursor).collect::<Result<_, _>>()?;
        merge = Some(Merge::of(cursors)?);
        Ok(0)
    })
    .map_err(RuntimeError::Host)?;
    let mut merge = merge.expect("set above");
    let (mut groups, mut output) = (Vec::new(), Vec::new());
    while blocking(&mut || merge.next_groups(&mut groups, GROUP_BATCH_BYTES))
        .map_err(RuntimeError::Host)?
        > 0
    {
        let emitted = instance.reduce(&groups).await?;
        for (key, value) in records::pairs(&emitted).map_err(malformed(function, "reduce"))? {
            output.push(OutputRecord {
                key: decode(key),
                value: decode(value),
            });
        }
    }
    let lines: Vec<Vec<u8>> = output
        .iter()
        .map(|r| serde_json::to_vec(r).expect("JSON values serialize"))
        .collect();
    store
        .commit_job_output(job, partition, &lines)
        .await
        .map_err(|e| RuntimeError::Host(format!("committing reducer {partition}'s output: {e}")))?;
    Ok(output)
}

fn decode(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

/// The order of a job's summary: larger numeric values first, then records without a numeric
/// value; ties by key.
pub fn record_order(a: &OutputRecord, b: &OutputRecord) -> std::cmp::Ordering {
    match (a.value.as_f64(), b.value.as_f64()) {
        (Some(x), Some(y)) => y
            .total_cmp(&x)
            .then_with(|| a.key.to_string().cmp(&b.key.to_string())),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.key.to_string().cmp(&b.key.to_string()),
    }
}

/// The running summary of a job's output: how many records, and the `n` first in
/// [`record_order`] (the node's summary keeps [`TOP`]; `weft job result --top N` any number).
pub struct Top {
    n: usize,
    count: u64,
    best: Vec<OutputRecord>,
}

impl Top {
    /// A summary keeping the `n` best records.
    pub fn new(n: usize) -> Self {
        Top {
            n,
            count: 0,
            best: Vec::new(),
        }
    }

    /// Counts `records` and keeps the best of them.
    pub fn add(&mut self, records: Vec<OutputRecord>) {
        self.count += records.len() as u64;
        self.best.extend(records);
        // Keep the n best without sorting a whole partition's output.
        if self.best.len() > self.n {
            if self.n == 0 {
                self.best.clear();
            } else {
                self.best.select_nth_unstable_by(self.n - 1, record_order);
                self.best.truncate(self.n);
            }
        }
        self.best.sort_by(record_order);
    }

    /// The best records, in order.
    pub fn best(&self) -> Vec<OutputRecord> {
        self.best.clone()
    }
}
