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

/// A peer with this many writes waiting, or this many bytes of them, is behind: further
/// writes for it fail at once (their coordinators hint them, on disk) instead of waiting in
/// memory.
const WAITING_WRITES: usize = 16_384;
const WAITING_BYTES: usize = 64 << 20;

type Reply = oneshot::Sender<Result<PutOutcome, String>>;

/// What queuing a write did.
#[derive(Debug, PartialEq, Eq)]
enum Queued {
    /// It waits; the caller sends the writes waiting (it is the caller's turn).
    Send,
    /// It waits for the request on its way to be answered.
    Wait,
    /// The peer is behind: the write was not queued.
    Behind,
}

/// The writes waiting for each peer.
#[derive(Default)]
pub(crate) struct Batches {
    peers: Mutex<HashMap<SocketAddr, Queue>>,
}

#[derive(Default)]
struct Queue {
    waiting: Vec<(Vec<u8>, Entry, Reply)>,
    /// Bytes of keys and values waiting.
    bytes: usize,
    /// A request to this peer is on its way, and its sender sends the next.
    sending: bool,
}

fn size(key: &[u8], entry: &Entry) -> usize {
    key.len() + entry.value.as_ref().map_or(0, Vec::len)
}

impl Batches {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SocketAddr, Queue>> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a write, unless the peer is behind.
    fn push(&self, addr: SocketAddr, write: (Vec<u8>, Entry, Reply)) -> Queued {
        let mut peers = self.lock();
        let queue = peers.entry(addr).or_default();
        if queue.waiting.len() >= WAITING_WRITES || queue.bytes >= WAITING_BYTES {
            return Queued::Behind;
        }
        queue.bytes += size(&write.0, &write.1);
        queue.waiting.push(write);
        if std::mem::replace(&mut queue.sending, true) {
            Queued::Wait
        } else {
            Queued::Send
        }
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
            bytes += size(key, entry);
        }
        queue.bytes -= bytes;
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
        let queued = self.inner().batches.push(addr, (key, entry, tx));
        if queued == Queued::Behind {
            return Err(format!(
                "{WAITING_WRITES} writes or {WAITING_BYTES} bytes already wait for this replica"
            ));
        }
        if queued == Queued::Send && self.send_batch(addr).await {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replication::Version;

    fn write(value: usize) -> (Vec<u8>, Entry, Reply) {
        let entry = Entry {
            version: Version::at(1),
            value: Some(vec![0; value]),
            fences: vec![],
            expires: None,
        };
        (b"k".to_vec(), entry, oneshot::channel().0)
    }

    #[test]
    fn a_turn_takes_what_waits_within_a_request_and_a_peer_behind_takes_nothing_more() {
        let (b, a) = (Batches::default(), "127.0.0.1:1".parse().unwrap());
        // The first write's caller sends; the next ones wait for it.
        assert_eq!(b.push(a, write(10)), Queued::Send);
        assert_eq!(b.push(a, write(10)), Queued::Wait);
        assert_eq!(b.take(a).len(), 2);
        assert!(!b.more(a), "nothing waits: the turn ends");
        assert_eq!(b.push(a, write(10)), Queued::Send, "a new turn");
        // A request carries at most BATCH_WRITES writes, or one past BATCH_BYTES.
        for _ in 1..BATCH_WRITES + 5 {
            assert_eq!(b.push(a, write(1)), Queued::Wait);
        }
        assert_eq!(b.take(a).len(), BATCH_WRITES);
        assert!(b.more(a));
        assert_eq!(b.take(a).len(), 5);
        for _ in 0..3 {
            b.push(a, write(BATCH_BYTES / 2 + 1));
        }
        assert_eq!(b.take(a).len(), 2);
        assert_eq!(b.take(a).len(), 1);
        // A peer behind: no more writes wait for it, until some are taken.
        for _ in 0..WAITING_BYTES / (1 << 20) {
            assert_ne!(b.push(a, write(1 << 20)), Queued::Behind);
        }
        assert_eq!(b.push(a, write(1)), Queued::Behind);
        assert!(!b.take(a).is_empty());
        assert_ne!(b.push(a, write(1)), Queued::Behind);
        // An abandoned turn drops what waited (its callers hear of it) and the next write
        // starts a new one.
        b.abandon(a);
        assert_eq!(b.push(a, write(1)), Queued::Send);
    }
}
