//! Map/reduce jobs on one node.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use weft_host::plugins;

use crate::harness::{TestNode, json_of, wait_for};

/// Deterministic text with a known word distribution, about `lines` lines long.
fn corpus(lines: usize) -> (String, BTreeMap<String, u64>) {
    let words = [
        "loom", "warp", "weft", "Shuttle", "beat", "thread", "cloth", "pattern", "the", "a",
    ];
    let mut text = String::new();
    let mut counts = BTreeMap::new();
    let mut x: u64 = 7;
    for i in 0..lines {
        for j in 0..(i % 7 + 1) {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let w = words[(x >> 33) as usize % words.len()];
            if j > 0 {
                text.push_str(if j % 3 == 0 { ", " } else { " " });
            }
            text.push_str(w);
            *counts.entry(w.to_lowercase()).or_insert(0) += 1;
        }
        text.push_str(".\n");
    }
    (text, counts)
}

async fn run_job(
    n: &TestNode,
    function: &str,
    input: impl Into<reqwest::Body>,
    reducers: u32,
) -> serde_json::Value {
    let (status, job) = json_of(
        n.req(Method::POST, "/v1/jobs")
            .query(&[("function", function), ("reducers", &reducers.to_string())])
            .body(input)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    wait_for(Duration::from_secs(120), "the job to finish", || async {
        let (_, job) = json_of(
            n.req(Method::GET, &format!("/v1/jobs/{id}"))
                .send()
                .await
                .unwrap(),
        )
        .await;
        (job["status"] != "running").then_some(job)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wordcount_matches_a_native_count_across_many_chunks() {
    let n = TestNode::start().await;
    n.deploy("wordcount", plugins::WORDCOUNT).await;
    let (text, expected) = corpus(200_000);
    assert!(
        text.len() > 3 << 20,
        "several map tasks: {} bytes",
        text.len()
    );
    let job = run_job(&n, "wordcount", text.clone(), 3).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // One map task per chunk; where the chunks end depends only on the text.
    let mut chunker =
        weft_host::mapreduce::plan::Chunker::new(weft_host::mapreduce::plan::CHUNK_BYTES);
    let chunks = chunker.push(text.as_bytes()).len() + usize::from(chunker.finish().is_some());
    assert!(chunks >= 3, "{chunks} chunks");
    assert_eq!(job["progress"]["maps_total"], chunks as u64, "{job}");
    assert_eq!(job["progress"]["maps_done"], job["progress"]["maps_total"]);
    assert_eq!(job["progress"]["reduces_done"], 3);
    assert_eq!(job["input_bytes"], text.len() as u64);
    assert_eq!(job["output_records"], expected.len() as u64);

    let id = job["id"].as_str().unwrap();
    let (status, output) = n.get(&format!("/v1/jobs/{id}/output")).await;
    assert_eq!(status, StatusCode::OK);
    let mut got = BTreeMap::new();
    for line in output.lines() {
        let r: serde_json::Value = serde_json::from_str(line).unwrap();
        let prev = got.insert(
            r["key"].as_str().unwrap().to_string(),
            r["value"].as_u64().unwrap(),
        );
        assert!(prev.is_none(), "each key once: {line}");
    }
    assert_eq!(got, expected);

    // The summary's top record is the most frequent word.
    let (top_word, top_count) = expected
        .iter()
        .max_by_key(|(w, c)| (**c, std::cmp::Reverse(*w)))
        .unwrap();
    assert_eq!(job["top"][0]["key"], top_word.as_str(), "{job}");
    assert_eq!(job["top"][0]["value"], *top_count);

    let (status, list) = json_of(n.req(Method::GET, "/v1/jobs").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], id);
}

#[tokio::test]
async fn empty_input_succeeds_with_no_output() {
    let n = TestNode::start().await;
    n.deploy("wordcount", plugins::WORDCOUNT).await;
    let job = run_job(&n, "wordcount", String::new(), 2).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["output_records"], 0);
}

#[tokio::test]
async fn a_guest_error_fails_the_job_with_its_message() {
    let n = TestNode::start().await;
    n.deploy("wordcount", plugins::WORDCOUNT).await;
    n.deploy("hello", plugins::HELLO).await;
    // Invalid UTF-8 makes the SDK's map return an error.
    let job = run_job(&n, "wordcount", vec![0xff, 0xfe, b'\n'], 4).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(job["error"].as_str().unwrap().contains("UTF-8"), "{job}");
    assert_eq!(
        job["progress"]["retries"], 1,
        "retried once before failing: {job}"
    );
    n.assert_hello_serves().await;
}
