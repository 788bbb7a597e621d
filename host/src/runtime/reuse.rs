//! Instance reuse, opt-in per function (`weft deploy --reuse N`, as Fastly Compute's reusable
//! sandboxes): one instance of an HTTP handler serves up to N requests in sequence instead of
//! one, which saves instantiating it for every request (for a JavaScript or Python component,
//! building its language runtime).
//!
//! The isolation contract: what a request leaves in the instance's linear memory may be seen
//! by later requests of the same function and deployment, never by another function's (idle
//! instances are kept per function and deployment). An instance is dropped instead of reused
//! after a trap or any failure (a deadline, the memory cap), when it holds a lock, left its
//! response body open or kept its request's body neither read to its end nor dropped (the
//! client's connection waits for it), when it holds more than
//! [`MAX_HELD_RESOURCES`](super::MAX_HELD_RESOURCES) resources (a garbage-collected guest
//! that keeps the requests it served), after N requests, and after `RuntimeConfig::reuse_idle`
//! without one.
//! Idle instances keep their instance slot; a request that finds no free slot takes one from
//! the idle instance unused the longest.
//!
//! An instance is back in the pool before its answer goes out when its guest ends in the poll
//! in which it hands over its head (`http::Inline`), as a handler that returns its whole
//! response does; one that yields after its head (to stream its body, to wait for I/O, or at
//! an epoch tick) is back only when it ends, and a request sent the moment its answer arrives
//! may get a fresh instance.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedSemaphorePermit;
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::Proxy;

use super::state::GuestState;
use crate::id::{Digest, FunctionName};
use crate::metrics::Metrics;

/// How a function's instances may be reused: up to `max` requests each, only for the same
/// deployment (`digest`, `deployed_at_ms`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reuse {
    /// Requests one instance serves at most (1 would be a fresh instance every time).
    pub max: NonZeroU32,
    /// The deployment's module.
    pub digest: Digest,
    /// When the deployment was made: a redeploy of the same module with another
    /// configuration does not take the earlier deployment's instances.
    pub deployed_at_ms: u64,
}

/// An instance that served a request and may serve more.
pub(super) struct Warm {
    pub store: Store<GuestState>,
    pub proxy: Proxy,
    /// Requests it has served.
    pub served: u32,
}

struct Idle {
    warm: Warm,
    reuse: Reuse,
    permit: OwnedSemaphorePermit,
    since: Instant,
}

/// Every function's idle instances.
pub(super) struct IdlePool {
    lists: Mutex<Lists>,
    /// How long an instance may stay idle.
    idle: Duration,
    metrics: Arc<Metrics>,
    /// See `RuntimeConfig::unsafe_share_instances_across_functions`.
    #[cfg(feature = "test-switches")]
    pub share_across_functions: bool,
}

/// Idle instances are kept per function and module (a function's module and a test switch's
/// module alone: see [`IdlePool::key`]).
type Key = (Option<FunctionName>, Digest);
type Map = HashMap<Key, Vec<Idle>>;

/// The idle instances by key, and how many there are (kept as they come and go, so that the
/// gauge costs nothing per request).
#[derive(Default)]
struct Lists {
    map: Map,
    len: usize,
}

impl IdlePool {
    pub fn new(idle: Duration, metrics: Arc<Metrics>) -> IdlePool {
        IdlePool {
            lists: Mutex::default(),
            idle,
            metrics,
            #[cfg(feature = "test-switches")]
            share_across_functions: false,
        }
    }

    /// The list `function`'s instances are kept in: its own, unless a test switch pools them
    /// by module.
    fn key(&self, function: &FunctionName, reuse: &Reuse) -> Key {
        #[cfg(feature = "test-switches")]
        if self.share_across_functions {
            return (None, reuse.digest);
        }
        (Some(function.clone()), reuse.digest)
    }

    /// Whether an idle instance made for `made` may serve a request for `wanted`.
    fn fits(&self, made: &Reuse, wanted: &Reuse) -> bool {
        #[cfg(feature = "test-switches")]
        if self.share_across_functions {
            return made.digest == wanted.digest;
        }
        made == wanted
    }

    /// Publishes how many instances `lists` holds (called with the lock held).
    fn count(&self, lists: &Lists) {
        self.metrics.instances_idle(lists.len);
    }

    /// An idle instance of `function` made for `reuse`'s deployment, with its slot, the one used
    /// last first (its memory is the most likely still in cache). Instances of an earlier
    /// deployment and expired ones are dropped on the way.
    pub fn take(
        &self,
        function: &FunctionName,
        reuse: &Reuse,
    ) -> Option<(Warm, OwnedSemaphorePermit)> {
        let key = self.key(function, reuse);
        let mut dropped = Vec::new();
        let found = {
            let mut lists = self.lists.lock().expect("not poisoned");
            let list = lists.map.get_mut(&key)?;
            let now = Instant::now();
            let mut found = None;
            while let Some(idle) = list.pop() {
                if self.fits(&idle.reuse, reuse) && now.duration_since(idle.since) < self.idle {
                    found = Some(idle);
                    break;
                }
                dropped.push(idle);
            }
            if list.is_empty() {
                lists.map.remove(&key);
            }
            lists.len -= dropped.len() + usize::from(found.is_some());
            self.count(&lists);
            found
        };
        // Stores are dropped outside the lock: dropping one resets its instance slot.
        drop(dropped);
        found.map(|idle| (idle.warm, idle.permit))
    }

    /// Keeps `warm` for the next request of `function`.
    pub fn put(
        &self,
        function: &FunctionName,
        warm: Warm,
        reuse: Reuse,
        permit: OwnedSemaphorePermit,
    ) {
        let key = self.key(function, &reuse);
        let mut lists = self.lists.lock().expect("not poisoned");
        lists.map.entry(key).or_default().push(Idle {
            warm,
            reuse,
            permit,
            since: Instant::now(),
        });
        lists.len += 1;
        self.count(&lists);
    }

    /// Drops the instance idle the longest, of any function; `false` if there is none.
    pub fn evict_one(&self) -> bool {
        let evicted = {
            let mut lists = self.lists.lock().expect("not poisoned");
            let oldest = lists
                .map
                .iter()
                .filter_map(|(f, list)| list.first().map(|i| (i.since, f.clone())))
                .min_by_key(|(since, _)| *since);
            let evicted = oldest.map(|(_, f)| {
                let list = lists.map.get_mut(&f).expect("just seen");
                let idle = list.remove(0);
                if list.is_empty() {
                    lists.map.remove(&f);
                }
                idle
            });
            lists.len -= usize::from(evicted.is_some());
            self.count(&lists);
            evicted
        };
        evicted.is_some()
    }

    /// Drops every idle instance now (the runtime is going): their stores hold handles on the
    /// node's services, which must not outlive it in the epoch thread.
    pub fn clear(&self) {
        let all = std::mem::take(&mut *self.lists.lock().expect("not poisoned"));
        self.metrics.instances_idle(0);
        drop(all);
    }

    /// Drops every instance idle for longer than allowed.
    pub fn sweep(&self) {
        let now = Instant::now();
        let mut dropped = Vec::new();
        {
            let mut lists = self.lists.lock().expect("not poisoned");
            lists.map.retain(|_, list| {
                let (keep, expired): (Vec<Idle>, Vec<Idle>) = std::mem::take(list)
                    .into_iter()
                    .partition(|i| now.duration_since(i.since) < self.idle);
                dropped.extend(expired);
                *list = keep;
                !list.is_empty()
            });
            lists.len -= dropped.len();
            self.count(&lists);
        }
        drop(dropped);
    }
}
