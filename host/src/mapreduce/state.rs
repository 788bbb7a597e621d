//! The pure state machine of one job: which map and reduce tasks to start, retries, and when the
//! job is done. No I/O and no clock; the driver feeds it events and carries out its actions.

use serde::{Deserialize, Serialize};

/// Attempts per task before the job fails. Guest traps are usually deterministic, so this is low.
pub const MAX_ATTEMPTS: u32 = 2;

/// What happened to a task attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A map attempt finished and its output is held by the driver.
    MapDone { task: usize, attempt: u32 },
    /// A map attempt failed.
    MapFailed {
        task: usize,
        attempt: u32,
        error: String,
    },
    /// A reduce attempt finished and its output is committed.
    ReduceDone { partition: u32, attempt: u32 },
    /// A reduce attempt failed.
    ReduceFailed {
        partition: u32,
        attempt: u32,
        error: String,
    },
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Run map task `task` (chunk index) as attempt `attempt`.
    StartMap { task: usize, attempt: u32 },
    /// Run reducer `partition` as attempt `attempt`.
    StartReduce { partition: u32, attempt: u32 },
    /// Every reducer committed.
    Succeed,
    /// The job failed for good.
    Fail(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Task {
    Pending { attempts: u32 },
    Running { attempt: u32 },
    Done,
}

/// Counts for progress displays.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Map tasks in the job.
    pub maps_total: usize,
    /// Map tasks finished.
    pub maps_done: usize,
    /// Reduce tasks in the job.
    pub reduces_total: usize,
    /// Reduce tasks finished.
    pub reduces_done: usize,
    /// Attempts that failed and were retried.
    pub retries: u32,
}

/// One job's task bookkeeping.
#[derive(Debug)]
pub struct JobState {
    maps: Vec<Task>,
    reduces: Vec<Task>,
    parallelism: usize,
    running: usize,
    retries: u32,
    finished: bool,
}

impl JobState {
    /// A job with `maps` map tasks and `reducers` partitions, running at most `parallelism`
    /// tasks at once.
    pub fn new(maps: usize, reducers: u32, parallelism: usize) -> Self {
        JobState {
            maps: vec![Task::Pending { attempts: 0 }; maps],
            reduces: vec![Task::Pending { attempts: 0 }; reducers.max(1) as usize],
            parallelism: parallelism.max(1),
            running: 0,
            retries: 0,
            finished: false,
        }
    }

    /// The first actions.
    pub fn start(&mut self) -> Vec<Action> {
        self.schedule()
    }

    /// Applies an event and returns what to do next. Events for attempts that are not running
    /// (late or duplicate reports) are ignored.
    pub fn on(&mut self, event: Event) -> Vec<Action> {
        if self.finished {
            return vec![];
        }
        let (tasks, index, attempt, error) = match event {
            Event::MapDone { task, attempt } => (&mut self.maps, task, attempt, None),
            Event::MapFailed {
                task,
                attempt,
                error,
            } => (&mut self.maps, task, attempt, Some(error)),
            Event::ReduceDone { partition, attempt } => {
                (&mut self.reduces, partition as usize, attempt, None)
            }
            Event::ReduceFailed {
                partition,
                attempt,
                error,
            } => (&mut self.reduces, partition as usize, attempt, Some(error)),
        };
        let Some(slot) = tasks.get_mut(index) else {
            return vec![];
        };
        if *slot != (Task::Running { attempt }) {
            return vec![];
        }
        self.running -= 1;
        match error {
            None => *slot = Task::Done,
            Some(error) if attempt + 1 >= MAX_ATTEMPTS => {
                self.finished = true;
                return vec![Action::Fail(error)];
            }
            Some(_) => {
                *slot = Task::Pending {
                    attempts: attempt + 1,
                };
                self.retries += 1;
            }
        }
        self.schedule()
    }

    /// Whether `event` reports the attempt that is running (only then is its output used).
    pub fn is_current(&self, event: &Event) -> bool {
        let (tasks, index, attempt) = match *event {
            Event::MapDone { task, attempt } | Event::MapFailed { task, attempt, .. } => {
                (&self.maps, task, attempt)
            }
            Event::ReduceDone { partition, attempt }
            | Event::ReduceFailed {
                partition, attempt, ..
            } => (&self.reduces, partition as usize, attempt),
        };
        !self.finished && tasks.get(index) == Some(&Task::Running { attempt })
    }

    fn schedule(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        let maps_done = self.maps.iter().all(|t| *t == Task::Done);
        let (tasks, is_map) = if maps_done {
            (&mut self.reduces, false)
        } else {
            (&mut self.maps, true)
        };
        for (i, t) in tasks.iter_mut().enumerate() {
            if self.running >= self.parallelism {
                break;
            }
            if let Task::Pending { attempts } = *t {
                *t = Task::Running { attempt: attempts };
                self.running += 1;
                actions.push(if is_map {
                    Action::StartMap {
                        task: i,
                        attempt: attempts,
                    }
                } else {
                    Action::StartReduce {
                        partition: i as u32,
                        attempt: attempts,
                    }
                });
            }
        }
        if maps_done && self.reduces.iter().all(|t| *t == Task::Done) {
            self.finished = true;
            actions.push(Action::Succeed);
        }
        actions
    }

    /// Counts for progress displays.
    pub fn progress(&self) -> Progress {
        let done = |ts: &[Task]| ts.iter().filter(|t| **t == Task::Done).count();
        Progress {
            maps_total: self.maps.len(),
            maps_done: done(&self.maps),
            reduces_total: self.reduces.len(),
            reduces_done: done(&self.reduces),
            retries: self.retries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    #[test]
    fn maps_then_reduces_within_parallelism() {
        let mut s = JobState::new(3, 2, 2);
        assert_eq!(
            s.start(),
            vec![
                StartMap {
                    task: 0,
                    attempt: 0
                },
                StartMap {
                    task: 1,
                    attempt: 0
                }
            ]
        );
        assert_eq!(
            s.on(Event::MapDone {
                task: 1,
                attempt: 0
            }),
            vec![StartMap {
                task: 2,
                attempt: 0
            }]
        );
        assert_eq!(
            s.on(Event::MapDone {
                task: 0,
                attempt: 0
            }),
            vec![]
        );
        // Reducers start only once every map is done.
        assert_eq!(
            s.on(Event::MapDone {
                task: 2,
                attempt: 0
            }),
            vec![
                StartReduce {
                    partition: 0,
                    attempt: 0
                },
                StartReduce {
                    partition: 1,
                    attempt: 0
                }
            ]
        );
        assert_eq!(
            s.on(Event::ReduceDone {
                partition: 0,
                attempt: 0
            }),
            vec![]
        );
        assert_eq!(s.progress().reduces_done, 1);
        assert_eq!(
            s.on(Event::ReduceDone {
                partition: 1,
                attempt: 0
            }),
            vec![Succeed]
        );
        assert_eq!(
            s.on(Event::ReduceDone {
                partition: 1,
                attempt: 0
            }),
            vec![]
        );
    }

    #[test]
    fn failures_are_retried_then_fail_the_job() {
        let mut s = JobState::new(1, 1, 4);
        s.start();
        let err = |attempt| Event::MapFailed {
            task: 0,
            attempt,
            error: "trap".into(),
        };
        assert_eq!(
            s.on(err(0)),
            vec![StartMap {
                task: 0,
                attempt: 1
            }]
        );
        // A late report of the old attempt changes nothing.
        assert_eq!(
            s.on(Event::MapDone {
                task: 0,
                attempt: 0
            }),
            vec![]
        );
        assert_eq!(s.on(err(1)), vec![Fail("trap".into())]);
        assert_eq!(s.progress().retries, 1);
    }

    #[test]
    fn empty_input_still_runs_reducers() {
        let mut s = JobState::new(0, 1, 1);
        assert_eq!(
            s.start(),
            vec![StartReduce {
                partition: 0,
                attempt: 0
            }]
        );
        assert_eq!(
            s.on(Event::ReduceDone {
                partition: 0,
                attempt: 0
            }),
            vec![Succeed]
        );
    }

    #[test]
    fn out_of_range_events_are_ignored() {
        let mut s = JobState::new(1, 1, 1);
        s.start();
        assert_eq!(
            s.on(Event::MapDone {
                task: 7,
                attempt: 0
            }),
            vec![]
        );
        assert_eq!(
            s.on(Event::ReduceDone {
                partition: 0,
                attempt: 0
            }),
            vec![]
        );
    }
}
