//! Local durable state on sled: this node's replicas of key-value data with hints for other
//! nodes, the members and nodes it has seen, and map/reduce job records and output. (Blobs,
//! modules among them, are files: see `crate::blobs`.)
//!
//! This is the only module that knows sled. Every acknowledged write is durable before the call
//! returns: changes of the replicated data and the fences through the journal
//! ([`Store::commit`]), everything else through a sled flush and a file-system sync
//! ([`Store::flush`]).

mod journal;
mod points;
mod raft;
mod replica;

pub use journal::JournalStats;
pub use points::PointOf;
pub use replica::{FenceMark, ReplicaWatch};

/// The local database.
#[derive(Clone, Debug, serde::Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Bytes of the database's pages sled keeps in memory. Default 64 MiB (sled's own default
    /// is 1 GiB). Larger serves reads of a large data set from memory; smaller keeps a node's
    /// memory down as its data grows (pages not cached are read from the file system's cache
    /// or the disk).
    pub cache_bytes: u64,
    /// Bytes of a journal segment (see `store::journal`). Default 32 MiB. A full segment is
    /// checkpointed (sled flushed, the segment deleted), so the journal takes about twice
    /// this on disk, and a start after a crash replays at most about this much. Smaller
    /// checkpoints more often (each a sled flush and a file-system sync).
    pub journal_segment_bytes: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            cache_bytes: 64 << 20,
            journal_segment_bytes: 32 << 20,
        }
    }
}

use std::path::Path;

use crate::id::JobId;

/// A raw key and value.
pub type Record = (Vec<u8>, Vec<u8>);

/// Why a storage operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (I/O, corruption).
    #[error("storage error: {0}")]
    Sled(#[from] sled::Error),
    /// A stored record could not be decoded.
    #[error("stored record `{what}` is corrupt: {source}")]
    Corrupt {
        /// Which record.
        what: String,
        /// The decoding error.
        source: serde_json::Error,
    },
    /// Flushing to disk failed; the write may not be durable.
    #[error("flushing to disk failed: {0}")]
    Flush(String),
    /// Another process holds the database.
    #[error(
        "the database in {0} is in use by another process (is another weft node running on this data directory?)"
    )]
    InUse(String),
    /// The flusher thread stopped (the node is shutting down).
    #[error("the store is shutting down")]
    FlusherGone,
    /// The journal could not be read when the store opened.
    #[error("the journal cannot be replayed: {0}")]
    Journal(String),
}

/// The node's sled database and its trees.
#[derive(Clone)]
pub struct Store {
    flusher: std::sync::mpsc::Sender<FlushWaiter>,
    /// The redo log of replicated data, its index and the fences (`None` only when a test
    /// switch acknowledges without flushing).
    journal: Option<std::sync::Arc<journal::Journal>>,
    modules: sled::Tree,
    data: sled::Tree,
    hints: sled::Tree,
    /// The highest fencing token seen per lock key (lock key → token, big-endian).
    fences: sled::Tree,
    /// Reads and writes under the same lock take turns on these (by the lock's hash).
    fence_stripes: std::sync::Arc<Vec<std::sync::Mutex<()>>>,
    jobs: sled::Tree,
    job_output: sled::Tree,
    members: sled::Tree,
    /// Every node name ever seen in the cluster (name → nothing).
    nodes: sled::Tree,
    /// The consensus group's log (index → entry) and its records (vote, snapshot, ...).
    raft_log: sled::Tree,
    raft_meta: sled::Tree,
    /// Entries of `data` and hints, counted on write.
    counts: std::sync::Arc<replica::Counts>,
    /// Changes of `data` take turns per stripe of keys, and the watcher hears of each with
    /// its key's stripe held.
    key_stripes: std::sync::Arc<Vec<std::sync::Mutex<()>>>,
    watcher: std::sync::Arc<std::sync::OnceLock<std::sync::Arc<dyn replica::ReplicaWatch>>>,
    /// The replicated data by ring point (`points`), and the function giving a key's point.
    points: sled::Tree,
    point_of: std::sync::Arc<std::sync::OnceLock<points::PointOf>>,
    /// Test only (`WEFT_UNSAFE_SKIP_FLUSH=1`, with `test-switches`): acknowledge without
    /// flushing, to show that the durability tests catch a store that does so.
    #[cfg(feature = "test-switches")]
    skip_flush: bool,
}

impl Store {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, &StoreConfig::default())
    }

    /// [`Store::open`] with `config`.
    pub fn open_with(dir: &Path, config: &StoreConfig) -> Result<Self, StoreError> {
        #[cfg(feature = "test-switches")]
        let skip_flush = std::env::var_os("WEFT_UNSAFE_SKIP_FLUSH").is_some_and(|v| v == "1");
        #[cfg(not(feature = "test-switches"))]
        let skip_flush = false;
        let db = open_locked(dir, config, skip_flush)?;
        let data = db.open_tree("data")?;
        let points = db.open_tree("points")?;
        let fences = db.open_tree("fences")?;
        let journal_dir = dir.join("journal");
        let replayed = journal::replay(&journal_dir, |change| {
            let tree = match change.tree {
                journal::Tree::Data => &data,
                journal::Tree::Points => &points,
                journal::Tree::Fences => &fences,
            };
            match change.value {
                Some(v) => tree.insert(change.key, v).map(drop),
                None => tree.remove(change.key).map(drop),
            }
            .map_err(StoreError::from)
        })?;
        if !replayed.segments.is_empty() {
            flush_to_disk(&db, &open_log(dir)?).map_err(StoreError::Flush)?;
            for segment in &replayed.segments {
                std::fs::remove_file(segment).map_err(|e| {
                    StoreError::Journal(format!("deleting {}: {e}", segment.display()))
                })?;
            }
            if replayed.changes > 0 {
                tracing::info!(
                    changes = replayed.changes,
                    "replayed the journal of the replicated data"
                );
            }
        }
        let flusher = spawn_flusher(db.clone(), dir)?;
        if skip_flush {
            tracing::error!(
                "WEFT_UNSAFE_SKIP_FLUSH=1: writes are acknowledged before they are on disk (for tests only)"
            );
        }
        let journal = if skip_flush {
            None
        } else {
            let journal = journal::Journal::start(
                journal_dir,
                replayed.next,
                config.journal_segment_bytes,
                flusher.clone(),
            )
            .map_err(|e| StoreError::Journal(format!("starting it: {e}")))?;
            Some(std::sync::Arc::new(journal))
        };
        let hints = db.open_tree("hints")?;
        let counts = std::sync::Arc::new(replica::Counts::of(&data, &hints)?);
        Ok(Store {
            flusher,
            journal,
            modules: db.open_tree("modules")?,
            data,
            hints,
            counts,
            key_stripes: std::sync::Arc::new((0..256).map(|_| Default::default()).collect()),
            watcher: Default::default(),
            points,
            point_of: Default::default(),
            fences,
            fence_stripes: std::sync::Arc::new((0..64).map(|_| Default::default()).collect()),
            jobs: db.open_tree("jobs")?,
            job_output: db.open_tree("job-output")?,
            members: db.open_tree("members")?,
            nodes: db.open_tree("nodes")?,
            raft_log: db.open_tree("raft-log")?,
            raft_meta: db.open_tree("raft-meta")?,
            #[cfg(feature = "test-switches")]
            skip_flush,
        })
    }

    /// The cluster members last remembered, as `(key, record)` pairs.
    pub fn members(&self) -> Result<Vec<Record>, StoreError> {
        self.members
            .iter()
            .map(|r| Ok(r.map(|(k, v)| (k.to_vec(), v.to_vec()))?))
            .collect()
    }

    /// Replaces the remembered cluster members (flushed in the background: losing the last
    /// change costs only a slower rejoin).
    pub fn set_members(&self, members: &[Record]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, _) in self.members()? {
            batch.remove(k);
        }
        for (k, v) in members {
            batch.insert(k.as_slice(), v.as_slice());
        }
        self.members.apply_batch(batch)?;
        Ok(())
    }

    /// Every node name this node has seen in its cluster, down or gone ones included.
    pub fn cluster_nodes(&self) -> Result<Vec<String>, StoreError> {
        self.nodes
            .iter()
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?).into_owned()))
            .collect()
    }

    /// Adds node names to [`Store::cluster_nodes`] and flushes them: the cluster's size must
    /// not shrink across a crash.
    pub async fn add_cluster_nodes(&self, names: &[&str]) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for n in names {
            batch.insert(n.as_bytes(), &[]);
        }
        self.nodes.apply_batch(batch)?;
        self.flush().await
    }

    /// Flushes everything written so far to disk (group commit: one fsync serves every caller
    /// waiting at the time).
    pub async fn flush(&self) -> Result<(), StoreError> {
        #[cfg(feature = "test-switches")]
        if self.skip_flush {
            return Ok(());
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flusher.send(tx).map_err(|_| StoreError::FlusherGone)?;
        rx.await.map_err(|_| StoreError::FlusherGone)?
    }

    /// Makes every change of the replicated data, its index and the fences made so far
    /// durable (one sync of the journal serves every caller waiting at the time). Cheaper
    /// than [`Store::flush`], which covers everything else.
    pub async fn commit(&self) -> Result<(), StoreError> {
        match &self.journal {
            Some(journal) => journal.commit().await,
            // Only a test switch runs without a journal, and it acknowledges unflushed.
            None => Ok(()),
        }
    }

    /// Appends a change just made (its key's or lock's stripe held) to the journal.
    fn journaled(&self, tree: journal::Tree, key: &[u8], value: Option<&[u8]>) {
        if let Some(journal) = &self.journal {
            journal.append(journal::Change { tree, key, value });
        }
    }

    /// What the journal has done since the store opened (`None`: no journal, a test switch).
    pub fn journal_stats(&self) -> Option<&JournalStats> {
        self.journal.as_deref().map(journal::Journal::stats)
    }

    /// Modules stored by an earlier version, which kept them in the database (they are now
    /// blobs, in files): their bytes, for the node to move.
    pub fn legacy_modules(&self) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for item in self.modules.iter() {
            out.push(item?.1.to_vec());
        }
        Ok(out)
    }

    /// Forgets the modules of an earlier version, once moved.
    pub async fn drop_legacy_modules(&self) -> Result<(), StoreError> {
        if !self.modules.is_empty() {
            self.modules.clear()?;
            self.flush().await?;
        }
        Ok(())
    }

    /// Stores a job's record (JSON) and flushes it.
    pub async fn put_job<T: serde::Serialize>(
        &self,
        id: JobId,
        record: &T,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_vec(record).expect("job records serialize");
        self.jobs.insert(id.to_string().as_bytes(), json)?;
        self.flush().await
    }

    /// A job's record.
    pub fn job<T: serde::de::DeserializeOwned>(&self, id: JobId) -> Result<Option<T>, StoreError> {
        decode_opt(self.jobs.get(id.to_string().as_bytes())?, || {
            format!("job {id}")
        })
    }

    /// Every job record.
    pub fn jobs<T: serde::de::DeserializeOwned>(&self) -> Result<Vec<T>, StoreError> {
        self.jobs
            .iter()
            .map(|r| {
                let (k, v) = r?;
                decode(&v, || format!("job {}", String::from_utf8_lossy(&k)))
            })
            .collect()
    }

    /// All output records of a job of an earlier version (whose reducers committed their
    /// output here, in segments of newline-separated lines), partition by partition, each a
    /// JSON line without the newline. Jobs now store their output as blobs.
    pub fn output_of(
        &self,
        id: JobId,
    ) -> impl Iterator<Item = Result<Vec<u8>, StoreError>> + use<> {
        self.job_output
            .scan_prefix(id.to_string().as_bytes())
            .flat_map(|r| -> Vec<Result<Vec<u8>, StoreError>> {
                match r {
                    Ok((_, segment)) => segment
                        .split(|b| *b == b'\n')
                        .map(|l| Ok(l.to_vec()))
                        .collect(),
                    Err(e) => vec![Err(e.into())],
                }
            })
    }
}

/// Opens the database, waiting up to 10 s for a previous owner in this process or another one
/// (a node that is still shutting down) to release its lock.
///
/// `skip_flush` (the test switch) also stops sled's own flush every 500 ms, so that a store
/// acknowledging before the flush loses more of what it acknowledged at a kill. Not all of it:
/// sled still writes its buffer out whenever any batch is applied, so a durability control
/// needs several kill points (one loaded CI run found no loss at sixteen with the timer on).
fn open_locked(dir: &Path, config: &StoreConfig, skip_flush: bool) -> Result<sled::Db, StoreError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let flush_every_ms = (!skip_flush).then_some(500);
    loop {
        match sled::Config::new()
            .path(dir)
            .cache_capacity(config.cache_bytes)
            .flush_every_ms(flush_every_ms)
            .open()
        {
            // sled reports a held lock as an I/O error whose message names it.
            Err(sled::Error::Io(e)) if e.to_string().contains("could not acquire lock") => {
                if std::time::Instant::now() >= deadline {
                    return Err(StoreError::InUse(dir.display().to_string()));
                }
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return Ok(other?),
        }
    }
}

/// The group-commit thread. sled 0.34's `flush_async` runs on sled's own small thread pool and
/// blocks a pool thread per caller; enough concurrent callers exhaust the pool and deadlock it.
/// One dedicated thread that flushes for every waiting caller at once avoids that and batches
/// syncs under load. It ends when the last `Store` clone is dropped.
///
/// sled's flush writes its log with `sync_file_range`, which waits for the data to be written
/// but neither flushes the disk's cache nor syncs metadata, and it writes large items to blob
/// files it never syncs: an acknowledged write would survive a killed process but not a power
/// loss. So after sled's flush, the thread syncs the file system holding the database
/// (`syncfs` on Linux, an `fsync` of the log elsewhere), which covers the log, the blobs and
/// their directory entries.
type FlushWaiter = tokio::sync::oneshot::Sender<Result<(), StoreError>>;

fn spawn_flusher(
    db: sled::Db,
    dir: &Path,
) -> Result<std::sync::mpsc::Sender<FlushWaiter>, StoreError> {
    let log = open_log(dir)?;
    let (tx, rx) = std::sync::mpsc::channel::<FlushWaiter>();
    std::thread::Builder::new()
        .name("weft-flush".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let mut waiters = vec![first];
                waiters.extend(rx.try_iter());
                let result = flush_to_disk(&db, &log);
                for w in waiters {
                    let _ = w.send(result.clone().map_err(StoreError::Flush));
                }
            }
        })
        .map_err(|e| StoreError::Sled(sled::Error::Io(e)))?;
    Ok(tx)
}

/// sled's flush, then the file system's sync (see [`spawn_flusher`]).
fn flush_to_disk(db: &sled::Db, log: &std::fs::File) -> Result<(), String> {
    db.flush().map_err(|e| e.to_string())?;
    sync_to_disk(log).map_err(|e| e.to_string())
}

/// sled's log file, for [`sync_to_disk`].
fn open_log(dir: &Path) -> Result<std::fs::File, StoreError> {
    std::fs::File::open(dir.join("db")).map_err(|e| StoreError::Sled(sled::Error::Io(e)))
}

/// Makes everything written to the database's file system durable.
fn sync_to_disk(log: &std::fs::File) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        rustix::fs::syncfs(log).map_err(std::io::Error::from)
    }
    #[cfg(not(target_os = "linux"))]
    {
        log.sync_all()
    }
}

fn decode<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Corrupt {
        what: what(),
        source,
    })
}

fn decode_opt<T: serde::de::DeserializeOwned>(
    bytes: Option<sled::IVec>,
    what: impl FnOnce() -> String,
) -> Result<Option<T>, StoreError> {
    bytes.map(|b| decode(&b, what)).transpose()
}

#[cfg(test)]
mod tests;
