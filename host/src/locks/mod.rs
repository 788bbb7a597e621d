//! The lock service: leases with fencing tokens, on the metadata group.
//!
//! A lock is granted by a committed `Acquire` entry; its **fencing token** is that entry's
//! index, so tokens only grow, across leader changes and restarts. The lock table itself is
//! part of the group's state machine ([`crate::consensus::locks`], pure); this service turns
//! requests into commands, waits for a queued request's turn on this node's copy of the
//! table, and, on the leader, judges leases and expires them ([`driver`]).
//!
//! A holder should count its lease from when it *sent* its request: the leader counts from
//! when it applied the grant, which is later, so the holder stops trusting its lease first.
//! A request that waited in line may have little of its lease left by that count: renewing
//! at once (counting from the renewal's sending) gives it a whole lease.

mod driver;
mod held;
pub mod wire;

pub use held::Held;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use crate::consensus::storage::Applied;
use crate::consensus::{
    Command, Consensus, ConsensusError, Leases, LockCommand, LockOutcome, Outcome,
};
use crate::id::{LockKey, NodeId};
use crate::rpc::{self, Router};
use crate::tasks::Tasks;
use wire::{LocksWire, Request, Response};

/// Lease and wait bounds of the lock service.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocksConfig {
    /// How long a new leader waits, beyond a held lock's whole lease, before it may grant the
    /// lock to another holder: a margin for clocks that run at different rates on different
    /// machines. Longer is safer against a badly drifting clock; shorter hands a dead holder's
    /// lock on sooner after a leader change. Default 2 s (Consul's lock delay is 15 s, for
    /// sessions whose holders it cannot see).
    #[serde(with = "crate::millis")]
    pub lock_delay: Duration,
    /// The lease when a request names none. Default 10 s.
    #[serde(with = "crate::millis")]
    pub default_lease: Duration,
    /// The shortest lease a request may ask for: below a few heartbeats a holder cannot renew
    /// in time. Default 100 ms.
    #[serde(with = "crate::millis")]
    pub min_lease: Duration,
    /// The longest lease a request may ask for (a dead holder blocks others this long).
    /// Default 10 min.
    #[serde(with = "crate::millis")]
    pub max_lease: Duration,
    /// The longest a request may wait in line. Default 5 min.
    #[serde(with = "crate::millis")]
    pub max_wait: Duration,
    /// Test only: a new leader expires held locks at once instead of waiting out their lease
    /// and the lock delay (the control of the partitioned-holder test).
    #[cfg(feature = "test-switches")]
    #[serde(skip)]
    pub expire_at_takeover_for_tests: bool,
}

impl Default for LocksConfig {
    fn default() -> Self {
        LocksConfig {
            lock_delay: Duration::from_secs(2),
            default_lease: Duration::from_secs(10),
            min_lease: Duration::from_millis(100),
            max_lease: Duration::from_secs(600),
            max_wait: Duration::from_secs(300),
            #[cfg(feature = "test-switches")]
            expire_at_takeover_for_tests: false,
        }
    }
}

/// A lock held under a token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// The lock.
    pub key: LockKey,
    /// Who holds it.
    pub holder: String,
    /// The fencing token: larger than every token the lock service issued before.
    pub token: u64,
    /// The lease, in milliseconds, counted by the leader from the grant or last renewal.
    pub lease_ms: u64,
}

/// A held lock, as `GET /v1/locks` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LockView {
    /// The lock.
    pub key: String,
    /// Who holds it.
    pub holder: String,
    /// Its fencing token.
    pub token: u64,
    /// Its lease, in milliseconds.
    pub lease_ms: u64,
    /// How long the lease has left as the leader judges it (`None` when the leader could
    /// not be asked).
    pub lease_left_ms: Option<u64>,
    /// Who waits, in order.
    pub waiters: Vec<String>,
}

/// Why a lock request failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// A malformed request.
    #[error("{0}")]
    BadInput(String),
    /// Someone else holds the lock (and the request's wait ran out, or it did not wait).
    #[error("lock `{key}` is held by {holder} under token {token}{}", waited.map(|w| format!("; waited {} ms", w.as_millis())).unwrap_or_default())]
    Held {
        /// The lock.
        key: LockKey,
        /// Its holder.
        holder: String,
        /// Its token.
        token: u64,
        /// How long the request waited, if it did.
        waited: Option<Duration>,
    },
    /// The token does not hold the lock (any more).
    #[error("token {token} does not hold lock `{key}`{}", match current { Some(c) => format!(" (it is held under token {c}; the lease ran out or it was released)"), None => " (nobody holds it; the lease ran out or it was released)".into() })]
    NotHolder {
        /// The lock.
        key: LockKey,
        /// The token given.
        token: u64,
        /// The current holder's token.
        current: Option<u64>,
    },
    /// The metadata group could not take the request.
    #[error(transparent)]
    Consensus(#[from] ConsensusError),
}

/// A counter.
#[derive(Default)]
struct Counter(AtomicU64);

impl Counter {
    fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
struct Stats {
    grants: Counter,
    waits: Counter,
    wait_timeouts: Counter,
    releases: Counter,
    expiries: Counter,
    delay_waits: Counter,
}

/// The lock service of this node. Cheap to clone.
#[derive(Clone)]
pub struct Locks {
    inner: Arc<Inner>,
}

struct Inner {
    consensus: Consensus,
    name: NodeId,
    config: LocksConfig,
    /// Judged by the driver while this node leads; empty otherwise.
    leases: Mutex<Leases>,
    stats: Stats,
    tasks: Tasks,
}

impl Inner {
    fn leases(&self) -> MutexGuard<'_, Leases> {
        self.leases.lock().expect("not poisoned")
    }
}

impl Locks {
    /// Starts the service: its leader-side driver, and its answers to other nodes.
    pub fn start(
        consensus: Consensus,
        name: NodeId,
        config: LocksConfig,
        router: &Router,
        tasks: &Tasks,
    ) -> Locks {
        let inner = Arc::new(Inner {
            consensus,
            name,
            config,
            leases: Mutex::default(),
            stats: Stats::default(),
            tasks: tasks.clone(),
        });
        tasks.spawn(driver::run(inner.clone(), tasks.token().clone()));
        let answering = inner.clone();
        router.register::<LocksWire, _>(move |_, request| {
            let inner = answering.clone();
            Box::pin(async move {
                match request {
                    Request::Leases => Ok(Response::Leases(inner.leases_left())),
                }
            })
        });
        Locks { inner }
    }

    /// The node this service runs on.
    pub fn node(&self) -> &NodeId {
        &self.inner.name
    }

    /// The service's bounds.
    pub fn config(&self) -> &LocksConfig {
        &self.inner.config
    }

    /// Takes `key` for `holder` (by default a new name for this request) with a lease of
    /// `lease`, waiting in line at most `wait` (zero: do not wait) while another holds it.
    pub async fn acquire(
        &self,
        key: &LockKey,
        holder: Option<String>,
        lease: Duration,
        wait: Duration,
    ) -> Result<Grant, LockError> {
        let c = &self.inner.config;
        if lease < c.min_lease || lease > c.max_lease {
            return Err(LockError::BadInput(format!(
                "lease must be between {} and {}, not {}",
                crate::millis::show(c.min_lease),
                crate::millis::show(c.max_lease),
                crate::millis::show(lease)
            )));
        }
        if wait > c.max_wait {
            return Err(LockError::BadInput(format!(
                "wait must be at most {}, not {}",
                crate::millis::show(c.max_wait),
                crate::millis::show(wait)
            )));
        }
        let holder = match holder {
            Some(h) if h.is_empty() || h.len() > 128 || h.chars().any(char::is_control) => {
                return Err(LockError::BadInput(format!(
                    "holder `{h}` must be 1 to 128 characters with no control characters"
                )));
            }
            Some(h) => h,
            None => format!("{}/{:016x}", self.inner.name, rand::random::<u64>()),
        };
        let consensus = &self.inner.consensus;
        // Follow the table before asking, so a hand-over right after the answer is seen.
        let mut events = consensus.subscribe();
        let started = Instant::now();
        let lease_ms = lease.as_millis() as u64;
        let command = Command::Lock(LockCommand::Acquire {
            key: key.to_string(),
            holder: holder.clone(),
            lease_ms,
            queue: !wait.is_zero(),
        });
        let grant = |token| Grant {
            key: key.clone(),
            holder: holder.clone(),
            token,
            lease_ms,
        };
        match consensus.propose(command).await? {
            (_, Outcome::Lock(LockOutcome::Granted { token })) => {
                self.inner.stats.grants.add(1);
                return Ok(grant(token));
            }
            (_, Outcome::Lock(LockOutcome::Held { holder, token })) => {
                return Err(LockError::Held {
                    key: key.clone(),
                    holder,
                    token,
                    waited: None,
                });
            }
            (_, Outcome::Lock(LockOutcome::Queued { .. })) => self.inner.stats.waits.add(1),
            (_, other) => {
                return Err(ConsensusError::Failed(format!("an acquire did {other:?}")).into());
            }
        }
        // Should this request be dropped while it waits (its client went away), it leaves
        // the line, and lets go of the lock if the lock reached it meanwhile.
        let mut guard = Waiting {
            inner: Some(self.inner.clone()),
            key: key.to_string(),
            holder: holder.clone(),
        };
        let deadline = tokio::time::Instant::from_std(started + wait);
        let mine = || held_by(consensus, key.as_str(), &holder);
        loop {
            if let Some(token) = mine() {
                guard.inner = None;
                self.inner.stats.grants.add(1);
                return Ok(grant(token));
            }
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Ok(Applied::Lock { key: k, .. })) if k != key.as_str() => {}
                Ok(Ok(Applied::Register { .. })) => {}
                Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => {}
                Ok(Err(RecvError::Closed)) => {
                    return Err(ConsensusError::Failed("the node is stopping".into()).into());
                }
                Err(_) => break,
            }
        }
        // The wait ran out: leave the line. If the lock reached this holder meanwhile, it
        // keeps it.
        self.inner.stats.wait_timeouts.add(1);
        guard.inner = None;
        if let Some(token) = leave_line(consensus, key.as_str(), &holder).await? {
            self.inner.stats.grants.add(1);
            return Ok(grant(token));
        }
        let (holder, token) = consensus
            .read_local(|s| {
                s.locks
                    .get(key.as_str())
                    .map(|l| (l.holder.clone(), l.token))
            })
            .unwrap_or_else(|| ("nobody".into(), 0));
        Err(LockError::Held {
            key: key.clone(),
            holder,
            token,
            waited: Some(started.elapsed()),
        })
    }

    /// Renews the lease of the holder under `token`.
    pub async fn renew(&self, key: &LockKey, token: u64) -> Result<Grant, LockError> {
        let command = Command::Lock(LockCommand::Renew {
            key: key.to_string(),
            token,
        });
        let consensus = &self.inner.consensus;
        match consensus.propose(command).await? {
            (index, Outcome::Lock(LockOutcome::Done { .. })) => {
                consensus
                    .wait_applied(index, consensus_timeout(consensus))
                    .await?;
                let held = consensus.read_local(|s| {
                    s.locks
                        .get(key.as_str())
                        .filter(|l| l.token == token)
                        .map(|l| (l.holder.clone(), l.lease_ms))
                });
                match held {
                    Some((holder, lease_ms)) => Ok(Grant {
                        key: key.clone(),
                        holder,
                        token,
                        lease_ms,
                    }),
                    None => Err(self.not_holder(key, token)),
                }
            }
            (_, other) => Err(refused(key, token, other, "a renewal")),
        }
    }

    /// Releases the lock held under `token`; the first waiter, if any, gets it.
    pub async fn release(&self, key: &LockKey, token: u64) -> Result<(), LockError> {
        let command = Command::Lock(LockCommand::Release {
            key: key.to_string(),
            token,
        });
        match self.inner.consensus.propose(command).await? {
            (_, Outcome::Lock(LockOutcome::Done { .. })) => {
                self.inner.stats.releases.add(1);
                Ok(())
            }
            (_, other) => Err(refused(key, token, other, "a release")),
        }
    }

    fn not_holder(&self, key: &LockKey, token: u64) -> LockError {
        let current = self
            .inner
            .consensus
            .read_local(|s| s.locks.get(key.as_str()).map(|l| l.token));
        LockError::NotHolder {
            key: key.clone(),
            token,
            current,
        }
    }

    /// Every held lock (a linearizable read), with the lease left as the leader judges it.
    pub async fn list(&self) -> Result<Vec<LockView>, LockError> {
        let consensus = &self.inner.consensus;
        let mut views: Vec<LockView> = consensus
            .read(|s| {
                s.locks
                    .iter()
                    .map(|(key, l)| LockView {
                        key: key.clone(),
                        holder: l.holder.clone(),
                        token: l.token,
                        lease_ms: l.lease_ms,
                        lease_left_ms: None,
                        waiters: l.waiters.iter().map(|(w, _)| w.clone()).collect(),
                    })
                    .collect()
            })
            .await?;
        let left = match consensus.leader() {
            Some((id, _)) if id == consensus.id() => self.inner.leases_left(),
            Some((_, leader)) => match leader.addr {
                Some(addr) => {
                    match rpc::call::<LocksWire>(consensus.transport(), addr, &Request::Leases)
                        .await
                    {
                        Ok(Response::Leases(left)) => left,
                        Err(e) => {
                            tracing::debug!(error = %e, "could not ask the leader for leases");
                            None
                        }
                    }
                }
                None => None,
            },
            None => None,
        };
        for (key, token, ms) in left.unwrap_or_default() {
            if let Some(v) = views.iter_mut().find(|v| v.key == key && v.token == token) {
                v.lease_left_ms = Some(ms);
            }
        }
        Ok(views)
    }

    /// Appends the lock service's metrics, as this node counts them.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{Kind, single};
        let s = &self.inner.stats;
        for (name, help, value) in [
            (
                "weft_lock_grants_total",
                "Locks granted to requests this node served (at once or after waiting).",
                s.grants.get(),
            ),
            (
                "weft_lock_waits_total",
                "Lock requests this node served that waited in line.",
                s.waits.get(),
            ),
            (
                "weft_lock_wait_timeouts_total",
                "Lock requests this node served whose wait ran out.",
                s.wait_timeouts.get(),
            ),
            (
                "weft_lock_releases_total",
                "Locks released through this node.",
                s.releases.get(),
            ),
            (
                "weft_lock_expiries_total",
                "Leases this node, as leader, found run out and expired.",
                s.expiries.get(),
            ),
            (
                "weft_lock_delay_waits_total",
                "Held locks this node, on becoming leader, made wait out their lease and the lock delay.",
                s.delay_waits.get(),
            ),
        ] {
            single(out, name, Kind::Counter, help, value);
        }
        single(
            out,
            "weft_locks_held",
            Kind::Gauge,
            "Locks held, in this node's copy of the lock table.",
            self.inner.consensus.read_local(|s| s.locks.iter().count()),
        );
    }
}

impl Inner {
    /// The leases this node judges (`None` when it does not lead).
    fn leases_left(&self) -> Option<Vec<(String, u64, u64)>> {
        if !self.consensus.is_leader() {
            return None;
        }
        let now = Instant::now();
        let keys: Vec<String> = self
            .consensus
            .read_local(|s| s.locks.iter().map(|(k, _)| k.clone()).collect());
        let leases = self.leases();
        Some(
            keys.into_iter()
                .filter_map(|k| {
                    let (token, left) = leases.left(&k, now)?;
                    Some((k, token, left.as_millis() as u64))
                })
                .collect(),
        )
    }
}

/// A request waiting in line. Dropped while armed (the request went away), it proposes the
/// waiter's `Leave`, then releases the lock if it had reached the waiter.
struct Waiting {
    inner: Option<Arc<Inner>>,
    key: String,
    holder: String,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let (key, holder) = (
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.holder),
        );
        let tasks = inner.tasks.clone();
        tasks.spawn(async move {
            let c = &inner.consensus;
            if let Ok(Some(token)) = leave_line(c, &key, &holder).await {
                let _ = c
                    .propose(Command::Lock(LockCommand::Release { key, token }))
                    .await;
            }
        });
    }
}

/// Why a renewal or release under `token` did not do it.
fn refused(key: &LockKey, token: u64, outcome: Outcome, what: &str) -> LockError {
    match outcome {
        Outcome::Lock(LockOutcome::NotHolder { current }) => LockError::NotHolder {
            key: key.clone(),
            token,
            current,
        },
        other => ConsensusError::Failed(format!("{what} did {other:?}")).into(),
    }
}

/// The token under which `holder` holds `key`, in this node's copy of the table.
fn held_by(c: &Consensus, key: &str, holder: &str) -> Option<u64> {
    c.read_local(|s| {
        s.locks
            .get(key)
            .filter(|l| l.holder == holder)
            .map(|l| l.token)
    })
}

/// Takes `holder` out of `key`'s line; the token it holds the lock under, if the lock
/// reached it first.
async fn leave_line(c: &Consensus, key: &str, holder: &str) -> Result<Option<u64>, ConsensusError> {
    let leave = Command::Lock(LockCommand::Leave {
        key: key.to_string(),
        holder: holder.to_string(),
    });
    let (index, _) = c.propose(leave).await?;
    c.wait_applied(index, consensus_timeout(c)).await?;
    Ok(held_by(c, key, holder))
}

fn consensus_timeout(c: &Consensus) -> Duration {
    c.config().propose_timeout
}
