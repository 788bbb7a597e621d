//! `/metrics` read by a real exposition-format parser (`openmetrics-parser`'s Prometheus
//! grammar): the text parses, every family has a type and help, the families are exactly
//! the ones `host/ARCHITECTURE.md` lists, and every counter listed there is asserted by the
//! test that drives it.

use std::collections::BTreeSet;

use openmetrics_parser::PrometheusType;
use reqwest::{Method, StatusCode};
use weft_host::plugins;

use crate::harness::guest;
use crate::replication::{put, ring_with};

/// The metric families listed in ARCHITECTURE.md's "Metrics" section: each a line
/// `- \`weft_...\` (type) ...`.
fn documented() -> BTreeSet<(String, String)> {
    let text = include_str!("../../ARCHITECTURE.md");
    let section = text
        .split("\n## Metrics\n")
        .nth(1)
        .expect("ARCHITECTURE.md has a Metrics section");
    let section = section.split("\n## ").next().unwrap_or_default();
    section
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("- `")?;
            let (name, rest) = rest.split_once('`')?;
            let kind = rest.trim_start().strip_prefix('(')?.split(')').next()?;
            Some((name.to_string(), kind.to_string()))
        })
        .collect()
}

/// The sources of the integration tests, where each counter must be asserted.
const TEST_SOURCES: &[&str] = &[
    include_str!("bad_input.rs"),
    include_str!("blobs.rs"),
    include_str!("cli.rs"),
    include_str!("cluster.rs"),
    include_str!("consensus.rs"),
    include_str!("consensus_faults.rs"),
    include_str!("convergence.rs"),
    include_str!("faults.rs"),
    include_str!("fencing.rs"),
    include_str!("functions.rs"),
    include_str!("gateway.rs"),
    include_str!("guest_processes.rs"),
    include_str!("identity.rs"),
    include_str!("job_faults.rs"),
    include_str!("jobs.rs"),
    include_str!("kv_faults.rs"),
    include_str!("locked.rs"),
    include_str!("locks.rs"),
    include_str!("lockset.rs"),
    include_str!("metrics.rs"),
    include_str!("replication.rs"),
    include_str!("restart.rs"),
    include_str!("reuse.rs"),
    include_str!("safety.rs"),
    // Lib tests that assert a counter.
    include_str!("../../src/runtime/mod.rs"),
];

fn type_name(t: &PrometheusType) -> &'static str {
    match t {
        PrometheusType::Counter => "counter",
        PrometheusType::Gauge => "gauge",
        PrometheusType::Histogram => "histogram",
        PrometheusType::Summary => "summary",
        PrometheusType::Unknown => "unknown",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_and_are_the_documented_families() {
    let (_cluster, nodes) = ring_with(3, |_, _| {}).await;
    let n = &nodes[0];
    // Some of everything: invocations that succeed and fail, a job, key-value traffic.
    n.deploy("hello", plugins::HELLO).await;
    n.deploy("wc", plugins::WORDCOUNT).await;
    n.deploy_ok("stream", guest("guest-stream"), &[]).await;
    n.assert_hello_serves().await;
    let r = n.req(Method::GET, "/fn/stream/trap").send().await.unwrap();
    assert!(r.bytes().await.is_err());
    let job = crate::jobs::run_job(n, "wc", "a b a\n", 1).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (status, body) = put(n, "m", "k", "v", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // What was driven, counted exactly.
    assert_eq!(
        n.metric("weft_jobs_total{state=\"succeeded\"}").await,
        Some(1.0)
    );
    for (sample, value) in [
        (
            "weft_invocations_total{function=\"hello\",outcome=\"ok\"}",
            1.0,
        ),
        (
            "weft_invocations_total{function=\"stream\",outcome=\"ok\"}",
            1.0,
        ),
        ("weft_responses_cut_total", 1.0),
        ("weft_invocation_errors_total", 0.0),
        ("weft_module_cache_total{result=\"miss\"}", 3.0),
    ] {
        assert_eq!(n.metric(sample).await, Some(value), "{sample}");
    }

    let (status, text) = n.get("/metrics").await;
    assert_eq!(status, StatusCode::OK);
    let parsed = openmetrics_parser::prometheus::parse_prometheus(&text)
        .unwrap_or_else(|e| panic!("/metrics does not parse: {e:?}\n{text}"));
    let mut scraped = BTreeSet::new();
    for (name, family) in &parsed.families {
        assert!(!family.help.trim().is_empty(), "{name} has no help");
        let kind = type_name(&family.family_type);
        if kind == "counter" {
            assert!(
                name.ends_with("_total"),
                "counter {name} does not end in _total"
            );
        }
        scraped.insert((name.clone(), kind.to_string()));
    }
    let documented = documented();
    assert_eq!(
        scraped.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "families /metrics has that ARCHITECTURE.md does not list (or lists with another type)"
    );
    assert_eq!(
        documented.difference(&scraped).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "families ARCHITECTURE.md lists that /metrics does not have"
    );
    // Every counter is asserted by a test: its name is inside an assertion's statement.
    let unasserted: Vec<&String> = documented
        .iter()
        .filter(|(_, kind)| kind == "counter")
        .map(|(name, _)| name)
        .filter(|name| {
            !TEST_SOURCES.iter().any(|src| {
                src.match_indices(name.as_str()).any(|(i, _)| {
                    let before = &src[..i];
                    let statement = &before[before.rfind(';').unwrap_or(0)..];
                    statement.contains("assert")
                })
            })
        })
        .collect();
    assert!(
        unasserted.is_empty(),
        "no test asserts these counters: {unasserted:?}"
    );
}
