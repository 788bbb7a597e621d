//! The coordinator: reads, writes, conditional writes and scans that this node runs for its
//! clients and guests, over the replicas of each key.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use tokio::sync::mpsc;

use super::wire::{KvWire, Request, Response};
use super::{
    Entry, Expect, Fence, Namespace, Overrides, PutOutcome, Read, ReplicationError, Replicator,
    Version, View, check_limits,
};
use crate::id::{LockKey, NodeId};
use crate::placement::Route;
use crate::rpc;

impl Replicator {
    /// Reads `key` in `ns`: the newest version among `r` replicas (of each ring in
    /// transition). Replicas found behind are repaired in the background. A read made under
    /// `fences` raises their tokens at the replicas it asks, so a holder that lost one of
    /// the locks cannot write behind it, and is refused like a write under them would be.
    pub async fn get(
        &self,
        ns: &Namespace,
        key: &[u8],
        fences: &[Fence],
        o: Overrides,
    ) -> Result<Option<Read>, ReplicationError> {
        let full = ns.key(key);
        check_limits(key, None)?;
        let newest = self.newest(ns, full, fences, o).await?;
        let now = super::now_ms();
        Ok(newest.and_then(|e| e.read(now)))
    }

    /// The newest entry (a tombstone too) among `r` replicas of each ring in transition;
    /// replicas found behind are repaired in the background.
    async fn newest(
        &self,
        ns: &Namespace,
        full: Vec<u8>,
        fences: &[Fence],
        o: Overrides,
    ) -> Result<Option<Entry>, ReplicationError> {
        let fences = self.fences(fences);
        let view = self.view();
        let (n, r, w) = self.quorum(ns, o, &view)?;
        let sets = self.sets(&view, &full, n);
        let live_cap = self.switches().quorum_of_live_replicas;
        let needed = |i: usize, s: &[NodeId]| needed(i, s, r, w, live_cap);
        let targets = union(&sets);
        let (tx, mut rx) = mpsc::channel(targets.len().max(1));
        for node in &targets {
            let (this, node, key, tx) = (self.clone(), node.clone(), full.clone(), tx.clone());
            let addr = view.addrs.get(&node).copied();
            let fences = fences.to_vec();
            self.inner.tasks.spawn(async move {
                let result = this.fetch_one(&node, addr, &key, fences).await;
                let _ = tx.send((node, result)).await;
            });
        }
        drop(tx);
        let mut answers: HashMap<NodeId, Option<Entry>> = HashMap::new();
        let mut failures = Vec::new();
        while let Some((node, result)) = rx.recv().await {
            match result {
                Ok(Ok(entry)) => {
                    answers.insert(node, entry);
                }
                Ok(Err((lock, seen))) => {
                    let token = fences
                        .iter()
                        .find(|f| f.lock == lock)
                        .map_or(0, |f| f.token);
                    return Err(self.fenced(lock, token, seen));
                }
                Err(e) => failures.push(format!("{node}: {e}")),
            }
            if sets
                .iter()
                .enumerate()
                .all(|(i, s)| count_in(s, |x| answers.contains_key(x)) >= needed(i, s))
            {
                break;
            }
        }
        let short = sets
            .iter()
            .enumerate()
            .find(|(i, s)| count_in(s, |x| answers.contains_key(x)) < needed(*i, s));
        if let Some((i, set)) = short {
            self.inner.stats.unavailable.fetch_add(1, Ordering::Relaxed);
            return Err(ReplicationError::Unavailable {
                what: if i == 0 {
                    "read"
                } else {
                    "read, of the owners before the ring changed"
                },
                needed: needed(i, set),
                got: count_in(set, |x| answers.contains_key(x)),
                failures: explain(&failures, set.len()),
            });
        }
        self.inner.stats.reads.fetch_add(1, Ordering::Relaxed);
        let newest = answers
            .values()
            .flatten()
            .max_by_key(|e| e.version)
            .cloned();
        if let Some(newest) = &newest {
            self.observe(newest.version);
            let behind: Vec<NodeId> = answers
                .iter()
                .filter(|(_, e)| e.as_ref().is_none_or(|e| e.version < newest.version))
                .map(|(n, _)| n.clone())
                .collect();
            if !behind.is_empty() {
                self.inner
                    .stats
                    .read_repairs
                    .fetch_add(behind.len() as u64, Ordering::Relaxed);
                let (this, newest) = (self.clone(), newest.clone());
                self.inner.tasks.spawn(async move {
                    for node in behind {
                        let _ = this
                            .push_to(&node, vec![(full.clone(), newest.clone())], false)
                            .await;
                    }
                });
            }
        }
        Ok(newest)
    }

    /// Writes `value` (or deletes, with `None`) under `key` in `ns`, acknowledged once `w`
    /// replicas (of each ring in transition) have flushed it. With `expect`, only if the key's
    /// last acknowledged write is in that state. With `fences`, the write is made under those
    /// locks: its version carries their largest token, and a replica that has seen one of the
    /// locks granted again refuses it ([`ReplicationError::Fenced`]). Returns the new version.
    pub async fn put(
        &self,
        ns: &Namespace,
        key: &[u8],
        value: Option<Vec<u8>>,
        expect: Option<Expect>,
        fences: &[Fence],
        o: Overrides,
    ) -> Result<Version, ReplicationError> {
        check_limits(key, value.as_deref())?;
        super::check_ttl(o.ttl)?;
        let full = ns.key(key);
        match expect {
            Some(expect) => self.conditional(ns, &full, value, expect, fences, o).await,
            None => self.put_here(ns, &full, value, false, fences, o).await,
        }
    }

    /// A conditional write is coordinated by the key's primary replica, one at a time per key,
    /// so concurrent writers do not split the replicas between them. When the primary cannot
    /// be reached, this node coordinates it.
    async fn conditional(
        &self,
        ns: &Namespace,
        full: &[u8],
        value: Option<Vec<u8>>,
        expect: Expect,
        fences: &[Fence],
        o: Overrides,
    ) -> Result<Version, ReplicationError> {
        let view = self.view();
        let (n, _, _) = self.quorum(ns, o, &view)?;
        if let Route::Owner(primary, addr) = self.inner.placement.route(full, n) {
            let request = Request::KvCas {
                ns: ns.clone(),
                key: full[ns.as_str().len() + 1..].to_vec(),
                value: value.clone(),
                expect,
                fences: fences.to_vec(),
                w: o.w,
                settle_ms: o.settle.map(|d| d.as_millis() as u64),
                ttl_ms: o.ttl.map(|d| d.as_millis() as u64),
            };
            let within = CAS_TIMEOUT + o.settle.unwrap_or_default();
            let answer = self
                .inner
                .placement
                .forward::<KvWire>(&primary, addr, &request, within);
            match answer.await {
                Ok(Some(Response::KvCas(result))) => return result.map_err(ReplicationError::from),
                Ok(Some(other)) => {
                    tracing::warn!(%primary, ?other, "unexpected answer to a conditional write")
                }
                Ok(None) => {}
                Err(e) => {
                    // The primary may still apply it: running it here as well could apply it
                    // twice, or let two writers both win.
                    return Err(ReplicationError::Remote(format!(
                        "{e}; the write may have been applied: read the key and retry"
                    )));
                }
            }
        }
        self.conditional_here(ns, full, value, expect, fences, o)
            .await
    }

    /// Coordinates a conditional write on this node, holding the key's lock stripe.
    pub(crate) async fn conditional_here(
        &self,
        ns: &Namespace,
        full: &[u8],
        value: Option<Vec<u8>>,
        expect: Expect,
        fences: &[Fence],
        o: Overrides,
    ) -> Result<Version, ReplicationError> {
        let stripe = (crate::ring::Ring::point(full) % self.inner.stripes.len() as u64) as usize;
        let _turn = self.inner.stripes[stripe].lock().await;
        // The check reads a quorum, so it sees the last acknowledged write; the write that
        // follows is an ordinary one above it. Replicas never see a condition, so a
        // replica that lags cannot take a write the others refuse.
        let current = self.newest(ns, full.to_vec(), fences, o).await?;
        let now = super::now_ms();
        let live = current
            .as_ref()
            .filter(|e| e.is_live(now))
            .map(|e| e.version);
        let holds = match expect {
            // A value that expired counts as absent.
            Expect::Absent => live.is_none(),
            // The value read is still the last write, even if it expired since.
            Expect::Version(v) => current
                .as_ref()
                .is_some_and(|e| e.value.is_some() && e.version == v),
        };
        if !holds {
            return Err(ReplicationError::Conflict { current: live });
        }
        self.put_here(ns, full, value, true, fences, o).await
    }

    /// Coordinates a write on this node. For a conditional write (checked by the caller), a
    /// replica holding a newer version means another write came first: a conflict.
    async fn put_here(
        &self,
        ns: &Namespace,
        full: &[u8],
        value: Option<Vec<u8>>,
        conditional: bool,
        fences: &[Fence],
        o: Overrides,
    ) -> Result<Version, ReplicationError> {
        let fences = self.fences(fences);
        let mut token = fences.iter().map(|f| f.token).max().unwrap_or(0);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let version = Version {
                token,
                ..self.tick()
            };
            let entry = Entry {
                version,
                value: value.clone(),
                fences: fences.to_vec(),
                expires: o
                    .ttl
                    .filter(|_| value.is_some())
                    .map(|ttl| version.millis().saturating_add(ttl.as_millis() as u64)),
            };
            match self.write(ns, full, &entry, o).await? {
                WriteResult::Done => {
                    self.inner.stats.writes.fetch_add(1, Ordering::Relaxed);
                    return Ok(entry.version);
                }
                WriteResult::Fenced { lock, seen } => {
                    let token = fences
                        .iter()
                        .find(|f| f.lock == lock)
                        .map_or(token, |f| f.token);
                    return Err(self.fenced(lock, token, seen));
                }
                WriteResult::Stale(newer) if conditional => {
                    return Err(ReplicationError::Conflict {
                        current: Some(newer),
                    });
                }
                WriteResult::Stale(newer) => {
                    // The key was last written under a later lock grant (of another lock, or
                    // none at all for an unfenced write): go above it. The replicas still
                    // check this write's own fences, so a holder that lost its lock gains
                    // nothing by it.
                    token = token.max(newer.token);
                    if attempt == 5 {
                        return Err(ReplicationError::Remote(format!(
                            "replicas kept answering with newer versions ({newer}; is a node's clock far ahead?); the write may show on some of them: retry"
                        )));
                    }
                    // A replica holds a newer version (a peer's clock runs ahead): write again
                    // above it, so this acknowledged write is not hidden behind an older one.
                    self.inner
                        .stats
                        .stale_retries
                        .fetch_add(1, Ordering::Relaxed);
                    self.observe(newer);
                }
            }
        }
    }

    /// The fences to read and write under: none when a test switched fencing off.
    fn fences<'a>(&self, fences: &'a [Fence]) -> &'a [Fence] {
        if self.switches().no_fencing {
            &[]
        } else {
            fences
        }
    }

    /// Counts a read or write refused for a lost lock, and says so.
    fn fenced(&self, lock: LockKey, token: u64, seen: u64) -> ReplicationError {
        self.inner
            .stats
            .fenced_writes
            .fetch_add(1, Ordering::Relaxed);
        ReplicationError::Fenced { lock, token, seen }
    }

    async fn write(
        &self,
        ns: &Namespace,
        full: &[u8],
        entry: &Entry,
        o: Overrides,
    ) -> Result<WriteResult, ReplicationError> {
        let view = self.view();
        let (n, r, w) = self.quorum(ns, o, &view)?;
        let sets = self.sets(&view, full, n);
        let switches = self.switches();
        let needed = |i: usize, s: &[NodeId]| needed(i, s, w, r, switches.quorum_of_live_replicas);
        let targets = union(&sets);
        let (tx, mut rx) = mpsc::channel(targets.len().max(1));
        for node in &targets {
            let (this, node, key, entry, tx) = (
                self.clone(),
                node.clone(),
                full.to_vec(),
                entry.clone(),
                tx.clone(),
            );
            let addr = view.addrs.get(&node).copied();
            self.inner.tasks.spawn(async move {
                let result = this.put_one(&node, addr, &key, &entry).await;
                if result.is_err() && !switches.no_hints {
                    // The replica did not take it: hold it for when it is back.
                    this.hint(&node, &key, &entry);
                }
                let _ = tx.send((node, result)).await;
            });
        }
        drop(tx);
        let mut applied: Vec<NodeId> = Vec::new();
        let mut failures = Vec::new();
        let mut stale: Option<Version> = None;
        while let Some((node, result)) = rx.recv().await {
            match result {
                Ok(PutOutcome::Applied) => applied.push(node),
                Ok(PutOutcome::Stale(_)) if switches.ignore_stale => applied.push(node),
                Ok(PutOutcome::Stale(v)) => stale = stale.max(Some(v)),
                Ok(PutOutcome::Fenced { lock, seen }) => {
                    // The writer lost its lock; the replicas that took the write keep it,
                    // below every write of the later holder.
                    return Ok(WriteResult::Fenced { lock, seen });
                }
                Err(e) => failures.push(format!("{node}: {e}")),
            }
            if sets
                .iter()
                .enumerate()
                .all(|(i, s)| count_in(s, |x| applied.contains(x)) >= needed(i, s))
            {
                if let Some(settle) = o.settle {
                    // Give the other replicas a moment to take it too; they have it anyway
                    // once hints or anti-entropy deliver it.
                    let rest = async { while rx.recv().await.is_some() {} };
                    let _ = tokio::time::timeout(settle, rest).await;
                }
                return Ok(WriteResult::Done);
            }
            // A write that met a newer version starts again (or conflicts); stop waiting.
            if stale.is_some() {
                break;
            }
        }
        if let Some(v) = stale {
            return Ok(WriteResult::Stale(v));
        }
        // The first replica set short of its quorum, for the error.
        let (short, got, need) = sets
            .iter()
            .enumerate()
            .map(|(i, s)| (i, count_in(s, |x| applied.contains(x)), needed(i, s)))
            .find(|(_, got, need)| got < need)
            .unwrap_or((0, 0, w));
        self.inner.stats.unavailable.fetch_add(1, Ordering::Relaxed);
        Err(ReplicationError::Unavailable {
            // A failed write is not undone: the replicas that took it keep it, and hints carry
            // it to the others, so it may still take effect (and win over later writes).
            what: if short == 0 {
                "write; it may still take effect, as replicas that took it keep it"
            } else {
                "write, to the owners before the ring changed; it may still take effect, as replicas that took it keep it"
            },
            needed: need,
            got,
            failures: explain(&failures, sets.get(short).map_or(0, Vec::len)),
        })
    }

    /// Up to `limit` live keys of `ns` starting with `prefix`, from `start` on, in key order:
    /// the newest version of each among every node that answered. Returns the entries, where
    /// the next page starts (if there may be more), and the nodes that did not answer (their
    /// keys may be missing).
    pub async fn scan(
        &self,
        ns: &Namespace,
        prefix: &[u8],
        start: &[u8],
        limit: usize,
    ) -> Result<Scan, ReplicationError> {
        let full_prefix = ns.key(prefix);
        let full_start = ns.key(start);
        let view = self.view();
        let mut nodes = view.ring.nodes();
        for (ring, _) in &view.earlier {
            for n in ring.nodes() {
                if !nodes.contains(&n) {
                    nodes.push(n);
                }
            }
        }
        // Tombstones count against each node's page, so ask for more than `limit`.
        let ask = limit.saturating_mul(2).max(limit + 64);
        let calls = nodes.iter().map(|node| {
            let addr = view.addrs.get(node).copied();
            let (p, s) = (full_prefix.clone(), full_start.clone());
            async move { (node.clone(), self.scan_one(node, addr, p, s, ask).await) }
        });
        let mut merged: BTreeMap<Vec<u8>, Entry> = BTreeMap::new();
        let mut missing = Vec::new();
        // A node whose page was cut short says nothing past its last key: only keys up to
        // the smallest such key are complete.
        let mut cut: Option<Vec<u8>> = None;
        for (node, result) in futures::future::join_all(calls).await {
            match result {
                Ok((entries, more)) => {
                    if more && let Some((last, _)) = entries.last() {
                        cut = Some(match cut {
                            Some(c) if c <= *last => c,
                            _ => last.clone(),
                        });
                    }
                    for (k, e) in entries {
                        if !k.starts_with(&full_prefix) {
                            continue;
                        }
                        match merged.get(&k) {
                            Some(old) if old.version >= e.version => {}
                            _ => {
                                merged.insert(k, e);
                            }
                        }
                    }
                }
                Err(e) => missing.push(format!("{node}: {e}")),
            }
        }
        let skip = ns.as_str().len() + 1;
        let now = super::now_ms();
        let mut entries = Vec::new();
        let mut next = None;
        for (k, e) in merged {
            if cut.as_ref().is_some_and(|c| k > *c) {
                break;
            }
            let Some(read) = e.read(now) else { continue };
            if entries.len() == limit {
                next = Some(k[skip..].to_vec());
                break;
            }
            entries.push((k[skip..].to_vec(), read));
        }
        if next.is_none()
            && let Some(mut c) = cut
        {
            // Everything up to the cut is here; the next page starts just after it.
            c.push(0);
            next = Some(c[skip..].to_vec());
        }
        Ok(Scan {
            entries,
            next,
            missing,
        })
    }

    /// The replica sets of `key` that must each reach quorum. A set smaller than the quorum
    /// (an earlier ring of fewer nodes, while the cluster grew) needs all its members.
    fn sets(&self, view: &View, key: &[u8], n: usize) -> Vec<Vec<NodeId>> {
        let mut sets = view.replica_sets(key, n);
        if self.switches().current_ring_only {
            sets.truncate(1);
        }
        sets
    }

    /// This node's copy, or a peer's over RPC; `Ok(Err(..))` when a lock of `fences` was
    /// granted again.
    async fn fetch_one(
        &self,
        node: &NodeId,
        addr: Option<SocketAddr>,
        key: &[u8],
        fences: Vec<Fence>,
    ) -> Result<Fetched, String> {
        if *node == self.inner.me {
            return self
                .local_get_fenced(key, &fences)
                .await
                .map_err(|e| e.to_string());
        }
        let request = Request::KvGet {
            key: key.to_vec(),
            fences,
        };
        match self.ask(addr, &request).await? {
            Response::KvEntry(e) => {
                if let Some(e) = &e {
                    self.observe(e.version);
                }
                Ok(Ok(e))
            }
            Response::KvRefused { lock, seen } => Ok(Err((lock, seen))),
            other => Err(unexpected(&other)),
        }
    }

    async fn put_one(
        &self,
        node: &NodeId,
        addr: Option<SocketAddr>,
        key: &[u8],
        entry: &Entry,
    ) -> Result<PutOutcome, String> {
        if *node == self.inner.me {
            return self.apply(key, entry).await.map_err(|e| e.to_string());
        }
        let addr = addr.ok_or("no address known")?;
        self.put_batched(addr, key.to_vec(), entry.clone()).await
    }

    async fn scan_one(
        &self,
        node: &NodeId,
        addr: Option<SocketAddr>,
        prefix: Vec<u8>,
        start: Vec<u8>,
        limit: usize,
    ) -> Result<(super::replica::Entries, bool), String> {
        if *node == self.inner.me {
            return self
                .local_scan(&prefix, &start, limit)
                .map_err(|e| e.to_string());
        }
        let request = Request::KvScan {
            prefix,
            start,
            limit: limit as u32,
        };
        match self.ask(addr, &request).await? {
            Response::KvScanned { entries, more } => Ok((entries, more)),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends entries to a node, which applies the newer ones and flushes. `hinted`: they are
    /// hints, checked against the fences as their writes were (see [`Replicator::apply_all`]).
    pub(crate) async fn push_to(
        &self,
        node: &NodeId,
        entries: Vec<(Vec<u8>, Entry)>,
        hinted: bool,
    ) -> Result<(), String> {
        if *node == self.inner.me {
            return self
                .apply_all(entries, hinted)
                .await
                .map_err(|e| e.to_string());
        }
        let addr = self.view().addrs.get(node).copied();
        match self.ask(addr, &Request::KvPush { entries, hinted }).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    /// Sends a request to a peer at `addr` (`None`: its address is unknown).
    async fn ask(&self, addr: Option<SocketAddr>, request: &Request) -> Result<Response, String> {
        let addr = addr.ok_or("no address known")?;
        rpc::call::<KvWire>(self.inner.placement.transport(), addr, request)
            .await
            .map_err(|e| e.to_string())
    }

    /// Holds a write for a replica that did not take it.
    fn hint(&self, node: &NodeId, key: &[u8], entry: &Entry) {
        let newer = |new: &[u8], old: &[u8]| match (Entry::decode(new), Entry::decode(old)) {
            (Ok(n), Ok(o)) => n.version > o.version,
            _ => true,
        };
        match self
            .inner
            .store
            .put_hint(node.as_str(), key, &entry.encode(), newer)
        {
            Ok(()) => {
                self.inner
                    .stats
                    .hints_stored
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!(%node, error = %e, "could not store a hint"),
        }
    }
}

/// The error for an answer of the wrong kind.
pub(super) fn unexpected(answer: &Response) -> String {
    format!("unexpected answer {answer:?}")
}

/// A page of a scan.
#[derive(Debug)]
pub struct Scan {
    /// Live keys (without the namespace) and values, in key order.
    pub entries: Vec<(Vec<u8>, Read)>,
    /// Where the next page starts, when there may be more.
    pub next: Option<Vec<u8>>,
    /// Nodes that did not answer, and why.
    pub missing: Vec<String>,
}

/// A replica's copy, or the lock (and its larger token) that refused the read.
type Fetched = Result<Option<Entry>, (LockKey, u64)>;

enum WriteResult {
    Done,
    Stale(Version),
    Fenced { lock: LockKey, seen: u64 },
}

fn union(sets: &[Vec<NodeId>]) -> Vec<NodeId> {
    let mut all: Vec<NodeId> = Vec::new();
    for s in sets {
        for n in s {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
    }
    all
}

/// How long a forwarded conditional write may take at the primary (its quorum read, its
/// write, and waiting for its turn behind others on the same keys).
const CAS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Answers needed from replica set `i` (0: the current ring's) for an operation of quorum `q`
/// whose counterpart has quorum `other` (`r` and `w`). The current set needs `q` (at most its
/// size). An earlier ring's set needs just enough to overlap every operation of the other
/// kind made under that ring, which needed `other` of it: `size - other + 1`. So a set of two
/// from the ring before a node joined needs one answer, not two, when `w` was two.
/// `live_cap` (a test switch) caps the current set's quorum at its live replicas.
fn needed(i: usize, set: &[NodeId], q: usize, other: usize, live_cap: bool) -> usize {
    let size = set.len();
    if i == 0 {
        // Never fewer than asked: a set smaller than the quorum (its other members are down)
        // cannot serve, rather than serve with fewer copies than promised.
        if live_cap { q.min(size) } else { q }
    } else {
        (size - other.min(size) + 1).min(size)
    }
}

/// What the replicas that failed said, or why there were too few of them.
fn explain(failures: &[String], replicas: usize) -> String {
    if failures.is_empty() {
        format!(
            "this node's ring has only {replicas} live replica(s) for the key (down members are not on it; a node that just started may still be learning the cluster)"
        )
    } else {
        failures.join("; ")
    }
}

fn count_in(set: &[NodeId], pred: impl Fn(&NodeId) -> bool) -> usize {
    set.iter().filter(|n| pred(n)).count()
}
