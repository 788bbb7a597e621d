//! The coordinator of one job: the node holding the job's lock. It feeds the pure
//! [`JobState`] the attempts' reports, member changes and the time, sends the attempts it
//! asks for to their nodes, and commits to the metadata group, fenced by its token, where
//! each map task's output is and each partition's output (once). It renews its lock; if the
//! lock is lost (it was cut off long enough for another node to take over), it stops.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::ledger::{self, MapCommit, Recorded, ReduceCommit, Spec};
use super::state::{Action, Event, JobState, TaskId};
use super::wire::{AttemptId, JobsWire, Request, Response, Source};
use super::{CANCELLED, JOB_LEASE, JobRecord, JobStatus, Jobs, OutputRecord, TOP, Top};
use crate::blobs::REPLICAS;
use crate::consensus::{ConsensusError, Write};
use crate::id::{JobId, NodeId};
use crate::rpc;

/// How long a node may take over one attempt before the coordinator gives up on it. Guests
/// have time limits per call; this bounds a node that neither answers nor is found down.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// How often the coordinator looks at the time (locality waits, speculation, cancels).
const TICK: Duration = Duration::from_millis(100);

/// How long a node that could not be reached gets no task of the job (unless membership
/// sees it rejoin sooner): a dead node is not yet known to be down when its connections
/// already fail, and every attempt sent to it would count as a failure.
const SUSPEND: Duration = Duration::from_secs(10);

/// How long a commit waits for the metadata group to have a leader again (an election, or
/// this node rejoining after a pause) before this node stops coordinating the job (another
/// node takes it over once the lock is free).
const COMMIT_PATIENCE: Duration = Duration::from_secs(60);

/// The pause between tries of a commit that found no leader.
const COMMIT_RETRY: Duration = Duration::from_millis(200);

/// Sends `request` to the job service of `node`: this node's worker directly, another over
/// QUIC. An `Err` is a failure to reach the node or to hear back.
pub(crate) async fn order(
    jobs: &Jobs,
    node: &NodeId,
    request: Request,
) -> Result<Response, String> {
    if node == jobs.worker.me() {
        return Ok(jobs.worker.handle(request).await);
    }
    let placement = jobs.worker.placement();
    let addr = placement
        .view()
        .addr(node)
        .ok_or_else(|| format!("node {node} is down"))?;
    rpc::call_within::<JobsWire>(placement.transport(), addr, &request, ATTEMPT_TIMEOUT)
        .await
        .map_err(|e| format!("node {node}: {e}"))
}

/// [`Jobs::fenced`], tried again while the metadata group has no leader (for
/// [`COMMIT_PATIENCE`], plus the last try's own timeout), every try under one proposal id, so
/// that the commit applies once however many of its tries commit.
async fn fenced(
    jobs: &Jobs,
    id: JobId,
    token: u64,
    writes: Vec<Write>,
) -> Result<bool, ConsensusError> {
    jobs.pause_before_commit().await;
    let proposal = jobs.consensus.proposal_id();
    let began = Instant::now();
    loop {
        match jobs.fenced_as(proposal, id, token, writes.clone()).await {
            Err(ConsensusError::NoLeader(e))
                if began.elapsed() < COMMIT_PATIENCE && !jobs.tasks.token().is_cancelled() =>
            {
                tracing::info!(job = %id, error = %e, "a commit waits for the metadata group");
                // A group that answers at once (stopped) is not asked in a tight loop.
                tokio::time::sleep(COMMIT_RETRY).await;
            }
            done => return done,
        }
    }
}

/// Why a refused commit stops the coordinator.
const REFUSED: &str = "the job's lock is no longer held under this coordinator's token (it ran out, or another node took the job over)";

/// Counts a commit's outcome; a refusal or a failure ends this node's coordination.
fn counted(jobs: &Jobs, done: Result<bool, ConsensusError>) -> Result<(), Stop> {
    match done {
        Ok(true) => {
            jobs.metrics.job_commit("written");
            Ok(())
        }
        Ok(false) => {
            jobs.metrics.job_commit("refused");
            Err(Stop::Leave(REFUSED.into()))
        }
        Err(e) => {
            jobs.metrics.job_commit("failed");
            Err(Stop::Leave(format!(
                "could not record the job's progress: {e}"
            )))
        }
    }
}

/// Commits partition `p`'s output unless one is committed already (by an attempt of an
/// earlier coordinator); returns the one that counts.
async fn commit_once(
    jobs: &Jobs,
    id: JobId,
    token: u64,
    p: u32,
    commit: ReduceCommit,
) -> Result<ReduceCommit, Stop> {
    let key = ledger::reduce_key(id, p);
    let write = Write {
        key: key.clone(),
        value: Some(ledger::encode(&commit)),
        expect: Some(0),
    };
    match fenced(jobs, id, token, vec![write]).await {
        Ok(true) => {
            jobs.metrics.job_commit("written");
            Ok(commit)
        }
        Ok(false) => {
            jobs.metrics.job_commit("refused");
            Err(Stop::Leave(REFUSED.into()))
        }
        Err(_) => {
            // An earlier coordinator's attempt may have committed the partition (the write
            // expects it absent): its output is the one that counts.
            let earlier = jobs
                .consensus
                .read(|s| s.registers.get(&key).map(|r| r.value.clone()))
                .await
                .map_err(|e| Stop::Leave(format!("could not read the job's progress: {e}")))?;
            earlier
                .and_then(|v| serde_json::from_slice(&v).ok())
                .ok_or_else(|| Stop::Leave("could not record a reducer's output".into()))
        }
    }
}

/// A node answered an attempt with the other phase's answer.
fn mismatch(task: &TaskId, attempt: u32, node: &NodeId) -> Event {
    Event::Failed {
        task: *task,
        attempt,
        error: format!("node {node} answered {task:?} with another task's answer"),
        guest: false,
    }
}

/// The record of a job as its coordinator starts (or restarts) it.
pub(crate) fn first_record(
    id: JobId,
    spec: &Spec,
    recorded: &Recorded,
    coordinator: &NodeId,
) -> JobRecord {
    let mut top = Top::new(TOP);
    let mut records = 0;
    for (_, c) in &recorded.reduces {
        records += c.records;
        top.add(c.top.clone());
    }
    JobRecord {
        id,
        function: spec.function.clone(),
        digest: spec.digest,
        status: JobStatus::Running,
        error: None,
        progress: super::Progress {
            maps_total: spec.chunks.len(),
            maps_done: recorded.maps.len(),
            reduces_total: spec.reducers as usize,
            reduces_done: recorded.reduces.len(),
            ..Default::default()
        },
        input_bytes: spec.chunks.iter().map(|c| c.size).sum(),
        mapped_bytes: 0,
        shuffled_bytes: 0,
        spilled_bytes: 0,
        fetched_bytes: 0,
        tasks_by_node: Default::default(),
        coordinator: Some(coordinator.clone()),
        map_ms: None,
        reducers: spec.reducers,
        output_records: records,
        top: top.best(),
        elapsed_ms: super::unix_ms().saturating_sub(spec.submitted_ms),
    }
}

/// What an attempt's task reports.
struct Report {
    task: TaskId,
    attempt: u32,
    node: NodeId,
    answer: Result<Response, String>,
    /// From the order to the answer.
    took: Duration,
}

/// Why the coordinator stopped.
enum Stop {
    /// The job ended (succeeded, failed or cancelled): record it.
    End(Result<(), String>),
    /// Another node holds the lock now, or the node is stopping: record nothing.
    Leave(String),
}

struct Run<'a> {
    jobs: &'a Arc<Jobs>,
    id: JobId,
    spec: Spec,
    token: u64,
    state: JobState,
    /// The wire id of each attempt this coordinator knows of.
    attempts: HashMap<(TaskId, u32), AttemptId>,
    record: JobRecord,
    top: Top,
    started: Instant,
    /// Nodes the state machine knows to be up.
    up: BTreeSet<NodeId>,
    /// Nodes that could not be reached, and since when.
    suspended: HashMap<NodeId, Instant>,
    /// Map commits not yet sent to the metadata group. They are written in the background,
    /// a batch at a time, so that the next tasks start without waiting for them: a map task
    /// whose commit is lost with this coordinator runs again under the next.
    unrecorded: Vec<Write>,
    /// Partitions' outputs not yet sent to the metadata group. Each is committed in the
    /// background, all at once (the group batches them), while the state machine already
    /// counts the partition as done; the job ends only when every one has committed.
    uncommitted: Vec<(u32, ReduceCommit)>,
}

/// Each partition's preferred reducer: the ring's nodes in order from the job's point, in
/// turn, so that `R` reducers spread over the nodes as evenly as they can (hashing each
/// partition alone put three of four on one node, which then ran one of them after the
/// others).
fn reducer_owners(nodes: &[NodeId], reducers: u32) -> Vec<Vec<NodeId>> {
    (0..reducers as usize)
        .map(|p| {
            if nodes.is_empty() {
                Vec::new()
            } else {
                vec![nodes[p % nodes.len()].clone()]
            }
        })
        .collect()
}

/// Coordinates job `id` under `token` until it ends or the lock is lost.
pub(crate) async fn run(
    jobs: &Arc<Jobs>,
    id: JobId,
    spec: Spec,
    token: u64,
    recorded: Recorded,
    cancel: CancellationToken,
) {
    let me = jobs.worker.me().clone();
    let view = jobs.worker.placement().view();
    let holders = spec
        .chunks
        .iter()
        .map(|c| view.replicas(c.digest.as_bytes(), view.cap(REPLICAS)))
        .collect();
    let owners = reducer_owners(
        &view.replicas(format!("{id}/reduce").as_bytes(), usize::MAX),
        spec.reducers,
    );
    let mut state = JobState::new(holders, owners, jobs.schedule);
    let live: BTreeSet<NodeId> = jobs.nodes().into_iter().map(|(n, _)| n).collect();
    let mut attempts = HashMap::new();
    for (task, c, _) in &recorded.maps {
        if live.contains(&c.node) {
            state.restore_map(*task, 0, c.node.clone());
            attempts.insert((TaskId::Map(*task), 0), c.attempt);
        }
    }
    let mut top = Top::new(TOP);
    for (p, c) in &recorded.reduces {
        state.restore_reduce(*p);
        top.add(c.top.clone());
    }
    let record = first_record(id, &spec, &recorded, &me);
    let mut run = Run {
        jobs,
        id,
        spec,
        token,
        state,
        attempts,
        record,
        top,
        started: Instant::now(),
        up: BTreeSet::new(),
        suspended: HashMap::new(),
        unrecorded: Vec::new(),
        uncommitted: Vec::new(),
    };
    let outcome = run.drive(&cancel).await;
    match outcome {
        Stop::End(end) => run.end(end).await,
        Stop::Leave(why) => {
            tracing::warn!(job = %id, reason = %why, "stopped coordinating a job");
            // Should the lock still be held under this token (the node is stopping, or the
            // metadata group failed), another node takes the job over at once.
            let _ = jobs.locks.release(&ledger::lock_key(id), token).await;
        }
    }
}

impl Run<'_> {
    fn now(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Runs the job until it ends or this node stops coordinating it; the commits being
    /// written then are waited for (and counted) first.
    async fn drive(&mut self, cancel: &CancellationToken) -> Stop {
        let mut recording = JoinSet::new();
        let mut committing = JoinSet::new();
        let stop = self
            .drive_with(cancel, &mut recording, &mut committing)
            .await;
        self.settle(&mut recording, &mut committing, stop).await
    }

    async fn drive_with(
        &mut self,
        cancel: &CancellationToken,
        recording: &mut JoinSet<Result<bool, ConsensusError>>,
        committing: &mut JoinSet<Result<ReduceCommit, Stop>>,
    ) -> Stop {
        let jobs = self.jobs;
        let mut tasks: JoinSet<Report> = JoinSet::new();
        let mut members = jobs.members.clone();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut renew = tokio::time::interval(JOB_LEASE / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        renew.tick().await;
        let mut actions = self.members_changed();
        loop {
            // Before the actions: the last partition's commit is queued with the job's end.
            for (p, commit) in self.uncommitted.drain(..) {
                let (jobs, id, token) = (jobs.clone(), self.id, self.token);
                committing.spawn(async move { commit_once(&jobs, id, token, p, commit).await });
            }
            for action in std::mem::take(&mut actions) {
                match action {
                    Action::Start {
                        task,
                        attempt,
                        node,
                        ..
                    } => self.start(&mut tasks, task, attempt, node),
                    Action::Succeed => return Stop::End(Ok(())),
                    Action::Fail(e) => return Stop::End(Err(e)),
                }
            }
            if recording.is_empty() && !self.unrecorded.is_empty() {
                let writes = std::mem::take(&mut self.unrecorded);
                let (jobs, id, token) = (jobs.clone(), self.id, self.token);
                recording.spawn(async move { fenced(&jobs, id, token, writes).await });
            }
            tokio::select! {
                Some(done) = recording.join_next() => {
                    let done = done.unwrap_or_else(|e| Err(ConsensusError::Failed(e.to_string())));
                    if let Err(leave) = counted(jobs, done) {
                        return leave;
                    }
                }
                Some(done) = committing.join_next() => {
                    if let Err(leave) = self.committed(done) {
                        return leave;
                    }
                }
                Some(joined) = tasks.join_next() => {
                    let report = match joined {
                        Ok(r) => r,
                        Err(e) => return Stop::End(Err(format!("an attempt's task panicked: {e}"))),
                    };
                    actions = self.report(report);
                }
                changed = members.changed() => {
                    if changed.is_err() {
                        return Stop::Leave("the node is stopping".into());
                    }
                    actions = self.members_changed();
                }
                _ = tick.tick() => {
                    let asked = jobs.consensus.read_local(|s| {
                        s.registers.get(&ledger::cancel_key(self.id)).is_some()
                    });
                    if asked {
                        return Stop::End(Err(CANCELLED.into()));
                    }
                    let before = self.suspended.len();
                    self.suspended.retain(|_, since| since.elapsed() < SUSPEND);
                    actions = if self.suspended.len() < before {
                        self.members_changed()
                    } else {
                        self.state.on(Event::Tick, self.now())
                    };
                }
                _ = renew.tick() => {
                    let key = ledger::lock_key(self.id);
                    if let Err(e) = jobs.locks.renew(&key, self.token).await {
                        if matches!(e, crate::locks::LockError::NotHolder { .. }) {
                            return Stop::Leave(format!("lost the job's lock: {e}"));
                        }
                        tracing::warn!(job = %self.id, error = %e, "could not renew the job's lock");
                    }
                }
                () = cancel.cancelled() => {
                    if jobs.tasks.token().is_cancelled() {
                        return Stop::Leave("the node is stopping".into());
                    }
                    return Stop::End(Err(CANCELLED.into()));
                }
            }
            self.publish();
        }
    }

    /// Tells the state machine which nodes came and went (a suspended node counts as gone).
    fn members_changed(&mut self) -> Vec<Action> {
        let nodes: Vec<(NodeId, usize)> = self
            .jobs
            .nodes()
            .into_iter()
            .filter(|(n, _)| !self.suspended.contains_key(n))
            .collect();
        let now = self.now();
        let mut actions = Vec::new();
        let current: BTreeSet<NodeId> = nodes.iter().map(|(n, _)| n.clone()).collect();
        for gone in self.up.difference(&current) {
            tracing::info!(job = %self.id, node = %gone, "a node running the job's tasks is down");
            actions.extend(self.state.on(Event::NodeDown { node: gone.clone() }, now));
        }
        for (node, slots) in nodes {
            actions.extend(self.state.on(Event::NodeUp { node, slots }, now));
        }
        self.up = current;
        actions
    }

    fn start(&mut self, tasks: &mut JoinSet<Report>, task: TaskId, attempt: u32, node: NodeId) {
        let id = AttemptId {
            token: self.token,
            n: attempt,
        };
        self.attempts.insert((task, attempt), id);
        *self.record.tasks_by_node.entry(node.clone()).or_default() += 1;
        let program = self.spec.program();
        let request = match task {
            TaskId::Map(t) => Request::Map {
                job: self.id,
                task: t,
                attempt: id,
                program,
                chunk: self.spec.chunks[t],
                reducers: self.spec.reducers,
            },
            TaskId::Reduce(p) => Request::Reduce {
                job: self.id,
                partition: p,
                attempt: id,
                program,
                sources: self
                    .state
                    .map_outputs()
                    .into_iter()
                    .map(|(t, a, node)| Source {
                        task: t,
                        attempt: self.attempts[&(TaskId::Map(t), a)],
                        node,
                    })
                    .collect(),
            },
        };
        let jobs = self.jobs.clone();
        tasks.spawn(async move {
            let began = Instant::now();
            let answer = order(&jobs, &node, request).await;
            Report {
                task,
                attempt,
                node,
                answer,
                took: began.elapsed(),
            }
        });
    }

    /// Handles an attempt's report: if it is the attempt the job uses, queues its commit (a
    /// map's or a partition's output, both written in the background), and tells the state
    /// machine.
    fn report(&mut self, r: Report) -> Vec<Action> {
        let now = self.now();
        tracing::debug!(job = %self.id, task = ?r.task, attempt = r.attempt, node = %r.node, took_ms = r.took.as_millis() as u64, at_ms = now, "attempt reported");
        let done = super::state::Event::Done {
            task: r.task,
            attempt: r.attempt,
        };
        let current = self.state.is_current(&done);
        let phase = match r.task {
            TaskId::Map(_) => "map",
            TaskId::Reduce(_) => "reduce",
        };
        let event = match r.answer {
            Ok(Response::Mapped(m)) => {
                self.jobs.metrics.job_task(phase, "done");
                self.jobs.metrics.job_task_took(phase, r.took);
                let TaskId::Map(task) = r.task else {
                    return self.state.on(mismatch(&r.task, r.attempt, &r.node), now);
                };
                if current {
                    let commit = MapCommit {
                        attempt: self.attempts[&(r.task, r.attempt)],
                        node: r.node.clone(),
                    };
                    self.unrecorded.push(Write {
                        key: ledger::map_key(self.id, task),
                        value: Some(ledger::encode(&commit)),
                        expect: None,
                    });
                    self.record.mapped_bytes += self.spec.chunks[task].size;
                    self.record.shuffled_bytes += m.shuffled;
                    self.record.spilled_bytes += m.spilled;
                }
                done
            }
            Ok(Response::Reduced(out)) => {
                self.jobs.metrics.job_task(phase, "done");
                self.jobs.metrics.job_task_took(phase, r.took);
                let TaskId::Reduce(p) = r.task else {
                    return self.state.on(mismatch(&r.task, r.attempt, &r.node), now);
                };
                if current {
                    let top: Vec<OutputRecord> =
                        serde_json::from_slice(&out.top).unwrap_or_default();
                    let commit = ReduceCommit {
                        attempt: self.attempts[&(r.task, r.attempt)],
                        segments: out.segments,
                        records: out.records,
                        top,
                    };
                    self.uncommitted.push((p, commit));
                    self.record.fetched_bytes += out.fetched;
                }
                done
            }
            Ok(Response::Failed { error, guest, lost }) => {
                self.jobs.metrics.job_task(phase, "failed");
                match r.task {
                    TaskId::Reduce(partition) if !lost.is_empty() => {
                        tracing::info!(job = %self.id, partition, maps = ?lost, %error, "map output lost; running the maps again");
                        Event::Lost {
                            partition,
                            attempt: r.attempt,
                            maps: lost,
                            error,
                        }
                    }
                    task => {
                        tracing::info!(job = %self.id, ?task, node = %r.node, %error, guest, "an attempt failed");
                        Event::Failed {
                            task,
                            attempt: r.attempt,
                            error,
                            guest,
                        }
                    }
                }
            }
            Ok(other) => {
                self.jobs.metrics.job_task(phase, "failed");
                Event::Failed {
                    task: r.task,
                    attempt: r.attempt,
                    error: format!("node {} answered {other:?}", r.node),
                    guest: false,
                }
            }
            Err(error) => {
                self.jobs.metrics.job_task(phase, "failed");
                tracing::info!(job = %self.id, task = ?r.task, node = %r.node, %error, "an attempt was lost; the node gets no task for a while");
                // The node leaves the job first (its attempts fail, the map output it holds
                // is lost), so that the retry goes elsewhere.
                let mut actions = Vec::new();
                if r.node != *self.jobs.worker.me() {
                    self.suspended.insert(r.node, Instant::now());
                    actions = self.members_changed();
                }
                actions.extend(self.state.on(
                    Event::Failed {
                        task: r.task,
                        attempt: r.attempt,
                        error,
                        guest: false,
                    },
                    now,
                ));
                return actions;
            }
        };
        self.state.on(event, now)
    }

    /// Commits `writes` under the job's lock; a refusal means another node coordinates now.
    async fn commit(&self, writes: Vec<Write>) -> Result<(), Stop> {
        let done = fenced(self.jobs, self.id, self.token, writes).await;
        counted(self.jobs, done)
    }

    /// Waits for the commits being written: the job's end removes the map commits and none
    /// may land after it, and it counts every partition's output; returns `stop` unless a
    /// commit was refused or failed.
    async fn settle(
        &mut self,
        recording: &mut JoinSet<Result<bool, ConsensusError>>,
        committing: &mut JoinSet<Result<ReduceCommit, Stop>>,
        stop: Stop,
    ) -> Stop {
        let mut outcome = Ok(());
        while let Some(done) = recording.join_next().await {
            let done = done.unwrap_or_else(|e| Err(ConsensusError::Failed(e.to_string())));
            outcome = outcome.and(counted(self.jobs, done));
        }
        while let Some(done) = committing.join_next().await {
            outcome = outcome.and(self.committed(done));
        }
        match outcome {
            Ok(()) => stop,
            Err(leave) => leave,
        }
    }

    /// Counts a partition's committed output in the job's record.
    fn committed(
        &mut self,
        done: Result<Result<ReduceCommit, Stop>, tokio::task::JoinError>,
    ) -> Result<(), Stop> {
        let commit =
            done.map_err(|e| Stop::Leave(format!("a reducer's commit panicked: {e}")))??;
        self.record.output_records += commit.records;
        self.top.add(commit.top);
        Ok(())
    }

    /// Shows the live record.
    fn publish(&mut self) {
        let progress = self.state.progress();
        let elapsed = super::unix_ms().saturating_sub(self.spec.submitted_ms);
        if progress.maps_done == progress.maps_total && self.record.map_ms.is_none() {
            self.record.map_ms = Some(elapsed);
        }
        self.record.progress = progress;
        self.record.elapsed_ms = elapsed;
        self.record.top = self.top.best();
        if let Some(r) = self
            .jobs
            .live
            .lock()
            .expect("not poisoned")
            .get_mut(&self.id)
        {
            *r = self.record.clone();
        }
    }

    /// Records the job's end, lets go of its lock, and tells every node to drop its map
    /// output.
    async fn end(&mut self, end: Result<(), String>) {
        tracing::debug!(job = %self.id, at_ms = self.now(), "job ending");
        self.publish();
        let mut record = self.record.clone();
        match &end {
            Ok(()) => record.status = JobStatus::Succeeded,
            Err(e) if e == CANCELLED => {
                record.status = JobStatus::Cancelled;
                record.error = Some(e.clone());
            }
            Err(e) => {
                record.status = JobStatus::Failed;
                record.error = Some(e.clone());
            }
        }
        let mut writes = vec![Write {
            key: ledger::end_key(self.id),
            value: Some(ledger::encode(&record)),
            expect: None,
        }];
        writes.extend((0..self.spec.chunks.len()).map(|t| Write {
            key: ledger::map_key(self.id, t),
            value: None,
            expect: None,
        }));
        if let Err(Stop::Leave(why) | Stop::End(Err(why))) = self.commit(writes).await {
            tracing::warn!(job = %self.id, reason = %why, "could not record the job's end");
            return;
        }
        self.jobs.metrics.job(match record.status {
            JobStatus::Succeeded => "succeeded",
            JobStatus::Cancelled => "cancelled",
            _ => "failed",
        });
        match &end {
            Ok(()) => {
                tracing::info!(job = %self.id, function = %self.spec.function, records = record.output_records, elapsed_ms = record.elapsed_ms, "job succeeded")
            }
            Err(e) => {
                tracing::warn!(job = %self.id, function = %self.spec.function, error = %e, "job failed")
            }
        }
        if let Some(r) = self
            .jobs
            .live
            .lock()
            .expect("not poisoned")
            .get_mut(&self.id)
        {
            *r = record;
        }
        let key = ledger::lock_key(self.id);
        if let Err(e) = self.jobs.locks.release(&key, self.token).await {
            tracing::debug!(job = %self.id, error = %e, "could not release the job's lock");
        }
        super::forget_all(self.jobs, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(names: &[&str]) -> Vec<NodeId> {
        names
            .iter()
            .map(|n| n.parse().expect("a node name"))
            .collect()
    }

    #[test]
    fn reducers_spread_over_the_nodes_in_ring_order() {
        let ring = nodes(&["b", "c", "a"]);
        let owners = reducer_owners(&ring, 4);
        assert_eq!(
            owners,
            vec![nodes(&["b"]), nodes(&["c"]), nodes(&["a"]), nodes(&["b"])]
        );
        let mut per_node = HashMap::new();
        for o in reducer_owners(&ring, 30) {
            *per_node.entry(o[0].clone()).or_insert(0) += 1;
        }
        assert_eq!(
            per_node.values().copied().collect::<BTreeSet<_>>(),
            BTreeSet::from([10])
        );
        assert_eq!(reducer_owners(&[], 2), vec![Vec::<NodeId>::new(); 2]);
    }
}
