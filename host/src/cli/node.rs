//! The settings of `weft node`: a configuration file (`--config`), `WEFT_*` environment
//! variables over it, and flags over both. Each flag and variable sets one key of the file
//! (named in its help), so a node can be configured entirely either way.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::config::{NodeConfig, Quorum};

/// Where the node's settings come from. Every flag can also be given as the environment
/// variable named in its help; a flag wins over its variable, and both win over the file.
#[derive(Debug, clap::Args)]
pub(super) struct NodeArgs {
    /// A configuration file (TOML). `weft config example` prints one holding every key with
    /// its default and meaning; keys left out keep their defaults.
    #[arg(long, env = "WEFT_CONFIG")]
    config: Option<PathBuf>,
    /// The preset the other keys' defaults come from: `default` (a server) or `edge` (a small
    /// device: fewer instances, smaller caches and buffers) [key: profile].
    #[arg(long, env = "WEFT_PROFILE")]
    profile: Option<crate::config::Profile>,
    /// Where the node keeps its state [key: data_dir; default ~/.local/share/weft].
    #[arg(long, env = "WEFT_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// The HTTP API's address [key: http; default 127.0.0.1:7070].
    #[arg(long, env = "WEFT_HTTP")]
    http: Option<SocketAddr>,
    /// Threads of the node's async runtime, which serve HTTP and run guests
    /// [key: worker_threads; default one per CPU].
    #[arg(long, env = "WEFT_WORKER_THREADS")]
    worker_threads: Option<std::num::NonZeroUsize>,
    /// Processes of one thread each that run the HTTP handlers using only WASI, each in an
    /// address space of its own [key: runtime.guest_processes; default 0: all in the node].
    #[arg(long, env = "WEFT_GUEST_PROCESSES")]
    guest_processes: Option<u32>,
    /// The cluster directory (`weft cluster init`); without one the node is a cluster of its
    /// own [key: cluster.dir].
    #[arg(long, env = "WEFT_CLUSTER")]
    cluster: Option<PathBuf>,
    /// This node's name (its certificate in the cluster directory); default: the only
    /// certificate there [key: cluster.name].
    #[arg(long, env = "WEFT_NAME")]
    name: Option<String>,
    /// The UDP address for QUIC (gossip and node-to-node requests)
    /// [key: cluster.listen; default 127.0.0.1:7946].
    #[arg(long, env = "WEFT_LISTEN")]
    listen: Option<SocketAddr>,
    /// The QUIC address other nodes should use, if not `--listen` [key: cluster.advertise].
    #[arg(long, env = "WEFT_ADVERTISE")]
    advertise: Option<SocketAddr>,
    /// A node to join (its QUIC address); repeatable, or comma-separated. A restarted node
    /// rejoins the members it remembers without this [key: cluster.join].
    #[arg(long, num_args = 1.., value_delimiter = ',', env = "WEFT_JOIN")]
    join: Vec<SocketAddr>,
    /// Labels gossiped with the node, e.g. `--tag edge`; repeatable, or comma-separated
    /// [key: cluster.tags].
    #[arg(long = "tag", value_delimiter = ',', env = "WEFT_TAG")]
    tags: Vec<String>,
    /// N/R/W of the key-value store (replicas, read and write quorums)
    /// [key: replication.default; default 3/2/2].
    #[arg(long, env = "WEFT_KV_QUORUM")]
    kv_quorum: Option<Quorum>,
    /// N/R/W of one namespace, `NS=N/R/W`; repeatable, or comma-separated. Every node must
    /// agree [key: replication.namespaces].
    #[arg(long = "kv-namespace", value_parser = parse_namespace_quorum, value_delimiter = ',', env = "WEFT_KV_NAMESPACE")]
    kv_namespaces: Vec<(String, Quorum)>,
    /// Keep one replica of every key on a node with this tag (e.g. `server`)
    /// [key: replication.placement.require_tag].
    #[arg(long, env = "WEFT_PLACEMENT_TAG")]
    placement_tag: Option<String>,
    /// MiB of map output the node's jobs hold in memory before they write it to disk
    /// [key: jobs.shuffle_memory_bytes, in bytes; default 256 MiB].
    #[arg(long, env = "WEFT_SHUFFLE_MEMORY_MIB")]
    shuffle_memory_mib: Option<u64>,
    /// MiB of the local database's pages kept in memory (sled's page cache)
    /// [key: store.cache_bytes, in bytes; default 64 MiB].
    #[arg(long, env = "WEFT_STORE_CACHE_MIB")]
    store_cache_mib: Option<u64>,
    /// KiB of a segment of the store's journal: a full one is checkpointed (the database
    /// flushed, the segment deleted), so the journal takes about twice this on disk and a
    /// restart after a crash replays at most about this much
    /// [key: store.journal_segment_bytes, in bytes; default 32 MiB].
    #[arg(long, env = "WEFT_STORE_JOURNAL_SEGMENT_KIB", value_parser = clap::value_parser!(u64).range(4..))]
    store_journal_segment_kib: Option<u64>,
    /// How long a metadata-group voter may be down before another node takes its seat
    /// (`60s`, `5m`) [key: cluster.consensus.voter_replace_after; default 1m].
    #[arg(long, env = "WEFT_VOTER_REPLACE_AFTER", value_parser = crate::millis::parse)]
    voter_replace_after: Option<Duration>,
    /// How long a new leader of the metadata group waits, beyond a held lock's lease, before
    /// granting the lock to another holder [key: cluster.locks.lock_delay; default 2s].
    #[arg(long, env = "WEFT_LOCK_DELAY", value_parser = crate::millis::parse)]
    lock_delay: Option<Duration>,
    /// The lease of a lock taken without naming one: by `weft lock acquire`, a guest's
    /// `locks.acquire`, and a lock-protected handler (renewed while held). A node that
    /// pauses longer than this loses its locks (its later writes are refused)
    /// [key: cluster.locks.default_lease; default 10s].
    #[arg(long, env = "WEFT_LOCK_LEASE", value_parser = crate::millis::parse)]
    lock_lease: Option<Duration>,
    #[cfg(feature = "test-switches")]
    #[command(flatten)]
    switches: TestSwitches,
}

/// Switches that weaken safety, compiled into test builds only (`test-switches`).
#[cfg(feature = "test-switches")]
#[derive(Debug, clap::Args)]
struct TestSwitches {
    /// Test only: drop this fraction of outgoing gossip datagrams.
    #[arg(long, hide = true, default_value_t = 0.0)]
    drop_datagrams: f64,
    /// Test only: plain SWIM, without local health and suspicion confirmation.
    #[arg(long, hide = true)]
    plain_swim: bool,
    /// Test only: keep a cached connection when a peer dials anew.
    #[arg(long, hide = true)]
    keep_cached_connections: bool,
    /// Test only: serve the metadata group's reads from this node's copy, without asking the
    /// leader (not linearizable).
    #[arg(long, hide = true)]
    local_reads_for_tests: bool,
    /// Test only: a new leader of the metadata group expires held locks at once, without
    /// waiting out their lease and the lock delay.
    #[arg(long, hide = true)]
    expire_at_takeover_for_tests: bool,
    /// Test only: make writes and reads under a lock without fencing tokens, and let a guest
    /// write after its lock was lost.
    #[arg(long, hide = true)]
    no_fencing_for_tests: bool,
    /// Test only: the process stops itself (SIGSTOP) just before its first commit as a job's
    /// coordinator.
    #[arg(long, hide = true)]
    stop_before_job_commit_for_tests: bool,
}

impl NodeArgs {
    /// The configuration these settings give: the file's (or the defaults), then every flag
    /// or variable that was given.
    pub(super) fn config(&self) -> anyhow::Result<NodeConfig> {
        let mut c = match &self.config {
            Some(file) => NodeConfig::from_file_as(file, self.profile)?,
            None => NodeConfig::for_profile(self.profile.unwrap_or_default()),
        };
        set(&mut c.data_dir, &self.data_dir);
        set(&mut c.http, &self.http);
        set_some(&mut c.worker_threads, &self.worker_threads);
        set(&mut c.runtime.guest_processes, &self.guest_processes);
        set_some(&mut c.cluster.dir, &self.cluster);
        set_some(&mut c.cluster.name, &self.name);
        set(&mut c.cluster.listen, &self.listen);
        set_some(&mut c.cluster.advertise, &self.advertise);
        if !self.join.is_empty() {
            c.cluster.join = self.join.clone();
        }
        if !self.tags.is_empty() {
            c.cluster.tags = self.tags.clone();
        }
        set(&mut c.replication.default, &self.kv_quorum);
        if !self.kv_namespaces.is_empty() {
            c.replication.namespaces = self.kv_namespaces.iter().cloned().collect();
        }
        set_some(
            &mut c.replication.placement.require_tag,
            &self.placement_tag,
        );
        let scaled = |v: &Option<u64>, unit: u64| v.map(|v| v.saturating_mul(unit));
        set(
            &mut c.jobs.shuffle_memory_bytes,
            &scaled(&self.shuffle_memory_mib, 1 << 20),
        );
        set(
            &mut c.store.cache_bytes,
            &scaled(&self.store_cache_mib, 1 << 20),
        );
        set(
            &mut c.store.journal_segment_bytes,
            &scaled(&self.store_journal_segment_kib, 1 << 10),
        );
        set(
            &mut c.cluster.consensus.voter_replace_after,
            &self.voter_replace_after,
        );
        set(&mut c.cluster.locks.lock_delay, &self.lock_delay);
        set(&mut c.cluster.locks.default_lease, &self.lock_lease);
        #[cfg(feature = "test-switches")]
        {
            let s = &self.switches;
            c.cluster.transport.drop_datagrams = s.drop_datagrams;
            c.cluster.membership.lifeguard = !s.plain_swim;
            c.cluster.transport.keep_cached_connections = s.keep_cached_connections;
            c.cluster.consensus.local_reads_for_tests = s.local_reads_for_tests;
            c.cluster.locks.expire_at_takeover_for_tests = s.expire_at_takeover_for_tests;
            c.replication.unsafe_switches.no_fencing = s.no_fencing_for_tests;
            c.jobs.unsafe_switches.no_fencing = s.no_fencing_for_tests;
            c.jobs.unsafe_switches.stop_before_first_commit = s.stop_before_job_commit_for_tests;
        }
        Ok(c)
    }
}

fn set<T: Clone>(key: &mut T, given: &Option<T>) {
    if let Some(v) = given {
        *key = v.clone();
    }
}

fn set_some<T: Clone>(key: &mut Option<T>, given: &Option<T>) {
    if given.is_some() {
        key.clone_from(given);
    }
}

/// `NS=N/R/W`.
fn parse_namespace_quorum(s: &str) -> Result<(String, Quorum), String> {
    let (ns, q) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not NS=N/R/W (such as users=3/2/2)"))?;
    ns.parse::<crate::replication::Namespace>()
        .map_err(|e| e.to_string())?;
    Ok((ns.to_string(), q.parse()?))
}

/// `weft node`: starts the node and serves until Ctrl-C or SIGTERM.
pub(super) async fn run(args: &NodeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let release_startup_code = config.release_startup_code;
    let node = crate::Node::start(config).await?;
    if release_startup_code {
        match super::startup_code::release() {
            Ok(r) => tracing::info!(
                "gave the kernel back {:.1} MB of start-up code (file-backed resident memory {:.1} -> {:.1} MB)",
                r.before.saturating_sub(r.after) as f64 / 1e6,
                r.before as f64 / 1e6,
                r.after as f64 / 1e6
            ),
            Err(e) => tracing::warn!("could not give back start-up code: {e}"),
        }
    }
    println!(
        "weft node `{}` serving on {} (cluster address {})",
        node.name,
        node.url(),
        node.quic_addr
    );
    println!(
        "API token in {} (export WEFT_TOKEN=$(cat {}))",
        node.token_path.display(),
        node.token_path.display()
    );
    node.run_until(super::shutdown_signal()).await;
    Ok(())
}

/// `weft config show`: the configuration a node started with these settings would use.
pub(super) fn show(args: &NodeArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let text = toml::to_string_pretty(&config).context("writing the configuration as TOML")?;
    print!("{text}");
    Ok(())
}
