//! Instance slots: the pooling allocator's instances, counted by a semaphore so that a request
//! waits for a free one (or gets 503) instead of failing to instantiate, and handed out with
//! an idle instance of the function when it is deployed with `--reuse`.

use std::time::Duration;

use super::reuse::{Reuse, Warm};
use super::{Runtime, RuntimeError};
use crate::id::FunctionName;

/// The right to run one instance; released when dropped. It may come with an instance that
/// served earlier requests of the same function (`--reuse`).
pub struct Slot {
    pub(super) permit: tokio::sync::OwnedSemaphorePermit,
    pub(super) warm: Option<Warm>,
    /// How the instance run in this slot may be reused after the request (from
    /// [`Runtime::slot_for`]); `None`: it is dropped.
    pub(super) reuse: Option<Reuse>,
}

impl Slot {
    pub(super) fn fresh(permit: tokio::sync::OwnedSemaphorePermit) -> Slot {
        Slot {
            permit,
            warm: None,
            reuse: None,
        }
    }
}

impl Runtime {
    /// Waits up to 5 s for a free instance slot (the pool's size bounds concurrent instances).
    /// Requests take their slot before their body is read, so waiting requests hold no body.
    pub async fn slot(&self) -> Result<Slot, RuntimeError> {
        // The common case, a free slot, needs no timer.
        if let Some(slot) = self.free_slot() {
            return Ok(slot);
        }
        let wait = Duration::from_secs(5);
        match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(permit)) => Ok(Slot::fresh(permit)),
            _ => Err(RuntimeError::Busy(self.config.max_instances.get())),
        }
    }

    /// A slot for a request of `function`, which keeps its instance afterwards if the
    /// function is deployed with `--reuse` (`reuse`): with one of its idle instances if one
    /// is idle, else as [`Runtime::slot`].
    pub async fn slot_for(
        &self,
        function: &FunctionName,
        reuse: Option<Reuse>,
    ) -> Result<Slot, RuntimeError> {
        let Some(reuse) = reuse else {
            return self.slot().await;
        };
        let slot = match self.idle.take(function, &reuse) {
            Some((warm, permit)) => Slot {
                permit,
                warm: Some(warm),
                reuse: None,
            },
            None => self.slot().await?,
        };
        Ok(Slot {
            reuse: Some(reuse),
            ..slot
        })
    }

    /// A free slot now, if there is one or an idle instance gives its up.
    fn free_slot(&self) -> Option<Slot> {
        loop {
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                return Some(Slot::fresh(permit));
            }
            if !self.idle.evict_one() {
                return None;
            }
        }
    }

    /// Waits for a free instance slot for as long as it takes (map/reduce tasks queue behind
    /// requests instead of failing).
    pub(super) async fn slot_queued(&self) -> Slot {
        if let Some(slot) = self.free_slot() {
            return slot;
        }
        Slot::fresh(
            self.slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed"),
        )
    }
}
