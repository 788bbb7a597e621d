//! Background work the node owns. Every task a node starts runs on one tracker under the
//! node's cancellation token, so that shutdown stops each of them and waits for them: none
//! outlives the node holding its sockets, its database or its services.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The node's background tasks. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Tasks {
    /// Tasks that stop when `cancel` is cancelled.
    pub fn new(cancel: CancellationToken) -> Self {
        Tasks {
            tracker: TaskTracker::new(),
            cancel,
        }
    }

    /// Runs `work` in the background until it ends or the node stops.
    pub fn spawn(&self, work: impl Future<Output = ()> + Send + 'static) {
        let cancel = self.cancel.clone();
        self.tracker.spawn(async move {
            tokio::select! {
                () = cancel.cancelled() => {}
                () = work => {}
            }
        });
    }

    /// Runs `work` in the background to its end (it watches [`Tasks::token`] itself, or
    /// ends by itself), and hands back its result.
    pub fn spawn_joined<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> JoinHandle<T> {
        self.tracker.spawn(work)
    }

    /// `work`, counted among the node's tasks for as long as it lives, wherever it is polled:
    /// [`Tasks::stop`] waits for it too.
    pub fn track<F: Future>(&self, work: F) -> tokio_util::task::task_tracker::TrackedFuture<F> {
        self.tracker.track_future(work)
    }

    /// The node's cancellation token.
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Stops every task and waits at most `within` for them to end; returns whether they did.
    pub async fn stop(&self, within: Duration) -> bool {
        self.cancel.cancel();
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_waits_for_a_tracked_future_wherever_it_is_polled() {
        let tasks = Tasks::new(CancellationToken::new());
        let (go, gone) = tokio::sync::oneshot::channel::<()>();
        // Polled by a task the tracker did not start, as a guest run in its request's task is.
        let polled = tokio::spawn(tasks.track(async move {
            let _ = gone.await;
        }));
        assert!(
            !tasks.stop(Duration::from_millis(50)).await,
            "stop waits while it lives"
        );
        go.send(()).unwrap();
        polled.await.unwrap();
        assert!(tasks.stop(Duration::from_secs(10)).await);
    }
}
