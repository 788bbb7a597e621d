//! Versions of replicated values: hybrid logical clocks.
//!
//! A version is `(hlc, node)`. The HLC is the wall clock in milliseconds shifted left 16 bits,
//! plus a counter; it never goes backwards on one node, and every version a node receives
//! pushes its clock past it, so a write that follows another one it has seen (on any node)
//! always gets a higher version, whatever the wall clocks say. Wall clocks only order writes
//! that are concurrent. `node` (a hash of the writer's name) breaks ties between nodes.
//!
//! A write made under a lock also carries the lock's fencing token, and versions order by the
//! token first: a write under a later lock grant wins over every write under an earlier one,
//! whatever the clocks say. Unfenced writes have token 0.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::id::NodeId;

/// Bits of the HLC below the milliseconds: the counter.
const COUNTER_BITS: u32 = 16;

/// The version of one write. Ordered by `token`, then `hlc`, then `node`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    /// The largest fencing token the write was made under; 0 for a write made under no lock.
    pub token: u64,
    /// Hybrid logical clock: milliseconds << 16 | counter.
    pub hlc: u64,
    /// The writer: the first 8 bytes of blake3 of its name.
    pub node: u64,
}

impl Version {
    /// Test only: an unfenced version of node 1 at clock `hlc`.
    #[cfg(test)]
    pub(crate) fn at(hlc: u64) -> Self {
        Version {
            token: 0,
            hlc,
            node: 1,
        }
    }

    /// The wall-clock milliseconds part.
    pub fn millis(&self) -> u64 {
        self.hlc >> COUNTER_BITS
    }
}

impl fmt::Debug for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// Printed as `<hlc>.<node>` in hex, with `.<token>` after it for a fenced write, which
/// [`Version::from_str`] reads back (clients send it back for conditional writes).
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}.{:x}", self.hlc, self.node)?;
        if self.token > 0 {
            write!(f, ".{:x}", self.token)?;
        }
        Ok(())
    }
}

impl std::str::FromStr for Version {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "`{s}` is not a version (expected HLC.NODE or HLC.NODE.TOKEN in hex, as returned by a read)"
            )
        };
        let mut parts = s.split('.');
        let mut next = || {
            parts
                .next()
                .ok_or_else(bad)
                .and_then(|p| u64::from_str_radix(p, 16).map_err(|_| bad()))
        };
        let (hlc, node) = (next()?, next()?);
        let token = match parts.next() {
            None => 0,
            Some(t) => match u64::from_str_radix(t, 16) {
                Ok(t) if t > 0 && parts.next().is_none() => t,
                _ => return Err(bad()),
            },
        };
        Ok(Version { token, hlc, node })
    }
}

/// The tie-breaker of a node's versions.
pub fn node_tag(node: &NodeId) -> u64 {
    let h = blake3::hash(node.as_str().as_bytes());
    u64::from_be_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// One node's hybrid logical clock. Pure: the caller passes the wall clock in.
#[derive(Debug)]
pub struct Clock {
    node: u64,
    last: u64,
}

impl Clock {
    /// A clock for the node whose tag is `node` ([`node_tag`]).
    pub fn new(node: u64) -> Self {
        Clock { node, last: 0 }
    }

    /// A new version, above every version issued or observed so far.
    pub fn tick(&mut self, wall_ms: u64) -> Version {
        let wall = wall_ms << COUNTER_BITS;
        self.last = wall.max(self.last.saturating_add(1));
        Version {
            token: 0,
            hlc: self.last,
            node: self.node,
        }
    }

    /// Takes note of a version seen elsewhere, so the next tick is above it.
    pub fn observe(&mut self, v: Version) {
        self.last = self.last.max(v.hlc);
    }

    /// How far the clock runs ahead of `wall_ms`, in milliseconds (0 when behind): how much a
    /// peer's fast wall clock has pulled this node's versions forward.
    pub fn ahead_ms(&self, wall_ms: u64) -> u64 {
        (self.last >> COUNTER_BITS).saturating_sub(wall_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_grow_even_when_the_wall_clock_goes_back() {
        let mut c = Clock::new(1);
        let a = c.tick(1000);
        let b = c.tick(900);
        let d = c.tick(900);
        assert!(a < b && b < d, "{a} {b} {d}");
        assert_eq!(a.millis(), 1000);
    }

    #[test]
    fn a_write_after_an_observed_one_is_newer_despite_a_slow_clock() {
        let mut fast = Clock::new(1);
        let mut slow = Clock::new(2);
        let first = fast.tick(50_000);
        slow.observe(first);
        let second = slow.tick(1_000);
        assert!(second > first);
        assert_eq!(slow.ahead_ms(1_000), 49_000);
    }

    #[test]
    fn concurrent_writes_at_the_same_instant_are_ordered_by_node() {
        let a = Clock::new(1).tick(7);
        let b = Clock::new(2).tick(7);
        assert!(a < b);
        assert_ne!(a, b);
    }

    #[test]
    fn a_write_under_a_later_token_wins_whatever_the_clocks() {
        let early = Version {
            token: 7,
            ..Clock::new(1).tick(90_000)
        };
        let late = Version {
            token: 8,
            ..Clock::new(2).tick(1_000)
        };
        let unfenced = Clock::new(3).tick(100_000);
        assert!(late > early && early > unfenced);
    }

    #[test]
    fn versions_print_and_parse_back() {
        let v = Clock::new(0xabc).tick(123_456);
        assert_eq!(v.to_string().parse::<Version>().unwrap(), v);
        let fenced = Version { token: 0x2a, ..v };
        assert_eq!(fenced.to_string(), format!("{v}.2a"));
        assert_eq!(fenced.to_string().parse::<Version>().unwrap(), fenced);
        for bad in ["", "12", "x.1", "1.", ".1", "1.2.0", "1.2.x", "1.2.3.4"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} parsed");
        }
    }
}
