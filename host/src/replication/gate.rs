//! The output gate of a lock-protected handler's line: the writes its requests make while the
//! line holds the lock go out in batches, in order, behind the requests, and each request's
//! answer waits until every write made up to its end is acknowledged (Durable Objects' output
//! gate). The next request runs meanwhile: it reads what the earlier ones wrote from the gate
//! (nobody else writes under the lock while the line holds it), so a hot key is not held to
//! one replicated write per request. While one batch is written, the next gathers the writes
//! of every request that ran in the meantime (one write per key: the last), so one write
//! quorum's flush answers many requests.
//!
//! Batches are written one after the other: a write is never acknowledged before one made
//! earlier. Once a batch fails (a replica refused its token, or too few replicas answered),
//! nothing more goes out through the gate and every request waiting for that batch or a later
//! one is told; the line must then take its lock again, with an empty gate.
//!
//! Values read or written are kept (up to [`CACHE_BYTES`]) only while the line holds the lock:
//! a gate lives as long as one grant.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::time::Instant;

use super::{KvHandle, ReplicationError, check_limits};
use crate::tasks::Tasks;

/// How many bytes of values (and keys) a gate keeps once they are acknowledged or read: 1 MiB.
/// Beyond it, reads go to the replicas again.
pub const CACHE_BYTES: usize = 1 << 20;

type Writes = HashMap<Vec<u8>, Option<Vec<u8>>>;

/// One grant's output gate. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    /// Writes go out through it, under the grant's fence.
    kv: KvHandle,
    /// Set once the grant was found lost.
    lost: Arc<AtomicBool>,
    /// When the grant's lease runs out as this node counts it (renewals push it on).
    until: Arc<Mutex<Instant>>,
    state: Mutex<State>,
    progress: watch::Sender<Progress>,
    tasks: Tasks,
}

#[derive(Default)]
struct State {
    /// The writes of batch `open`, not sent yet.
    waiting: Writes,
    /// The batch being written (batch `open - 1`), if one is.
    flying: Option<Arc<Writes>>,
    /// The number of the batch that takes new writes (batches count from 1).
    open: u64,
    /// Values acknowledged or read, and their bytes.
    kept: Writes,
    kept_bytes: usize,
    /// Why the gate closed.
    failed: Option<Failure>,
}

#[derive(Clone, Debug, Default)]
struct Progress {
    /// Every batch up to this one is acknowledged.
    acked: u64,
    /// The batch that failed, and why.
    failed: Option<(u64, Failure)>,
}

/// Why a gate closed.
#[derive(Clone, Debug)]
pub enum Failure {
    /// The lock was lost: the message says how.
    Fenced(String),
    /// A write could not be acknowledged.
    Failed(String),
}

impl Failure {
    fn of(e: &ReplicationError) -> Failure {
        match e {
            ReplicationError::Fenced { .. } | ReplicationError::LockLost(_) => {
                Failure::Fenced(e.to_string())
            }
            e => Failure::Failed(e.to_string()),
        }
    }

    /// Whether the lock was lost.
    pub fn is_fenced(&self) -> bool {
        matches!(self, Failure::Fenced(_))
    }

    /// What happened, in words.
    pub fn message(&self) -> &str {
        match self {
            Failure::Fenced(m) | Failure::Failed(m) => m,
        }
    }
}

/// Where a request stands in the gate: the batch its answer waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark(u64);

impl Gate {
    /// The gate of one grant: writes go out through `kv` (fenced by the grant), while the
    /// grant is not `lost` and its lease (as this node counts it) has not run out at `until`.
    pub fn new(
        kv: KvHandle,
        lost: Arc<AtomicBool>,
        until: Arc<Mutex<Instant>>,
        tasks: Tasks,
    ) -> Gate {
        Gate {
            inner: Arc::new(Inner {
                kv,
                lost,
                until,
                state: Mutex::new(State {
                    open: 1,
                    ..State::default()
                }),
                progress: watch::channel(Progress::default()).0,
                tasks,
            }),
        }
    }

    /// Why the grant cannot be used any more, if it cannot: it was lost, or its lease ran out
    /// as this node counts it. (Not checked when a test switched fencing off.)
    fn standing(&self) -> Result<(), ReplicationError> {
        let inner = &self.inner;
        if !inner.kv.fencing() {
            return Ok(());
        }
        let expired = Instant::now() >= *inner.until.lock().expect("not poisoned");
        if inner.lost.load(Ordering::SeqCst) || expired {
            let fence = inner.kv.fences().first();
            return Err(ReplicationError::LockLost(format!(
                "lock `{}` (token {}) was lost: its lease ran out before it was renewed",
                fence.map_or_else(String::new, |f| f.lock.to_string()),
                fence.map_or(0, |f| f.token)
            )));
        }
        Ok(())
    }

    /// Why the gate closed, if it did.
    pub fn failure(&self) -> Option<Failure> {
        self.state().failed.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("not poisoned")
    }

    /// The value under `key`: the last one written or read through the gate, else the
    /// replicas' (which the gate then keeps).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReplicationError> {
        self.standing()?;
        {
            let state = self.state();
            closed(&state)?;
            if let Some(v) = state.lookup(key) {
                return Ok(v.clone());
            }
        }
        let value = self.inner.kv.get(key).await?;
        self.state().keep(key.to_vec(), value.clone());
        Ok(value)
    }

    /// Writes `value` (`None`: deletes) under `key`, behind the requests before.
    pub fn set(&self, key: &[u8], value: Option<Vec<u8>>) -> Result<(), ReplicationError> {
        check_limits(key, value.as_deref())?;
        self.standing()?;
        let mut state = self.state();
        closed(&state)?;
        state.waiting.insert(key.to_vec(), value);
        Ok(())
    }

    /// The point a request that ends now waits for: every write made so far (the writes
    /// not sent yet start going out).
    pub fn mark(&self) -> Mark {
        let mut state = self.state();
        if state.waiting.is_empty() {
            return Mark(state.open - 1);
        }
        let mark = Mark(state.open);
        if state.flying.is_none() && state.failed.is_none() {
            self.send(&mut state);
        }
        mark
    }

    /// Waits until every write up to `mark` is acknowledged, or says why one was not.
    pub async fn passed(&self, mark: Mark) -> Result<(), Failure> {
        let mut progress = self.inner.progress.subscribe();
        let seen = progress
            .wait_for(|p| p.acked >= mark.0 || p.failed.is_some())
            .await
            .expect("the gate keeps its sender");
        match &seen.failed {
            Some((batch, why)) if *batch <= mark.0 => Err(why.clone()),
            _ => Ok(()),
        }
    }

    /// Waits until everything written through the gate so far is acknowledged.
    pub async fn drain(&self) -> Result<(), Failure> {
        let mark = self.mark();
        self.passed(mark).await
    }

    /// Forgets what the gate keeps of `key` (it was written around the gate).
    pub fn forget(&self, key: &[u8]) {
        let mut state = self.state();
        if let Some(v) = state.kept.remove(key) {
            state.kept_bytes -= weight(key, &v);
        }
    }

    /// Sends the waiting writes as the next batch (none is in flight).
    fn send(&self, state: &mut State) {
        let batch = state.open;
        let writes = Arc::new(std::mem::take(&mut state.waiting));
        state.flying = Some(writes.clone());
        state.open += 1;
        let stats = self.inner.kv.stats();
        stats.gate_batches.fetch_add(1, Ordering::Relaxed);
        stats
            .gate_writes
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        let gate = self.clone();
        self.inner.tasks.spawn(async move {
            let result = match gate.standing() {
                Err(e) => Err(e),
                Ok(()) => {
                    let kv = &gate.inner.kv;
                    let puts = writes.iter().map(|(k, v)| kv.put(k, v.clone()));
                    futures::future::try_join_all(puts).await.map(|_| ())
                }
            };
            // The state's copy is the only one left, so it moves into what the gate keeps.
            drop(writes);
            gate.landed(batch, result);
        });
    }

    /// Batch `batch` was written (or not): tell whoever waits, and send the next one.
    fn landed(&self, batch: u64, result: Result<(), ReplicationError>) {
        let mut state = self.state();
        let flying = state.flying.take().expect("a batch was in flight");
        match result {
            Ok(()) => {
                for (k, v) in Arc::unwrap_or_clone(flying) {
                    state.keep(k, v);
                }
                self.inner.progress.send_modify(|p| p.acked = batch);
                if !state.waiting.is_empty() {
                    self.send(&mut state);
                }
            }
            Err(e) => {
                let why = Failure::of(&e);
                state.failed = Some(why.clone());
                self.inner
                    .progress
                    .send_modify(|p| p.failed = Some((batch, why)));
            }
        }
    }
}

fn closed(state: &State) -> Result<(), ReplicationError> {
    match &state.failed {
        None => Ok(()),
        Some(Failure::Fenced(m)) => Err(ReplicationError::LockLost(m.clone())),
        Some(Failure::Failed(m)) => Err(ReplicationError::LineFailed(m.clone())),
    }
}

fn weight(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    key.len() + value.as_ref().map_or(0, Vec::len)
}

impl State {
    /// The newest value of `key` the gate knows: waiting, in flight, or kept.
    fn lookup(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.waiting
            .get(key)
            .or_else(|| self.flying.as_ref().and_then(|f| f.get(key)))
            .or_else(|| self.kept.get(key))
    }

    fn keep(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let add = weight(&key, &value);
        if let Some(old) = self.kept.remove(&key) {
            self.kept_bytes -= weight(&key, &old);
        }
        if self.kept_bytes + add > CACHE_BYTES {
            return;
        }
        self.kept_bytes += add;
        self.kept.insert(key, value);
    }
}
