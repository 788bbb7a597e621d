//! Content-addressed blobs on the ring: modules and map/reduce input chunks today, shuffle
//! partitions next. [`Blobs::census`] tells a client which of its blobs the cluster lacks.
//!
//! A blob is named by the blake3 digest of its bytes and kept as a file ([`disk`]) on the
//! node that took it and on its digest's replicas (3); [`Blobs::put`] returns once two
//! nodes have synced it. A node that needs a blob it lacks pulls it from the digest's
//! replicas, then from any other node: the bytes stream over one QUIC stream in pieces of
//! [`PIECE`] bytes (no frame holds a whole blob, so a blob's size is bounded by disk, not by
//! the frame cap), are hashed as they are written, and are put in place only if they match.
//! A copy that does not match is skipped, counted, and replaced on the node that held it.
//! Reading a blob from this node's disk checks it too.

pub mod disk;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::{FutureExt, StreamExt};

use crate::id::{Digest, NodeId};
use crate::placement::Placement;
use crate::rpc::{self, PieceStream, Router};
use crate::tasks::Tasks;
pub use disk::{BlobDir, DiskError};
use wire::{BlobsWire, Request, Response};

/// Copies of each blob placed on the ring.
pub const REPLICAS: usize = 3;
/// Copies synced before a put is acknowledged.
pub const WRITE: usize = 2;
/// Bytes per piece on the wire.
pub const PIECE: usize = 1 << 20;
/// The most blobs one question of which are held may ask about.
pub const MAX_ASKED: usize = 4096;

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// This node's disk failed, or its copy is missing or corrupt.
    #[error(transparent)]
    Disk(#[from] DiskError),
    /// No node could provide the blob.
    #[error("blob {digest} could not be fetched from any node: {tried}")]
    Unavailable {
        /// The blob.
        digest: Digest,
        /// What each node said.
        tried: String,
    },
    /// Too few nodes stored it.
    #[error(
        "blob {digest} was stored on {got} of the {needed} nodes needed ({failures}); try again when more nodes are up"
    )]
    NotReplicated {
        /// The blob.
        digest: Digest,
        /// Copies synced.
        got: usize,
        /// Copies needed.
        needed: usize,
        /// What the others said.
        failures: String,
    },
    /// A question about too many blobs at once.
    #[error("asked about {asked} blobs at once; ask about at most {max} at a time")]
    TooMany {
        /// Blobs asked about.
        asked: usize,
        /// The most one question may ask about.
        max: usize,
    },
}

/// Where some blobs are held, as [`Blobs::census`] found.
#[derive(Debug)]
pub struct Census {
    /// For each digest, its size, if any node asked holds it.
    pub sizes: Vec<Option<u64>>,
    /// For each digest, the copies found (on this node and the digest's replicas).
    pub copies: Vec<usize>,
    /// The copies a blob stored now gets ([`WRITE`], at most the cluster's size).
    pub needed: usize,
    /// The replicas that did not answer, and why.
    pub silent: Vec<String>,
}

impl Census {
    /// The indexes of the digests with fewer copies than a blob stored now gets: what a
    /// client should upload.
    pub fn short(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.copies.len()).filter(|&i| self.copies[i] < self.needed)
    }
}

/// Counters of the blob service.
#[derive(Debug, Default)]
pub struct BlobStats {
    /// Blobs fetched from other nodes.
    pub fetched: AtomicU64,
    /// Copies received from other nodes that did not match their digest.
    pub corrupt: AtomicU64,
    /// Bytes received from other nodes (good copies and bad).
    pub bytes_received: AtomicU64,
}

impl BlobStats {
    /// Appends the blob service's metrics.
    pub fn render_metrics(&self, out: &mut String) {
        use crate::metrics::{Kind, single};
        for (name, help, c) in [
            (
                "weft_blobs_fetched_total",
                "Blobs (modules among them) fetched from other nodes.",
                &self.fetched,
            ),
            (
                "weft_blobs_corrupt_total",
                "Blob copies from other nodes that did not match their digest.",
                &self.corrupt,
            ),
            (
                "weft_blob_bytes_received_total",
                "Blob bytes received from other nodes.",
                &self.bytes_received,
            ),
        ] {
            single(out, name, Kind::Counter, help, c.load(Ordering::Relaxed));
        }
    }
}

/// This node's blob service. Cheap to clone.
#[derive(Clone)]
pub struct Blobs {
    inner: Arc<Inner>,
}

struct Inner {
    dir: BlobDir,
    placement: Placement,
    tasks: Tasks,
    /// One fetch at a time per blob: concurrent first reads fetch it once.
    fetching: Mutex<HashMap<Digest, Arc<tokio::sync::Mutex<()>>>>,
    stats: BlobStats,
}

/// Why pulling a blob from one node failed.
enum Pull {
    Corrupt(Digest),
    Failed(String),
}

impl Blobs {
    /// The blob service over `dir`.
    pub fn new(dir: BlobDir, placement: Placement, tasks: Tasks) -> Blobs {
        Blobs {
            inner: Arc::new(Inner {
                dir,
                placement,
                tasks,
                fetching: Mutex::default(),
                stats: BlobStats::default(),
            }),
        }
    }

    /// The counters.
    pub fn stats(&self) -> &BlobStats {
        &self.inner.stats
    }

    /// This node's blob files.
    pub fn dir(&self) -> &BlobDir {
        &self.inner.dir
    }

    /// Stores `bytes` here and on the digest's replicas; returns once [`WRITE`] nodes (at
    /// most the cluster's size) have synced it.
    pub async fn put(&self, bytes: Bytes) -> Result<Digest, BlobError> {
        let dir = self.inner.dir.clone();
        let size = bytes.len() as u64;
        let digest = blocking(move || dir.put(&bytes)).await?;
        let p = &self.inner.placement;
        let view = p.view();
        let me = p.me().clone();
        let offers = view
            .replicas(digest.as_bytes(), REPLICAS)
            .into_iter()
            .filter(|o| *o != me)
            .map(|owner| {
                let addr = view.addr(&owner);
                async move {
                    let addr = addr.ok_or_else(|| format!("{owner}: no address known"))?;
                    self.offer(addr, digest, size)
                        .await
                        .map_err(|e| format!("{owner}: {e}"))
                }
            });
        let results = futures::future::join_all(offers).await;
        let got = 1 + results.iter().filter(|r| r.is_ok()).count();
        let needed = view.cap(WRITE);
        if got < needed {
            let failures: Vec<String> = results.into_iter().filter_map(Result::err).collect();
            return Err(BlobError::NotReplicated {
                digest,
                got,
                needed,
                failures: failures.join("; "),
            });
        }
        Ok(digest)
    }

    /// Asks the node at `addr` to pull a blob from this node, and waits until it has.
    async fn offer(&self, addr: SocketAddr, digest: Digest, size: u64) -> Result<(), String> {
        let request = Request::Offer {
            digest,
            size,
            from: self.inner.placement.me().clone(),
        };
        let transport = self.inner.placement.transport();
        match rpc::call_within::<BlobsWire>(transport, addr, &request, pull_time(size)).await {
            Ok(Response::Done) => Ok(()),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) => Err(e.to_string()),
        }
    }

    /// A blob's bytes, verified: this node's copy, or fetched from another node first.
    pub async fn get(&self, digest: Digest) -> Result<Vec<u8>, BlobError> {
        let dir = self.inner.dir.clone();
        match blocking(move || dir.read(digest)).await {
            Ok(bytes) => return Ok(bytes),
            Err(DiskError::Missing(_)) => {}
            Err(DiskError::Mismatch { .. }) => {
                tracing::warn!(%digest, "this node's copy of a blob is corrupt; fetching it again");
            }
            Err(e) => return Err(e.into()),
        }
        self.fetch(digest).await?;
        let dir = self.inner.dir.clone();
        Ok(blocking(move || dir.read(digest)).await?)
    }

    /// Makes sure a good copy of `digest` is on this node's disk, pulling it from the
    /// digest's replicas and then any other node, skipping copies that do not match.
    pub async fn fetch(&self, digest: Digest) -> Result<(), BlobError> {
        let _turn = self.turn(digest).await;
        if self.holds_good(digest).await {
            return Ok(());
        }
        let p = &self.inner.placement;
        let view = p.view();
        let me = p.me().clone();
        let mut candidates = view.replicas(digest.as_bytes(), REPLICAS);
        for n in view.ring.nodes() {
            if !candidates.contains(&n) {
                candidates.push(n);
            }
        }
        let mut tried = Vec::new();
        let mut corrupt_at = Vec::new();
        for node in candidates.into_iter().filter(|n| *n != me) {
            let Some(addr) = view.addr(&node) else {
                continue;
            };
            match self.pull(addr, digest).await {
                Ok(size) => {
                    self.inner.stats.fetched.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(%digest, from = %node, bytes = size, "fetched a blob");
                    for bad in corrupt_at {
                        self.repair(bad, digest, size);
                    }
                    return Ok(());
                }
                Err(Pull::Corrupt(actual)) => {
                    self.inner.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(%digest, from = %node, %actual, "a node's copy of a blob does not match its digest; trying another");
                    tried.push(format!(
                        "{node}: corrupt copy (hashes to {})",
                        actual.short()
                    ));
                    corrupt_at.push(node);
                }
                Err(Pull::Failed(e)) => tried.push(format!("{node}: {e}")),
            }
        }
        Err(BlobError::Unavailable {
            digest,
            tried: if tried.is_empty() {
                "no other node is up".into()
            } else {
                tried.join("; ")
            },
        })
    }

    /// Waits for this node's turn to fetch `digest`.
    async fn turn(&self, digest: Digest) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut fetching = self.inner.fetching.lock().expect("not poisoned");
            fetching.retain(|_, l| Arc::strong_count(l) > 1);
            fetching.entry(digest).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// For each of `digests`, the size of the copy on this node's disk, if there is one
    /// (present, not checked: a copy is checked when it is read).
    async fn held_here(&self, digests: Vec<Digest>) -> Result<Vec<Option<u64>>, BlobError> {
        let dir = self.inner.dir.clone();
        let sizes = blocking(move || {
            digests
                .iter()
                .map(|d| dir.size(*d))
                .collect::<Result<Vec<_>, DiskError>>()
        })
        .await?;
        Ok(sizes)
    }

    /// Where `digests` are held: for each, its size and how many copies this node and the
    /// digest's replicas hold. Asks each replica once, about all the digests it should hold.
    pub async fn census(&self, digests: &[Digest]) -> Result<Census, BlobError> {
        if digests.len() > MAX_ASKED {
            return Err(BlobError::TooMany {
                asked: digests.len(),
                max: MAX_ASKED,
            });
        }
        let here = self.held_here(digests.to_vec()).await?;
        let p = &self.inner.placement;
        let view = p.view();
        let me = p.me().clone();
        let mut census = Census {
            sizes: here.clone(),
            copies: here.iter().map(|s| usize::from(s.is_some())).collect(),
            needed: view.cap(WRITE),
            silent: Vec::new(),
        };
        let mut ask: std::collections::BTreeMap<NodeId, Vec<usize>> = Default::default();
        for (i, d) in digests.iter().enumerate() {
            for owner in view.replicas(d.as_bytes(), REPLICAS) {
                if owner != me {
                    ask.entry(owner).or_default().push(i);
                }
            }
        }
        let transport = p.transport();
        let answers = ask.into_iter().map(|(node, which)| {
            let addr = view.addr(&node);
            let request = Request::Has {
                digests: which.iter().map(|&i| digests[i]).collect(),
            };
            async move {
                let Some(addr) = addr else {
                    return (node, which, Err("no address known".to_string()));
                };
                let within = transport.rpc_timeout();
                let answer =
                    match rpc::call_within::<BlobsWire>(transport, addr, &request, within).await {
                        Ok(Response::Held(sizes)) if sizes.len() == which.len() => Ok(sizes),
                        Ok(other) => Err(format!("unexpected answer {other:?}")),
                        Err(e) => Err(e.to_string()),
                    };
                (node, which, answer)
            }
        });
        for (node, which, answer) in futures::future::join_all(answers).await {
            match answer {
                Ok(sizes) => {
                    for (i, size) in which.into_iter().zip(sizes) {
                        if let Some(size) = size {
                            census.copies[i] += 1;
                            census.sizes[i].get_or_insert(size);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(%node, error = %e, "could not ask a node which blobs it holds");
                    census.silent.push(format!("{node}: {e}"));
                }
            }
        }
        Ok(census)
    }

    /// Whether a copy that matches its digest is on this node's disk.
    async fn holds_good(&self, digest: Digest) -> bool {
        let dir = self.inner.dir.clone();
        blocking(move || dir.verify(digest)).await.is_ok()
    }

    /// Streams a blob from the node at `addr` to this node's disk; returns its size.
    async fn pull(&self, addr: SocketAddr, digest: Digest) -> Result<u64, Pull> {
        let transport = self.inner.placement.transport();
        let request = Request::Read { digest };
        let within = transport.rpc_timeout();
        let failed = |e: &dyn std::fmt::Display| Pull::Failed(e.to_string());
        let (head, mut pieces) = rpc::open::<BlobsWire>(transport, addr, &request, within)
            .await
            .map_err(|e| failed(&e))?;
        let total = match head {
            Response::Size(Some(total)) => total,
            Response::Size(None) => return Err(Pull::Failed("not stored there".into())),
            other => return Err(Pull::Failed(format!("unexpected answer {other:?}"))),
        };
        let dir = self.inner.dir.clone();
        let mut writer = Some(
            blocking(move || dir.writer())
                .await
                .map_err(|e| failed(&e))?,
        );
        while let Some(piece) = pieces.next().await.map_err(|e| failed(&e))? {
            let stats = &self.inner.stats;
            stats
                .bytes_received
                .fetch_add(piece.len() as u64, Ordering::Relaxed);
            let mut w = writer
                .take()
                .expect("the writer is put back after each piece");
            if w.len() + piece.len() as u64 > total {
                return Err(Pull::Failed(format!(
                    "the copy is longer than the {total} bytes announced"
                )));
            }
            let w = blocking(move || w.write(&piece).map(|()| w))
                .await
                .map_err(|e| failed(&e))?;
            writer = Some(w);
        }
        let w = writer.expect("the writer is put back after each piece");
        if w.len() < total {
            return Err(Pull::Failed(format!(
                "the copy ended after {} of {total} bytes",
                w.len()
            )));
        }
        match blocking(move || w.finish(digest)).await {
            Ok(()) => Ok(total),
            Err(DiskError::Mismatch { actual, .. }) => Err(Pull::Corrupt(actual)),
            Err(e) => Err(failed(&e)),
        }
    }

    /// Offers this node's good copy to a node found holding a corrupt one.
    fn repair(&self, node: NodeId, digest: Digest, size: u64) {
        let this = self.clone();
        self.inner.tasks.spawn(async move {
            let Some(addr) = this.inner.placement.view().addr(&node) else {
                return;
            };
            match this.offer(addr, digest, size).await {
                Ok(()) => tracing::info!(%node, %digest, "replaced a corrupt blob copy"),
                Err(e) => {
                    tracing::warn!(%node, %digest, error = %e, "could not repair a blob copy")
                }
            }
        });
    }

    /// Answers other nodes' blob requests.
    pub fn serve(&self, router: &Router) {
        let this = self.clone();
        router.register_streaming::<BlobsWire, _>(move |_, request| {
            let b = this.clone();
            async move {
                match request {
                    Request::Read { digest } => b.read_stream(digest).await,
                    Request::Offer { digest, from, .. } => {
                        b.take_offer(digest, from).await?;
                        Ok((Response::Done, futures::stream::empty().boxed()))
                    }
                    Request::Has { digests } => {
                        if digests.len() > MAX_ASKED {
                            return Err(format!(
                                "asked about {} blobs at once; at most {MAX_ASKED}",
                                digests.len()
                            ));
                        }
                        let held = b.held_here(digests).await.map_err(|e| e.to_string())?;
                        Ok((Response::Held(held), futures::stream::empty().boxed()))
                    }
                }
            }
            .boxed()
        });
    }

    /// A stored blob as a head and a stream of pieces read from disk as the peer takes them.
    async fn read_stream(&self, digest: Digest) -> Result<(Response, PieceStream), String> {
        let dir = self.inner.dir.clone();
        let opened = blocking(move || {
            let size = dir.size(digest)?;
            Ok::<_, DiskError>(size.zip(dir.open_at(digest, 0)?))
        })
        .await
        .map_err(|e| e.to_string())?;
        let Some((size, file)) = opened else {
            return Ok((Response::Size(None), futures::stream::empty().boxed()));
        };
        let pieces = futures::stream::try_unfold(file, |mut file| async move {
            let (piece, file) = blocking(move || {
                use std::io::Read;
                let mut buf = vec![0; PIECE];
                let mut got = 0;
                while got < PIECE {
                    match file.read(&mut buf[got..]) {
                        Ok(0) => break,
                        Ok(n) => got += n,
                        Err(e) => return Err(e.to_string()),
                    }
                }
                buf.truncate(got);
                Ok((buf, file))
            })
            .await?;
            Ok((!piece.is_empty()).then(|| (Bytes::from(piece), file)))
        });
        Ok((Response::Size(Some(size)), pieces.boxed()))
    }

    /// A peer offers a blob: pull it from that peer unless a good copy is here already.
    async fn take_offer(&self, digest: Digest, from: NodeId) -> Result<(), String> {
        let _turn = self.turn(digest).await;
        if self.holds_good(digest).await {
            return Ok(());
        }
        let addr = self
            .inner
            .placement
            .view()
            .addr(&from)
            .ok_or_else(|| format!("no address known for {from}"))?;
        match self.pull(addr, digest).await {
            Ok(_) => Ok(()),
            Err(Pull::Corrupt(actual)) => {
                self.inner.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                Err(format!(
                    "the copy offered by {from} is corrupt (hashes to {})",
                    actual.short()
                ))
            }
            Err(Pull::Failed(e)) => Err(format!("pulling it from {from}: {e}")),
        }
    }
}

/// How long a peer may take to pull `size` bytes: a minute, plus a second per MiB.
fn pull_time(size: u64) -> Duration {
    Duration::from_secs(60 + size / (1 << 20))
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static, E: From<Stopped> + Send + 'static>(
    work: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, E> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(e) => Err(E::from(Stopped(e.to_string()))),
    }
}

/// A blocking file task that did not finish (the node is stopping).
struct Stopped(String);

impl From<Stopped> for DiskError {
    fn from(s: Stopped) -> Self {
        DiskError::Io {
            dir: Default::default(),
            source: std::io::Error::other(format!("a blob file task did not finish: {}", s.0)),
        }
    }
}

impl From<Stopped> for String {
    fn from(s: Stopped) -> Self {
        format!("a blob file task did not finish: {}", s.0)
    }
}
