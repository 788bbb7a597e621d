//! The replicated state machine's contents, pure: what a committed command does. Every node
//! applies the same commands in the same order, so every node ends in the same state.
//!
//! It holds registers (a key, a value and the index of the entry that last wrote it), on
//! which the function registry is built, and the lock table ([`super::locks`]).
//!
//! Every command comes in a [`Proposal`] with an id, and the state remembers the ids of the
//! last [`REMEMBERED`] entries with what they did: a proposal committed twice (its proposer
//! retried it after losing the answer, as when the leader dies after committing) takes
//! effect once, and the second entry answers what the first did (the Raft dissertation's
//! §6.3).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::locks::{LockCommand, LockOutcome, LockTable};

/// How many entries back the state remembers proposal ids: far more than a proposer retries
/// within (its `propose_timeout`).
pub const REMEMBERED: u64 = 100_000;

/// A proposal's id: the proposer's id in the group and a number it never uses twice.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProposalId {
    /// The proposer.
    pub from: u64,
    /// Its number for this proposal.
    pub seq: u64,
}

/// A command as the log carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    /// Its id, the same across retries.
    pub id: ProposalId,
    /// The change.
    pub command: Command,
}

/// A change proposed to the group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Set `key` to `value` (or remove it), if its revision is `expect` (`None`: any;
    /// `Some(0)`: absent).
    Write {
        /// The register.
        key: String,
        /// The new value; `None` removes the register.
        value: Option<Vec<u8>>,
        /// The revision the register must be at for the write to apply.
        expect: Option<u64>,
    },
    /// A change to the lock table.
    Lock(LockCommand),
    /// Writes that apply together, and only while the lock `lock` is held under `token`: a
    /// holder whose lease ended, or who was replaced by a later grant, changes nothing (a
    /// job's coordinator commits this way). If any write's `expect` does not hold, none
    /// applies.
    Fenced {
        /// The lock.
        lock: String,
        /// The token the writer holds it under.
        token: u64,
        /// The writes.
        writes: Vec<Write>,
    },
}

/// One register write of a [`Command::Fenced`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Write {
    /// The register.
    pub key: String,
    /// The new value; `None` removes the register.
    pub value: Option<Vec<u8>>,
    /// The revision the register must be at for the write to apply (`None`: any; `Some(0)`:
    /// absent).
    pub expect: Option<u64>,
}

/// What a command did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Nothing (an entry that is not a command: a blank or a membership change).
    #[default]
    Nothing,
    /// The write applied; the register's revision is now this (the entry's index).
    Written {
        /// The new revision.
        revision: u64,
    },
    /// The register was at another revision (0: absent); nothing changed.
    Conflict {
        /// The revision found.
        current: u64,
    },
    /// What a lock command did.
    Lock(LockOutcome),
    /// A fenced write's lock is not held under its token; nothing changed.
    Fenced {
        /// The lock's current token, if it is held.
        current: Option<u64>,
    },
}

/// Everything the state machine holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The registers.
    pub registers: Registers,
    /// The locks.
    pub locks: LockTable,
    /// Proposals applied in the last [`REMEMBERED`] entries: what each did.
    seen: BTreeMap<ProposalId, (u64, Outcome)>,
    /// The same ids, oldest first, for forgetting them.
    seen_order: VecDeque<(u64, ProposalId)>,
}

impl State {
    /// Applies the proposal of the entry at `index`; a proposal applied before (a retry)
    /// changes nothing and answers what it did then.
    pub fn apply(&mut self, index: u64, proposal: &Proposal) -> Outcome {
        if let Some((_, outcome)) = self.seen.get(&proposal.id) {
            return outcome.clone();
        }
        let outcome = match &proposal.command {
            c @ Command::Write { .. } => self.registers.apply(index, c),
            Command::Lock(c) => Outcome::Lock(self.locks.apply(index, c)),
            Command::Fenced {
                lock,
                token,
                writes,
            } => match self.locks.get(lock).map(|l| l.token) {
                Some(current) if current == *token => self.registers.apply_all(index, writes),
                current => Outcome::Fenced { current },
            },
        };
        self.seen.insert(proposal.id, (index, outcome.clone()));
        self.seen_order.push_back((index, proposal.id));
        while let Some((at, id)) = self.seen_order.front().copied() {
            if at + REMEMBERED > index {
                break;
            }
            self.seen_order.pop_front();
            self.seen.remove(&id);
        }
        outcome
    }
}

/// A register's value and the index of the entry that wrote it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Register {
    /// The value.
    pub value: Vec<u8>,
    /// The index of the entry that wrote it.
    pub revision: u64,
}

/// The state machine's data.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registers {
    map: BTreeMap<String, Register>,
}

impl Registers {
    /// Applies the command of the entry at `index`.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        match command {
            Command::Lock(_) | Command::Fenced { .. } => Outcome::Nothing,
            Command::Write { key, value, expect } => {
                let current = self.map.get(key).map_or(0, |r| r.revision);
                if expect.is_some_and(|e| e != current) {
                    return Outcome::Conflict { current };
                }
                match value {
                    Some(v) => {
                        self.map.insert(
                            key.clone(),
                            Register {
                                value: v.clone(),
                                revision: index,
                            },
                        );
                    }
                    None => {
                        self.map.remove(key);
                    }
                }
                Outcome::Written { revision: index }
            }
        }
    }

    /// Applies `writes` of the entry at `index` together: if one's expectation fails, none
    /// applies and the outcome is its conflict.
    pub fn apply_all(&mut self, index: u64, writes: &[Write]) -> Outcome {
        for w in writes {
            let current = self.map.get(&w.key).map_or(0, |r| r.revision);
            if w.expect.is_some_and(|e| e != current) {
                return Outcome::Conflict { current };
            }
        }
        for w in writes {
            self.apply(
                index,
                &Command::Write {
                    key: w.key.clone(),
                    value: w.value.clone(),
                    expect: None,
                },
            );
        }
        Outcome::Written { revision: index }
    }

    /// A register.
    pub fn get(&self, key: &str) -> Option<&Register> {
        self.map.get(key)
    }

    /// Every register whose key starts with `prefix`, in key order.
    pub fn scan<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a String, &'a Register)> {
        self.map
            .range(prefix.to_string()..)
            .take_while(move |(k, _)| k.starts_with(prefix))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proposal_committed_twice_takes_effect_once() {
        let mut s = State::default();
        let p = |seq, value: &str| Proposal {
            id: ProposalId { from: 7, seq },
            command: write("k", Some(value), None),
        };
        assert_eq!(s.apply(10, &p(1, "a")), Outcome::Written { revision: 10 });
        assert_eq!(s.apply(11, &p(2, "b")), Outcome::Written { revision: 11 });
        // The retry of the first, committed again: it answers as before and changes nothing.
        assert_eq!(s.apply(12, &p(1, "a")), Outcome::Written { revision: 10 });
        let k = s.registers.get("k").unwrap();
        assert_eq!((k.value.as_slice(), k.revision), (&b"b"[..], 11));
        // Ids are forgotten after REMEMBERED entries: the state stays bounded.
        s.apply(12 + REMEMBERED, &p(3, "c"));
        assert_eq!(s.seen.len(), 1);
        assert_eq!(s.seen_order.len(), 1);
    }

    #[test]
    fn a_fenced_write_applies_only_under_the_current_grant() {
        let mut s = State::default();
        let mut seq = 0;
        let mut apply = |s: &mut State, index, command| {
            seq += 1;
            s.apply(
                index,
                &Proposal {
                    id: ProposalId { from: 1, seq },
                    command,
                },
            )
        };
        let fenced = |token, value: &str| Command::Fenced {
            lock: "job/1".into(),
            token,
            writes: vec![
                Write {
                    key: "job/1/end".into(),
                    value: Some(value.as_bytes().to_vec()),
                    expect: None,
                },
                Write {
                    key: "job/1/map".into(),
                    value: None,
                    expect: None,
                },
            ],
        };
        let acquire = |holder: &str| {
            Command::Lock(LockCommand::Acquire {
                key: "job/1".into(),
                holder: holder.into(),
                lease_ms: 1000,
                queue: false,
            })
        };
        // Nobody holds the lock: refused.
        assert_eq!(
            apply(&mut s, 1, fenced(1, "x")),
            Outcome::Fenced { current: None }
        );
        apply(&mut s, 2, acquire("a"));
        assert_eq!(
            apply(&mut s, 3, fenced(2, "a")),
            Outcome::Written { revision: 3 }
        );
        // The lock passes to b under a larger token: a's writes are refused, b's apply.
        apply(
            &mut s,
            4,
            Command::Lock(LockCommand::Release {
                key: "job/1".into(),
                token: 2,
            }),
        );
        apply(&mut s, 5, acquire("b"));
        assert_eq!(
            apply(&mut s, 6, fenced(2, "stale")),
            Outcome::Fenced { current: Some(5) }
        );
        assert_eq!(s.registers.get("job/1/end").unwrap().value, b"a");
        assert_eq!(
            apply(&mut s, 7, fenced(5, "b")),
            Outcome::Written { revision: 7 }
        );
        assert_eq!(s.registers.get("job/1/end").unwrap().value, b"b");
        // One failed expectation: nothing of the batch applies.
        let batch = Command::Fenced {
            lock: "job/1".into(),
            token: 5,
            writes: vec![
                Write {
                    key: "job/1/end".into(),
                    value: None,
                    expect: None,
                },
                Write {
                    key: "job/1/x".into(),
                    value: Some(b"x".to_vec()),
                    expect: Some(3),
                },
            ],
        };
        assert_eq!(apply(&mut s, 8, batch), Outcome::Conflict { current: 0 });
        assert!(s.registers.get("job/1/end").is_some());
    }

    fn write(key: &str, value: Option<&str>, expect: Option<u64>) -> Command {
        Command::Write {
            key: key.into(),
            value: value.map(|v| v.as_bytes().to_vec()),
            expect,
        }
    }

    #[test]
    fn writes_apply_in_order_and_conditions_see_revisions() {
        let mut r = Registers::default();
        let cases = [
            (
                1,
                write("a", Some("1"), Some(0)),
                Outcome::Written { revision: 1 },
            ),
            (
                2,
                write("a", Some("2"), Some(0)),
                Outcome::Conflict { current: 1 },
            ),
            (
                3,
                write("a", Some("3"), Some(1)),
                Outcome::Written { revision: 3 },
            ),
            (
                4,
                write("b", Some("x"), None),
                Outcome::Written { revision: 4 },
            ),
            (
                5,
                write("a", None, Some(1)),
                Outcome::Conflict { current: 3 },
            ),
            (
                6,
                write("a", None, Some(3)),
                Outcome::Written { revision: 6 },
            ),
            (
                7,
                write("a", Some("7"), Some(0)),
                Outcome::Written { revision: 7 },
            ),
        ];
        for (index, command, want) in cases {
            assert_eq!(r.apply(index, &command), want, "entry {index}");
        }
        assert_eq!(
            r.get("a").map(|x| (x.value.as_slice(), x.revision)),
            Some((&b"7"[..], 7))
        );
        let keys: Vec<&String> = r.scan("").map(|(k, _)| k).collect();
        assert_eq!(keys, ["a", "b"]);
        assert_eq!(r.scan("b").count(), 1);
        assert_eq!(r.scan("c").count(), 0);
    }
}
