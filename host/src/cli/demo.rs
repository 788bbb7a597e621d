//! `weft demo`: a local node on a temporary data directory, the bundled plugins deployed,
//! invoked and run as a job, and the commands to try next.

use anyhow::Context;
use reqwest::Method;

use super::Client;
use crate::api::FunctionView;
use crate::config::NodeConfig;
use crate::plugins;

/// The text the demo's word count runs over.
const TEXT: &str = include_str!("demo_text.txt");

pub(super) async fn run(once: bool) -> anyhow::Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("weft-demo-")
        .tempdir()
        .context("creating a temporary data directory")?;
    let node = crate::Node::start(NodeConfig::local(dir.path())).await?;
    let url = node.url();
    let c = Client::new(&url, Some(node.token.clone()))?;
    println!("== Weft demo ==");
    println!("node serving on {url} (data in {})", dir.path().display());

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

    println!(
        "\n-- run wordcount over a bundled text ({} bytes, repeated 50 times)",
        TEXT.len()
    );
    let input = TEXT.repeat(50).into_bytes();
    let job = super::jobs::run_job(&c, "wordcount", input, 4, true).await?;
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

    println!("\n-- try it yourself");
    println!("  export WEFT_NODE={url} WEFT_TOKEN={}", node.token);
    println!("  curl {url}/fn/hello/you");
    println!("  curl {url}/fn/counter/visits");
    println!("  weft functions");
    println!("  weft job run wordcount --input README.md");
    println!("  curl {url}/metrics");

    if once {
        node.shutdown().await;
        return Ok(());
    }
    println!("\nserving until Ctrl-C");
    node.run_until(super::shutdown_signal()).await;
    Ok(())
}
