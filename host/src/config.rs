//! Node configuration as plain data, with documented defaults and presets.

use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroU32, NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Everything a node needs to start.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Where the node keeps its sled database, compiled-module cache, job output and token.
    pub data_dir: PathBuf,
    /// The HTTP API's address. Port 0 picks a free port (tests and the demo use this).
    pub http: SocketAddr,
    /// Limits on what clients may send.
    #[serde(default)]
    pub limits: Limits,
    /// The Wasm runtime.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Cluster membership and the QUIC transport between nodes.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Placement on the ring and replication of key-value data.
    #[serde(default)]
    pub replication: ReplicationConfig,
}

impl NodeConfig {
    /// A node on `127.0.0.1:0` keeping its state in `data_dir`, with default limits.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        NodeConfig {
            data_dir: data_dir.into(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            limits: Limits::default(),
            runtime: RuntimeConfig::default(),
            cluster: ClusterConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 0)),
                ..ClusterConfig::default()
            },
            replication: ReplicationConfig::default(),
        }
    }
}

/// Limits on client input. Each is checked before any work is done on the input.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest module accepted by `PUT /v1/functions/{name}`, in bytes. Default 50 MiB.
    /// Larger modules are refused with 413 before compiling.
    pub max_module_bytes: NonZeroUsize,
    /// Largest request body passed to an HTTP handler, in bytes. Default 10 MiB.
    pub max_request_body: NonZeroUsize,
    /// Largest map/reduce input accepted by `POST /v1/jobs`, in bytes. Default 1 GiB.
    pub max_job_input: NonZeroU64,
    /// How long a client may take to send a whole request body (a module, an invocation's
    /// body, a key-value value), once the request head is in. Default 60 s; a slower body
    /// gets 408. Longer lets slow links upload large modules; shorter frees connections that
    /// trickle.
    #[serde(with = "millis")]
    pub body_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: NonZeroUsize::new(50 << 20).expect("non-zero"),
            max_request_body: NonZeroUsize::new(10 << 20).expect("non-zero"),
            max_job_input: NonZeroU64::new(1 << 30).expect("non-zero"),
            body_timeout: Duration::from_secs(60),
        }
    }
}

/// The Wasm runtime: per-invocation limits and the instance pool.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Wall-clock limit of one invocation (one HTTP request, or one map/combine/reduce call)
    /// unless the function's manifest says otherwise. Default 10 s.
    /// A guest past its deadline is stopped at the next epoch tick and the request gets 504.
    #[serde(with = "millis")]
    pub default_timeout: Duration,
    /// Linear-memory cap of one instance unless the function's manifest says otherwise.
    /// Default 128 MiB. Growth past it fails, and the invocation ends with a clear error.
    pub default_memory_bytes: NonZeroU64,
    /// Upper bound for a per-function memory cap. Default 1 GiB.
    pub max_memory_bytes: NonZeroU64,
    /// Upper bound for a per-function timeout. Default 5 minutes.
    #[serde(with = "millis")]
    pub max_timeout: Duration,
    /// Instances alive at once (the pooling allocator's slot count). Default 256.
    /// Requests beyond it wait for a free slot. Each slot reserves address space, not memory.
    pub max_instances: NonZeroU32,
    /// How often the epoch ticks: the granularity of deadlines and of fair yielding between
    /// guests sharing a thread. Default 10 ms. Shorter is fairer and costs more wake-ups.
    #[serde(with = "millis")]
    pub epoch_tick: Duration,
    /// Largest output a single map or reduce call may emit, in bytes. Default 256 MiB.
    pub max_emit_bytes: NonZeroU64,
    /// Bytes at the start of each pooled linear memory kept resident between instances and reset
    /// with memset rather than returned with madvise. Default 128 KiB. Larger saves page faults
    /// for guests whose stack, data and heap start sit low in memory (Weft's plugins use a
    /// 64 KiB stack for this); each instance pays a memset of this size. 0 turns it off.
    pub memory_keep_resident_bytes: usize,
    /// Bytes of each pooled table (the guest's function-pointer tables) kept resident between
    /// instances and reset with memset rather than returned with madvise. Default 16 KiB
    /// (2,048 entries). Without it every instance page-faults its tables back in: the
    /// `hello` benchmark took 180 times more page faults and p50 went from 21 to 28 µs.
    pub table_keep_resident_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            default_timeout: Duration::from_secs(10),
            default_memory_bytes: NonZeroU64::new(128 << 20).expect("non-zero"),
            max_memory_bytes: NonZeroU64::new(1 << 30).expect("non-zero"),
            max_timeout: Duration::from_secs(300),
            max_instances: NonZeroU32::new(256).expect("non-zero"),
            epoch_tick: Duration::from_millis(10),
            max_emit_bytes: NonZeroU64::new(256 << 20).expect("non-zero"),
            memory_keep_resident_bytes: 128 << 10,
            table_keep_resident_bytes: 16 << 10,
        }
    }
}

/// How this node takes part in a cluster.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster directory (`weft cluster init`): the CA certificate, this node's certificate
    /// and key, and the admin token. Without one, the node makes a cluster of its own in
    /// `<data_dir>/cluster` and is its only member until others share that directory.
    pub dir: Option<PathBuf>,
    /// This node's name, which must have a certificate in `dir/nodes/`. Default: the only
    /// certificate there, or `node` in a cluster of its own. When `dir` holds the CA key and
    /// the name has no certificate yet, one is issued.
    pub name: Option<String>,
    /// The UDP address of the QUIC endpoint (gossip and RPC). Default `127.0.0.1:7946`;
    /// use the machine's address, or `0.0.0.0:7946` with `advertise`, to reach other machines.
    pub listen: SocketAddr,
    /// The address other nodes should use, when `listen` is not reachable as such
    /// (a wildcard address, or NAT). Default: `listen` as bound.
    pub advertise: Option<SocketAddr>,
    /// Nodes to join at start (their QUIC addresses). After the first start the node also
    /// remembers every member it saw, and rejoins them by itself after a restart.
    pub join: Vec<SocketAddr>,
    /// Free-form labels gossiped with the node, such as `edge` or `server`.
    pub tags: Vec<String>,
    /// The QUIC transport.
    pub transport: TransportConfig,
    /// Failure detection and gossip.
    pub membership: MembershipConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            dir: None,
            name: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 7946)),
            advertise: None,
            join: vec![],
            tags: vec![],
            transport: TransportConfig::default(),
            membership: MembershipConfig::lan(),
        }
    }
}

/// Timeouts and bounds of the QUIC transport.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransportConfig {
    /// Time allowed to set up a connection (QUIC and TLS handshake). Default 2 s.
    /// A peer that cannot be reached is not dialled again for this long.
    #[serde(with = "millis")]
    pub connect_timeout: Duration,
    /// Time allowed for one RPC: request written and response read. Default 5 s.
    #[serde(with = "millis")]
    pub rpc_timeout: Duration,
    /// A connection with no traffic for this long is closed. Default 10 s; keep-alives go out
    /// at a third of it, so a connection to a live peer never idles out.
    #[serde(with = "millis")]
    pub idle_timeout: Duration,
    /// Largest RPC request or response accepted, in bytes. Default 16 MiB.
    pub max_frame_bytes: NonZeroU32,
    /// Test only (`test-switches`): the fraction (0 to 1) of outgoing datagrams dropped on
    /// purpose, to measure failure detection on a lossy network. Default 0.
    #[cfg(feature = "test-switches")]
    #[serde(default)]
    pub drop_datagrams: f64,
    /// Test only (`test-switches`): keep a cached connection to an address that a peer dials
    /// anew (the behaviour that got restarted nodes declared down).
    #[cfg(feature = "test-switches")]
    #[serde(default)]
    pub keep_cached_connections: bool,
}

impl Default for TransportConfig {
    fn default() -> Self {
        TransportConfig {
            connect_timeout: Duration::from_secs(2),
            rpc_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(10),
            max_frame_bytes: NonZeroU32::new(16 << 20).expect("non-zero"),
            #[cfg(feature = "test-switches")]
            drop_datagrams: 0.0,
            #[cfg(feature = "test-switches")]
            keep_cached_connections: false,
        }
    }
}

/// SWIM failure detection (foca) and Weft's additions to it. See ARCHITECTURE.md, "Membership".
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MembershipConfig {
    /// How often this node probes one member. Default 1 s. Shorter detects crashes sooner and
    /// sends more datagrams.
    #[serde(with = "millis")]
    pub probe_period: Duration,
    /// How long to wait for a direct ack before asking others to probe. Default 500 ms; must be
    /// below `probe_period`.
    #[serde(with = "millis")]
    pub probe_rtt: Duration,
    /// Members asked to probe indirectly. Default 3.
    pub indirect_probes: NonZeroUsize,
    /// Suspicion lasts `max(1, log10(members)) × this × probe_period` before a member is declared
    /// down. Default 4 (4 s with up to 10 members).
    pub suspicion_multiplier: f64,
    /// How often pending updates are gossiped, to `gossip_fanout` members. Default 200 ms.
    #[serde(with = "millis")]
    pub gossip_interval: Duration,
    /// Members each gossip round goes to. Default 3.
    pub gossip_fanout: NonZeroUsize,
    /// Test only (`test-switches`): Weft's additions to plain SWIM (local health and suspicion
    /// confirmation). Default on; off gives plain foca, for comparison. Read it through
    /// [`MembershipConfig::lifeguard`].
    #[cfg(feature = "test-switches")]
    #[serde(default = "yes")]
    pub lifeguard: bool,
    /// Test only (`test-switches`): take gossip and member lists whose sender claims another
    /// name than its certificate's.
    #[cfg(feature = "test-switches")]
    #[serde(default)]
    pub trust_claimed_names: bool,
    /// Largest local-health multiplier: a node that finds itself slow stretches its probe
    /// timeouts and its suspicions up to `1 + this` times. Default 4.
    pub max_health_multiplier: u32,
    /// Times a suspicion is extended because the suspect answered a direct check (a reliable
    /// QUIC ping) meanwhile. Default 3. Each extension lasts one suspicion period.
    pub max_suspicion_extensions: u32,
    /// How often this node exchanges full member lists with one member (in turn), besides once
    /// on joining. Default 30 s. Gossip spreads changes fast; this fills the gaps a large
    /// cluster leaves in a newcomer's list, at the cost of one member list per interval.
    #[serde(with = "millis")]
    pub sync_interval: Duration,
    /// While this node knows no live member, it announces itself to its seeds this often.
    /// Default 2 s.
    #[serde(with = "millis")]
    pub rejoin_interval: Duration,
    /// How long a member declared down stays in the member list. Default 1 hour.
    #[serde(with = "millis")]
    pub remove_down_after: Duration,
}

#[cfg(feature = "test-switches")]
fn yes() -> bool {
    true
}

impl MembershipConfig {
    /// Whether a sender claiming another name than its certificate's is believed: never,
    /// except in tests that show what the check guards against.
    pub fn trust_claimed_names(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.trust_claimed_names;
        #[cfg(not(feature = "test-switches"))]
        false
    }

    /// Whether Weft's additions to plain SWIM are on: always, except in tests that compare
    /// them with plain foca.
    pub fn lifeguard(&self) -> bool {
        #[cfg(feature = "test-switches")]
        return self.lifeguard;
        #[cfg(not(feature = "test-switches"))]
        true
    }

    /// For machines on one LAN (the default): crashes detected in about 6 s.
    pub fn lan() -> Self {
        MembershipConfig {
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(500),
            indirect_probes: NonZeroUsize::new(3).expect("non-zero"),
            suspicion_multiplier: 4.0,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: NonZeroUsize::new(3).expect("non-zero"),
            #[cfg(feature = "test-switches")]
            lifeguard: true,
            #[cfg(feature = "test-switches")]
            trust_claimed_names: false,
            max_health_multiplier: 4,
            max_suspicion_extensions: 3,
            sync_interval: Duration::from_secs(30),
            rejoin_interval: Duration::from_secs(2),
            remove_down_after: Duration::from_secs(3600),
        }
    }

    /// For tests on one machine: the LAN settings five times faster.
    pub fn test() -> Self {
        MembershipConfig {
            probe_period: Duration::from_millis(200),
            probe_rtt: Duration::from_millis(100),
            gossip_interval: Duration::from_millis(50),
            rejoin_interval: Duration::from_millis(400),
            sync_interval: Duration::from_secs(6),
            ..Self::lan()
        }
    }
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self::lan()
    }
}

/// How many copies of a key exist (`n`), and how many must answer a read (`r`) and flush a
/// write (`w`) before it is acknowledged. With `r + w > n` a read sees every acknowledged
/// write. `n` is capped at the number of nodes in the cluster, and so are `r` and `w`, so a
/// single node serves alone; a cluster with fewer live replicas than `w` refuses writes
/// rather than acknowledging them with fewer copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
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
    pub placement: crate::ring::Placement,
    /// How often each node compares its data with every other replica and repairs the
    /// differences (Merkle anti-entropy). Default 10 s. It also runs at once after the ring
    /// changes. Shorter converges sooner after a partition and costs a scan of the local data
    /// per round.
    #[serde(with = "millis")]
    pub anti_entropy_interval: Duration,
    /// How often held hints are offered to nodes that are back. Default 1 s.
    #[serde(with = "millis")]
    pub hint_interval: Duration,
    /// After the ring changes, reads and writes also go to the replicas of the rings of this
    /// long ago, while anti-entropy moves keys to their new owners. Default 30 s (three
    /// anti-entropy rounds).
    #[serde(with = "millis")]
    pub transition: Duration,
    /// A deletion's tombstone is kept at least this long, and then collected only when every
    /// member of the cluster is up and every owner of the key holds the same tombstone.
    /// Hints older than half of it are dropped, so none can carry an older value back.
    /// Default 24 h. A node away for longer than this must be wiped before it rejoins, or
    /// it can bring back keys deleted while it was away (as with Cassandra's `gc_grace`).
    #[serde(with = "millis")]
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
    /// Store no hints for replicas that miss a write.
    pub no_hints: bool,
    /// Deliver hints however old, even past half the tombstone grace.
    pub keep_old_hints: bool,
    /// Not a rule but a fault: shift this node's wall clock by this many milliseconds.
    pub clock_skew_ms: i64,
}

impl ReplicationConfig {
    /// Settings for tests: anti-entropy every second.
    pub fn test() -> Self {
        ReplicationConfig {
            anti_entropy_interval: Duration::from_secs(1),
            hint_interval: Duration::from_millis(200),
            transition: Duration::from_secs(3),
            tombstone_grace: Duration::from_secs(3600),
            ..ReplicationConfig::default()
        }
    }

    /// The quorum of a namespace. The function registry (`sys.functions`) is on every node.
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
            transition: Duration::from_secs(30),
            tombstone_grace: Duration::from_secs(24 * 3600),
            #[cfg(feature = "test-switches")]
            unsafe_switches: ReplicationSwitches::default(),
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorums_parse_and_namespaces_override_the_default() {
        for (text, ok) in [
            ("3/2/2", true),
            ("5/3/3", true),
            ("1/1/1", true),
            ("3/4/2", false),
            ("3/2/0", false),
            ("3/2", false),
            ("a/b/c", false),
            ("300/1/1", false),
        ] {
            assert_eq!(text.parse::<Quorum>().is_ok(), ok, "{text}");
        }
        assert_eq!("5/3/3".parse::<Quorum>().unwrap().to_string(), "5/3/3");
        let mut c = ReplicationConfig::default();
        c.namespaces
            .insert("users".into(), "5/3/3".parse().unwrap());
        assert_eq!(c.quorum("users").to_string(), "5/3/3");
        assert_eq!(c.quorum("other").to_string(), "3/2/2");
    }
}
