//! The worker side of jobs, on every node: map and reduce attempts ordered by a job's
//! coordinator (this node or another), the map output they leave for the reducers, and the
//! streams that carry it to them.
//!
//! A map attempt reads its chunk (from this node's disk, or fetched), runs the guest's `map`
//! (and its combiner), cuts the output into one sorted run per partition, and holds the runs
//! until the job ends: in memory while the node's budget allows, else in one spill file. A
//! reduce attempt gathers its partition's run from every map task (this node's in place,
//! other nodes' pulled over QUIC streams, a few at once, into memory within the budget or
//! into a file), merges them in a stream, runs `reduce` many keys per call, and stores its
//! output as blobs of JSON lines on the ring; the coordinator commits their digests. Guests
//! run on the node's [`TaskPool`], apart from its async workers.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;

use super::guest::{map_task, reduce_task};
use super::pool::TaskPool;
use super::records::Run;
use super::spill::{self, Held, Scratch, SpillDir, SpilledRun, premerge};
use super::wire::{AttemptId, JobsWire, Mapped, Program, Reduced, Request, Response, Source};
use super::{JobsConfig, TOP, Top};
use crate::blobs::Blobs;
use crate::id::{JobId, NodeId};
use crate::mapreduce::plan::InputChunk;
use crate::metrics::Metrics;
use crate::placement::Placement;
use crate::rpc::{self, PieceStream};
use crate::runtime::{FunctionKind, InvocationLimits, Prepared, Runtime, RuntimeError, TaskPre};

/// Bytes of output per stored segment: a reducer's output is a few blobs, not one per record.
pub const OUTPUT_SEGMENT_BYTES: usize = 1 << 20;

/// How many map outputs a reducer pulls at once (Hadoop's
/// `mapreduce.reduce.shuffle.parallelcopies` is 5): one at a time, a reducer waited for each
/// node's round trip and stream in turn.
const PULLS_AT_ONCE: usize = 5;

/// How many of a reducer's output blobs are stored at once (each goes to its replicas and
/// waits for their flushes).
const PUTS_AT_ONCE: usize = 4;

/// Bytes per piece of a streamed run.
const PIECE: usize = 1 << 20;

/// How many ended jobs a node remembers, so that a map attempt finishing after its job ended
/// drops its output instead of holding it.
const REMEMBERED_ENDS: usize = 1024;

/// Memory reserved from the node's shuffle budget, given back when dropped.
struct Reserved {
    bytes: u64,
    held: Arc<AtomicU64>,
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.held.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// One map attempt's output: a run per partition.
struct MapOutput {
    runs: Vec<Held>,
    _reserved: Option<Reserved>,
}

/// A pulled run, with its memory reservation or its file (`None`: the run is empty).
type PulledRun = Option<(Held, Option<Reserved>, Option<Scratch>)>;

/// The node's worker.
#[derive(Clone)]
pub(crate) struct Worker {
    inner: Arc<Inner>,
}

struct Inner {
    runtime: Arc<Runtime>,
    blobs: Blobs,
    placement: Placement,
    metrics: Arc<Metrics>,
    spill: SpillDir,
    pool: TaskPool,
    config: JobsConfig,
    /// Bytes of map output (held and fetched) in memory, all jobs together.
    held: Arc<AtomicU64>,
    outputs: Mutex<HashMap<(JobId, usize, AttemptId), Arc<MapOutput>>>,
    ended: Mutex<VecDeque<JobId>>,
}

impl Worker {
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        blobs: Blobs,
        placement: Placement,
        metrics: Arc<Metrics>,
        spill: SpillDir,
        pool: TaskPool,
        config: JobsConfig,
    ) -> Worker {
        Worker {
            inner: Arc::new(Inner {
                runtime,
                blobs,
                placement,
                metrics,
                spill,
                pool,
                config,
                held: Arc::default(),
                outputs: Mutex::default(),
                ended: Mutex::default(),
            }),
        }
    }

    /// This node.
    pub(crate) fn me(&self) -> &NodeId {
        self.inner.placement.me()
    }

    pub(crate) fn placement(&self) -> &Placement {
        &self.inner.placement
    }

    /// Answers one request (from this node's coordinator directly, or from the router).
    pub(crate) async fn handle(&self, request: Request) -> Response {
        match request {
            Request::Map {
                job,
                task,
                attempt,
                program,
                chunk,
                reducers,
            } => {
                self.map(job, task, attempt, &program, chunk, reducers)
                    .await
            }
            Request::Reduce {
                job,
                partition,
                attempt,
                program,
                sources,
            } => {
                self.reduce(job, partition, attempt, &program, &sources)
                    .await
            }
            Request::Forget { job } => {
                self.forget(job).await;
                Response::Done
            }
            Request::Fetch { .. } | Request::Status { .. } => Response::Failed {
                error: "internal error: not a worker request".into(),
                guest: false,
                lost: vec![],
            },
        }
    }

    /// A compiled module, from this node's cache or fetched.
    async fn prepare(&self, program: &Program) -> Result<TaskPre, RuntimeError> {
        let rt = &self.inner.runtime;
        let prepared = match rt.prepared(program.digest) {
            Some(p) => p,
            None => {
                let bytes = self.inner.blobs.get(program.digest).await.map_err(|e| {
                    RuntimeError::Host(format!("fetching module {}: {e}", program.digest))
                })?;
                let (rt, digest) = (rt.clone(), program.digest);
                tokio::task::spawn_blocking(move || {
                    rt.prepare(digest, &bytes, Some(FunctionKind::Mapreduce))
                })
                .await
                .map_err(|e| RuntimeError::Host(format!("compiling the module: {e}")))??
            }
        };
        match prepared {
            Prepared::Task(pre) => Ok(pre),
            other => Err(RuntimeError::WrongWorld(format!(
                "module {} is {}, not a map/reduce task",
                program.digest,
                other.kind()
            ))),
        }
    }

    fn limits(program: &Program) -> InvocationLimits {
        InvocationLimits {
            timeout: std::time::Duration::from_millis(program.timeout_ms),
            memory_bytes: program.memory_bytes,
        }
    }

    async fn map(
        &self,
        job: JobId,
        task: usize,
        attempt: AttemptId,
        program: &Program,
        chunk: InputChunk,
        reducers: u32,
    ) -> Response {
        let runs = match self.run_map(program, chunk, reducers).await {
            Ok(runs) => runs,
            Err(e) => return failed(&e),
        };
        let inner = &self.inner;
        inner.metrics.job_bytes("mapped", chunk.size);
        // Keys and values, without the records' length fields.
        let shuffled: u64 = runs
            .iter()
            .map(|r| (r.bytes().len() - 8 * r.pairs()) as u64)
            .sum();
        inner.metrics.job_bytes("shuffled", shuffled);
        let size: u64 = runs.iter().map(|r| r.bytes().len() as u64).sum();
        let (held, reserved, spilled): (Vec<Held>, _, _) = match self.reserve(size) {
            Some(reserved) => (
                runs.into_iter()
                    .map(|r| Held::Memory(Arc::new(r)))
                    .collect(),
                Some(reserved),
                0,
            ),
            None => {
                let dir = inner.spill.job(job);
                let name = format!("map-{task}-{attempt}");
                let written =
                    tokio::task::spawn_blocking(move || spill::write(&dir, &name, &runs)).await;
                match written {
                    Ok(Ok(written)) => {
                        inner.metrics.job_bytes("spilled", size);
                        (written.into_iter().map(Held::Spilled).collect(), None, size)
                    }
                    Ok(Err(e)) => return host_failure(format!("spilling map output: {e}")),
                    Err(e) => return host_failure(format!("spilling map output: {e}")),
                }
            }
        };
        // Under the lock `forget` takes first, so output cannot slip in after it.
        let file = match held.first() {
            Some(Held::Spilled(run)) => Some(run.path().to_owned()),
            _ => None,
        };
        let kept = {
            let ended = inner.ended.lock().expect("not poisoned");
            if ended.contains(&job) {
                false
            } else {
                inner.outputs.lock().expect("not poisoned").insert(
                    (job, task, attempt),
                    Arc::new(MapOutput {
                        runs: held,
                        _reserved: reserved,
                    }),
                );
                true
            }
        };
        if !kept {
            if let Some(path) = file {
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_file(path)).await;
            }
            return host_failure("the job has ended".into());
        }
        Response::Mapped(Mapped { shuffled, spilled })
    }

    async fn run_map(
        &self,
        program: &Program,
        chunk: InputChunk,
        reducers: u32,
    ) -> Result<Vec<Run>, RuntimeError> {
        let pre = self.prepare(program).await?;
        let bytes = self.inner.blobs.get(chunk.digest).await.map_err(|e| {
            RuntimeError::Host(format!("reading input chunk {}: {e}", chunk.digest))
        })?;
        if bytes.len() as u64 != chunk.size {
            return Err(RuntimeError::Host(format!(
                "input chunk {} is {} bytes, not the {} the job's list of chunks says",
                chunk.digest,
                bytes.len(),
                chunk.size
            )));
        }
        let (rt, function, limits) = (
            self.inner.runtime.clone(),
            program.function.clone(),
            Self::limits(program),
        );
        self.inner
            .pool
            .run(async move { map_task(&rt, &function, &pre, limits, &bytes, reducers).await })
            .await
            .map_err(RuntimeError::Host)?
    }

    /// Reserves `size` bytes of the memory budget, if they fit.
    fn reserve(&self, size: u64) -> Option<Reserved> {
        let budget = self.inner.config.shuffle_memory_bytes;
        self.inner
            .held
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                (held + size <= budget).then_some(held + size)
            })
            .ok()
            .map(|_| Reserved {
                bytes: size,
                held: self.inner.held.clone(),
            })
    }

    /// One partition of a held map output, as a head and pieces.
    pub(crate) async fn fetch(
        &self,
        job: JobId,
        task: usize,
        attempt: AttemptId,
        partition: u32,
    ) -> Result<(Response, PieceStream), String> {
        let output = self
            .inner
            .outputs
            .lock()
            .expect("not poisoned")
            .get(&(job, task, attempt))
            .cloned();
        let Some(run) = output.and_then(|o| o.runs.get(partition as usize).cloned()) else {
            return Ok((Response::Run(None), futures::stream::empty().boxed()));
        };
        let len = run.len();
        let pieces = match run {
            // One piece copied at a time, as the peer takes them.
            Held::Memory(run) => futures::stream::unfold(0, move |at| {
                let run = run.clone();
                async move {
                    let bytes = run.bytes();
                    (at < bytes.len()).then(|| {
                        let end = (at + PIECE).min(bytes.len());
                        (Ok(Bytes::copy_from_slice(&bytes[at..end])), end)
                    })
                }
            })
            .boxed(),
            Held::Spilled(run) => {
                let reader = tokio::task::spawn_blocking(move || run.reader())
                    .await
                    .map_err(|e| e.to_string())??;
                futures::stream::try_unfold(reader, |mut reader| async move {
                    let (piece, reader) = tokio::task::spawn_blocking(move || {
                        use std::io::Read;
                        let mut buf = vec![0; PIECE];
                        let mut got = 0;
                        while got < PIECE {
                            match reader.read(&mut buf[got..]) {
                                Ok(0) => break,
                                Ok(n) => got += n,
                                Err(e) => return Err(e.to_string()),
                            }
                        }
                        buf.truncate(got);
                        Ok((buf, reader))
                    })
                    .await
                    .map_err(|e| e.to_string())??;
                    Ok((!piece.is_empty()).then(|| (Bytes::from(piece), reader)))
                })
                .boxed()
            }
        };
        Ok((Response::Run(Some(len)), pieces))
    }

    async fn reduce(
        &self,
        job: JobId,
        partition: u32,
        attempt: AttemptId,
        program: &Program,
        sources: &[Source],
    ) -> Response {
        let began = std::time::Instant::now();
        let pre = match self.prepare(program).await {
            Ok(pre) => pre,
            Err(e) => return failed(&e),
        };
        let Gathered {
            inputs,
            reserved: _reserved,
            files: _files,
            lost,
            error,
            fetched,
        } = self.gather(job, partition, attempt, sources).await;
        let gathered = began.elapsed();
        if !lost.is_empty() {
            return Response::Failed {
                error: error.unwrap_or_else(|| "map output lost".into()),
                guest: false,
                lost,
            };
        }
        if let Some(error) = error {
            return host_failure(error);
        }
        let dir = self.inner.spill.job(job);
        let name = format!("merge-{partition}-{attempt}");
        let merged =
            tokio::task::spawn_blocking(move || premerge(inputs, &dir, &name, spill::MERGE_FAN_IN))
                .await;
        let (inputs, _merged_files) = match merged {
            Ok(Ok((inputs, files))) => {
                let bytes: u64 = inputs
                    .iter()
                    .filter_map(|h| match h {
                        Held::Spilled(run) if files.iter().any(|f| f.0 == run.path()) => {
                            Some(run.len())
                        }
                        _ => None,
                    })
                    .sum();
                if !files.is_empty() {
                    self.inner.metrics.job_bytes("merged", bytes);
                }
                (inputs, files)
            }
            Ok(Err(e)) => return host_failure(e),
            Err(e) => return host_failure(format!("merging map output: {e}")),
        };
        let merged = began.elapsed();
        let (rt, function, limits) = (
            self.inner.runtime.clone(),
            program.function.clone(),
            Self::limits(program),
        );
        // The runs are dropped there; files pulled are removed when their guards drop, at
        // the end of this call.
        let outcome = self
            .inner
            .pool
            .run(async move { reduce_task(&rt, &function, &pre, limits, &inputs).await })
            .await;
        let records = match outcome {
            Ok(Ok(records)) => records,
            Ok(Err(e)) => return failed(&e),
            Err(e) => return host_failure(e),
        };
        let reduced = began.elapsed();
        let mut segments = Vec::new();
        let mut segment = Vec::new();
        for r in &records {
            serde_json::to_writer(&mut segment, r).expect("JSON values serialize");
            segment.push(b'\n');
            if segment.len() >= OUTPUT_SEGMENT_BYTES {
                segments.push(std::mem::take(&mut segment));
            }
        }
        if !segment.is_empty() {
            segments.push(segment);
        }
        let mut digests = Vec::with_capacity(segments.len());
        let mut stored = futures::stream::iter(segments)
            .map(|s| self.inner.blobs.put(Bytes::from(s)))
            .buffered(PUTS_AT_ONCE);
        while let Some(put) = stored.next().await {
            match put {
                Ok(d) => digests.push(d),
                Err(e) => {
                    return host_failure(format!("storing reducer {partition}'s output: {e}"));
                }
            }
        }
        drop(stored);
        tracing::debug!(
            %job,
            partition,
            gathered_ms = gathered.as_millis() as u64,
            merged_ms = merged.as_millis() as u64,
            reduced_ms = reduced.as_millis() as u64,
            stored_ms = began.elapsed().as_millis() as u64,
            fetched,
            "reduce attempt done"
        );
        let count = records.len() as u64;
        let mut top = Top::new(TOP);
        top.add(records);
        Response::Reduced(Reduced {
            segments: digests,
            records: count,
            fetched,
            top: serde_json::to_vec(&top.best()).expect("JSON values serialize"),
        })
    }

    /// Every map task's run of `partition`: this node's in place, others' pulled.
    async fn gather(
        &self,
        job: JobId,
        partition: u32,
        attempt: AttemptId,
        sources: &[Source],
    ) -> Gathered {
        let mut g = Gathered::default();
        let mut waiting = sources.iter();
        let mut pulls = futures::stream::FuturesOrdered::new();
        loop {
            while pulls.len() < PULLS_AT_ONCE {
                let Some(s) = waiting.next() else { break };
                pulls.push_back(self.pull_unless_here(job, partition, attempt, s));
            }
            let Some((s, pulled)) = pulls.next().await else {
                break;
            };
            let Some(pulled) = pulled else {
                let output = self
                    .inner
                    .outputs
                    .lock()
                    .expect("not poisoned")
                    .get(&(job, s.task, s.attempt))
                    .cloned();
                match output.and_then(|o| o.runs.get(partition as usize).cloned()) {
                    Some(run) => g.inputs.push(run),
                    None => {
                        g.lost.push(s.task);
                        g.error.get_or_insert_with(|| {
                            format!(
                                "the output of map task {} (attempt {}) is not held here",
                                s.task, s.attempt
                            )
                        });
                    }
                }
                continue;
            };
            match pulled {
                Ok(Some((run, r, file))) => {
                    g.fetched += run.len();
                    g.inputs.push(run);
                    g.reserved.extend(r);
                    g.files.extend(file);
                }
                Ok(None) => {}
                Err(Pulled::Lost(e)) => {
                    g.lost.push(s.task);
                    g.error.get_or_insert(e);
                }
                Err(Pulled::Failed(e)) => {
                    g.error.get_or_insert(e);
                }
            }
        }
        g
    }

    /// [`Worker::pull`] unless `s` is on this node (`None`).
    async fn pull_unless_here<'s>(
        &self,
        job: JobId,
        partition: u32,
        attempt: AttemptId,
        s: &'s Source,
    ) -> (&'s Source, Option<Result<PulledRun, Pulled>>) {
        if s.node == *self.me() {
            return (s, None);
        }
        (s, Some(self.pull(job, partition, attempt, s).await))
    }

    /// Pulls one map task's run from the node holding it: into memory within the budget,
    /// else into a file. `None`: the run is empty.
    async fn pull(
        &self,
        job: JobId,
        partition: u32,
        attempt: AttemptId,
        s: &Source,
    ) -> Result<PulledRun, Pulled> {
        let lost = |e: String| {
            Pulled::Lost(format!(
                "reading the output of map task {} from {}: {e}",
                s.task, s.node
            ))
        };
        let addr = self
            .inner
            .placement
            .view()
            .addr(&s.node)
            .ok_or_else(|| lost("the node is down".into()))?;
        let transport = self.inner.placement.transport();
        let request = Request::Fetch {
            job,
            task: s.task,
            attempt: s.attempt,
            partition,
        };
        let (head, mut pieces) =
            rpc::open::<JobsWire>(transport, addr, &request, transport.rpc_timeout())
                .await
                .map_err(|e| lost(e.to_string()))?;
        let len = match head {
            Response::Run(Some(len)) => len,
            Response::Run(None) => return Err(lost("it does not hold it".into())),
            other => return Err(lost(format!("unexpected answer {other:?}"))),
        };
        if len == 0 {
            return Ok(None);
        }
        let reserved = self.reserve(len);
        // A file is removed with its guard, also when the pull fails halfway.
        let mut scratch = None;
        let mut sink = if reserved.is_some() {
            Sink::Memory(Vec::with_capacity(len as usize))
        } else {
            let dir = self.inner.spill.job(job);
            let path = dir.join(format!("fetch-{partition}-{attempt}-{}", s.task));
            let file = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&dir)?;
                std::fs::File::create(&path).map(|f| (std::io::BufWriter::new(f), path))
            })
            .await
            .map_err(|e| Pulled::Failed(e.to_string()))?
            .map_err(|e| Pulled::Failed(format!("writing fetched map output: {e}")))?;
            scratch = Some(Scratch(file.1.clone()));
            Sink::File(Some(file))
        };
        let mut got = 0u64;
        while let Some(piece) = pieces.next().await.map_err(|e| lost(e.to_string()))? {
            got += piece.len() as u64;
            if got > len {
                return Err(lost(format!(
                    "the run is longer than the {len} bytes announced"
                )));
            }
            sink.write(piece).await.map_err(Pulled::Failed)?;
        }
        if got < len {
            return Err(lost(format!("the run ended after {got} of {len} bytes")));
        }
        self.inner.metrics.job_bytes("fetched", len);
        let held = sink.finish(len).await.map_err(Pulled::Failed)?;
        Ok(Some((held, reserved, scratch)))
    }

    /// Appends the worker's gauges: map outputs held, and the memory of map output.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{Kind, single};
        let held = self.inner.outputs.lock().expect("not poisoned").len();
        single(
            out,
            "weft_job_map_outputs",
            Kind::Gauge,
            "Map attempts whose output this node holds for their reducers.",
            held,
        );
        single(
            out,
            "weft_job_memory_bytes",
            Kind::Gauge,
            "Bytes of map output in this node's memory (held, and pulled by reducers).",
            self.inner.held.load(Ordering::Relaxed),
        );
    }

    /// Jobs this node holds map output of, in memory or on disk.
    pub(crate) async fn held_jobs(&self) -> Vec<JobId> {
        let mut jobs: Vec<JobId> = self
            .inner
            .outputs
            .lock()
            .expect("not poisoned")
            .keys()
            .map(|(j, _, _)| *j)
            .collect();
        let root = self.inner.spill.root().to_owned();
        let on_disk = tokio::task::spawn_blocking(move || {
            std::fs::read_dir(root)
                .map(|dir| {
                    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<JobId>().ok())
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        })
        .await
        .unwrap_or_default();
        jobs.extend(on_disk);
        jobs.sort();
        jobs.dedup();
        jobs
    }

    /// Drops a job's map output, in memory and on disk.
    pub(crate) async fn forget(&self, job: JobId) {
        {
            let mut ended = self.inner.ended.lock().expect("not poisoned");
            if !ended.contains(&job) {
                ended.push_back(job);
                if ended.len() > REMEMBERED_ENDS {
                    ended.pop_front();
                }
            }
            self.inner
                .outputs
                .lock()
                .expect("not poisoned")
                .retain(|(j, _, _), _| *j != job);
        }
        let dir = self.inner.spill.job(job);
        let shown = dir.display().to_string();
        let removed = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dir)).await;
        if let Ok(Err(e)) = removed
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(job = %job, dir = %shown, error = %e, "could not remove the job's spilled map output");
        }
    }
}

/// A reducer's input, gathered.
#[derive(Default)]
struct Gathered {
    /// The runs, in task order.
    inputs: Vec<Held>,
    /// The memory the pulled ones hold.
    reserved: Vec<Reserved>,
    /// The files the pulled ones are in.
    files: Vec<Scratch>,
    /// Map tasks whose output could not be read (their node lost it or is gone).
    lost: Vec<usize>,
    /// The first error.
    error: Option<String>,
    /// Bytes pulled from other nodes.
    fetched: u64,
}

enum Pulled {
    /// The map output is gone: its task must run again.
    Lost(String),
    /// Something else failed.
    Failed(String),
}

/// Where a pulled run goes.
enum Sink {
    Memory(Vec<u8>),
    File(Option<(std::io::BufWriter<std::fs::File>, std::path::PathBuf)>),
}

impl Sink {
    async fn write(&mut self, piece: Bytes) -> Result<(), String> {
        match self {
            Sink::Memory(buf) => {
                buf.extend_from_slice(&piece);
                Ok(())
            }
            Sink::File(file) => {
                let (mut w, path) = file.take().expect("put back after each piece");
                let back = tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    w.write_all(&piece).map(|()| (w, path))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("writing fetched map output: {e}"))?;
                *file = Some(back);
                Ok(())
            }
        }
    }

    async fn finish(self, len: u64) -> Result<Held, String> {
        match self {
            Sink::Memory(bytes) => Ok(Held::Memory(Arc::new(Run::from_bytes(bytes)))),
            Sink::File(file) => {
                let (w, path) = file.expect("put back after each piece");
                tokio::task::spawn_blocking(move || {
                    use std::io::Write;
                    w.into_inner()
                        .map_err(|e| e.into_error())
                        .and_then(|mut f| f.flush())
                        .map(|()| Held::Spilled(SpilledRun::whole(path, len)))
                })
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("writing fetched map output: {e}"))
            }
        }
    }
}

/// A failed attempt's answer: guest failures are told apart from the node's.
fn failed(e: &RuntimeError) -> Response {
    Response::Failed {
        error: e.to_string(),
        guest: !matches!(e, RuntimeError::Host(_) | RuntimeError::Busy(_)),
        lost: vec![],
    }
}

fn host_failure(error: String) -> Response {
    Response::Failed {
        error,
        guest: false,
        lost: vec![],
    }
}
