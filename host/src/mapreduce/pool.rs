//! The threads that run job guests, apart from the node's async workers.
//!
//! A map or reduce attempt keeps a core busy for as long as its guest runs. On the node's
//! own runtime it would share the worker threads with everything that must answer promptly
//! (the metadata group's log and votes, gossip, the shuffle's streams, HTTP): a guest yields
//! only at each epoch tick, so every step of a commit on a busy node waited for one, and on
//! three nodes sharing two cores commits of the metadata group took up to a second in the
//! middle of a job. Guests run here instead, on their own threads, at a lower scheduling
//! priority (`TASK_NICE`): idle cores are all theirs, and the node's other work comes first
//! when the cores are busy, as batch work yields to serving in a shared cluster.

use std::future::Future;

use tokio_util::sync::CancellationToken;

/// The nice value of the threads running guests (the node's own threads keep 0): under
/// contention each gets about a tenth of the share of a thread at 0 (Linux's weights are
/// 110 against 1024), with no cost when the cores are otherwise idle.
pub const TASK_NICE: i32 = 10;

/// A multi-threaded runtime of its own, shared by every job's tasks on the node.
pub struct TaskPool {
    runtime: Option<tokio::runtime::Runtime>,
    /// Cancelled when the node stops: every task still running is stopped then.
    stopping: CancellationToken,
}

impl TaskPool {
    /// A pool of `threads` threads (at least one), whose tasks stop when `stopping` is
    /// cancelled.
    pub fn new(threads: usize, stopping: CancellationToken) -> std::io::Result<TaskPool> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("weft-task")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()?;
        Ok(TaskPool {
            runtime: Some(runtime),
            stopping,
        })
    }

    /// Runs `task` on the pool's threads and waits for it; an `Err` if it panicked, or if the
    /// node stopped first. A task whose caller stops waiting (the node is stopping, or the
    /// attempt was given up) is stopped too: a guest at its next epoch tick, its instance
    /// dropped, instead of running on to its deadline.
    pub(crate) async fn run<F>(&self, task: F) -> Result<F::Output, String>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        struct AbortOnDrop(tokio::task::AbortHandle);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let runtime = self.runtime.as_ref().expect("present until dropped");
        let handle = runtime.spawn(task);
        let _abort = AbortOnDrop(handle.abort_handle());
        tokio::select! {
            done = handle => done.map_err(|e| format!("a job's task stopped: {e}")),
            () = self.stopping.cancelled() => Err("the node is stopping".into()),
        }
    }
}

impl Drop for TaskPool {
    /// Without waiting for tasks still running: dropping a runtime may not block, and the
    /// node is stopping (their attempts are lost with it, as with a crash).
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Lowers the calling thread's priority to [`TASK_NICE`] unless it is lower already (a node
/// started with `nice` keeps its own; raising a nice value needs no privilege on Linux).
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        use rustix::process::{getpriority_process, setpriority_process};
        let me = Some(rustix::thread::gettid());
        if getpriority_process(me).is_ok_and(|nice| nice < TASK_NICE) {
            let _ = setpriority_process(me, TASK_NICE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nice_of_this_thread() -> i32 {
        rustix::process::getpriority_process(Some(rustix::thread::gettid())).expect("readable")
    }

    #[tokio::test]
    async fn tasks_run_on_threads_of_lower_priority() {
        let pool = TaskPool::new(2, CancellationToken::new()).expect("a pool");
        let outside = nice_of_this_thread();
        let (name, nice) = pool
            .run(async {
                let name = std::thread::current().name().map(str::to_owned);
                (name, nice_of_this_thread())
            })
            .await
            .expect("ran");
        assert_eq!(name.as_deref(), Some("weft-task"));
        assert_eq!(nice, outside.max(TASK_NICE));
        let panicked = pool
            .run(async { panic!("a guest's host code panicked") })
            .await;
        assert!(
            panicked.is_err_and(|e| e.contains("stopped")),
            "a panic is an error"
        );
        // Dropped inside an async context without a panic.
        drop(pool);
    }

    /// A task that never ends by itself, and says when it is dropped.
    fn endless(dropped: tokio::sync::oneshot::Sender<()>) -> impl Future<Output = ()> {
        struct Tell(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Tell {
            fn drop(&mut self) {
                let _ = self.0.take().map(|t| t.send(()));
            }
        }
        let tell = Tell(Some(dropped));
        async move {
            let _tell = tell;
            std::future::pending::<()>().await
        }
    }

    #[tokio::test]
    async fn a_task_stops_when_the_node_stops_or_its_caller_gives_up() {
        let stopping = CancellationToken::new();
        let pool = std::sync::Arc::new(TaskPool::new(1, stopping.clone()).expect("a pool"));
        let within = std::time::Duration::from_secs(10);

        // The caller gives up (an attempt abandoned): the task is dropped.
        let (tx, dropped) = tokio::sync::oneshot::channel();
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let caller = tokio::spawn({
            let pool = pool.clone();
            async move {
                let task = endless(tx);
                pool.run(async move {
                    let _ = started_tx.send(());
                    task.await
                })
                .await
            }
        });
        started.await.expect("the task started");
        caller.abort();
        tokio::time::timeout(within, dropped)
            .await
            .expect("a task whose caller gave up was still running")
            .expect("told");

        // The node stops: the caller hears so, and the task is dropped.
        let (tx, dropped) = tokio::sync::oneshot::channel();
        let run = pool.run(endless(tx));
        let stop = async {
            stopping.cancel();
        };
        let (result, ()) = tokio::join!(run, stop);
        assert_eq!(result, Err("the node is stopping".to_string()));
        tokio::time::timeout(within, dropped)
            .await
            .expect("a task was still running after the node stopped")
            .expect("told");
    }
}
