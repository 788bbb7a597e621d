//! What a node's jobs are configured with.

use serde::{Deserialize, Serialize};

#[cfg(doc)]
use super::spill;

/// Map/reduce jobs on a node.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// How many bytes of map output (sorted runs waiting for their reducers) the node's jobs
    /// hold in memory, all together. Default 256 MiB. Beyond it a map task's runs are
    /// written to disk (`<data_dir>/spill`) and its reducers read them through a
    /// [`spill::READ_BUFFER`] each: smaller saves memory, larger saves disk writes and reads.
    pub shuffle_memory_bytes: u64,
    /// How many tasks of one job the coordinator runs on a node at once. Default: the
    /// coordinator's number of cores (nodes are taken to be alike); a node that announces no
    /// free instance in gossip gets none.
    pub tasks_per_node: Option<std::num::NonZeroUsize>,
    /// Test only (`test-switches`): safety rules switched off and faults placed exactly, so
    /// that a test can show the test guarding each rule fails without it.
    #[cfg(feature = "test-switches")]
    #[serde(skip)]
    pub unsafe_switches: JobsSwitches,
}

/// What a test may switch off or inject in jobs (see [`JobsConfig::unsafe_switches`]);
/// without the `test-switches` feature none exists.
#[cfg(feature = "test-switches")]
#[derive(Clone, Copy, Debug, Default)]
pub struct JobsSwitches {
    /// Commit a job's progress without its lock's token: each write applies whoever holds
    /// the lock, so a coordinator that lost it still commits.
    pub no_fencing: bool,
    /// Stop this process (SIGSTOP to itself) just before its first commit as a coordinator:
    /// a pause that lands between the lease's last renewal and a write, which a signal sent
    /// from outside cannot aim at. The test resumes it (SIGCONT) once another node took the
    /// job over; the commit waits for that SIGCONT, since another thread may take the stop
    /// signal and the committing one could otherwise run on for a moment.
    pub stop_before_first_commit: bool,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            shuffle_memory_bytes: 256 << 20,
            tasks_per_node: None,
            #[cfg(feature = "test-switches")]
            unsafe_switches: JobsSwitches::default(),
        }
    }
}
