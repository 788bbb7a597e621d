//! The replicated state machine's contents, pure: what a committed command does. Every node
//! applies the same commands in the same order, so every node ends in the same state.
//!
//! It holds registers (a key, a value and the index of the entry that last wrote it), on
//! which the function registry will be built, and the lock table ([`super::locks`]).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::locks::{LockCommand, LockOutcome, LockTable};

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
}

/// Everything the state machine holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The registers.
    pub registers: Registers,
    /// The locks.
    pub locks: LockTable,
}

impl State {
    /// Applies the command of the entry at `index`.
    pub fn apply(&mut self, index: u64, command: &Command) -> Outcome {
        match command {
            Command::Write { .. } => self.registers.apply(index, command),
            Command::Lock(c) => Outcome::Lock(self.locks.apply(index, c)),
        }
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
            Command::Lock(_) => Outcome::Nothing,
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
