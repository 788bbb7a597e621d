//! The group's storage on this node, through `store`: the log and the vote (flushed before
//! openraft is told they are durable), and the state machine, kept in memory and made
//! durable by snapshots (each one flushed) plus the log after them, which openraft applies
//! again at start up to the committed entry it recorded.

// openraft's traits fix the error type, `StorageError`, which is large.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, RwLock};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    Entry, EntryPayload, ErrorSubject, ErrorVerb, LogId, OptionalSend, RaftLogReader,
    RaftSnapshotBuilder, SnapshotMeta, StorageError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};

use super::state::{Command, Outcome, State};
use super::{Member, RaftId, TypeConfig};
use crate::store::Store;

const VOTE: &str = "vote";
const PURGED: &str = "purged";
const COMMITTED: &str = "committed";
const SNAPSHOT: &str = "snapshot";

type Error = StorageError<RaftId>;

/// The last entry known committed, as `store` last recorded it.
pub fn committed_index(store: &Store) -> Option<u64> {
    let bytes = store.raft_meta(COMMITTED).ok()??;
    let committed: Option<LogId<RaftId>> = postcard::from_bytes(&bytes).ok()?;
    committed.map(|l| l.index)
}

fn io(subject: ErrorSubject<RaftId>, verb: ErrorVerb, e: impl std::fmt::Display) -> Error {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).expect("consensus records always encode")
}

fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    subject: ErrorSubject<RaftId>,
) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|e| io(subject, ErrorVerb::Read, e))
}

/// The log and the vote. Cheap to clone (a clone is the log reader openraft's replication
/// tasks use).
#[derive(Clone)]
pub struct LogStore {
    store: Store,
}

impl LogStore {
    /// The log in `store`.
    pub fn new(store: Store) -> Self {
        LogStore { store }
    }

    fn meta<T: for<'de> Deserialize<'de>>(&self, key: &str) -> Result<Option<T>, Error> {
        let bytes = self
            .store
            .raft_meta(key)
            .map_err(|e| io(ErrorSubject::Store, ErrorVerb::Read, e))?;
        bytes.map(|b| decode(&b, ErrorSubject::Store)).transpose()
    }

    async fn set_meta<T: Serialize>(&self, key: &str, value: &T) -> Result<(), Error> {
        self.store
            .set_raft_meta(key, encode(value))
            .await
            .map_err(|e| io(ErrorSubject::Store, ErrorVerb::Write, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, Error> {
        let from = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        let raw = self
            .store
            .raft_entries(from, to)
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        raw.iter().map(|b| decode(b, ErrorSubject::Logs)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, Error> {
        let purged: Option<LogId<RaftId>> = self.meta(PURGED)?;
        let last = self
            .store
            .raft_last_entry()
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Read, e))?
            .map(|b| decode::<Entry<TypeConfig>>(&b, ErrorSubject::Logs))
            .transpose()?
            .map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last.or(purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<RaftId>) -> Result<(), Error> {
        self.set_meta(VOTE, vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<RaftId>>, Error> {
        self.meta(VOTE)
    }

    /// Not flushed: after a crash the mark may be behind (sled recovers a prefix of its
    /// writes, so never ahead of the log), and the leader tells this node again what is
    /// committed.
    async fn save_committed(&mut self, committed: Option<LogId<RaftId>>) -> Result<(), Error> {
        self.store
            .set_raft_meta_lazily(COMMITTED, encode(&committed))
            .map_err(|e| io(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<RaftId>>, Error> {
        Ok(self.meta::<Option<LogId<RaftId>>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), Error>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let batch: Vec<(u64, Vec<u8>)> = entries
            .into_iter()
            .map(|e| (e.log_id.index, encode(&e)))
            .collect();
        // Flushed before the callback is told. openraft 0.9's core waits for the callback
        // before it goes on (it neither replicates nor answers meanwhile), so flushing in the
        // background and telling the callback later gains nothing in this version.
        let result = self.store.raft_append(batch).await;
        match result {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                let message = e.to_string();
                callback.log_io_completed(Err(std::io::Error::other(message.clone())));
                Err(io(ErrorSubject::Logs, ErrorVerb::Write, message))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<RaftId>) -> Result<(), Error> {
        self.store
            .raft_truncate(log_id.index)
            .await
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }

    async fn purge(&mut self, log_id: LogId<RaftId>) -> Result<(), Error> {
        self.store
            .raft_purge(log_id.index, PURGED, encode(&log_id))
            .await
            .map_err(|e| io(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

/// What a snapshot holds: the state machine as of `last_applied`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct Machine {
    last_applied: Option<LogId<RaftId>>,
    membership: StoredMembership<RaftId, Member>,
    state: State,
}

/// A snapshot as stored: its description and its bytes.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<RaftId, Member>,
    data: Vec<u8>,
}

/// What applying entries changed, for those who follow the lock table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The entry at `index` touched the lock `key`.
    Lock {
        /// The lock.
        key: String,
        /// The entry.
        index: u64,
    },
    /// The entry wrote (or tried to write) the register `key`.
    Register {
        /// The register.
        key: String,
    },
    /// A snapshot replaced the whole state.
    Reset,
}

/// The state machine: in memory, with its snapshots in the store. Cheap to clone.
#[derive(Clone)]
pub struct MachineStore {
    store: Store,
    /// Read on every invocation (the registry) and by lock waiters; written by `apply`.
    machine: Arc<RwLock<Machine>>,
    /// Snapshots built since start, for unique ids.
    built: Arc<std::sync::atomic::AtomicU64>,
    /// Snapshots installed from the leader since start.
    installed: Arc<std::sync::atomic::AtomicU64>,
    changes: tokio::sync::broadcast::Sender<Applied>,
}

impl MachineStore {
    /// The state machine as of the last snapshot in `store` (openraft applies the log after
    /// it).
    pub fn open(store: Store) -> Result<Self, Error> {
        let machine = match store
            .raft_meta(SNAPSHOT)
            .map_err(|e| io(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?
        {
            Some(bytes) => {
                let stored: StoredSnapshot = decode(&bytes, ErrorSubject::Snapshot(None))?;
                decode(&stored.data, ErrorSubject::Snapshot(None))?
            }
            None => Machine::default(),
        };
        Ok(MachineStore {
            store,
            machine: Arc::new(RwLock::new(machine)),
            built: Default::default(),
            installed: Default::default(),
            changes: tokio::sync::broadcast::channel(1024).0,
        })
    }

    /// Follows what applying entries changes. A receiver that falls behind by more than 1024
    /// changes gets `Lagged` and should look at the whole table again.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Applied> {
        self.changes.subscribe()
    }

    /// Snapshots built and installed since start.
    pub fn snapshots(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.built.load(Relaxed), self.installed.load(Relaxed))
    }

    /// Reads this node's state machine, however far it has applied.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.machine.read().expect("not poisoned").state)
    }

    async fn save(&self, stored: &StoredSnapshot) -> Result<(), Error> {
        self.store
            .set_raft_meta(SNAPSHOT, encode(stored))
            .await
            .map_err(|e| {
                io(
                    ErrorSubject::Snapshot(Some(stored.meta.signature())),
                    ErrorVerb::Write,
                    e,
                )
            })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for MachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, Error> {
        let machine = self.machine.read().expect("not poisoned").clone();
        let data = encode(&machine);
        let n = self
            .built
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = match machine.last_applied {
            Some(l) => format!("{}-{}-{n}", l.leader_id, l.index),
            None => format!("empty-{n}"),
        };
        let meta = SnapshotMeta {
            last_log_id: machine.last_applied,
            last_membership: machine.membership.clone(),
            snapshot_id: id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        self.save(&stored).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MachineStore {
    type SnapshotBuilder = MachineStore;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<RaftId>>, StoredMembership<RaftId, Member>), Error> {
        let m = self.machine.read().expect("not poisoned");
        Ok((m.last_applied, m.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, Error>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut m = self.machine.write().expect("not poisoned");
        let mut outcomes = Vec::new();
        for entry in entries {
            m.last_applied = Some(entry.log_id);
            outcomes.push(match entry.payload {
                EntryPayload::Blank => Outcome::Nothing,
                EntryPayload::Normal(proposal) => {
                    let outcome = m.state.apply(entry.log_id.index, &proposal);
                    // Nobody listening is fine. Readers wait for the machine's lock, so they
                    // see the entry applied.
                    match &proposal.command {
                        Command::Lock(c) => {
                            let _ = self.changes.send(Applied::Lock {
                                key: c.key().to_string(),
                                index: entry.log_id.index,
                            });
                        }
                        Command::Write { key, .. } => {
                            let _ = self.changes.send(Applied::Register { key: key.clone() });
                        }
                        Command::Fenced { .. } => {}
                    }
                    outcome
                }
                EntryPayload::Membership(membership) => {
                    m.membership = StoredMembership::new(Some(entry.log_id), membership);
                    Outcome::Nothing
                }
            });
        }
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, Error> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<RaftId, Member>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), Error> {
        let data = snapshot.into_inner();
        let machine: Machine = decode(&data, ErrorSubject::Snapshot(Some(meta.signature())))?;
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        self.save(&stored).await?;
        *self.machine.write().expect("not poisoned") = Machine {
            last_applied: meta.last_log_id,
            membership: meta.last_membership.clone(),
            state: machine.state,
        };
        self.installed
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.changes.send(Applied::Reset);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, Error> {
        let Some(bytes) = self
            .store
            .raft_meta(SNAPSHOT)
            .map_err(|e| io(ErrorSubject::Snapshot(None), ErrorVerb::Read, e))?
        else {
            return Ok(None);
        };
        let stored: StoredSnapshot = decode(&bytes, ErrorSubject::Snapshot(None))?;
        Ok(Some(Snapshot {
            meta: stored.meta,
            snapshot: Box::new(Cursor::new(stored.data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use openraft::testing::{StoreBuilder, Suite};

    use super::*;

    struct Fresh;

    impl StoreBuilder<TypeConfig, LogStore, MachineStore, tempfile::TempDir> for Fresh {
        async fn build(&self) -> Result<(tempfile::TempDir, LogStore, MachineStore), Error> {
            let dir =
                tempfile::tempdir().map_err(|e| io(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let store = Store::open(dir.path())
                .map_err(|e| io(ErrorSubject::Store, ErrorVerb::Write, e))?;
            let machine = MachineStore::open(store.clone())?;
            Ok((dir, LogStore::new(store), machine))
        }
    }

    /// openraft's own storage test suite, against Weft's storage.
    #[test]
    fn openraft_storage_suite_passes() -> Result<(), Error> {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("openraft=info")
            .with_test_writer()
            .try_init();
        Suite::test_all(Fresh)
    }
}
