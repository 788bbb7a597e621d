//! A running node: wires the store, the runtime, the job service, the HTTP API, the QUIC
//! transport, membership and replication together, and owns shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::api::{self, App};
use crate::blobs::{BlobDir, Blobs};
use crate::config::{ClusterConfig, NodeConfig};
use crate::consensus::{self, Consensus};
use crate::functions::Functions;
use crate::id::NodeId;
use crate::locks::Locks;
use crate::mapreduce::pool::TaskPool;
use crate::mapreduce::spill::SpillDir;
use crate::mapreduce::{Jobs, JobsWiring};
use crate::membership::{Identity, MemberState, Membership, Meta, Wiring};
use crate::metrics::Metrics;
use crate::placement::Placement;
use crate::replication::Replicator;
use crate::rpc::Router;
use crate::runtime::Runtime;
use crate::store::Store;
use crate::tasks::Tasks;
use crate::transport::{ClusterDir, Transport};
use crate::transport::{random_token, write_private};

/// The name of the file, in the data directory, holding the API token.
pub const TOKEN_FILE: &str = "token";

/// A node that is serving.
pub struct Node {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The cluster's own API token (every scope).
    pub token: String,
    /// The file that holds the token.
    pub token_path: PathBuf,
    /// This node's name in the cluster.
    pub name: NodeId,
    /// Where other nodes reach this one (QUIC, UDP).
    pub quic_addr: SocketAddr,
    /// The cluster's membership as this node sees it.
    pub membership: Membership,
    /// Where keys live, as this node sees it.
    pub placement: Placement,
    /// The replicated key-value store, as coordinated by this node.
    pub replication: Replicator,
    /// The function registry.
    pub functions: Functions,
    /// The blob service (modules among the blobs).
    pub blobs: Blobs,
    /// This node's member of the metadata group.
    pub consensus: Consensus,
    /// The lock service.
    pub locks: Locks,
    store: Store,
    transport: Transport,
    router: Arc<Router>,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    tasks: Tasks,
}

impl Node {
    /// Opens the data directory, binds the HTTP address and starts serving.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        raise_open_files();
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let db_dir = dir.join("db");
        // Opening may wait for a previous owner's lock: keep it off the async threads.
        let store_config = config.store.clone();
        let store = tokio::task::spawn_blocking(move || Store::open_with(&db_dir, &store_config))
            .await?
            .with_context(|| format!("opening the database in {}", dir.display()))?;
        let (cluster_dir, name) = cluster_identity(&config.cluster, dir)?;
        let (token, token_path) = match &config.cluster.dir {
            Some(_) => match cluster_dir.token()? {
                Some(t) => (t, cluster_dir.token_path()),
                None => load_or_create_token(dir)?,
            },
            None => load_or_create_token(dir)?,
        };
        let creds = cluster_dir.load(&name)?;
        let metrics = Arc::new(Metrics::default());
        let cancel = CancellationToken::new();
        let tasks = Tasks::new(cancel.clone());
        let runtime = Arc::new(Runtime::new(
            config.runtime.clone(),
            dir.join("cache"),
            metrics.clone(),
            tasks.clone(),
        )?);

        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .with_context(|| format!("binding the HTTP API to {}", config.http))?;
        let http_addr = listener.local_addr()?;

        let router = Router::new();
        let (transport, datagrams) = Transport::bind_when_free(
            config.cluster.listen,
            &creds,
            config.cluster.transport.clone(),
            router.clone(),
            Duration::from_secs(15),
        )
        .await?;
        let quic_addr = match config.cluster.advertise {
            Some(a) => a,
            None if transport.local_addr().ip().is_unspecified() => anyhow::bail!(
                "the cluster address {} is a wildcard; give the address other nodes should use with --advertise",
                config.cluster.listen
            ),
            None => transport.local_addr(),
        };
        // Read before membership starts remembering members: a node that has nothing to
        // join and remembers nobody is the first of a new cluster, and forms its group.
        let found = config.cluster.join.is_empty() && store.members()?.is_empty();
        let group_id = Consensus::open_id(&store, &name).await?;
        let identity = Identity {
            node: name.clone(),
            addr: quic_addr,
            bump: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            meta: Meta {
                http: Some(http_addr),
                tags: config.cluster.tags.clone(),
                capacity: config.runtime.max_instances.get(),
                group_id,
            },
        };
        let max_instances = config.runtime.max_instances.get();
        let slots = runtime.clone();
        let membership = Membership::start(
            identity,
            config.cluster.membership.clone(),
            config.cluster.join.clone(),
            Wiring {
                transport: transport.clone(),
                datagrams,
                store: store.clone(),
                free: Box::new(move || max_instances.saturating_sub(slots.live_instances() as u32)),
            },
            tasks.clone(),
        );

        membership.serve(&router, name.clone());
        let replication_config = config.replication.clone();
        let placement = Placement::start(
            name.clone(),
            store.clone(),
            transport.clone(),
            &membership,
            replication_config.placement_config(),
            tasks.clone(),
        );
        let replication = Replicator::start(
            store.clone(),
            placement.clone(),
            replication_config,
            tasks.clone(),
        );
        replication.serve(&router);
        let consensus = Consensus::start(
            consensus::Wiring {
                id: group_id,
                me: consensus::Member {
                    name: name.to_string(),
                    addr: Some(quic_addr),
                },
                peers: follow_peers(&membership, &tasks),
                found,
            },
            store.clone(),
            transport.clone(),
            &router,
            &config.cluster.consensus,
            &tasks,
        )
        .await?;
        let locks = Locks::start(
            consensus.clone(),
            name.clone(),
            config.cluster.locks.clone(),
            &router,
            &tasks,
        );
        let blob_dir = dir.join("blobs");
        let blob_dir = BlobDir::open(&blob_dir)
            .with_context(|| format!("opening the blob directory {}", blob_dir.display()))?;
        // Modules of an earlier version were kept in the database: move them to blob files.
        for module in store.legacy_modules()? {
            blob_dir.put(&module)?;
        }
        store.drop_legacy_modules().await?;
        let blobs = Blobs::new(blob_dir, placement.clone(), tasks.clone());
        blobs.serve(&router);
        let spill = SpillDir::new(dir.join("spill"))
            .with_context(|| format!("preparing {}", dir.join("spill").display()))?;
        let jobs = Jobs::new(
            JobsWiring {
                runtime: runtime.clone(),
                store: store.clone(),
                blobs: blobs.clone(),
                placement: placement.clone(),
                consensus: consensus.clone(),
                locks: locks.clone(),
                members: membership.watch(),
                metrics: metrics.clone(),
                tasks: tasks.clone(),
                spill,
                pool: TaskPool::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get()),
                    cancel.clone(),
                )
                .context("starting the threads that run jobs' tasks")?,
            },
            config.jobs.clone(),
        )
        .await?;
        jobs.serve(&router);
        let functions = Functions::new(consensus.clone(), blobs.clone());
        adopt_earlier_records(functions.clone(), replication.clone(), &tasks);
        let (app_functions, node_store) = (functions.clone(), store.clone());

        let denylist = crate::denylist::DenyList::new(consensus.clone());
        tasks.spawn(denylist.clone().follow(transport.clone(), cancel.clone()));
        let app = App::new(
            functions,
            runtime,
            jobs,
            metrics.clone(),
            config.limits.clone(),
            crate::tokens::Tokens::new(consensus.clone(), token.clone()),
            api::Cluster {
                membership: membership.clone(),
                transport: transport.clone(),
                replication: replication.clone(),
                blobs: blobs.clone(),
                placement: placement.clone(),
                consensus: consensus.clone(),
                locks: locks.clone(),
                denylist: denylist.clone(),
                stopping: cancel.clone(),
            },
        );
        api::serve_forwarded(&router, app.clone());
        let stop = cancel.clone();
        let limits = config.limits.clone();
        let server = tasks.spawn_joined(async move {
            api::serve(listener, api::router(app), &limits, metrics, stop).await
        });
        tracing::info!(node = %name, %http_addr, %quic_addr, cluster = %creds.cluster, data_dir = %dir.display(), "node is serving");
        Ok(Node {
            http_addr,
            token,
            token_path,
            name,
            quic_addr,
            membership,
            replication,
            functions: app_functions,
            blobs,
            placement,
            consensus,
            locks,
            store: node_store,
            transport,
            router,
            cancel,
            server,
            tasks,
        })
    }

    /// Test only: cuts this node off from the nodes at `peers` (QUIC addresses), both ways,
    /// or heals it with an empty list.
    #[cfg(feature = "test-switches")]
    pub fn partition_for_tests(&self, peers: &[SocketAddr]) {
        self.transport.partition_for_tests(peers);
    }

    /// The router of node-to-node requests, where services register.
    pub fn router(&self) -> &Router {
        &self.router
    }

    /// The node's QUIC endpoint.
    pub fn transport(&self) -> &Transport {
        &self.transport
    }

    /// Test only: the node's local store.
    #[doc(hidden)]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The API's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Leaves the cluster, stops accepting requests and waits (at most 10 s) for those in flight.
    pub async fn shutdown(self) {
        if tokio::time::timeout(Duration::from_secs(1), self.membership.leave())
            .await
            .is_err()
        {
            tracing::warn!("could not tell the cluster this node leaves");
        }
        self.cancel.cancel();
        let abort = self.server.abort_handle();
        match tokio::time::timeout(Duration::from_secs(10), self.server).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => tracing::warn!(error = %e, "HTTP server stopped with an error"),
            Ok(Err(e)) => tracing::warn!(error = %e, "HTTP server task failed"),
            Err(_) => {
                tracing::warn!("requests still running after 10 s; stopping anyway");
                abort.abort();
            }
        }
        if !self.tasks.stop(Duration::from_secs(10)).await {
            tracing::warn!("background tasks still running after 10 s; stopping anyway");
        }
        self.consensus.shutdown().await;
        self.transport.shutdown().await;
        self.router.close();
    }

    /// Serves until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// Moves the function records an earlier version kept in the replicated store into the
/// metadata group, retrying until the group can take them (or the node stops).
fn adopt_earlier_records(functions: Functions, replication: Replicator, tasks: &Tasks) {
    let cancel = tasks.token().clone();
    tasks.spawn(async move {
        let mut wait = Duration::from_millis(500);
        loop {
            match functions.adopt_earlier_records(&replication).await {
                Ok(0) => return,
                Ok(n) => {
                    tracing::info!(records = n, "moved function records of an earlier version into the metadata group");
                    return;
                }
                Err(e) => tracing::info!(error = %e, "function records of an earlier version wait for the metadata group"),
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = (wait * 2).min(Duration::from_secs(10));
        }
    });
}

/// The cluster's nodes as the metadata group's leader needs them, following membership.
fn follow_peers(membership: &Membership, tasks: &Tasks) -> watch::Receiver<Vec<consensus::Peer>> {
    let peers = |set: &crate::membership::MemberSet| -> Vec<consensus::Peer> {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        set.members
            .iter()
            .map(|m| consensus::Peer {
                id: m.group_id,
                name: m.node.to_string(),
                addr: m.addr,
                server: m.tags.iter().any(|t| t == "server"),
                up: m.state == MemberState::Alive,
                down_for: (m.state == MemberState::Down)
                    .then(|| Duration::from_millis(now_ms.saturating_sub(m.since_ms))),
            })
            .collect()
    };
    let mut members = membership.watch();
    let (tx, rx) = watch::channel(peers(&members.borrow_and_update()));
    tasks.spawn(async move {
        while members.changed().await.is_ok() {
            let now = peers(&members.borrow_and_update());
            tx.send_if_modified(|old| {
                let changed = *old != now;
                *old = now;
                changed
            });
        }
    });
    rx
}

/// The cluster directory and this node's name in it. Without a configured directory the node
/// makes a cluster of its own in `<data_dir>/cluster`. A missing node certificate is issued
/// when the directory holds the CA key.
fn cluster_identity(
    config: &ClusterConfig,
    data_dir: &Path,
) -> anyhow::Result<(ClusterDir, NodeId)> {
    let own = config.dir.is_none();
    let dir = ClusterDir::new(
        config
            .dir
            .clone()
            .unwrap_or_else(|| data_dir.join("cluster")),
    );
    if own && !dir.can_issue() {
        dir.init()?;
    }
    let name: NodeId = match &config.name {
        Some(n) => n.parse()?,
        None if own => "node".parse()?,
        None => match dir.nodes().as_slice() {
            [only] => only.clone(),
            [] => anyhow::bail!(
                "{} holds no node certificate: issue one with `weft cluster issue {} --node NAME` and start with --name NAME",
                dir.path().display(),
                dir.path().display()
            ),
            many => anyhow::bail!(
                "{} holds certificates for {} nodes; choose one with --name",
                dir.path().display(),
                many.len()
            ),
        },
    };
    if !dir.node_cert(&name).exists() {
        if !dir.can_issue() {
            anyhow::bail!(
                "{} has no certificate for node `{name}` and no CA key to issue one: run `weft cluster issue DIR --node {name}` where the CA key is, and copy nodes/{name}.pem and nodes/{name}.key here",
                dir.path().display()
            );
        }
        dir.issue(&name)?;
        tracing::info!(node = %name, "issued a node certificate");
    }
    Ok((dir, name))
}

/// The token in `dir/token`, created (random, 0600) on first start.
/// Raises the process's soft limit of open files to its hard limit (as the Go runtime does at
/// start): a reducer opens every spilled run of its partition at once, a file each, and the
/// usual soft limit of 1,024 would cap a job at a few hundred map tasks per reducer node.
fn raise_open_files() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    let Some(hard) = limit.maximum else {
        return;
    };
    if limit.current.is_some_and(|soft| soft < hard) {
        let raised = rustix::process::Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!(from = ?limit.current, to = hard, "raised the limit of open files")
            }
            Err(e) => tracing::warn!(error = %e, "could not raise the limit of open files"),
        }
    }
}

fn load_or_create_token(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    let path = dir.join(TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => return Ok((t.trim().to_string(), path)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("reading the token from {}", path.display()));
        }
    }
    let token = random_token();
    write_private(&path, token.as_bytes())
        .with_context(|| format!("writing the token to {}", path.display()))?;
    Ok((token, path))
}
