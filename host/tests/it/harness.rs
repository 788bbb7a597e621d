//! Starting nodes and talking to them.

use std::future::Future;
use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use tempfile::TempDir;
use weft_host::{Node, NodeConfig};

/// A node on a temporary data directory.
pub struct TestNode {
    node: Option<Node>,
    /// The data directory (kept across restarts).
    pub dir: TempDir,
    /// The API's base URL.
    pub url: String,
    /// The API token.
    pub token: String,
    http: reqwest::Client,
}

/// A node config for tests: a small instance pool so many nodes fit in one process.
pub fn config(dir: &std::path::Path) -> NodeConfig {
    let mut c = NodeConfig::local(dir);
    c.runtime.max_instances = NonZeroU32::new(16).unwrap();
    c
}

impl TestNode {
    /// A node with the test defaults.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// A node whose config `f` adjusts.
    pub async fn start_with(f: impl FnOnce(&mut NodeConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::open(dir, f).await
    }

    /// A node on an existing data directory (one a stopped node left).
    pub async fn start_in(dir: TempDir, f: impl FnOnce(&mut NodeConfig)) -> Self {
        Self::open(dir, f).await
    }

    async fn open(dir: TempDir, f: impl FnOnce(&mut NodeConfig)) -> Self {
        let mut c = config(dir.path());
        f(&mut c);
        let node = Node::start(c).await.expect("node starts");
        let url = node.url();
        let token = node.token.clone();
        let http = client();
        TestNode {
            node: Some(node),
            dir,
            url,
            token,
            http,
        }
    }

    /// Stops the node and starts a new one on the same data directory.
    pub async fn restart(self) -> Self {
        self.restart_with(|_| {}).await
    }

    /// Stops the node and starts a new one on the same data directory, with a config `f` adjusts.
    pub async fn restart_with(mut self, f: impl FnOnce(&mut NodeConfig)) -> Self {
        self.node.take().unwrap().shutdown().await;
        Self::open(self.dir, f).await
    }

    /// Stops the node (leaving its cluster) and keeps its data directory.
    pub async fn stop(mut self) -> TempDir {
        self.node.take().unwrap().shutdown().await;
        self.dir
    }

    /// The running node.
    pub fn node(&self) -> &Node {
        self.node.as_ref().unwrap()
    }

    /// A request with the token.
    pub fn req(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
    }

    /// A request without the token.
    pub fn anon(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// Deploys `bytes` as `name` with extra query parameters; returns status and JSON body.
    pub async fn deploy_with(
        &self,
        name: &str,
        bytes: Vec<u8>,
        query: &[(&str, &str)],
    ) -> (StatusCode, serde_json::Value) {
        let r = self
            .req(Method::PUT, &format!("/v1/functions/{name}"))
            .query(query)
            .body(bytes)
            .send()
            .await
            .unwrap();
        json_of(r).await
    }

    /// Deploys and insists on success.
    pub async fn deploy(&self, name: &str, bytes: &[u8]) -> serde_json::Value {
        self.deploy_ok(name, bytes.to_vec(), &[]).await
    }

    /// Deploys with extra query parameters and insists on success.
    pub async fn deploy_ok(
        &self,
        name: &str,
        bytes: Vec<u8>,
        query: &[(&str, &str)],
    ) -> serde_json::Value {
        let (status, body) = self.deploy_with(name, bytes, query).await;
        assert_eq!(status, StatusCode::CREATED, "deploying {name}: {body}");
        body
    }

    /// Sends a request; returns status and JSON body.
    pub async fn json(&self, req: reqwest::RequestBuilder) -> (StatusCode, serde_json::Value) {
        json_of(req.send().await.unwrap()).await
    }

    /// Sends a request; returns status and body text.
    pub async fn text(&self, req: reqwest::RequestBuilder) -> (StatusCode, String) {
        let r = req.send().await.unwrap();
        (r.status(), r.text().await.unwrap())
    }

    /// GET with the token; status and text.
    pub async fn get(&self, path: &str) -> (StatusCode, String) {
        self.text(self.req(Method::GET, path)).await
    }

    /// Calls a `counter` guest at `path` (`/fn/NAME/below`): asserts 200 and the answer
    /// `{"count": N, "path": "/below"}`; returns N.
    pub async fn count(&self, path: &str) -> u64 {
        let (status, body) = self.get(path).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
        let v: serde_json::Value =
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"));
        let below = path
            .splitn(4, '/')
            .nth(3)
            .map_or("/".into(), |b| format!("/{b}"));
        let below = below.split('?').next().unwrap_or_default();
        assert_eq!(v["path"], below, "GET {path}: {body}");
        v["count"]
            .as_u64()
            .unwrap_or_else(|| panic!("GET {path}: no count in {body}"))
    }

    /// Asserts that `hello` (deployed as `hello`) still answers.
    pub async fn assert_hello_serves(&self) {
        let (status, body) = self.get("/fn/hello/again").await;
        assert_eq!(status, StatusCode::OK, "hello after a bad input: {body}");
        assert!(body.contains("Hello, again!"), "{body}");
    }

    /// The value of one metric sample line (exact name with labels), if present.
    pub async fn metric(&self, sample: &str) -> Option<f64> {
        let (_, text) = self.get("/metrics").await;
        metric_in(&text, sample)
    }
}

/// The value of one metric sample line (exact name with labels) in a `/metrics` page.
pub fn metric_in(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(sample)
            .and_then(|rest| rest.strip_prefix(' '))
            .map(|v| v.parse().unwrap())
    })
}

/// Status and JSON body (Null when the body is not JSON).
pub async fn json_of(r: reqwest::Response) -> (StatusCode, serde_json::Value) {
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

/// The `error` of a JSON error body, which every API error has.
pub fn error_of(body: &str) -> String {
    let v: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error in {body}"))
        .to_string()
}

/// The built component of a guest package.
pub fn guest(package: &str) -> Vec<u8> {
    let path = weft_host::plugins::path(package);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The HTTP client of the tests: a request that gets no answer fails instead of hanging.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(REQUEST_TIMEOUT)
        .build()
        .expect("a client")
}

/// The longest any one test request may take (the slowest are map/reduce jobs in long mode).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// Waits until `f` yields `Some`, polling, for at most `deadline`: the deadline is checked
/// during each poll too, so a poll that hangs fails the wait instead of hanging it.
pub async fn wait_for<T, F, Fut>(deadline: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let end = Instant::now() + deadline;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, f()).await {
            Ok(Some(v)) => return v,
            Ok(None) => {}
            Err(_) => panic!("timed out waiting for {what} (a check was still running)"),
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A random number generator for a test's fault points (kill points, victims, partitions),
/// seeded from `WEFT_SEED` or afresh; the seed is printed, so a failure can be replayed with
/// `WEFT_SEED=<seed>`.
pub fn fault_rng(test: &str) -> rand::rngs::StdRng {
    use rand::SeedableRng;
    let seed = std::env::var("WEFT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random::<u64>);
    eprintln!("{test}: fault points from WEFT_SEED={seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

/// Runs a command to its end, or fails the test if it has not ended within `deadline` (the
/// child is killed then).
pub async fn output_within(
    deadline: Duration,
    cmd: &mut tokio::process::Command,
) -> std::process::Output {
    match tokio::time::timeout(deadline, cmd.kill_on_drop(true).output()).await {
        Ok(out) => out.expect("the command starts"),
        Err(_) => panic!("{cmd:?} did not end within {deadline:?}"),
    }
}

/// Waits for a child process to exit, or fails the test if it has not within `deadline`.
pub async fn exit_within(
    deadline: Duration,
    child: &mut tokio::process::Child,
) -> std::process::ExitStatus {
    match tokio::time::timeout(deadline, child.wait()).await {
        Ok(status) => status.expect("waiting for the child"),
        Err(_) => panic!("the child process did not exit within {deadline:?}"),
    }
}

/// The sum of one metric sample over `nodes` (absent counts 0).
pub async fn metric_sum(nodes: &[&TestNode], sample: &str) -> f64 {
    let mut sum = 0.0;
    for n in nodes {
        sum += n.metric(sample).await.unwrap_or(0.0);
    }
    sum
}
