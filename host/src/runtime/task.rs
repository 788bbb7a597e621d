//! Instances of map/reduce tasks (`weft:plugin/task`), reused for the calls of one task attempt.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::state::GuestState;
use super::{InvocationLimits, Runtime, RuntimeError, Slot, arm_deadline, classify, with_deadline};
use crate::id::FunctionName;

use super::bindings::task as bindings;

/// What one call emitted: pair records (`mapreduce::records`), as the guest wrote them
/// (not yet checked).
pub type TaskOutput = Vec<u8>;

/// A pre-instantiated map/reduce component.
#[derive(Clone)]
pub struct TaskPre(bindings::MapreducePre<GuestState>);

impl TaskPre {
    pub(super) fn new(pre: InstancePre<GuestState>) -> Result<Self, RuntimeError> {
        bindings::MapreducePre::new(pre).map(TaskPre).map_err(|e| {
            RuntimeError::WrongWorld(format!("not a map/reduce task: {}", super::chain(&e)))
        })
    }
}

/// One live instance of a task, used for a sequence of calls (one map task, or one reducer).
/// Each call gets the full time limit. After a failed call the instance must be dropped.
pub struct TaskInstance {
    store: Store<GuestState>,
    task: bindings::Mapreduce,
    function: FunctionName,
    limits: InvocationLimits,
    has_combiner: bool,
    _slot: Slot,
}

impl Runtime {
    /// Instantiates `pre` for a sequence of task calls.
    pub async fn instantiate_task(
        &self,
        function: &FunctionName,
        pre: &TaskPre,
        limits: InvocationLimits,
    ) -> Result<TaskInstance, RuntimeError> {
        let slot = self.slot_queued().await;
        let mut store = self.store(
            function,
            limits,
            super::Access::default(),
            Some(self.config.max_emit_bytes.get()),
        );
        let task = match with_deadline(limits, pre.0.instantiate_async(&mut store)).await {
            Ok(t) => t,
            Err(e) => return Err(classify(function, limits, store.data(), e)),
        };
        let mut instance = TaskInstance {
            store,
            task,
            function: function.clone(),
            limits,
            has_combiner: false,
            _slot: slot,
        };
        instance.has_combiner = instance.info().await?;
        Ok(instance)
    }
}

/// One call of the guest's `weft:plugin/task` export `$call`, with its full time limit;
/// evaluates to what the call emitted.
macro_rules! emitting_call {
    ($instance:ident, $call:ident($($arg:expr),*)) => {{
        $instance.arm();
        let r = with_deadline(
            $instance.limits,
            $instance
                .task
                .weft_plugin_task()
                .$call(&mut $instance.store, $($arg),*),
        )
        .await;
        $instance.finish(r)?;
        Ok($instance.store.data_mut().take_emitted())
    }};
}

impl TaskInstance {
    /// Whether the task's `combine` does anything.
    pub fn has_combiner(&self) -> bool {
        self.has_combiner
    }

    /// Gives the next call its full time limit.
    fn arm(&mut self) {
        arm_deadline(&mut self.store, self.limits.timeout);
    }

    fn finish<T>(
        &mut self,
        result: wasmtime::Result<Result<T, String>>,
    ) -> Result<T, RuntimeError> {
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(message)) => Err(RuntimeError::Guest {
                function: self.function.clone(),
                message,
            }),
            Err(e) => Err(classify(&self.function, self.limits, self.store.data(), e)),
        }
    }

    async fn info(&mut self) -> Result<bool, RuntimeError> {
        self.arm();
        let r = with_deadline(
            self.limits,
            self.task.weft_plugin_task().call_info(&mut self.store),
        )
        .await;
        Ok(self.finish(r.map(Ok))?.has_combiner)
    }

    /// Maps one chunk of whole records; returns what it emitted.
    pub async fn map(&mut self, chunk: &[u8]) -> Result<TaskOutput, RuntimeError> {
        emitting_call!(self, call_map(chunk))
    }

    /// Combines groups (group records) of one map task's output.
    pub async fn combine(&mut self, groups: &[u8]) -> Result<TaskOutput, RuntimeError> {
        emitting_call!(self, call_combine(groups))
    }

    /// Reduces groups (group records), each key with all of its values.
    pub async fn reduce(&mut self, groups: &[u8]) -> Result<TaskOutput, RuntimeError> {
        emitting_call!(self, call_reduce(groups))
    }
}
