//! Running the guest of a job: `map` (and its combiner) over one chunk, cut into one sorted
//! run per partition, and `reduce` over a partition's runs, merged in a stream, many keys per
//! call. The worker calls these and keeps what they make.

use super::records::{self, Merge, Run};
use super::spill::Held;
use super::{GROUP_BATCH_BYTES, OutputRecord};
use crate::id::FunctionName;
use crate::runtime::{InvocationLimits, Runtime, RuntimeError, TaskOutput, TaskPre};

/// A guest's output that is not well-formed pair records fails its call.
fn malformed(function: &FunctionName, step: &str) -> impl Fn(String) -> RuntimeError {
    move |e| RuntimeError::Guest {
        function: function.clone(),
        message: format!("{step} emitted {e}"),
    }
}

/// Runs map (and the combiner) over one chunk; returns one sorted run per reducer partition.
pub(crate) async fn map_task(
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

/// Runs one reducer over its partition's runs, many keys per call; returns its output.
pub(crate) async fn reduce_task(
    rt: &Runtime,
    function: &FunctionName,
    pre: &TaskPre,
    limits: InvocationLimits,
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
    Ok(output)
}

fn decode(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(bytes).into_owned()))
}
