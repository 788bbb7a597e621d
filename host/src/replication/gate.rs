//! The output gate of a lock-protected handler's line: the writes its requests make while the
//! line holds the lock go out in batches, in order, behind the requests, and each request's
//! answer waits until every write made up to its end is acknowledged (Durable Objects' output
//! gate). The next request runs meanwhile, and reads a value an earlier one wrote from the gate
//! while that write is on its way, so a hot key is not held to one replicated write per
//! request. While one batch is written, the next gathers the writes of every request that ran
//! in the meantime (one write per key: the last), so one write quorum's flush answers many
//! requests.
//!
//! Batches go out one after the other, so a batch is acknowledged only after every earlier
//! one; within a batch the writes go out together (a failed batch may have landed in part).
//! Each write is conditional on the version the gate last saw of its key (read from the
//! replicas, or acknowledged for its own write), so a key that a writer outside the line
//! changed meanwhile (the lock covers the request's key, not every key a handler touches) fails
//! the batch instead of losing that writer's update. Once a batch fails (a replica refused the
//! token, another writer changed a key, or too few replicas answered), nothing more goes out
//! through the gate and every request waiting for that batch or a later one is told; the line
//! must then take its lock again, with an empty gate.
//!
//! Only values on their way are served from the gate; a value already acknowledged is read
//! from the replicas again (another line may have changed it since).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use futures::{StreamExt, TryStreamExt};
use tokio::sync::watch;

use super::{Expect, KvHandle, Overrides, ReplicationError, check_limits};
use crate::tasks::Tasks;

/// How many bytes of writes a gate gathers for its next batch before a write waits for the
/// batches before it: 8 MiB.
pub const WAITING_BYTES: usize = 8 << 20;

/// How many bytes (keys' and 32 per key) a gate spends remembering the versions it saw, so its
/// writes can be conditional on them: 1 MiB. A key beyond it is written unconditionally, as a
/// plain write under the lock is.
pub const SEEN_BYTES: usize = 1 << 20;

/// How many bytes all the gates of a node spend so: 64 MiB.
pub const ALL_SEEN_BYTES: usize = 64 << 20;

/// How many writes of one batch are in flight at once.
const CONCURRENT_WRITES: usize = 32;

/// The writes of a batch: each key's last value (`None`: deleted) and its time to live.
type Writes = HashMap<Vec<u8>, (Option<Vec<u8>>, Option<std::time::Duration>)>;

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
    state: Mutex<State>,
    progress: watch::Sender<Progress>,
    tasks: Tasks,
}

#[derive(Default)]
struct State {
    /// The writes of batch `open`, not sent yet, and their bytes.
    waiting: Writes,
    waiting_bytes: usize,
    /// The batch being written (batch `open - 1`), if one is.
    flying: Option<Arc<Writes>>,
    /// The number of the batch that takes new writes (batches count from 1).
    open: u64,
    /// The state of each key as the gate last saw it (read or acknowledged), and its bytes.
    seen: HashMap<Vec<u8>, Expect>,
    seen_bytes: usize,
    /// Why the gate closed.
    failed: Option<Failure>,
}

#[derive(Clone, Debug, Default)]
struct Progress {
    /// Every batch up to this one is acknowledged.
    acked: u64,
    /// The first batch that failed (or the batch the gate was closed at), and why.
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
    /// The gate of one grant: writes go out through `kv` (fenced by the grant) until the
    /// grant is found `lost`.
    pub fn new(kv: KvHandle, lost: Arc<AtomicBool>, tasks: Tasks) -> Gate {
        Gate {
            inner: Arc::new(Inner {
                kv,
                lost,
                state: Mutex::new(State {
                    open: 1,
                    ..State::default()
                }),
                progress: watch::channel(Progress::default()).0,
                tasks,
            }),
        }
    }

    /// Why the grant cannot be used any more, if it cannot: it was found lost (a renewal was
    /// refused, or none answered within the lease). Not checked when a test switched fencing
    /// off. A grant lost but not yet found so needs no check here: the replicas refuse the
    /// writes made under it, and every answer waits for them.
    fn standing(&self) -> Result<(), ReplicationError> {
        let inner = &self.inner;
        if !inner.kv.fencing() || !inner.lost.load(Ordering::SeqCst) {
            return Ok(());
        }
        let fence = inner.kv.fences().first();
        Err(ReplicationError::LockLost(format!(
            "lock `{}` (token {}) was lost: a renewal was refused or not answered within its lease",
            fence.map_or_else(String::new, |f| f.lock.to_string()),
            fence.map_or(0, |f| f.token)
        )))
    }

    /// Why the gate closed, if it did.
    pub fn failure(&self) -> Option<Failure> {
        self.state().failed.clone()
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().expect("not poisoned")
    }

    /// The value under `key`: one on its way through the gate, else the replicas' (whose
    /// version the gate remembers, to write the key on condition of it).
    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, ReplicationError> {
        self.standing()?;
        {
            let state = self.state();
            closed(&state)?;
            if let Some(v) = state.pending(key) {
                return Ok(v.clone());
            }
        }
        let kv = &self.inner.kv;
        let read = kv.read(key).await?;
        let seen = read
            .as_ref()
            .map_or(Expect::Absent, |r| Expect::Version(r.version));
        let mut state = self.state();
        self.see(&mut state, key.to_vec(), seen);
        Ok(read.map(|r| r.value))
    }

    /// Writes `value` (`None`: deletes) under `key`, expiring `ttl` after it is written,
    /// behind the requests before. Waits for the batches before once [`WAITING_BYTES`] are
    /// waiting.
    pub async fn set(
        &self,
        key: &[u8],
        value: Option<Vec<u8>>,
        ttl: Option<std::time::Duration>,
    ) -> Result<(), ReplicationError> {
        check_limits(key, value.as_deref())?;
        self.standing()?;
        let full = {
            let mut state = self.state();
            closed(&state)?;
            let add = key.len() + value.as_ref().map_or(0, Vec::len);
            if let Some((old, _)) = state.waiting.insert(key.to_vec(), (value, ttl)) {
                state.waiting_bytes -= key.len() + old.map_or(0, |v| v.len());
            }
            state.waiting_bytes += add;
            state.waiting_bytes > WAITING_BYTES
        };
        if full {
            self.drain().await?;
        }
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
        let batch =
            (state.flying.is_none() && state.failed.is_none()).then(|| self.send(&mut state));
        drop(state);
        if let Some(batch) = batch {
            self.inner.tasks.spawn(batch);
        }
        mark
    }

    /// Waits until every write up to `mark` is acknowledged, or says why one was not.
    pub async fn passed(&self, mark: Mark) -> Result<(), Failure> {
        let mut progress = self.inner.progress.subscribe();
        let seen = progress
            .wait_for(|p| p.acked >= mark.0 || p.failed.as_ref().is_some_and(|(b, _)| *b <= mark.0))
            .await
            .expect("the gate keeps its sender");
        match &seen.failed {
            Some((batch, why)) if *batch <= mark.0 && seen.acked < mark.0 => Err(why.clone()),
            _ => Ok(()),
        }
    }

    /// Waits until everything written through the gate so far is acknowledged.
    pub async fn drain(&self) -> Result<(), Failure> {
        let mark = self.mark();
        self.passed(mark).await
    }

    /// Closes the gate: the writes not sent yet never will be, and whoever waits for them is
    /// told `why`. A batch in flight still lands (or fails) as it will.
    pub fn close(&self, why: Failure) {
        let mut state = self.state();
        if state.failed.is_some() {
            return;
        }
        state.failed = Some(why.clone());
        state.waiting.clear();
        state.waiting_bytes = 0;
        let open = state.open;
        self.inner.progress.send_modify(|p| {
            if p.failed.is_none() {
                p.failed = Some((open, why));
            }
        });
    }

    /// Forgets what the gate saw of `key` (it was written around the gate).
    pub fn forget(&self, key: &[u8]) {
        let mut state = self.state();
        self.unsee(&mut state, key);
    }

    /// Remembers `key` as `seen`, if the gate and the node have room for it.
    fn see(&self, state: &mut State, key: Vec<u8>, seen: Expect) {
        if let Some(e) = state.seen.get_mut(&key) {
            *e = seen;
            return;
        }
        let add = key.len() + 32;
        if state.seen_bytes + add > SEEN_BYTES {
            return;
        }
        let all = &self.inner.kv.replicator().inner().gates_seen;
        if all.fetch_add(add, Ordering::Relaxed) + add > ALL_SEEN_BYTES {
            all.fetch_sub(add, Ordering::Relaxed);
            return;
        }
        state.seen_bytes += add;
        state.seen.insert(key, seen);
    }

    fn unsee(&self, state: &mut State, key: &[u8]) {
        if state.seen.remove(key).is_some() {
            let w = key.len() + 32;
            state.seen_bytes -= w;
            let all = &self.inner.kv.replicator().inner().gates_seen;
            all.fetch_sub(w, Ordering::Relaxed);
        }
    }

    /// Takes the waiting writes as the next batch (none is in flight); the caller spawns the
    /// task that writes them once it has let go of the state. (A task a stopping node does
    /// not run is dropped at once, and its `Landing` then locks the state: spawned under
    /// the lock, that deadlocked the thread.)
    #[must_use = "the batch's task must be spawned"]
    fn send(&self, state: &mut State) -> impl Future<Output = ()> + Send + 'static {
        let batch = state.open;
        let writes = Arc::new(std::mem::take(&mut state.waiting));
        state.waiting_bytes = 0;
        state.flying = Some(writes.clone());
        state.open += 1;
        // With fencing switched off (a test's control), the writes are unconditional too: the
        // condition would refuse a paused holder's stale write as the token does.
        let switches = self.inner.kv.replicator().switches();
        let conditional = !switches.no_fencing && !switches.gate_writes_unconditionally;
        let puts: Vec<_> = writes
            .iter()
            .map(|(k, (v, ttl))| {
                let expect = state.seen.get(k).copied().filter(|_| conditional);
                (k.clone(), v.clone(), *ttl, expect)
            })
            .collect();
        let stats = self.inner.kv.replicator().stats();
        stats.gate_batches.fetch_add(1, Ordering::Relaxed);
        stats
            .gate_writes
            .fetch_add(writes.len() as u64, Ordering::Relaxed);
        drop(writes);
        let landing = Landing {
            gate: self.clone(),
            batch,
            result: None,
        };
        async move {
            let gate = landing.gate.clone();
            let result = match gate.standing() {
                Err(e) => Err(e),
                Ok(()) => {
                    let kv = &gate.inner.kv;
                    futures::stream::iter(puts)
                        .map(|(key, value, ttl, expect)| async move {
                            let deleted = value.is_none();
                            match kv.put(&key, value, ttl, expect).await {
                                Ok(v) if deleted => Ok((key, Expect::Absent, v)),
                                Ok(v) => Ok((key, Expect::Version(v), v)),
                                Err(ReplicationError::Conflict { current }) => {
                                    Err(changed(&key, current))
                                }
                                Err(e) => Err(e),
                            }
                        })
                        .buffer_unordered(CONCURRENT_WRITES)
                        .try_collect::<Vec<_>>()
                        .await
                }
            };
            landing.finish(result);
        }
    }

    /// Batch `batch` was written (or not): remember the versions written, tell whoever waits,
    /// and send the next batch.
    fn landed(&self, batch: u64, result: Result<Vec<Written>, ReplicationError>) {
        let mut state = self.state();
        state.flying = None;
        match result {
            Ok(written) => {
                for (key, seen, _) in written {
                    self.see(&mut state, key, seen);
                }
                self.inner.progress.send_modify(|p| p.acked = batch);
                if !state.waiting.is_empty() && state.failed.is_none() {
                    let next = self.send(&mut state);
                    drop(state);
                    self.inner.tasks.spawn(next);
                }
            }
            Err(e) => {
                let why = Failure::of(&e);
                state.failed.get_or_insert_with(|| why.clone());
                state.waiting.clear();
                state.waiting_bytes = 0;
                self.inner.progress.send_modify(|p| {
                    // An earlier batch's failure is what every later waiter hears.
                    p.failed = Some((batch, why));
                });
            }
        }
    }
}

/// A key written, what the gate now knows of it, and its version.
type Written = (Vec<u8>, Expect, super::Version);

/// Reports a batch's end when dropped: with its result, or, if its task was stopped (the node
/// shutting down) or panicked, as failed, so nobody waits for it for ever.
struct Landing {
    gate: Gate,
    batch: u64,
    result: Option<Result<Vec<Written>, ReplicationError>>,
}

impl Landing {
    fn finish(mut self, result: Result<Vec<Written>, ReplicationError>) {
        self.result = Some(result);
    }
}

impl Drop for Landing {
    fn drop(&mut self) {
        let result = self.result.take().unwrap_or_else(|| {
            Err(ReplicationError::LineFailed(
                "the batch's writes were stopped before they were acknowledged (the node is stopping)".into(),
            ))
        });
        self.gate.landed(self.batch, result);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let seen = self.state.get_mut().map_or(0, |s| s.seen_bytes);
        let all = &self.kv.replicator().inner().gates_seen;
        all.fetch_sub(seen, Ordering::Relaxed);
    }
}

/// A conditional write that found another version: a writer outside the line changed the key.
fn changed(key: &[u8], current: Option<super::Version>) -> ReplicationError {
    ReplicationError::LineFailed(format!(
        "key `{}` was changed by a writer outside this lock's line (now at version {}): the lock covers the request's key, and a handler that writes other keys shares them with whoever else writes them",
        String::from_utf8_lossy(key),
        current.map_or("none (absent)".to_string(), |v| v.to_string())
    ))
}

fn closed(state: &State) -> Result<(), ReplicationError> {
    state.failed.clone().map_or(Ok(()), |why| Err(why.into()))
}

/// A closed gate's reason, as a read or write through it is refused.
impl From<Failure> for ReplicationError {
    fn from(why: Failure) -> Self {
        match why {
            Failure::Fenced(m) => ReplicationError::LockLost(m),
            Failure::Failed(m) => ReplicationError::LineFailed(m),
        }
    }
}

impl State {
    /// The value of `key` on its way through the gate, if one is: waiting or in flight.
    fn pending(&self, key: &[u8]) -> Option<&Option<Vec<u8>>> {
        self.waiting
            .get(key)
            .or_else(|| self.flying.as_ref().and_then(|f| f.get(key)))
            .map(|(value, _)| value)
    }
}

impl KvHandle {
    /// The value under `key` and its version.
    async fn read(&self, key: &[u8]) -> Result<Option<super::Read>, ReplicationError> {
        self.replicator()
            .get(self.ns(), key, self.fences(), Overrides::default())
            .await
    }
}
