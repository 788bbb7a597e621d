//! Replica writes to one peer, sent together. While a request of writes to a peer is on its
//! way, the writes that come for that peer wait and go together in the next request
//! (`KvPutMany`), which the peer applies with one flush: under load a peer takes one request
//! and one flush for many writes, and a lone write goes at once, alone.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::Ordering;

use tokio::sync::oneshot;

use super::wire::{KvWire, Request, Response};
use super::{Entry, PutOutcome, Replicator};
use crate::rpc;

/// At most this many writes go in one request...
const BATCH_WRITES: usize = 256;
/// ...and about this many bytes of keys and values.
const BATCH_BYTES: usize = 4 << 20;

type Reply = oneshot::Sender<Result<PutOutcome, String>>;

/// The writes waiting for each peer.
#[derive(Default)]
pub(crate) struct Batches {
    peers: Mutex<HashMap<SocketAddr, Queue>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(Vec<u8>, Entry, Reply)>,
    /// A request to this peer is on its way, and its sender sends the next.
    sending: bool,
}

impl Batches {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Queue>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a write; whether the caller's turn it is to send.
    fn push(&self, addr: SocketAddr, write: (Vec<u8>, Entry, Reply)) -> bool {
        let mut peers = self.lock();
        let queue = peers.entry(addr).or_default();
        queue.waiting.push(write);
        !std::mem::replace(&mut queue.sending, true)
    }

    /// The next writes to send to `addr`, within the limits of a request.
    fn take(&self, addr: SocketAddr) -> Vec<(Vec<u8>, Entry, Reply)> {
        let mut peers = self.lock();
        let Some(queue) = peers.get_mut(&addr) else {
            return Vec::new();
        };
        let (mut count, mut bytes) = (0, 0);
        for (key, entry, _) in &queue.waiting {
            if count == BATCH_WRITES || (count > 0 && bytes > BATCH_BYTES) {
                break;
            }
            count += 1;
            bytes += key.len() + entry.value.as_ref().map_or(0, Vec::len);
        }
        queue.waiting.drain(..count).collect()
    }

    /// Ends a turn: whether more writes wait (the turn goes on) or not (it ends).
    fn more(&self, addr: SocketAddr) -> bool {
        let mut peers = self.lock();
        match peers.get_mut(&addr) {
            Some(queue) if !queue.waiting.is_empty() => true,
            Some(_) => {
                peers.remove(&addr);
                false
            }
            None => false,
        }
    }

    /// A turn dropped before its end (the node is stopping): the writes waiting get an
    /// error, so their coordinators hint them, and the next write starts a turn.
    fn abandon(&self, addr: SocketAddr) {
        self.lock().remove(&addr);
    }
}

/// Abandons the turn unless it ended.
struct Turn<'a> {
    batches: &'a Batches,
    addr: SocketAddr,
    ended: bool,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.batches.abandon(self.addr);
        }
    }
}

impl Replicator {
    /// Sends a write to the replica at `addr`, with whatever other writes for it wait.
    pub(super) async fn put_batched(
        &self,
        addr: SocketAddr,
        key: Vec<u8>,
        entry: Entry,
    ) -> Result<PutOutcome, String> {
        let (tx, rx) = oneshot::channel();
        if self.inner().batches.push(addr, (key, entry, tx)) && self.send_batch(addr).await {
            // Writes came meanwhile: a task of its own sends them, so this write's caller
            // does not wait for theirs.
            let this = self.clone();
            self.inner()
                .tasks
                .spawn(async move { while this.send_batch(addr).await {} });
        }
        rx.await
            .unwrap_or_else(|_| Err("the node stopped before the write was sent".into()))
    }

    /// Sends the writes waiting for `addr` in one request and answers each; whether more
    /// wait (the caller sends them next).
    async fn send_batch(&self, addr: SocketAddr) -> bool {
        let batches = &self.inner().batches;
        let mut turn = Turn {
            batches,
            addr,
            ended: false,
        };
        let (writes, replies): (Vec<_>, Vec<_>) = batches
            .take(addr)
            .into_iter()
            .map(|(key, entry, reply)| ((key, entry), reply))
            .unzip();
        if !writes.is_empty() {
            let stats = &self.inner().stats;
            stats.write_batches.fetch_add(1, Ordering::Relaxed);
            let count = writes.len() as u64;
            stats.batched_writes.fetch_add(count, Ordering::Relaxed);
            let request = Request::KvPutMany(writes);
            let transport = self.inner().placement.transport();
            match rpc::call::<KvWire>(transport, addr, &request).await {
                Ok(Response::KvPutMany(outcomes)) if outcomes.len() == replies.len() => {
                    for (reply, outcome) in replies.into_iter().zip(outcomes) {
                        let _ = reply.send(outcome);
                    }
                }
                Ok(other) => {
                    let e = super::coordinator::unexpected(&other);
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.to_string()));
                    }
                }
            }
        }
        turn.ended = true;
        batches.more(addr)
    }
}
