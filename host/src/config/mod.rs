//! Node configuration as plain data, with documented defaults and presets. Each subsystem's
//! configuration lives beside it (`RuntimeConfig` in `runtime`, `TransportConfig` in
//! `transport`, `MembershipConfig` in `membership`, `ReplicationConfig` in `replication`,
//! `JobsConfig` in `mapreduce`);
//! `NodeConfig` composes them, and they are re-exported here.
//! `weft node --config FILE` reads it from a TOML file with the same keys (`file`).

mod file;
mod profile;

use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::mapreduce::JobsConfig;
pub use crate::membership::MembershipConfig;
pub use crate::replication::{Quorum, ReplicationConfig, ReplicationSwitches};
pub use crate::runtime::RuntimeConfig;
pub use crate::store::StoreConfig;
pub use crate::transport::TransportConfig;
pub use file::{ConfigFileError, EXAMPLE};
pub use profile::Profile;

/// Everything a node needs to start. Every field has a default ([`NodeConfig::default`]).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// The preset the other keys' defaults come from: `default` (a server) or `edge` (a small
    /// device; see [`Profile::Edge`]). Default `default`.
    pub profile: Profile,
    /// Where the node keeps its sled database, compiled-module cache, job output and token.
    /// Default `~/.local/share/weft` (`./weft-data` without a home directory).
    pub data_dir: PathBuf,
    /// The HTTP API's address. Default `127.0.0.1:7070`; port 0 picks a free port (tests
    /// and the demo use this).
    pub http: SocketAddr,
    /// Whether `weft node`, once serving, asks the kernel to take back the pages of its
    /// executable that start-up touched (Linux's `MADV_PAGEOUT`); the code serving needs comes
    /// back from the file on first use, once. Default `false`; `true` in the edge profile,
    /// where it takes about 7 MB off a node's resident memory (bench/RESULTS.md, "Footprint").
    /// The first requests after start pay a page fault per page of code they are first to run.
    /// Nodes started in-process (tests, `weft demo`) never do this.
    pub release_startup_code: bool,
    /// Threads of `weft node`'s async runtime, which serve HTTP and run guests. Default: one
    /// per CPU the node may use. Fewer can be faster for large components run fresh for every
    /// request (JavaScript, Python): every copy-on-write fault in an instance's memory makes the
    /// kernel flush the TLB of each other CPU running a thread of the node, and a fresh
    /// JavaScript request took about 2.5 times less CPU with one thread than with two on a
    /// 2-core machine (bench/RESULTS.md, session 27), at the cost of serving from one core.
    /// Nodes started in-process (tests, `weft demo`) run on their caller's runtime instead.
    pub worker_threads: Option<NonZeroUsize>,
    /// Limits on what clients may send.
    pub limits: Limits,
    /// The Wasm runtime.
    pub runtime: RuntimeConfig,
    /// Cluster membership and the QUIC transport between nodes.
    pub cluster: ClusterConfig,
    /// Placement on the ring and replication of key-value data.
    pub replication: ReplicationConfig,
    /// Map/reduce jobs.
    pub jobs: JobsConfig,
    /// The local database.
    pub store: StoreConfig,
}

/// `~/.local/share/weft`, or `./weft-data` without a home directory.
pub fn default_data_dir() -> PathBuf {
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/weft"),
        None => PathBuf::from("weft-data"),
    }
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            profile: Profile::Default,
            data_dir: default_data_dir(),
            http: SocketAddr::from(([127, 0, 0, 1], 7070)),
            release_startup_code: false,
            worker_threads: None,
            limits: Limits::default(),
            runtime: RuntimeConfig::default(),
            cluster: ClusterConfig::default(),
            replication: ReplicationConfig::default(),
            jobs: JobsConfig::default(),
            store: StoreConfig::default(),
        }
    }
}

impl NodeConfig {
    /// A node on `127.0.0.1:0` keeping its state in `data_dir`, with default limits.
    pub fn local(data_dir: impl Into<PathBuf>) -> Self {
        let mut config = NodeConfig {
            data_dir: data_dir.into(),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..NodeConfig::default()
        };
        config.cluster.listen = SocketAddr::from(([127, 0, 0, 1], 0));
        config
    }
}

/// Limits on client input. Each is checked before any work is done on the input.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Largest module accepted by `PUT /v1/functions/{name}`, in bytes. Default 50 MiB.
    /// Larger modules are refused with 413 before compiling.
    pub max_module_bytes: NonZeroUsize,
    /// Largest request body streamed into an HTTP handler, in bytes. Default 1 GiB.
    /// The body is never held whole: the handler reads it as the client sends it, so a
    /// request's memory does not grow with it, and a larger limit costs only the time a
    /// handler may spend reading. A `Content-Length` over it is refused with 413 before the
    /// handler starts; a chunked body that passes it fails the handler's read, and the client
    /// gets 413 unless the handler had answered already.
    pub max_request_body: NonZeroU64,
    /// Largest request body of the handlers that get their body whole before they start, in
    /// bytes: WAGI programs, lock-protected handlers (a request waits for its turn with its
    /// body read) and handlers with a route key (a request is forwarded to its key's owner
    /// in one message). Default 10 MiB; each such request in flight holds its body in memory.
    pub max_buffered_request_body: NonZeroUsize,
    /// Largest map/reduce input accepted by `POST /v1/jobs`, in bytes. Default 1 GiB.
    pub max_job_input: NonZeroU64,
    /// How long a client may take to send a whole request body (a module, an invocation's
    /// body, a key-value value), once the request head is in. Default 60 s; a slower body
    /// gets 408. A body streamed into a handler is counted from the moment the handler's
    /// instance starts, and fails only when the handler waits for more of it past that time:
    /// a client that has sent everything is never failed because its handler reads slowly.
    /// Longer lets slow links upload large modules; shorter frees connections that trickle.
    #[serde(with = "crate::millis")]
    pub body_timeout: Duration,
    /// How long a client may take to send a whole request head, counted from the moment the
    /// node waits for it: when the connection opens, and again when the previous response on
    /// a kept-alive connection has gone out. Default 10 s. A client that trickles its header
    /// lines (slowloris) or keeps an idle connection open is closed when it passes; longer
    /// suits clients on very slow links, shorter frees connection slots sooner.
    #[serde(with = "crate::millis")]
    pub header_timeout: Duration,
    /// Largest request head (request line and headers), in bytes. Default 16 KiB, as Node.js;
    /// a larger head is answered 431 and the connection closed.
    pub max_header_bytes: NonZeroUsize,
    /// Client connections open at once. Default 1024. Beyond it a new connection is answered
    /// 503 (with `retry-after`) and closed, so a flood of connections cannot exhaust the
    /// node's memory or file descriptors; each open connection costs a task and its buffers.
    pub max_connections: NonZeroUsize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_module_bytes: NonZeroUsize::new(50 << 20).expect("non-zero"),
            max_request_body: NonZeroU64::new(1 << 30).expect("non-zero"),
            max_buffered_request_body: NonZeroUsize::new(10 << 20).expect("non-zero"),
            max_job_input: NonZeroU64::new(1 << 30).expect("non-zero"),
            body_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(10),
            max_header_bytes: NonZeroUsize::new(16 << 10).expect("non-zero"),
            max_connections: NonZeroUsize::new(1024).expect("non-zero"),
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
    /// The metadata group's timing.
    pub consensus: crate::consensus::ConsensusConfig,
    /// The lock service's leases and waits.
    pub locks: crate::locks::LocksConfig,
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
            consensus: Default::default(),
            locks: Default::default(),
        }
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
