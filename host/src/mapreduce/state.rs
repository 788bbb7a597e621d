//! The pure state machine of one job: which task attempt runs on which node, retries,
//! speculative copies, map output lost with its node, and when the job is done. No I/O and no
//! clock: the coordinator feeds it events with the time, and carries out its actions.
//!
//! Scheduling follows delay scheduling (Zaharia et al., EuroSys 2010): a node with a free slot
//! takes the first pending task it holds the input of; a task that has waited
//! [`Schedule::locality_wait_ms`] for such a node runs on any node with a free slot.
//! Stragglers get one speculative copy on another node once [`Schedule::speculation_quantile`]
//! of the phase's tasks are done, when they have run [`Schedule::speculation_multiplier`] times
//! the median of the finished ones (Spark's `spark.speculation.*` defaults). The first attempt
//! of a task to finish is the one used; a later one is ignored.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// Failed attempts of one task before the job fails (Spark's `spark.task.maxFailures`).
pub const MAX_ATTEMPTS: u32 = 4;

/// Failed attempts of one task that failed in the guest (a trap, a limit, malformed output)
/// before the job fails: guest failures are usually deterministic, so this is lower.
pub const MAX_GUEST_FAILURES: u32 = 2;

/// Attempts of one task lost with their node (found down, or not reachable) before the job
/// fails. They do not count as failures of the task (as Spark does not count an executor
/// lost for reasons outside the application), but a task cannot be lost without end.
pub const MAX_LOST: u32 = 16;

/// How tasks are placed. Times are in milliseconds of the coordinator's monotonic clock.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    /// How long a task waits for a free slot on a node that holds its input (or owns its
    /// partition) before it runs anywhere. Default 3 s (Spark's `spark.locality.wait`).
    pub locality_wait_ms: u64,
    /// The share of a phase's tasks that must be done before stragglers get speculative
    /// copies. Default 0.75 (`spark.speculation.quantile`).
    pub speculation_quantile: f64,
    /// How many times the median duration of the phase's finished tasks a task must have run
    /// to get a speculative copy. Default 1.5 (`spark.speculation.multiplier`).
    pub speculation_multiplier: f64,
    /// Tasks younger than this never get a copy. Default 100 ms
    /// (`spark.speculation.minTaskRuntime`).
    pub speculation_min_ms: u64,
}

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            locality_wait_ms: 3_000,
            speculation_quantile: 0.75,
            speculation_multiplier: 1.5,
            speculation_min_ms: 100,
        }
    }
}

/// Which task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskId {
    /// Map task over input chunk `n`.
    Map(usize),
    /// Reducer of partition `n`.
    Reduce(u32),
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An attempt finished; a map's output is held by its node, a reducer's is committed.
    Done {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
    },
    /// An attempt failed.
    Failed {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
        /// Why.
        error: String,
        /// Whether the guest failed (a trap, a limit, malformed output), not the node.
        guest: bool,
    },
    /// A reducer could not read the output of these map tasks (their node lost it): they run
    /// again, and so does the reducer, which is not counted as a failure.
    Lost {
        /// The reducer.
        partition: u32,
        /// Its attempt.
        attempt: u32,
        /// The map tasks whose output is gone.
        maps: Vec<usize>,
        /// What the reducer saw.
        error: String,
    },
    /// A node can run `slots` tasks at once (joined, or its capacity changed).
    NodeUp {
        /// The node.
        node: NodeId,
        /// How many of this job's tasks it may run at once.
        slots: usize,
    },
    /// A node is down: its attempts failed, and the map output it held is lost.
    NodeDown {
        /// The node.
        node: NodeId,
    },
    /// Time passed (for locality waits and speculation).
    Tick,
}

/// What the coordinator must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run `task` as `attempt` on `node`.
    Start {
        /// The task.
        task: TaskId,
        /// The attempt.
        attempt: u32,
        /// Where.
        node: NodeId,
        /// Whether the node holds the task's input or owns its partition.
        local: bool,
        /// Whether another attempt of the task is still running.
        speculative: bool,
    },
    /// Every reducer committed.
    Succeed,
    /// The job failed for good.
    Fail(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Attempt {
    id: u32,
    node: NodeId,
    started: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    /// Waiting for a slot, since the given time.
    Pending {
        since: u64,
    },
    Running {
        attempts: Vec<Attempt>,
    },
    /// Finished by `attempt` on `node` (`None`: a reducer committed before this
    /// coordinator), in `took` ms (`None`: recorded before this coordinator).
    Done {
        attempt: u32,
        node: Option<NodeId>,
        took: Option<u64>,
    },
}

#[derive(Debug, Clone)]
struct Task {
    phase: Phase,
    /// Nodes that hold the input (maps) or own the partition (reducers), best first.
    preferred: Vec<NodeId>,
    next_attempt: u32,
    failures: u32,
    guest_failures: u32,
    lost: u32,
    /// Copies still running after another attempt of the task finished: they keep their
    /// node's slot until they report, or their node goes.
    leftovers: Vec<Attempt>,
}

impl Task {
    fn new(preferred: Vec<NodeId>) -> Task {
        Task {
            phase: Phase::Pending { since: 0 },
            preferred,
            next_attempt: 0,
            failures: 0,
            guest_failures: 0,
            lost: 0,
            leftovers: Vec::new(),
        }
    }

    fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }
}

#[derive(Debug, Clone, Copy)]
struct Slots {
    slots: usize,
    running: usize,
}

/// Counts for progress displays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Map tasks in the job.
    pub maps_total: usize,
    /// Map tasks finished (whose output is still held).
    pub maps_done: usize,
    /// Reduce tasks in the job.
    pub reduces_total: usize,
    /// Reduce tasks finished.
    pub reduces_done: usize,
    /// Attempts that failed (or were lost with their node) and were retried.
    pub retries: u32,
    /// Map attempts started on a node that held their chunk.
    #[serde(default)]
    pub maps_local: u32,
    /// Map attempts started.
    #[serde(default)]
    pub maps_started: u32,
    /// Speculative copies started.
    #[serde(default)]
    pub speculative: u32,
    /// Map tasks run again because the node holding their output went down.
    #[serde(default)]
    pub maps_recomputed: u32,
}

/// One job's task bookkeeping.
#[derive(Debug)]
pub struct JobState {
    maps: Vec<Task>,
    reduces: Vec<Task>,
    nodes: BTreeMap<NodeId, Slots>,
    schedule: Schedule,
    now: u64,
    progress: Progress,
    finished: bool,
    /// When the reduce phase began.
    reduce_phase: Option<u64>,
}

impl JobState {
    /// A job whose map task `i` prefers the nodes `maps[i]` (those holding its chunk) and
    /// whose reducer `p` prefers `reduces[p]` (the partition's owners).
    pub fn new(maps: Vec<Vec<NodeId>>, reduces: Vec<Vec<NodeId>>, schedule: Schedule) -> Self {
        let reduces = if reduces.is_empty() {
            vec![vec![]]
        } else {
            reduces
        };
        JobState {
            progress: Progress {
                maps_total: maps.len(),
                reduces_total: reduces.len(),
                ..Progress::default()
            },
            maps: maps.into_iter().map(Task::new).collect(),
            reduces: reduces.into_iter().map(Task::new).collect(),
            nodes: BTreeMap::new(),
            schedule,
            now: 0,
            finished: false,
            reduce_phase: None,
        }
    }

    /// Marks map `task` as done by `attempt` on `node` before the job (re)starts: a
    /// coordinator taking over from one that died starts from the recorded commits.
    pub fn restore_map(&mut self, task: usize, attempt: u32, node: NodeId) {
        if let Some(t) = self.maps.get_mut(task) {
            t.phase = Phase::Done {
                attempt,
                node: Some(node),
                took: None,
            };
            t.next_attempt = t.next_attempt.max(attempt + 1);
        }
    }

    /// Marks reducer `partition` as committed before the job (re)starts.
    pub fn restore_reduce(&mut self, partition: u32) {
        if let Some(t) = self.reduces.get_mut(partition as usize) {
            t.phase = Phase::Done {
                attempt: 0,
                node: None,
                took: None,
            };
        }
    }

    /// Applies an event at time `now` (ms) and returns what to do next. Reports of attempts
    /// that are not running (late, duplicate, or of a task already done) change nothing.
    pub fn on(&mut self, event: Event, now: u64) -> Vec<Action> {
        self.now = self.now.max(now);
        if self.finished {
            return vec![];
        }
        match event {
            Event::Done { task, attempt } => {
                let now = self.now;
                if self.end_leftover(task, attempt) {
                    return self.schedule();
                }
                let Some(t) = self.task_mut(task) else {
                    return vec![];
                };
                let Phase::Running { attempts } = &t.phase else {
                    return vec![];
                };
                let Some(a) = attempts.iter().find(|a| a.id == attempt).cloned() else {
                    return vec![];
                };
                let others: Vec<Attempt> = attempts
                    .iter()
                    .filter(|o| o.id != attempt)
                    .cloned()
                    .collect();
                t.phase = Phase::Done {
                    attempt,
                    node: Some(a.node.clone()),
                    took: Some(now.saturating_sub(a.started)),
                };
                // Copies still running keep their slots until they report or their node goes.
                t.leftovers.extend(others);
                self.release(&a.node);
            }
            Event::Failed {
                task,
                attempt,
                error,
                guest,
            } => {
                if self.end_leftover(task, attempt) {
                    return self.schedule();
                }
                if let Some(fail) = self.fail_attempt(task, attempt, error, guest) {
                    return fail;
                }
            }
            Event::Lost {
                partition,
                attempt,
                maps,
                error,
            } => {
                let task = TaskId::Reduce(partition);
                if !self.is_running(task, attempt) {
                    return vec![];
                }
                // Maps already running again (their node went down meanwhile) count as lost too.
                let mut lost_any = false;
                for m in maps {
                    let Some(t) = self.maps.get_mut(m) else {
                        continue;
                    };
                    lost_any = true;
                    if t.is_done() {
                        t.phase = Phase::Pending { since: self.now };
                        self.progress.maps_recomputed += 1;
                    }
                }
                if !lost_any {
                    // No such map task: count it as an ordinary failure.
                    if let Some(fail) = self.fail_attempt(task, attempt, error, false) {
                        return fail;
                    }
                } else {
                    self.drop_attempt(task, attempt);
                }
            }
            Event::NodeUp { node, slots } => {
                let entry = self.nodes.entry(node).or_insert(Slots {
                    slots: 0,
                    running: 0,
                });
                entry.slots = slots;
            }
            Event::NodeDown { node } => {
                if self.nodes.remove(&node).is_none() {
                    return self.schedule();
                }
                let now = self.now;
                let reduces_left = self.reduces.iter().any(|t| !t.is_done());
                let mut failed = Vec::new();
                for t in self.maps.iter_mut().chain(self.reduces.iter_mut()) {
                    t.leftovers.retain(|a| a.node != node);
                }
                for (i, t) in self.maps.iter_mut().enumerate() {
                    match &t.phase {
                        Phase::Running { attempts } => {
                            for a in attempts.iter().filter(|a| a.node == node) {
                                failed.push((TaskId::Map(i), a.id));
                            }
                        }
                        Phase::Done { node: Some(n), .. } if *n == node && reduces_left => {
                            t.phase = Phase::Pending { since: now };
                            self.progress.maps_recomputed += 1;
                        }
                        _ => {}
                    }
                }
                for (p, t) in self.reduces.iter().enumerate() {
                    if let Phase::Running { attempts } = &t.phase {
                        for a in attempts.iter().filter(|a| a.node == node) {
                            failed.push((TaskId::Reduce(p as u32), a.id));
                        }
                    }
                }
                for (task, attempt) in failed {
                    if let Some(fail) = self.lose_attempt(task, attempt, &node) {
                        return fail;
                    }
                }
            }
            Event::Tick => {}
        }
        self.schedule()
    }

    fn task_mut(&mut self, task: TaskId) -> Option<&mut Task> {
        match task {
            TaskId::Map(i) => self.maps.get_mut(i),
            TaskId::Reduce(p) => self.reduces.get_mut(p as usize),
        }
    }

    fn task(&self, task: TaskId) -> Option<&Task> {
        match task {
            TaskId::Map(i) => self.maps.get(i),
            TaskId::Reduce(p) => self.reduces.get(p as usize),
        }
    }

    fn is_running(&self, task: TaskId, attempt: u32) -> bool {
        self.task(task).is_some_and(|t| match &t.phase {
            Phase::Running { attempts } => attempts.iter().any(|a| a.id == attempt),
            _ => false,
        })
    }

    fn release(&mut self, node: &NodeId) {
        if let Some(s) = self.nodes.get_mut(node) {
            s.running = s.running.saturating_sub(1);
        }
    }

    /// Removes a running attempt (its slot is free again); the task is pending once no
    /// attempt of it runs. Returns whether the attempt was running.
    fn drop_attempt(&mut self, task: TaskId, attempt: u32) -> bool {
        let now = self.now;
        let Some(t) = self.task_mut(task) else {
            return false;
        };
        let Phase::Running { attempts } = &mut t.phase else {
            return false;
        };
        let Some(i) = attempts.iter().position(|a| a.id == attempt) else {
            return false;
        };
        let a = attempts.remove(i);
        if attempts.is_empty() {
            t.phase = Phase::Pending { since: now };
        }
        self.release(&a.node);
        true
    }

    /// Ends a copy that lost the race to another attempt of its task; `false` if the
    /// attempt is not one.
    fn end_leftover(&mut self, task: TaskId, attempt: u32) -> bool {
        let Some(t) = self.task_mut(task) else {
            return false;
        };
        let Some(i) = t.leftovers.iter().position(|a| a.id == attempt) else {
            return false;
        };
        let a = t.leftovers.remove(i);
        self.release(&a.node);
        true
    }

    /// An attempt lost with its node: not counted as a failure of the task, up to
    /// [`MAX_LOST`].
    fn lose_attempt(&mut self, task: TaskId, attempt: u32, node: &NodeId) -> Option<Vec<Action>> {
        if !self.drop_attempt(task, attempt) {
            return None;
        }
        let t = self.task_mut(task).expect("the attempt was running");
        t.lost += 1;
        let lost = t.lost;
        self.progress.retries += 1;
        if lost >= MAX_LOST {
            self.finished = true;
            return Some(vec![Action::Fail(format!(
                "{task:?} was lost with its node {MAX_LOST} times, the last time on {node}"
            ))]);
        }
        None
    }

    fn fail_attempt(
        &mut self,
        task: TaskId,
        attempt: u32,
        error: String,
        guest: bool,
    ) -> Option<Vec<Action>> {
        if !self.drop_attempt(task, attempt) {
            return None;
        }
        let t = self.task_mut(task).expect("the attempt was running");
        t.failures += 1;
        t.guest_failures += u32::from(guest);
        if t.failures >= MAX_ATTEMPTS || t.guest_failures >= MAX_GUEST_FAILURES {
            self.finished = true;
            return Some(vec![Action::Fail(error)]);
        }
        self.progress.retries += 1;
        None
    }

    fn schedule(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        // Every reducer committed: the job's output is complete, whatever maps run again.
        if self.reduces.iter().all(Task::is_done) {
            self.finished = true;
            return vec![Action::Succeed];
        }
        let maps_done = self.maps.iter().all(Task::is_done);
        let is_map = !maps_done;
        // Reducers wait for their owners from when the map phase ends, not from the start.
        if maps_done && self.reduce_phase.is_none() {
            self.reduce_phase = Some(self.now);
            let now = self.now;
            for t in &mut self.reduces {
                if let Phase::Pending { since } = &mut t.phase {
                    *since = (*since).max(now);
                }
            }
        }
        // Rounds of one task per node with a free slot, most free slots first (ties by
        // name), so work spreads over the nodes.
        loop {
            let mut free: Vec<(usize, NodeId)> = self
                .nodes
                .iter()
                .filter(|(_, s)| s.running < s.slots)
                .map(|(n, s)| (s.slots - s.running, n.clone()))
                .collect();
            free.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
            let mut started = false;
            for (_, node) in free {
                if let Some(action) = self.next_for(&node, is_map) {
                    actions.push(action);
                    started = true;
                }
            }
            if !started {
                break;
            }
        }
        actions
    }

    /// The task `node` should take now: a pending task whose input it holds, else one that
    /// has waited long enough (or that no live node holds), else a speculative copy.
    fn next_for(&mut self, node: &NodeId, is_map: bool) -> Option<Action> {
        let (now, wait, nodes) = (self.now, self.schedule.locality_wait_ms, &self.nodes);
        let tasks = if is_map { &self.maps } else { &self.reduces };
        let local = tasks
            .iter()
            .position(|t| matches!(t.phase, Phase::Pending { .. }) && t.preferred.contains(node));
        let chosen = local.map(|i| (i, true)).or_else(|| {
            tasks
                .iter()
                .position(|t| {
                    let Phase::Pending { since } = t.phase else {
                        return false;
                    };
                    now.saturating_sub(since) >= wait
                        || !t.preferred.iter().any(|n| nodes.contains_key(n))
                })
                .map(|i| (i, false))
        });
        let id = |i: usize| {
            if is_map {
                TaskId::Map(i)
            } else {
                TaskId::Reduce(i as u32)
            }
        };
        if let Some((i, local)) = chosen {
            return Some(self.start(id(i), node.clone(), local, false));
        }
        let i = self.straggler(node, is_map)?;
        let local = self.task(id(i)).expect("exists").preferred.contains(node);
        Some(self.start(id(i), node.clone(), local, true))
    }

    /// Starts `task` on `node`.
    fn start(&mut self, task: TaskId, node: NodeId, local: bool, speculative: bool) -> Action {
        let now = self.now;
        let t = self.task_mut(task).expect("scheduled tasks exist");
        let attempt = t.next_attempt;
        t.next_attempt += 1;
        let a = Attempt {
            id: attempt,
            node: node.clone(),
            started: now,
        };
        match &mut t.phase {
            Phase::Running { attempts } => attempts.push(a),
            phase => *phase = Phase::Running { attempts: vec![a] },
        }
        self.nodes.get_mut(&node).expect("listed").running += 1;
        if let TaskId::Map(_) = task {
            self.progress.maps_started += 1;
            self.progress.maps_local += u32::from(local);
        }
        self.progress.speculative += u32::from(speculative);
        Action::Start {
            task,
            attempt,
            node,
            local,
            speculative,
        }
    }

    /// The task of the phase that most deserves a speculative copy on `node`, if one does:
    /// once enough of the phase is done, the longest-running task with a single attempt, on
    /// another node, that has run long enough.
    fn straggler(&self, node: &NodeId, is_map: bool) -> Option<usize> {
        let tasks = if is_map { &self.maps } else { &self.reduces };
        let mut took: Vec<u64> = tasks
            .iter()
            .filter_map(|t| match t.phase {
                Phase::Done { took, .. } => took,
                _ => None,
            })
            .collect();
        let done = tasks.iter().filter(|t| t.is_done()).count();
        if took.is_empty()
            || (done as f64) < self.schedule.speculation_quantile * tasks.len() as f64
        {
            return None;
        }
        took.sort_unstable();
        let median = took[took.len() / 2];
        let threshold = ((median as f64 * self.schedule.speculation_multiplier) as u64)
            .max(self.schedule.speculation_min_ms);
        let now = self.now;
        tasks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match &t.phase {
                Phase::Running { attempts }
                    if attempts.len() == 1
                        && attempts[0].node != *node
                        && now.saturating_sub(attempts[0].started) >= threshold =>
                {
                    Some((i, attempts[0].started))
                }
                _ => None,
            })
            .min_by_key(|(_, started)| *started)
            .map(|(i, _)| i)
    }

    /// Whether `event` reports an attempt that is running (only then is its output used).
    pub fn is_current(&self, event: &Event) -> bool {
        let (task, attempt) = match event {
            Event::Done { task, attempt } | Event::Failed { task, attempt, .. } => {
                (*task, *attempt)
            }
            Event::Lost {
                partition, attempt, ..
            } => (TaskId::Reduce(*partition), *attempt),
            _ => return false,
        };
        !self.finished && self.is_running(task, attempt)
    }

    /// Where each finished map task's output is: (task, attempt, node), in task order.
    pub fn map_outputs(&self) -> Vec<(usize, u32, NodeId)> {
        self.maps
            .iter()
            .enumerate()
            .filter_map(|(i, t)| match &t.phase {
                Phase::Done {
                    attempt,
                    node: Some(node),
                    ..
                } => Some((i, *attempt, node.clone())),
                _ => None,
            })
            .collect()
    }

    /// Counts for progress displays.
    pub fn progress(&self) -> Progress {
        Progress {
            maps_done: self.maps.iter().filter(|t| t.is_done()).count(),
            reduces_done: self.reduces.iter().filter(|t| t.is_done()).count(),
            ..self.progress
        }
    }
}

#[cfg(test)]
mod tests;
