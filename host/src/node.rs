//! A running node: wires the store, the runtime, the job service and the HTTP API together,
//! and owns shutdown.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::api::{self, App};
use crate::config::NodeConfig;
use crate::mapreduce::Jobs;
use crate::metrics::Metrics;
use crate::runtime::Runtime;
use crate::store::Store;

/// The name of the file, in the data directory, holding the API token.
pub const TOKEN_FILE: &str = "token";

/// A node that is serving.
pub struct Node {
    /// Where the HTTP API listens.
    pub http_addr: SocketAddr,
    /// The bearer token for write routes.
    pub token: String,
    /// The file that holds the token.
    pub token_path: PathBuf,
    cancel: CancellationToken,
    server: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Node {
    /// Opens the data directory, binds the HTTP address and starts serving.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Node> {
        let dir = &config.data_dir;
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
        let db_dir = dir.join("db");
        // Opening may wait for a previous owner's lock: keep it off the async threads.
        let store = tokio::task::spawn_blocking(move || Store::open(&db_dir))
            .await?
            .with_context(|| format!("opening the database in {}", dir.display()))?;
        let (token, token_path) = load_or_create_token(dir)?;
        let metrics = Arc::new(Metrics::default());
        let runtime = Arc::new(Runtime::new(
            config.runtime.clone(),
            dir.join("cache"),
            metrics.clone(),
        )?);
        let jobs = Jobs::new(runtime.clone(), store.clone(), metrics.clone()).await?;
        let app = App::new(
            store,
            runtime,
            jobs,
            metrics,
            config.limits.clone(),
            token.clone(),
        );

        let listener = tokio::net::TcpListener::bind(config.http)
            .await
            .with_context(|| format!("binding the HTTP API to {}", config.http))?;
        let http_addr = listener.local_addr()?;
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, api::router(app))
                .with_graceful_shutdown(stop.cancelled_owned())
                .await
        });
        tracing::info!(%http_addr, data_dir = %dir.display(), "node is serving");
        Ok(Node {
            http_addr,
            token,
            token_path,
            cancel,
            server,
        })
    }

    /// The API's base URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    /// Stops accepting requests and waits (at most 10 s) for those in flight.
    pub async fn shutdown(self) {
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
    }

    /// Serves until `signal` resolves, then shuts down.
    pub async fn run_until(self, signal: impl Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }
}

/// The token in `dir/token`, created (random, 0600) on first start.
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
    let token: String = (0..32)
        .map(|_| format!("{:02x}", rand::random::<u8>()))
        .collect();
    write_private(&path, token.as_bytes())
        .with_context(|| format!("writing the token to {}", path.display()))?;
    Ok((token, path))
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(bytes)
}
