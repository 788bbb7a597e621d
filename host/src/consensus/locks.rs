//! The lock table, pure: part of the replicated state machine, so every node applies the same
//! grants in the same order.
//!
//! A lock is held by one holder under a **fencing token**: the index of the log entry that
//! granted it. Tokens therefore only grow, across leader changes and restarts. Waiters are
//! served in the order they asked; when the holder releases, or its lease is expired by the
//! leader (an `Expire` entry, see `Leases`), the first waiter gets the lock under the index of
//! that entry. Time never enters here: the table records lease lengths, and only the leader
//! judges them, on its monotonic clock ([`Leases`]).

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// A change to the lock table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockCommand {
    /// Take `key` for `holder` with a lease of `lease_ms`; when it is held, queue unless
    /// `queue` is false.
    Acquire {
        /// The lock.
        key: String,
        /// Who asks (a node and request, for display and for release).
        holder: String,
        /// The lease, in milliseconds.
        lease_ms: u64,
        /// Whether to wait in line when the lock is held.
        queue: bool,
    },
    /// The holder under `token` keeps the lock for another lease.
    Renew {
        /// The lock.
        key: String,
        /// The holder's token.
        token: u64,
    },
    /// The holder under `token` lets go; the first waiter, if any, gets the lock.
    Release {
        /// The lock.
        key: String,
        /// The holder's token.
        token: u64,
    },
    /// The leader found the lease under `token`, granted or last renewed by entry `since`,
    /// run out: as a release. A renewal committed meanwhile (another `since`) voids it.
    Expire {
        /// The lock.
        key: String,
        /// The token whose lease ran out.
        token: u64,
        /// The entry the lease counted from.
        since: u64,
    },
    /// A waiter gives up (its wait ran out).
    Leave {
        /// The lock.
        key: String,
        /// The waiter.
        holder: String,
    },
}

impl LockCommand {
    /// The lock it is about.
    pub fn key(&self) -> &str {
        match self {
            LockCommand::Acquire { key, .. }
            | LockCommand::Renew { key, .. }
            | LockCommand::Release { key, .. }
            | LockCommand::Expire { key, .. }
            | LockCommand::Leave { key, .. } => key,
        }
    }
}

/// What a lock command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOutcome {
    /// The lock is the asker's under this token.
    Granted {
        /// The fencing token.
        token: u64,
    },
    /// The asker waits; this many are ahead of it.
    Queued {
        /// Waiters ahead.
        ahead: usize,
    },
    /// The lock is held (and the asker did not queue).
    Held {
        /// The current holder.
        holder: String,
        /// Its token.
        token: u64,
    },
    /// Renewed, or released (and handed to the next waiter, if any), or a waiter left.
    Done {
        /// The waiter that got the lock, and its token.
        next: Option<(String, u64)>,
    },
    /// The token is not the current holder's (a lease already expired, or a stale holder).
    NotHolder {
        /// The current holder's token, if the lock is held.
        current: Option<u64>,
    },
}

/// A held lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lock {
    /// Who holds it.
    pub holder: String,
    /// The fencing token: the index of the entry that granted it.
    pub token: u64,
    /// The holder's lease, in milliseconds.
    pub lease_ms: u64,
    /// The index of the entry that granted or last renewed it: the lease counts from there.
    pub since: u64,
    /// Who waits, in order, with the lease each asked for.
    pub waiters: VecDeque<(String, u64)>,
}

/// Every held lock.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockTable {
    locks: BTreeMap<String, Lock>,
}

impl LockTable {
    /// Applies the command of the entry at `index`.
    pub fn apply(&mut self, index: u64, command: &LockCommand) -> LockOutcome {
        match command {
            LockCommand::Acquire {
                key,
                holder,
                lease_ms,
                queue,
            } => match self.locks.get_mut(key) {
                None => {
                    self.locks.insert(
                        key.clone(),
                        Lock {
                            holder: holder.clone(),
                            token: index,
                            lease_ms: *lease_ms,
                            since: index,
                            waiters: VecDeque::new(),
                        },
                    );
                    LockOutcome::Granted { token: index }
                }
                // The holder asking again (a retry, or to extend): its lease starts again, as
                // for a renewal, so the lease it is told of is the one the leader counts.
                Some(lock) if lock.holder == *holder => {
                    lock.since = index;
                    lock.lease_ms = *lease_ms;
                    LockOutcome::Granted { token: lock.token }
                }
                Some(lock) if !queue => LockOutcome::Held {
                    holder: lock.holder.clone(),
                    token: lock.token,
                },
                Some(lock) => {
                    let ahead = match lock.waiters.iter().position(|(w, _)| w == holder) {
                        Some(at) => at,
                        None => {
                            lock.waiters.push_back((holder.clone(), *lease_ms));
                            lock.waiters.len() - 1
                        }
                    };
                    LockOutcome::Queued { ahead }
                }
            },
            LockCommand::Renew { key, token } => match self.locks.get_mut(key) {
                Some(lock) if lock.token == *token => {
                    lock.since = index;
                    LockOutcome::Done { next: None }
                }
                other => LockOutcome::NotHolder {
                    current: other.map(|l| l.token),
                },
            },
            LockCommand::Release { key, token } | LockCommand::Expire { key, token, .. } => {
                let since = match command {
                    LockCommand::Expire { since, .. } => Some(*since),
                    _ => None,
                };
                match self.locks.get_mut(key) {
                    Some(lock) if lock.token == *token && since.is_none_or(|s| s == lock.since) => {
                        match lock.waiters.pop_front() {
                            Some((next, lease_ms)) => {
                                lock.holder = next.clone();
                                lock.token = index;
                                lock.since = index;
                                lock.lease_ms = lease_ms;
                                LockOutcome::Done {
                                    next: Some((next, index)),
                                }
                            }
                            None => {
                                self.locks.remove(key);
                                LockOutcome::Done { next: None }
                            }
                        }
                    }
                    other => LockOutcome::NotHolder {
                        current: other.map(|l| l.token),
                    },
                }
            }
            LockCommand::Leave { key, holder } => {
                if let Some(lock) = self.locks.get_mut(key) {
                    lock.waiters.retain(|(w, _)| w != holder);
                }
                LockOutcome::Done { next: None }
            }
        }
    }

    /// A held lock.
    pub fn get(&self, key: &str) -> Option<&Lock> {
        self.locks.get(key)
    }

    /// Every held lock, by key.
    pub fn iter(&self) -> impl Iterator<Item = (&String, &Lock)> {
        self.locks.iter()
    }
}

/// The leader's view of when each lease runs out, on its monotonic clock. Not replicated: a
/// new leader starts it with [`Leases::took_over`], which gives every held lock its whole
/// lease again plus the lock delay, so a lease granted by a deposed leader has surely run out
/// before anyone else is granted the lock.
#[derive(Debug, Default)]
pub struct Leases {
    /// By key: the token and renewal the lease counts from, and when it runs out.
    due: HashMap<String, (u64, u64, Instant)>,
}

impl Leases {
    /// This node became leader at `now`: every held lock's lease counts from now, plus
    /// `delay`. Returns how many locks wait out the delay.
    pub fn took_over(&mut self, table: &LockTable, now: Instant, delay: Duration) -> usize {
        self.due = table
            .iter()
            .map(|(k, l)| {
                let at = now + Duration::from_millis(l.lease_ms) + delay;
                (k.clone(), (l.token, l.since, at))
            })
            .collect();
        self.due.len()
    }

    /// After an entry that touched `key` applied on the leader at `now`: a grant, renewal or
    /// hand-over starts a lease; a released lock has none; anything else (a waiter joining or
    /// leaving) changes nothing.
    pub fn applied(&mut self, table: &LockTable, key: &str, now: Instant) {
        match table.get(key) {
            Some(l) => {
                let same = self
                    .due
                    .get(key)
                    .is_some_and(|(token, since, _)| (*token, *since) == (l.token, l.since));
                if !same {
                    let at = now + Duration::from_millis(l.lease_ms);
                    self.due.insert(key.to_string(), (l.token, l.since, at));
                }
            }
            None => {
                self.due.remove(key);
            }
        }
    }

    /// The leases run out by `now`: the `Expire` commands to propose.
    pub fn due(&self, now: Instant) -> Vec<LockCommand> {
        let mut out: Vec<(&String, u64, u64)> = self
            .due
            .iter()
            .filter(|(_, (_, _, at))| *at <= now)
            .map(|(k, (token, since, _))| (k, *token, *since))
            .collect();
        out.sort();
        out.into_iter()
            .map(|(key, token, since)| LockCommand::Expire {
                key: key.clone(),
                token,
                since,
            })
            .collect()
    }

    /// When the next lease runs out, if any is held.
    pub fn next_due(&self) -> Option<Instant> {
        self.due.values().map(|(_, _, at)| *at).min()
    }

    /// Looks at `key`'s lease again at `at` (after an expiry that could not be committed).
    pub fn retry(&mut self, key: &str, at: Instant) {
        if let Some(entry) = self.due.get_mut(key) {
            entry.2 = at;
        }
    }

    /// How long `key`'s lease has left at `now`, with its token, if the lock is held.
    pub fn left(&self, key: &str, now: Instant) -> Option<(u64, Duration)> {
        self.due
            .get(key)
            .map(|(token, _, at)| (*token, at.saturating_duration_since(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acquire(key: &str, holder: &str, queue: bool) -> LockCommand {
        LockCommand::Acquire {
            key: key.into(),
            holder: holder.into(),
            lease_ms: 1000,
            queue,
        }
    }

    fn release(key: &str, token: u64) -> LockCommand {
        LockCommand::Release {
            key: key.into(),
            token,
        }
    }

    #[test]
    fn grants_queue_hand_over_in_order_and_tokens_only_grow() {
        use LockOutcome::*;
        let mut t = LockTable::default();
        let cases = [
            (1, acquire("a", "p", true), Granted { token: 1 }),
            (2, acquire("a", "p", true), Granted { token: 1 }),
            (
                3,
                acquire("a", "q", false),
                Held {
                    holder: "p".into(),
                    token: 1,
                },
            ),
            (4, acquire("a", "q", true), Queued { ahead: 0 }),
            (5, acquire("a", "r", true), Queued { ahead: 1 }),
            (6, acquire("a", "q", true), Queued { ahead: 0 }),
            (7, release("a", 3), NotHolder { current: Some(1) }),
            (
                8,
                LockCommand::Renew {
                    key: "a".into(),
                    token: 1,
                },
                Done { next: None },
            ),
            (
                9,
                release("a", 1),
                Done {
                    next: Some(("q".into(), 9)),
                },
            ),
            (
                10,
                LockCommand::Renew {
                    key: "a".into(),
                    token: 1,
                },
                NotHolder { current: Some(9) },
            ),
            // An expiry judged before a renewal that committed first is void.
            (
                11,
                LockCommand::Renew {
                    key: "a".into(),
                    token: 9,
                },
                Done { next: None },
            ),
            (
                12,
                LockCommand::Expire {
                    key: "a".into(),
                    token: 9,
                    since: 9,
                },
                NotHolder { current: Some(9) },
            ),
            (
                13,
                LockCommand::Expire {
                    key: "a".into(),
                    token: 9,
                    since: 11,
                },
                Done {
                    next: Some(("r".into(), 13)),
                },
            ),
            (14, release("a", 13), Done { next: None }),
            (15, release("a", 13), NotHolder { current: None }),
            (16, acquire("a", "s", true), Granted { token: 16 }),
            (17, acquire("a", "t", true), Queued { ahead: 0 }),
            (
                18,
                LockCommand::Leave {
                    key: "a".into(),
                    holder: "t".into(),
                },
                Done { next: None },
            ),
            (19, release("a", 16), Done { next: None }),
        ];
        let mut last_token = 0;
        for (index, command, want) in cases {
            let got = t.apply(index, &command);
            assert_eq!(got, want, "entry {index}: {command:?}");
            if let Granted { token }
            | Done {
                next: Some((_, token)),
            } = got
                && token != last_token
            {
                assert!(
                    token > last_token,
                    "entry {index}: token {token} after {last_token}"
                );
                last_token = token;
            }
        }
        assert!(t.get("a").is_none());
    }

    #[test]
    fn a_new_leader_waits_out_every_lease_and_the_delay() {
        let mut t = LockTable::default();
        t.apply(1, &acquire("a", "p", true));
        let start = Instant::now();
        let mut leases = Leases::default();
        // The old leader: the lease runs out after 1 s.
        leases.applied(&t, "a", start);
        assert!(leases.due(start + Duration::from_millis(999)).is_empty());
        assert_eq!(
            leases.due(start + Duration::from_millis(1000)),
            vec![LockCommand::Expire {
                key: "a".into(),
                token: 1,
                since: 1,
            }]
        );
        // A new leader taking over at `start` does not know when the lease began: it waits
        // the whole lease again, plus the lock delay.
        let mut new = Leases::default();
        new.took_over(&t, start, Duration::from_millis(500));
        assert!(new.due(start + Duration::from_millis(1499)).is_empty());
        assert_eq!(new.due(start + Duration::from_millis(1500)).len(), 1);
        // The holder asking again restarts its lease, with the lease it asks for now.
        let mut again = LockTable::default();
        again.apply(1, &acquire("b", "p", true));
        assert_eq!(
            again.apply(
                5,
                &LockCommand::Acquire {
                    key: "b".into(),
                    holder: "p".into(),
                    lease_ms: 3000,
                    queue: true,
                }
            ),
            LockOutcome::Granted { token: 1 }
        );
        let b = again.get("b").unwrap();
        assert_eq!((b.token, b.since, b.lease_ms), (1, 5, 3000));
        // A waiter joining does not stretch the holder's lease; a renewal restarts it.
        t.apply(2, &acquire("a", "q", true));
        new.applied(&t, "a", start + Duration::from_millis(100));
        assert_eq!(new.due(start + Duration::from_millis(1500)).len(), 1);
        t.apply(
            3,
            &LockCommand::Renew {
                key: "a".into(),
                token: 1,
            },
        );
        new.applied(&t, "a", start + Duration::from_millis(1400));
        assert!(new.due(start + Duration::from_millis(2399)).is_empty());
        assert_eq!(new.next_due(), Some(start + Duration::from_millis(2400)));
        // A release forgets the lease (and hands the lock to the waiter, whose lease starts).
        t.apply(4, &release("a", 1));
        new.applied(&t, "a", start);
        assert_eq!(new.left("a", start), Some((4, Duration::from_millis(1000))));
        t.apply(5, &release("a", 4));
        new.applied(&t, "a", start);
        assert!(new.due(start + Duration::from_secs(60)).is_empty());
    }
}
