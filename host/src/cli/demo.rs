//! `weft demo`: a three-node cluster on loopback (a throwaway CA, real QUIC between the nodes)
//! on temporary data directories, the bundled plugins deployed, invoked and run as a job, a lock
//! taken and handed on, and the commands to try next.

use anyhow::Context;
use reqwest::Method;

use super::Client;
use crate::api::{FunctionView, NodeStatus};
use crate::config::NodeConfig;
use crate::locks::Grant;
use crate::mapreduce::plan::{Cut, MIN_CHUNK_BYTES};
use crate::membership::MemberState;
use crate::transport::ClusterDir;

/// Nodes in the demo cluster.
const NODES: usize = 3;
use crate::plugins;

/// The text the demo's word count runs over.
const TEXT: &str = include_str!("demo_text.txt");

/// How many times the demo's job reads the text: enough for several 64 KiB chunks.
const REPEAT: usize = 400;

pub(super) async fn run(once: bool, verbose: bool) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("weft-demo-")
        .tempdir()
        .context("creating a temporary data directory")?;
    println!("== Weft demo ==");
    if !verbose {
        let log = dir.path().join("nodes.log");
        let file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        super::init_tracing("info", Some(file));
        println!(
            "(the nodes log to {}; `weft demo --verbose` prints their logs here)",
            log.display()
        );
    }
    let cluster = ClusterDir::new(dir.path().join("cluster"));
    let id = cluster.init()?;
    println!(
        "\n-- a three-node cluster on loopback (cluster {id}, CA and certificates in {})",
        cluster.path().display()
    );
    let mut nodes: Vec<crate::Node> = Vec::new();
    for i in 1..=NODES {
        let mut config = NodeConfig::local(dir.path().join(format!("node-{i}")));
        config.cluster.dir = Some(cluster.path().to_path_buf());
        config.cluster.name = Some(format!("node-{i}"));
        config.cluster.tags = vec![if i == NODES { "edge" } else { "server" }.to_string()];
        config.cluster.join = nodes.first().map(|n| n.quic_addr).into_iter().collect();
        let node = crate::Node::start(config).await?;
        println!(
            "node-{i} serving on {} (QUIC on {})",
            node.url(),
            node.quic_addr
        );
        nodes.push(node);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut watch = nodes[0].membership.watch();
    loop {
        let converged = nodes
            .iter()
            .all(|n| n.membership.members().count(MemberState::Alive) == NODES);
        if converged {
            break;
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the demo cluster did not converge within 20 s");
        }
        let _ = tokio::time::timeout(std::time::Duration::from_millis(200), watch.changed()).await;
    }
    println!("every node sees {NODES} live members; node-1's view:");
    print!("{}", super::members_table(&nodes[0].membership.members()));
    let node = &nodes[0];
    let url = node.url();
    let c = Client::new(&url, Some(node.token.clone()))?;
    println!(
        "the dashboard: {url}/ui (sign in with the token {})",
        node.token
    );

    println!("\n-- deploy the bundled plugins");
    for (name, bytes) in plugins::EMBEDDED {
        let f: FunctionView = c
            .json(
                c.request(Method::PUT, &format!("/v1/functions/{name}"))
                    .body(bytes.to_vec()),
            )
            .await?;
        println!(
            "deployed {:<10} {:<10} {:>7} bytes  digest {}",
            f.name,
            f.kind.to_string(),
            f.size,
            f.digest.short()
        );
    }

    println!("\n-- invoke hello");
    let text = c
        .send(c.request(Method::GET, "/fn/hello/world"))
        .await?
        .text()
        .await?;
    println!("GET /fn/hello/world -> {}", text.trim_end());

    println!("\n-- invoke counter (state kept in the node's key-value store)");
    for path in ["apples", "apples", "pears", "apples"] {
        let text = c
            .send(c.request(Method::GET, &format!("/fn/counter/{path}")))
            .await?
            .text()
            .await?;
        println!("GET /fn/counter/{path:<7} -> {}", text.trim_end());
    }

    println!("\n-- invoke cache (a read-through cache: answers kept with a 30 s time to live)");
    for (i, n) in [(0, &nodes[0]), (0, &nodes[0]), (1, &nodes[1])] {
        let c = Client::new(&n.url(), Some(n.token.clone()))?;
        let started = std::time::Instant::now();
        let resp = c
            .send(c.request(Method::GET, "/fn/cache/primes/2000000?ttl=30"))
            .await?;
        let cache = resp
            .headers()
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        let text = resp.text().await?;
        let first_there = if i == 1 {
            "; node-2's first call of the function, which loads it"
        } else {
            ""
        };
        println!(
            "node-{}: GET /fn/cache/primes/2000000 -> {} (x-cache: {cache}, {} ms{first_there})",
            i + 1,
            text.trim_end(),
            started.elapsed().as_millis()
        );
    }

    println!("\n-- a lock-protected handler: ledger, deployed with --lock path:1");
    let f: FunctionView = c
        .json(
            c.request(Method::PUT, "/v1/functions/ledger")
                .query(&[("lock", "path:1")])
                .body(plugins::LEDGER.to_vec()),
        )
        .await?;
    println!(
        "deployed {} {} ({} bytes): the requests of one key run one at a time on the key's owner, under the key's lock",
        f.name, f.kind, f.size
    );
    // Appends sent at once, to different nodes: each lands in the log once, in some order,
    // under the lock's fencing token.
    let appends = nodes.iter().cycle().take(6).enumerate().map(|(i, n)| {
        let c = Client::new(&n.url(), Some(n.token.clone()));
        async move {
            let c = c?;
            c.send(
                c.request(Method::POST, "/fn/ledger/orders")
                    .body(format!("order {i}")),
            )
            .await?
            .text()
            .await
            .map_err(anyhow::Error::from)
        }
    });
    for answer in futures::future::try_join_all(appends).await? {
        println!("POST /fn/ledger/orders -> {}", answer.trim_end());
    }
    let log = c
        .send(c.request(Method::GET, "/fn/ledger/orders"))
        .await?
        .text()
        .await?;
    println!("GET /fn/ledger/orders -> {}", log.trim_end());

    println!(
        "\n-- run wordcount over a bundled text ({} bytes, repeated {REPEAT} times)",
        TEXT.len()
    );
    let input = TEXT.repeat(REPEAT).into_bytes();
    let input = vec![super::jobs::Source::Bytes(input)];
    // Chunks of 64 KiB (the default is 4 MiB), so that this small input makes several map tasks.
    let job =
        super::jobs::run_job(&c, "wordcount", input, 4, Cut::lines(MIN_CHUNK_BYTES), true).await?;
    println!(
        "job {} {:?} in {} ms: {} map tasks, {} reducers, {} distinct words",
        job.id,
        job.status,
        job.elapsed_ms,
        job.progress.maps_total,
        job.reducers,
        job.output_records
    );
    if let Some(e) = &job.error {
        anyhow::bail!("the demo job failed: {e}");
    }
    println!("top words:");
    for r in job.top.iter().take(8) {
        println!("  {:<12} {}", r.key.as_str().unwrap_or_default(), r.value);
    }

    println!("\n-- the metadata group, and a lock with fencing tokens");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let group = loop {
        let status: NodeStatus = c.json(c.request(Method::GET, "/v1/status")).await?;
        let g = status.consensus;
        if g.voters.len() == NODES && g.leader.is_some() {
            break g;
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("the demo's metadata group did not reach {NODES} voters within 30 s");
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    let mut names: Vec<&str> = group.voters.iter().map(|v| v.name.as_str()).collect();
    names.sort();
    println!(
        "leader {}, term {}, voters {} (formed by itself: the first node, then the others added)",
        group.leader.as_deref().unwrap_or("?"),
        group.term,
        names.join(", ")
    );
    let take = |holder: &'static str| {
        c.request(Method::POST, "/v1/locks/demo")
            .query(&[("holder", holder), ("lease", "10s")])
    };
    let first: Grant = c.json(take("alice")).await?;
    println!("alice took lock `demo` under token {}", first.token);
    match c.send(take("bob")).await {
        Ok(_) => anyhow::bail!("bob got a lock alice holds"),
        Err(e) => println!("bob, not waiting: {e}"),
    }
    c.send(
        c.request(Method::DELETE, "/v1/locks/demo")
            .query(&[("token", first.token)]),
    )
    .await?;
    let second: Grant = c.json(take("bob")).await?;
    println!(
        "alice released it; bob took it under token {} (larger than {}: whatever the lock guards can refuse work under an older token)",
        second.token, first.token
    );
    c.send(
        c.request(Method::DELETE, "/v1/locks/demo")
            .query(&[("token", second.token)]),
    )
    .await?;

    println!("\n-- try it yourself");
    println!(
        "  open {url}/ui in a browser: the dashboard (token {})",
        node.token
    );
    println!("  export WEFT_NODE={url} WEFT_TOKEN={}", node.token);
    println!("  curl {url}/fn/hello/you");
    println!("  curl {url}/fn/counter/visits");
    println!("  weft functions");
    println!("  weft job run wordcount --input README.md");
    println!("  weft lock acquire deploys --lease 30s && weft locks");
    println!("  curl {url}/metrics");
    println!("  weft members");

    if !once {
        println!("\nserving until Ctrl-C");
        super::shutdown_signal().await;
    }
    for node in nodes {
        node.shutdown().await;
    }
    Ok(())
}
