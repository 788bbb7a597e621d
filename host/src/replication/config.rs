//! The replicated store's configuration: quorums, anti-entropy, transitions and tombstones.

use std::num::NonZeroU8;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How many copies of a key exist (`n`), and how many must answer a read (`r`) and flush a
/// write (`w`) before it is acknowledged. With `r + w > n` a read sees every acknowledged
/// write. `n` is capped at the number of nodes in the cluster, and so are `r` and `w`, so a
/// single node serves alone; a cluster with fewer live replicas than `w` refuses writes
/// rather than acknowledging them with fewer copies. Written `N/R/W` (`"3/2/2"`) in flags and
/// configuration files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(try_from = "String", into = "String")]
pub struct Quorum {
    /// Copies of each key. Default 3.
    pub n: NonZeroU8,
    /// Replicas that must answer a read. Default 2.
    pub r: NonZeroU8,
    /// Replicas that must flush a write before it is acknowledged. Default 2.
    pub w: NonZeroU8,
}

impl Quorum {
    /// `n`/`r`/`w`, checked: `r` and `w` at most `n`.
    pub fn new(n: u8, r: u8, w: u8) -> Result<Self, String> {
        let nz = |v: u8, what: &str| {
            NonZeroU8::new(v).ok_or_else(|| format!("{what} must be at least 1"))
        };
        let q = Quorum {
            n: nz(n, "n")?,
            r: nz(r, "r")?,
            w: nz(w, "w")?,
        };
        if r > n || w > n {
            return Err(format!("r ({r}) and w ({w}) must not exceed n ({n})"));
        }
        Ok(q)
    }
}

impl Default for Quorum {
    fn default() -> Self {
        Quorum::new(3, 2, 2).expect("valid")
    }
}

impl std::fmt::Display for Quorum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.n, self.r, self.w)
    }
}

impl From<Quorum> for String {
    fn from(q: Quorum) -> String {
        q.to_string()
    }
}

impl TryFrom<String> for Quorum {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl std::str::FromStr for Quorum {
    type Err = String;
    /// `N/R/W`, such as `3/2/2`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let [n, r, w] = parts.as_slice() else {
            return Err(format!("`{s}` is not N/R/W (such as 3/2/2)"));
        };
        let num = |p: &str| {
            p.parse::<u8>()
                .map_err(|_| format!("`{p}` in `{s}` is not a number from 1 to 255"))
        };
        Quorum::new(num(n)?, num(r)?, num(w)?)
    }
}

/// Placement and replication of key-value data. Every node of a cluster must use the same
/// `vnodes`, `placement` and namespace settings, or they disagree on where keys live.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ReplicationConfig {
    /// N/R/W of namespaces not listed in `namespaces`. Default 3/2/2.
    pub default: Quorum,
    /// N/R/W of particular namespaces (a function's own namespace is `fn.NAME`).
    pub namespaces: std::collections::BTreeMap<String, Quorum>,
    /// Virtual nodes per node on the ring. Default [`crate::ring::DEFAULT_VNODES`]: the
    /// largest share is then within 15% of the average for 3 to 100 nodes. More balances
    /// better and costs memory and time when the ring is rebuilt.
    pub vnodes: u32,
    /// Where replicas must go beyond ring order, such as a copy on a `server` node.
    pub placement: crate::ring::TagRule,
    /// How often each node compares its data with every other replica and repairs the
    /// differences (Merkle anti-entropy). Default 10 s. It also runs at once after the ring
    /// changes. Shorter converges sooner after a partition; a round compares the roots of
    /// trees kept as the data changes and reads entries only where they differ, so a round
    /// among replicas in sync costs no scan of the data.
    #[serde(with = "crate::millis")]
    pub anti_entropy_interval: Duration,
    /// How often held hints are offered to nodes that are back. Default 1 s.
    #[serde(with = "crate::millis")]
    pub hint_interval: Duration,
    /// After the ring changes, reads and writes also go to the replicas of the earlier rings
    /// while anti-entropy hands keys to their new owners (a transition). A transition ends
    /// when every member of the new ring confirms it handed its keys over; this is the
    /// longest it may last unconfirmed (a member that never confirms, such as one of an older
    /// version), after which keys not handed over yet may read as missing until they are, with
    /// a warning in the log. Default 10 min. It is also how long after start a node consults
    /// the ring without itself when its ring changes.
    #[serde(with = "crate::millis")]
    pub transition: Duration,
    /// A deletion's tombstone is kept at least this long, and then collected only when every
    /// member of the cluster is up and every owner of the key holds the same tombstone.
    /// Hints older than half of it are dropped, so none can carry an older value back.
    /// Default 24 h. A node away for longer than this must be wiped before it rejoins, or
    /// it can bring back keys deleted while it was away (as with Cassandra's `gc_grace`).
    #[serde(with = "crate::millis")]
    pub tombstone_grace: Duration,
    /// Test only (`test-switches`): safety rules switched off, so that a test can show the
    /// test guarding each rule fails without it.
    #[cfg(feature = "test-switches")]
    #[serde(skip)]
    pub unsafe_switches: ReplicationSwitches,
}

/// Safety rules of the replicated store that a test may switch off (see
/// [`ReplicationConfig::unsafe_switches`]); without the `test-switches` feature every one is
/// always on.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplicationSwitches {
    /// Size the cluster by the members listed now instead of every node ever seen, so a node
    /// whose peers were forgotten takes writes alone.
    pub count_listed_members_only: bool,
    /// Cap quorums at the live replicas, so a lone node acknowledges W = 2 with one copy.
    pub quorum_of_live_replicas: bool,
    /// Acknowledge a write even when a replica answered that it holds a newer version.
    pub ignore_stale: bool,
    /// During a transition, read and write the current ring's replicas only.
    pub current_ring_only: bool,
    /// End a transition as soon as this node handed its own keys over, without waiting for
    /// the other members to confirm theirs.
    pub end_transition_unconfirmed: bool,
    /// Store no hints for replicas that miss a write.
    pub no_hints: bool,
    /// Write without fences: writes made under a lock carry no token, so replicas order them
    /// by clock alone and never refuse one from a holder that lost its lock.
    pub no_fencing: bool,
    /// Deliver hints however old, even past half the tombstone grace.
    pub keep_old_hints: bool,
    /// Answer a lock-protected handler's request as soon as the guest ends, before the
    /// writes of its output gate are acknowledged.
    pub gate_answers_early: bool,
    /// Write an output gate's batches without the condition of the version the gate saw, so
    /// a key that several lines write loses updates.
    pub gate_writes_unconditionally: bool,
    /// Not a rule but a fault: shift this node's wall clock by this many milliseconds.
    pub clock_skew_ms: i64,
}

impl ReplicationConfig {
    /// Settings for tests: anti-entropy every second.
    pub fn test() -> Self {
        ReplicationConfig {
            anti_entropy_interval: Duration::from_secs(1),
            hint_interval: Duration::from_millis(200),
            transition: Duration::from_secs(60),
            tombstone_grace: Duration::from_secs(3600),
            ..ReplicationConfig::default()
        }
    }

    /// How keys are placed, as this configuration says.
    pub fn placement_config(&self) -> crate::placement::PlacementConfig {
        #[cfg(feature = "test-switches")]
        let count_listed_members_only = self.unsafe_switches.count_listed_members_only;
        #[cfg(not(feature = "test-switches"))]
        let count_listed_members_only = false;
        crate::placement::PlacementConfig {
            vnodes: self.vnodes,
            rule: self.placement.clone(),
            transition: self.transition,
            count_listed_members_only,
        }
    }

    /// The quorum of a namespace.
    pub fn quorum(&self, namespace: &str) -> Quorum {
        match self.namespaces.get(namespace) {
            Some(q) => *q,
            None => self.default,
        }
    }
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            default: Quorum::default(),
            namespaces: Default::default(),
            vnodes: crate::ring::DEFAULT_VNODES,
            placement: Default::default(),
            anti_entropy_interval: Duration::from_secs(10),
            hint_interval: Duration::from_secs(1),
            transition: Duration::from_secs(600),
            tombstone_grace: Duration::from_secs(24 * 3600),
            #[cfg(feature = "test-switches")]
            unsafe_switches: ReplicationSwitches::default(),
        }
    }
}
