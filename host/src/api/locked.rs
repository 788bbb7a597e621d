//! Lock-protected handlers: a function deployed with `--lock TEMPLATE` runs each request under
//! the lock of the request's key, on the key's owner (the request was routed there).
//!
//! The owner keeps one line per key: requests take turns in arrival order, and the lock's
//! lease is held across consecutive requests (renewed in the background), so a hot key costs
//! one acquisition for many requests. The lock is released once the line has been empty for
//! [`LINGER`] (so requests that come a little apart reuse it too), or after [`HOLD_AT_MOST`],
//! so that a node that also routes to the key (while the ring changes) gets a turn. The handler runs with the lock's token: its key-value reads and writes carry
//! it, and a write under a token the replicas have seen superseded is refused.
//!
//! The output gate ([`Gate`]): a handler's key-value writes go out behind it, in batches, and
//! its response is sent only once every write made up to its end is acknowledged. The next
//! request in the line runs meanwhile and reads what the earlier ones wrote from the gate while
//! it is on its way, so a hot key is not held to one replicated write per request.
//!
//! A request whose reads or writes were refused because its lock was lost while it ran (its
//! node paused past the lease, say) is answered 503: writes acknowledged before the loss stay,
//! its others were refused or never sent. A request whose writes (or an earlier request's)
//! were not acknowledged afterwards (the lock lost before they were, a key changed by a writer
//! outside the line, too few replicas) is answered 503 too, without knowing whether they
//! landed. Either way the line takes the lock again, with an empty gate. A lock lost after
//! every write of a request was acknowledged leaves its answer as it was: what the handler
//! did was all under its lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;

use super::{Active, ApiError, App};
use crate::functions::DEFAULT_LOCK_WAIT_MS;
use crate::id::{FunctionName, LockKey};
use crate::locks::{Held, LockError};
use crate::replication::{Failure, Fence, Gate, KvHandle, Namespace};
use crate::runtime::{Access, GuestLocks, HandlerLock, Prepared};
use crate::tasks::Tasks;

/// How long the owner keeps a key's lock across consecutive requests before it lets go and
/// takes it again: 5 s.
pub const HOLD_AT_MOST: Duration = Duration::from_secs(5);

/// How long a key's line keeps its lock once no request is left in it: 500 ms. The next
/// request within that time reuses the lock instead of taking it again (two commits of the
/// metadata group saved); another node that wants the lock waits at most this long more.
pub const LINGER: Duration = Duration::from_millis(500);

/// The most requests one key's line holds on a node; more are answered 503 at once.
pub const MAX_LINE: usize = 1024;

/// The lines of this node's lock-protected requests, by lock.
#[derive(Default)]
pub(crate) struct Lines {
    lines: Arc<Mutex<HashMap<LockKey, Arc<Line>>>>,
}

/// One key's line: whose turn it is, and the lock held across turns.
struct Line {
    /// The function whose requests these are.
    function: FunctionName,
    /// Requests in the line, the running one included (changed under `Lines::lines`).
    len: AtomicUsize,
    /// How many times the line has emptied (changed under `Lines::lines`): a line is
    /// forgotten only if it has not been used since it last emptied [`LINGER`] ago.
    emptied: AtomicUsize,
    turn: tokio::sync::Mutex<Option<Holding>>,
}

/// The lock held across turns, since when, and the output gate of its grant.
struct Holding {
    held: Held,
    since: Instant,
    gate: Gate,
}

/// A place in a line; leaving it (dropped) forgets the line once it has stayed empty for
/// [`LINGER`] (a lock still held in it is released as it is dropped).
struct Place {
    lines: Arc<Mutex<HashMap<LockKey, Arc<Line>>>>,
    lock: LockKey,
    line: Arc<Line>,
    tasks: Tasks,
}

impl Lines {
    fn join(
        &self,
        function: &FunctionName,
        lock: &LockKey,
        tasks: &Tasks,
    ) -> Result<Place, ApiError> {
        let mut lines = self.lines.lock().expect("not poisoned");
        let line = lines
            .entry(lock.clone())
            .or_insert_with(|| {
                Arc::new(Line {
                    function: function.clone(),
                    len: AtomicUsize::new(0),
                    emptied: AtomicUsize::new(0),
                    turn: tokio::sync::Mutex::new(None),
                })
            })
            .clone();
        if line.len.load(Ordering::SeqCst) >= MAX_LINE {
            return Err(ApiError::RetryLater(format!(
                "{MAX_LINE} requests already wait for lock `{lock}` on this node"
            )));
        }
        line.len.fetch_add(1, Ordering::SeqCst);
        Ok(Place {
            lines: self.lines.clone(),
            lock: lock.clone(),
            line,
            tasks: tasks.clone(),
        })
    }

    /// Appends the lines' metrics: requests in line (the running ones included) and keys
    /// with a line, by function.
    pub(crate) fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{Kind, family};
        let mut by_function: std::collections::BTreeMap<String, (usize, usize)> =
            Default::default();
        for line in self.lines.lock().expect("not poisoned").values() {
            let e = by_function.entry(line.function.to_string()).or_default();
            e.0 += line.len.load(Ordering::SeqCst);
            e.1 += 1;
        }
        family(
            out,
            "weft_locked_queued",
            Kind::Gauge,
            "Requests of lock-protected handlers in line on this node (the running ones included), by function.",
            by_function
                .iter()
                .map(|(f, (n, _))| (format!("function=\"{f}\""), *n)),
        );
        family(
            out,
            "weft_locked_keys",
            Kind::Gauge,
            "Keys of lock-protected handlers with a line on this node (requests in it, or its lock kept for the next), by function.",
            by_function
                .iter()
                .map(|(f, (_, k))| (format!("function=\"{f}\""), *k)),
        );
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let lines = self.lines.lock().expect("not poisoned");
        if self.line.len.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        let emptied = self.line.emptied.fetch_add(1, Ordering::SeqCst) + 1;
        drop(lines);
        // Nobody else waits: forget the line if it stays empty for a while (and is not
        // used meanwhile: a request that comes and goes empties it again, and the wait
        // starts over from then).
        let (lines, lock, line) = (self.lines.clone(), self.lock.clone(), self.line.clone());
        self.tasks.spawn(async move {
            tokio::time::sleep(LINGER).await;
            let mut lines = lines.lock().expect("not poisoned");
            let idle = lines.get(&lock).is_some_and(|l| {
                Arc::ptr_eq(l, &line)
                    && l.len.load(Ordering::SeqCst) == 0
                    && l.emptied.load(Ordering::SeqCst) == emptied
            });
            if idle {
                lines.remove(&lock);
            }
        });
    }
}

/// A request of a lock-protected handler, already routed to this node.
pub(crate) struct Locked {
    pub(crate) name: FunctionName,
    pub(crate) active: Arc<Active>,
    pub(crate) ns: Namespace,
    /// The lock key as the request gave it.
    pub(crate) key: String,
}

/// Runs `request` under its key's lock, in its turn; answers once the handler has finished.
/// The caller runs it in a task of its own, so that a client going away does not end the
/// turn while the handler still runs.
pub(crate) async fn run(
    app: &App,
    call: Locked,
    request: http::Request<Full<bytes::Bytes>>,
) -> Result<Response, ApiError> {
    let deployment = &call.active.deployment;
    let Prepared::Http(pre) = &call.active.prepared else {
        return Err(ApiError::Internal(format!(
            "function `{}` is not an HTTP handler",
            call.name
        )));
    };
    let name = &call.name;
    let lock = LockKey::scoped(&call.ns, call.key.as_bytes());
    let wait = Duration::from_millis(deployment.lock_wait_ms.unwrap_or(DEFAULT_LOCK_WAIT_MS));
    let deadline = Instant::now() + wait;
    let place = app.lines.join(name, &lock, app.runtime.tasks())?;
    let started = Instant::now();
    let busy = |what: String| {
        app.metrics.locked(name.as_str(), "busy", None);
        ApiError::RetryLater(what)
    };
    let Ok(mut turn) = tokio::time::timeout_at(deadline, place.line.turn.lock()).await else {
        return Err(busy(format!(
            "lock `{}` of function `{name}` was not free within {} (requests of one key run one at a time)",
            call.key,
            crate::millis::show(wait)
        )));
    };
    if turn.as_ref().is_some_and(|h| {
        h.held.is_lost() || h.gate.failure().is_some() || h.since.elapsed() >= HOLD_AT_MOST
    }) {
        // Let go, and take it again.
        let_go(&mut turn).await;
    }
    let mut outcome = "reused";
    if turn.is_none() {
        // A holder name of its own for every acquisition: the lock service hands a lock
        // again to the holder that has it, and a release still on its way must not free it.
        let holder = format!(
            "{name} on {} (lock-protected handler {:08x})",
            app.cluster.locks.node(),
            rand::random::<u32>()
        );
        let left = deadline.saturating_duration_since(Instant::now());
        let held = match app.cluster.locks.hold(&lock, holder, left).await {
            Ok(h) => h,
            Err(e @ LockError::Held { .. }) => {
                return Err(busy(format!("function `{name}`: {e}")));
            }
            Err(e) => return Err(e.into()),
        };
        let mut kv = KvHandle::new(app.cluster.replication.clone(), call.ns.clone());
        kv.fence(Fence {
            lock: lock.clone(),
            token: held.grant().token,
        });
        let gate = Gate::new(kv, held.lost_flag(), app.runtime.tasks().clone());
        *turn = Some(Holding {
            held,
            since: Instant::now(),
            gate,
        });
        outcome = "acquired";
    }
    app.metrics
        .locked(name.as_str(), outcome, Some(started.elapsed()));
    let holding = turn.as_ref().expect("taken above");
    let grant = holding.held.grant();
    let gate = holding.gate.clone();
    let fenced = Arc::new(OnceLock::new());
    let (finished, guest_ended) = tokio::sync::oneshot::channel();
    let access = Access {
        kv: Some(KvHandle::new(
            app.cluster.replication.clone(),
            call.ns.clone(),
        )),
        locks: Some(GuestLocks {
            locks: app.cluster.locks.clone(),
            scope: call.ns.clone(),
        }),
        handler: Some(HandlerLock {
            key: call.key.clone(),
            lock: lock.clone(),
            token: grant.token,
            lost: holding.held.lost_flag(),
        }),
        gate: Some(gate.clone()),
        fenced: Some(fenced.clone()),
        finished: Some(finished),
        config: Arc::new(deployment.config.clone()),
        cgi: None,
    };
    let limits = app.runtime.limits(&deployment.limits);
    let ran = async {
        let slot = app.runtime.slot().await?;
        let response = app
            .runtime
            .handle_http(name, pre, limits, access, request, slot)
            .await
            .map_err(|e| super::told(name, e, deployment.debug))?;
        // The output gate: the whole body, so the handler has returned and its writes are
        // acknowledged before anything is sent.
        let (parts, body) = response.into_parts();
        let body = body.collect().await.map_err(|e| {
            ApiError::Internal(format!(
                "function `{name}` failed before finishing its response: {e}"
            ))
        })?;
        Ok::<_, ApiError>((parts, body.to_bytes()))
    };
    let ran = ran.await;
    // The turn ends only once the guest has (it may run on after an error answer), so the
    // next request never runs beside it under the same token.
    let _ = guest_ended.await;
    if let Some(why) = fenced.get().cloned() {
        // Its writes not sent yet never will be.
        gate.close(Failure::Fenced(why.clone()));
        let_go(&mut turn).await;
        app.metrics.locked(name.as_str(), "lost", None);
        return Err(ApiError::RetryLater(format!(
            "function `{name}` lost its lock on `{}` while it ran ({why}); writes acknowledged before the loss stay, this request's others were refused or not made",
            call.key
        )));
    }
    // The next request runs while this one's writes go out; the answer waits for them.
    let mark = gate.mark();
    drop(turn);
    let early = app.cluster.replication.switches().gate_answers_early;
    if let Err(why) = if early {
        Ok(())
    } else {
        gate.passed(mark).await
    } {
        let what = if why.is_fenced() {
            app.metrics.locked(name.as_str(), "lost", None);
            "its lock was lost before they were"
        } else {
            "they could not be"
        };
        return Err(ApiError::RetryLater(format!(
            "function `{name}` ran, but its writes under lock `{}` (or an earlier request's) were not acknowledged: {what} ({}); writes acknowledged before stay, and whether these landed is not known",
            call.key,
            why.message()
        )));
    }
    let (parts, body) = ran?;
    Ok(Response::from_parts(parts, Body::new(Full::new(body))))
}

/// Releases the lock held across turns, and waits for the release, so the next holder
/// (here or on another node) need not wait for it.
async fn let_go(turn: &mut Option<Holding>) {
    if let Some(h) = turn.take() {
        // Whatever went out through the gate lands (or fails) before anyone else may write.
        let _ = h.gate.drain().await;
        let key = h.held.grant().key.clone();
        if let Err(e) = h.held.release().await {
            tracing::debug!(%key, error = %e, "releasing a lock-protected handler's lock");
        }
    }
}
