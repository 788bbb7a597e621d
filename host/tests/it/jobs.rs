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

/// The chunk size the tests' jobs ask for: smaller than the default, so that a few MiB of
/// input make several map tasks.
pub const TEST_CHUNK: usize = 1 << 20;

/// Submits a job (in chunks of [`TEST_CHUNK`]) and waits for it to end; returns its record.
pub async fn run_job(
    n: &TestNode,
    function: &str,
    input: impl Into<reqwest::Body>,
    reducers: u32,
) -> serde_json::Value {
    let (status, job) = json_of(
        n.req(Method::POST, "/v1/jobs")
            .query(&[
                ("function", function),
                ("reducers", &reducers.to_string()),
                ("chunk_size", &TEST_CHUNK.to_string()),
            ])
            .body(input)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    ended(n, job["id"].as_str().unwrap()).await
}

/// Job `id`'s output on `n`: each record's key (a string) and value, in output order.
async fn records_of(n: &TestNode, id: &str) -> Vec<(String, serde_json::Value)> {
    let (status, output) = n.get(&format!("/v1/jobs/{id}/output")).await;
    assert_eq!(status, StatusCode::OK, "{output}");
    output
        .lines()
        .map(|line| {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            let key = r["key"].as_str().unwrap_or_else(|| panic!("{line}"));
            (key.to_string(), r["value"].clone())
        })
        .collect()
}

/// A word count's output (job `id` on `n`): each word once, with its count.
async fn counts_of(n: &TestNode, id: &str) -> BTreeMap<String, u64> {
    let mut got = BTreeMap::new();
    for (key, value) in records_of(n, id).await {
        let count = value.as_u64().unwrap_or_else(|| panic!("{key}: {value}"));
        let prev = got.insert(key.clone(), count);
        assert!(prev.is_none(), "each key once: {key}");
    }
    got
}

/// Waits for job `id` on `n` to end; returns its record.
pub async fn ended(n: &TestNode, id: &str) -> serde_json::Value {
    wait_for(Duration::from_secs(900), "the job to end", || async {
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
    // 3.5 MiB by default; 100 MiB or more with `WEFT_LONG=1`.
    let (text, expected) = corpus(if crate::faults::long() {
        4_500_000
    } else {
        200_000
    });
    assert!(
        text.len()
            > if crate::faults::long() {
                100 << 20
            } else {
                3 << 20
            },
        "several map tasks (over 100 MiB in long mode): {} bytes",
        text.len()
    );
    let job = run_job(&n, "wordcount", text.clone(), 3).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    eprintln!(
        "{}: {} input bytes in {} ms",
        job["function"], job["input_bytes"], job["elapsed_ms"]
    );
    // One map task per chunk; where the chunks end depends only on the text.
    let mut chunker = weft_host::mapreduce::plan::Chunker::new(TEST_CHUNK);
    let chunks =
        chunker.push(text.as_bytes()).len() + usize::from(chunker.finish().unwrap().is_some());
    assert!(chunks >= 3, "{chunks} chunks");
    assert_eq!(job["progress"]["maps_total"], chunks as u64, "{job}");
    assert_eq!(job["progress"]["maps_done"], job["progress"]["maps_total"]);
    assert_eq!(job["progress"]["reduces_done"], 3);
    assert_eq!(job["input_bytes"], text.len() as u64);
    assert_eq!(job["output_records"], expected.len() as u64);
    // Within the default memory budget nothing is written to disk.
    assert_eq!(job["spilled_bytes"], 0, "{job}");

    let id = job["id"].as_str().unwrap();
    assert_eq!(counts_of(&n, id).await, expected);

    // The summary's top record is the most frequent word.
    let (top_word, top_count) = expected
        .iter()
        .max_by_key(|(w, c)| (**c, std::cmp::Reverse(*w)))
        .unwrap();
    assert_eq!(job["top"][0]["key"], top_word.as_str(), "{job}");
    assert_eq!(job["top"][0]["value"], *top_count);

    // The node's counters saw every map and reduce, and the input.
    assert_eq!(
        n.metric("weft_job_tasks_total{phase=\"map\",outcome=\"done\"}")
            .await,
        Some(chunks as f64)
    );
    assert_eq!(
        n.metric("weft_job_tasks_total{phase=\"reduce\",outcome=\"done\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(
        n.metric("weft_job_bytes_total{kind=\"mapped\"}").await,
        Some(text.len() as f64)
    );
    assert!(n.metric("weft_job_bytes_total{kind=\"shuffled\"}").await > Some(0.0));
    // One commit per reducer, the end, and the maps' in batches (one to one per map); each
    // finished attempt timed.
    let commits = n
        .metric("weft_job_commits_total{outcome=\"written\"}")
        .await
        .unwrap();
    assert!(
        (3.0 + 1.0 + 1.0..=3.0 + 1.0 + chunks as f64).contains(&commits),
        "{commits} commits"
    );
    assert_eq!(
        n.metric("weft_job_task_seconds_count{phase=\"map\"}").await,
        n.metric("weft_job_tasks_total{phase=\"map\",outcome=\"done\"}")
            .await
    );
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_task_fails_its_job_with_the_reason_after_one_retry() {
    let n = TestNode::start_with(|c| {
        c.runtime.max_emit_bytes = std::num::NonZeroU64::new(64 << 10).unwrap();
    })
    .await;
    n.deploy("hello", plugins::HELLO).await;
    n.deploy_ok(
        "faults",
        crate::harness::guest("guest-mapfaults"),
        &[("timeout_ms", "300"), ("memory_mb", "32")],
    )
    .await;
    for (input, reason) in [
        ("a\ntrap\n", "function `faults` trapped"),
        (
            "a\nloop\n",
            "function `faults` exceeded its time limit of 300ms and was stopped",
        ),
        (
            "a\nhog\n",
            "function `faults` hit its memory limit of 32 MiB and was stopped",
        ),
        (
            "a\nflood\n",
            "function `faults` emitted more than 65536 bytes of output in one call",
        ),
        ("a\nfail\n", "guest-mapfaults: the reducer refuses `fail`"),
    ] {
        let job = run_job(&n, "faults", input, 1).await;
        assert_eq!(job["status"], "failed", "{input:?}: {job}");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains(reason), "{input:?}: {error}");
        // Two attempts (`MAX_ATTEMPTS`): one retry, then the job fails.
        assert_eq!(job["progress"]["retries"], 1, "{input:?}: {job}");
        assert!(
            n.metric("weft_job_tasks_total{phase=\"map\",outcome=\"failed\"}")
                .await
                >= Some(1.0)
                || n.metric("weft_job_tasks_total{phase=\"reduce\",outcome=\"failed\"}")
                    .await
                    >= Some(1.0)
        );
        assert_eq!(job["output_records"], 0, "{input:?}: {job}");
        n.assert_hello_serves().await;
    }
    // The same function with ordinary input succeeds.
    let job = run_job(&n, "faults", "a\nb\na\n", 1).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["output_records"], 2, "{job}");
    assert_eq!(job["progress"]["retries"], 0, "{job}");
}

/// With a small shuffle budget, map output beyond it is written to disk and read back by the
/// reducers (some runs from memory, some from files): the output is the same as a native
/// count's, and the spilled files are gone when the job ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn map_output_over_the_memory_budget_spills_to_disk_and_the_output_is_the_same() {
    let n = TestNode::start_with(|c| c.jobs.shuffle_memory_bytes = 1 << 20).await;
    n.deploy("wordcount", plugins::WORDCOUNT).await;
    // 40,000 distinct words, each in every chunk: each map task leaves about 600 KB of runs.
    let mut text = String::new();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..600_000u64 {
        let word = format!("k{}", (i * 7919) % 40_000);
        *expected.entry(word.clone()).or_default() += 1;
        text.push_str(&word);
        text.push(if i % 10 == 9 { '\n' } else { ' ' });
    }
    let job = run_job(&n, "wordcount", text.clone(), 3).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let (shuffled, spilled) = (
        job["shuffled_bytes"].as_u64().unwrap(),
        job["spilled_bytes"].as_u64().unwrap(),
    );
    eprintln!("shuffled {shuffled} bytes, spilled {spilled} bytes");
    // The runs hold a record per distinct word of each chunk: its key and value (counted in
    // `shuffled_bytes`) and two 4-byte lengths.
    let mut chunker = weft_host::mapreduce::plan::Chunker::new(TEST_CHUNK);
    let mut chunks = chunker.push(text.as_bytes());
    chunks.extend(chunker.finish().unwrap());
    let pairs: usize = chunks
        .iter()
        .map(|c| {
            let words: std::collections::HashSet<&[u8]> = c
                .bytes
                .split(|b| *b == b' ' || *b == b'\n')
                .filter(|w| !w.is_empty())
                .collect();
            words.len()
        })
        .sum();
    let runs = shuffled + 8 * pairs as u64;
    assert!(spilled > 0, "nothing spilled: {job}");
    assert!(spilled < runs, "all {runs} bytes of runs spilled: {job}");
    assert!(n.metric("weft_job_bytes_total{kind=\"spilled\"}").await >= Some(spilled as f64));
    let id = job["id"].as_str().unwrap();
    assert_eq!(counts_of(&n, id).await, expected);
    let spill = n.dir.path().join("spill").join(id);
    assert!(!spill.exists(), "{} is left", spill.display());
    // The first job gave back what it held: the same job again holds and spills as much.
    let again = run_job(&n, "wordcount", text.clone(), 3).await;
    assert_eq!(again["status"], "succeeded", "{again}");
    assert_eq!(again["spilled_bytes"], spilled, "{again}");
}

/// A reducer with more runs in files than it reads at once (`spill::MERGE_FAN_IN`, 64) merges
/// them into fewer files first, in passes: the output is the same as a sequential count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_spilled_runs_are_merged_in_passes_and_the_output_is_the_same() {
    // No memory for map output: every run goes to a file.
    let n = TestNode::start_with(|c| c.jobs.shuffle_memory_bytes = 0).await;
    n.deploy("wordcount", plugins::WORDCOUNT).await;
    let mut text = String::new();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..1_000_000u64 {
        let word = format!("w{}", (i * 7919) % 3_000);
        *expected.entry(word.clone()).or_default() += 1;
        text.push_str(&word);
        text.push(if i % 10 == 9 { '\n' } else { ' ' });
    }
    let (status, job) = json_of(
        n.req(Method::POST, "/v1/jobs")
            .query(&[
                ("function", "wordcount"),
                ("reducers", "2"),
                ("chunk_size", &MIN_CHUNK.to_string()),
            ])
            .body(text)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job = ended(&n, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(
        job["progress"]["maps_total"].as_u64().unwrap() > 64,
        "{job}"
    );
    let merged = n
        .metric("weft_job_bytes_total{kind=\"merged\"}")
        .await
        .unwrap_or_default();
    assert!(merged > 0.0, "no run was merged before its reducer read it");
    assert_eq!(counts_of(&n, job["id"].as_str().unwrap()).await, expected);
}

/// A task written against the WIT alone (no SDK), as a guest in another language would be,
/// that asks the host to combine: the host hands `combine` each map task's output grouped by
/// key, and `reduce` each key once, in ascending order, with one combined value per map task.
/// Output of map or reduce that is not well-formed records fails the job with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_without_the_sdk_is_combined_by_the_host_and_malformed_output_is_refused() {
    let n = TestNode::start().await;
    n.deploy("hello", plugins::HELLO).await;
    n.deploy_ok("raw", crate::harness::guest("guest-rawtask"), &[])
        .await;
    // 300 words over 120,000 lines, in 64 KiB chunks (the smallest a job may ask for).
    let mut input = String::new();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..120_000u64 {
        let word = format!("w{:03}", (i * 7) % 300);
        *expected.entry(word.clone()).or_default() += 1;
        input.push_str(&word);
        input.push('\n');
    }
    let chunk = weft_host::mapreduce::plan::MIN_CHUNK_BYTES;
    let mut chunker = weft_host::mapreduce::plan::Chunker::new(chunk);
    let chunks =
        chunker.push(input.as_bytes()).len() + usize::from(chunker.finish().unwrap().is_some());
    assert!(chunks >= 8, "{chunks} chunks");
    let submit = |body: String| {
        n.req(Method::POST, "/v1/jobs")
            .query(&[
                ("function", "raw"),
                ("reducers", "3"),
                ("chunk_size", &chunk.to_string()),
            ])
            .body(body)
            .send()
    };
    let (status, job) = json_of(submit(input.clone()).await.unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job = ended(&n, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["progress"]["maps_total"], chunks as u64, "{job}");
    let mut got: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (key, value) in records_of(&n, job["id"].as_str().unwrap()).await {
        let sum_and_values = (value[0].as_u64().unwrap(), value[1].as_u64().unwrap());
        got.insert(key, sum_and_values);
    }
    assert_eq!(
        got.iter()
            .map(|(k, (sum, _))| (k.clone(), *sum))
            .collect::<BTreeMap<_, _>>(),
        expected
    );
    // Every word is in every chunk, and reaches reduce once per chunk: combined by the host
    // (uncombined, it would bring 400 values).
    for (word, (_, values)) in &got {
        assert_eq!(*values, chunks as u64, "{word}");
    }

    for (input, reason) in [
        (
            "a\nmalformed\n",
            "map emitted malformed records: a field of 200 bytes, with 1 bytes left",
        ),
        (
            "a\nbadreduce\n",
            "reduce emitted malformed records: 2 bytes left where a 4-byte length was expected",
        ),
    ] {
        let (status, job) = json_of(submit(input.into()).await.unwrap()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        let job = ended(&n, job["id"].as_str().unwrap()).await;
        assert_eq!(job["status"], "failed", "{job}");
        let error = job["error"].as_str().unwrap();
        assert!(error.contains(reason), "{input:?}: {error}");
    }
    n.assert_hello_serves().await;
}

/// `GET /v1/jobs/{id}?wait_ms=` answers when the job ends, not before: asked right after the
/// submission of a job whose task runs into its deadline twice, it answers with the end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_status_waits_for_the_end_when_asked() {
    let n = TestNode::start().await;
    n.deploy_ok(
        "faults",
        crate::harness::guest("guest-mapfaults"),
        &[("timeout_ms", "300")],
    )
    .await;
    let (status, job) = json_of(
        n.req(Method::POST, "/v1/jobs?function=faults")
            .body("loop\n")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    assert_eq!(job["status"], "running", "{job}");
    let id = job["id"].as_str().unwrap();
    let (status, job) = n.get(&format!("/v1/jobs/{id}?wait_ms=30000")).await;
    assert_eq!(status, StatusCode::OK);
    let job: serde_json::Value = serde_json::from_str(&job).unwrap();
    assert_eq!(job["status"], "failed", "{job}");
    // Without waiting, an ended job answers as before; bad values are refused.
    let (status, _) = n.get(&format!("/v1/jobs/{id}?wait_ms=0")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = n.get(&format!("/v1/jobs/{id}?wait_ms=soon")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let unknown = "00000000000000000000000000000000";
    let (status, _) = n.get(&format!("/v1/jobs/{unknown}?wait_ms=10")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_input_over_the_limit_is_413() {
    const LIMIT: usize = 1024;
    let n = TestNode::start_with(|c| {
        c.limits.max_job_input = std::num::NonZeroU64::new(LIMIT as u64).unwrap();
    })
    .await;
    n.deploy("wordcount", plugins::WORDCOUNT).await;
    let line = "word ".repeat(LIMIT / 5) + "\n";
    let exact = format!("{line:x<LIMIT$}");
    let exact = &exact[exact.len() - LIMIT..];
    assert_eq!(exact.len(), LIMIT);
    let job = run_job(&n, "wordcount", exact.to_string(), 1).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let over = format!("{exact}y");
    let streamed = futures::stream::iter(
        over.as_bytes()
            .chunks(100)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    for (how, body) in [
        ("declared", reqwest::Body::from(over.clone())),
        ("streamed", reqwest::Body::wrap_stream(streamed)),
    ] {
        let (status, text) = n
            .text(
                n.req(Method::POST, "/v1/jobs")
                    .query(&[("function", "wordcount")])
                    .body(body),
            )
            .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{how}: {text}");
        assert_eq!(
            crate::harness::error_of(&text),
            "job input is larger than the limit of 1024 bytes",
            "{how}"
        );
    }
    let (status, list) = json_of(n.req(Method::GET, "/v1/jobs").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "the refused jobs left nothing: {list}"
    );
}

/// A job is recorded in the metadata group: when its only node is killed (SIGKILL) while a
/// map task runs, the restarted node takes the job's lock over once the dead process's lease
/// has run out, runs the lost work again, and the output is complete and counted once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_only_node_is_killed_mid_map_finishes_when_it_restarts() {
    let cluster = crate::cluster::new_cluster();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("n");
    let any = "127.0.0.1:0".parse().unwrap();
    let opts = crate::faults::Opts::default();
    let mut node = crate::faults::Proc::start(cluster.path(), "n", &data, any, &[], &opts).await;
    let token = std::fs::read_to_string(cluster.path().join("admin.token")).unwrap();
    let token = token.trim();
    let http = crate::harness::client();
    let r = http
        .put(format!("{}/v1/functions/faults", node.http))
        .query(&[("timeout_ms", "60000")])
        .bearer_auth(token)
        .body(crate::harness::guest("guest-mapfaults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    // Each `spin` keeps its map task busy for about half a second.
    let (status, job) = json_of(
        http.post(format!("{}/v1/jobs", node.http))
            .query(&[("function", "faults")])
            .bearer_auth(token)
            .body("spin\nspin\na\nb\na\n")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // The map task is running (its instance is live) when the node is killed.
    wait_for(Duration::from_secs(30), "the map task running", || async {
        let text = http
            .get(format!("{}/metrics", node.http))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines().any(|l| l == "weft_instances 1").then_some(())
    })
    .await;
    node.kill9().await;
    let (quic, name) = (node.quic, node.name.clone());
    node = crate::faults::Proc::start(cluster.path(), &name, &data, quic, &[], &opts).await;
    // The restarted node finds the job recorded with nobody holding its lock once the dead
    // process's lease has run out, takes it over, and runs it to the end.
    let job = wait_for(Duration::from_secs(120), "the job to end", || async {
        let r = http
            .get(format!("{}/v1/jobs/{id}", node.http))
            .query(&[("wait_ms", "1000")])
            .bearer_auth(token)
            .send()
            .await
            .ok()?;
        let job: serde_json::Value = r.json().await.ok()?;
        (job["status"] != "running").then_some(job)
    })
    .await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert_eq!(job["coordinator"], "n", "{job}");
    let text = http
        .get(format!("{}/v1/jobs/{id}/output", node.http))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut got: Vec<(String, u64)> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["key"].as_str().unwrap().to_string(),
                v["value"].as_u64().unwrap(),
            )
        })
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![("a".into(), 2), ("b".into(), 1), ("spin".into(), 2)]
    );
}

/// The CLI cuts the input (a directory of files) into chunks, uploads the ones no node holds,
/// and submits the job over them: a second run over the same input, through another node,
/// uploads nothing and gives the same output. Bad chunk uploads and lists get clear errors,
/// and a list whose sizes lie is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_input_is_uploaded_once_as_chunks_the_cluster_holds() {
    let cluster = crate::cluster::new_cluster();
    // Four nodes, three copies of each chunk: the second run's node lacks some chunks, and
    // its map tasks fetch them.
    let nodes = crate::cluster::start_cluster(cluster.path(), 4).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    crate::replication::wait_ring(&all, 4).await;
    nodes[0].deploy("wordcount", plugins::WORDCOUNT).await;
    let (text, expected) = corpus(150_000);
    let dir = tempfile::tempdir().unwrap();
    let half = text[..text.len() / 2].rfind('\n').unwrap() + 1;
    std::fs::create_dir(dir.path().join("b")).unwrap();
    std::fs::write(dir.path().join("a.txt"), &text[..half]).unwrap();
    // The last file lacks its final newline: the CLI adds it.
    std::fs::write(dir.path().join("b/c.txt"), text[half..].trim_end()).unwrap();
    let input = dir.path().to_str().unwrap();

    let mut chunker = weft_host::mapreduce::plan::Chunker::new(TEST_CHUNK);
    let chunks =
        chunker.push(text.as_bytes()).len() + usize::from(chunker.finish().unwrap().is_some());
    let mut outputs = Vec::new();
    for (run, n) in [&nodes[1], &nodes[2]].into_iter().enumerate() {
        let out = crate::cli::weft(
            n,
            &[
                "job",
                "run",
                "wordcount",
                "--input",
                input,
                "--json",
                "--chunk-size",
                "1MiB",
            ],
        )
        .await;
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let job: serde_json::Value = serde_json::from_str(&crate::cli::ok(&out)).unwrap();
        assert_eq!(job["status"], "succeeded", "{job}");
        assert_eq!(job["progress"]["maps_total"], chunks as u64, "{job}");
        assert_eq!(job["input_bytes"], text.len() as u64);
        let uploaded = if run == 0 { chunks } else { 0 };
        assert!(
            stderr.contains(&format!("input: {chunks} chunks"))
                && stderr.contains(&format!("uploaded {uploaded} (")),
            "run {run}: {stderr}"
        );
        let id = job["id"].as_str().unwrap();
        let (status, output) = n.get(&format!("/v1/jobs/{id}/output")).await;
        assert_eq!(status, StatusCode::OK);
        // A job's record and output are the user's: not without the token.
        for path in [format!("/v1/jobs/{id}/output"), format!("/v1/jobs/{id}")] {
            let r = n.anon(Method::GET, &path).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path}");
        }
        let mut got = BTreeMap::new();
        for line in output.lines() {
            let r: serde_json::Value = serde_json::from_str(line).unwrap();
            got.insert(
                r["key"].as_str().unwrap().to_string(),
                r["value"].as_u64().unwrap(),
            );
        }
        assert_eq!(got, expected);
        assert_eq!(job["mapped_bytes"], text.len() as u64, "{job}");
        assert!(job["shuffled_bytes"].as_u64().unwrap() > 0, "{job}");
        assert!(job["map_ms"].as_u64().unwrap() <= job["elapsed_ms"].as_u64().unwrap());
        outputs.push(output);
    }
    // The result: the top records, and the whole output in a file (jobs are listed and
    // answered by the node that ran them).
    let listed = crate::cli::ok(&crate::cli::weft(&nodes[2], &["job", "list", "--json"]).await);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let id = listed[0]["id"].as_str().unwrap().to_string();
    let file = dir.path().join("out.jsonl");
    let out = crate::cli::ok(
        &crate::cli::weft(
            &nodes[2],
            &[
                "job",
                "result",
                &id,
                "--top",
                "3",
                "--output",
                file.to_str().unwrap(),
            ],
        )
        .await,
    );
    let mut by_count: Vec<(&String, &u64)> = expected.iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let shown: Vec<&str> = out
        .lines()
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .collect();
    assert_eq!(shown.len(), 3, "{out}");
    for (line, (word, count)) in shown.iter().zip(&by_count) {
        assert!(
            line.split_whitespace()
                .eq([word.as_str(), &count.to_string()]),
            "{line} is not {word} {count}: {out}"
        );
    }
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(written.lines().count(), expected.len(), "{out}");

    // A chunk whose bytes do not match its path's digest.
    let n = &nodes[0];
    let digest = weft_host::id::Digest::of(b"one\n");
    let (status, v) = json_of(
        n.req(Method::PUT, &format!("/v1/jobs/input/{digest}"))
            .body("two\n")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("hash to"), "{v}");
    // A list naming a chunk nobody holds, then the same once it is uploaded.
    let submit = |body: String| {
        n.req(Method::POST, "/v1/jobs")
            .query(&[("function", "wordcount")])
            .header("content-type", weft_host::api::CHUNKS_CONTENT_TYPE)
            .body(body)
            .send()
    };
    let list = format!(r#"{{"chunks":[{{"digest":"{digest}","size":4}}]}}"#);
    let (status, v) = json_of(submit(list.clone()).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("held by no node"),
        "{v}"
    );
    let (status, v) = json_of(submit("[1, 2]".into()).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("\"chunks\""), "{v}");
    let (status, v) = json_of(
        n.req(Method::PUT, &format!("/v1/jobs/input/{digest}"))
            .body("one\n")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    let (status, v) = json_of(submit(list).await.unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{v}");
    // Lists whose sizes lie, or add up past any limit.
    let lying = format!(r#"{{"chunks":[{{"digest":"{digest}","size":999}}]}}"#);
    let (status, v) = json_of(submit(lying).await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("is 4 bytes, not 999"),
        "{v}"
    );
    let overflowing = format!(
        r#"{{"chunks":[{{"digest":"{digest}","size":{}}},{{"digest":"{digest}","size":1}}]}}"#,
        u64::MAX
    );
    let (status, v) = json_of(submit(overflowing).await.unwrap()).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{v}");
    // Too many digests in one question.
    let many: Vec<String> = (0..4100u32)
        .map(|i| weft_host::id::Digest::of(&i.to_le_bytes()).to_string())
        .collect();
    let (status, v) = json_of(
        n.req(Method::POST, "/v1/jobs/input/missing")
            .json(&serde_json::json!({ "digests": many }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{v}");
    assert!(v["error"].as_str().unwrap().contains("at most 4096"), "{v}");
    // And a node that asks about them all answers which are missing.
    let asked = [digest, weft_host::id::Digest::of(b"never uploaded")];
    let (status, v) = json_of(
        nodes[2]
            .req(Method::POST, "/v1/jobs/input/missing")
            .json(&serde_json::json!({ "digests": asked }))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["digests"], serde_json::json!([asked[1]]), "{v}");
}

/// A running job can be cancelled: it ends `cancelled` at once, even with a task stuck in the
/// guest, and the node keeps serving; an ended job cannot be.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_job_is_cancelled_and_an_ended_one_is_not() {
    let n = TestNode::start().await;
    n.deploy("hello", plugins::HELLO).await;
    n.deploy_ok(
        "faults",
        crate::harness::guest("guest-mapfaults"),
        &[("timeout_ms", "60000")],
    )
    .await;
    let (status, job) = json_of(
        n.req(Method::POST, "/v1/jobs")
            .query(&[("function", "faults")])
            .body("a\nloop\n")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id = job["id"].as_str().unwrap().to_string();
    // A running job cannot be deleted.
    let r = n
        .req(Method::DELETE, &format!("/v1/jobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    let out = crate::cli::ok(&crate::cli::weft(&n, &["job", "cancel", &id]).await);
    assert!(out.contains("cancel asked"), "{out}");
    let job = ended(&n, &id).await;
    assert_eq!(job["status"], "cancelled", "{job}");
    assert_eq!(job["error"], "cancelled by a client", "{job}");
    n.assert_hello_serves().await;
    let n = &n;
    let cancel = |id: String| async move {
        json_of(
            n.req(Method::POST, &format!("/v1/jobs/{id}/cancel"))
                .send()
                .await
                .unwrap(),
        )
        .await
    };
    let (status, v) = cancel(id.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("already ended (cancelled)"),
        "{v}"
    );
    let (status, v) = cancel("0123456789abcdef0123456789abcdef".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{v}");
    assert_eq!(
        n.metric("weft_jobs_total{state=\"cancelled\"}").await,
        Some(1.0)
    );
    // An ended job is deleted: its record, its output and its place in the list are gone.
    let out = crate::cli::ok(&crate::cli::weft(n, &["job", "delete", &id]).await);
    assert!(out.contains("deleted"), "{out}");
    for path in [format!("/v1/jobs/{id}"), format!("/v1/jobs/{id}/output")] {
        let (status, body) = n.get(&path).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}: {body}");
    }
    let (_, list) = json_of(n.req(Method::GET, "/v1/jobs").send().await.unwrap()).await;
    assert_eq!(list.as_array().map(Vec::len), Some(0), "{list}");
    let r = n
        .req(Method::DELETE, &format!("/v1/jobs/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    n.assert_hello_serves().await;
}

/// The `invindex` plugin over several chunks gives the index a sequential pass builds (over
/// 100 MiB with `WEFT_LONG=1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inverted_index_matches_a_sequential_one() {
    let n = TestNode::start().await;
    n.deploy("invindex", &crate::harness::guest("invindex"))
        .await;
    let (text, _) = corpus(if crate::faults::long() {
        3_200_000
    } else {
        80_000
    });
    // Documents of 40 lines each, their ids on every line.
    let mut input = String::new();
    let mut expected: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (i, line) in text.lines().enumerate() {
        let doc = format!("doc-{:05}", i / 40);
        input.push_str(&format!("{doc}\t{line}\n"));
        for w in line
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            expected
                .entry(w.to_lowercase())
                .or_default()
                .insert(doc.clone());
        }
    }
    assert!(
        input.len()
            > if crate::faults::long() {
                100 << 20
            } else {
                2 << 20
            },
        "several chunks: {} bytes",
        input.len()
    );
    let job = run_job(&n, "invindex", input, 3).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    eprintln!(
        "{}: {} input bytes in {} ms",
        job["function"], job["input_bytes"], job["elapsed_ms"]
    );
    let id = job["id"].as_str().unwrap();
    let mut got: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (key, value) in records_of(&n, id).await {
        let docs: Vec<String> = serde_json::from_value(value).unwrap();
        let mut sorted = docs.clone();
        sorted.sort();
        assert_eq!(docs, sorted, "each list sorted, once: {key}");
        let prev = got.insert(key.clone(), docs.into_iter().collect());
        assert!(prev.is_none(), "each word once: {key}");
    }
    assert_eq!(got, expected);
    // A line without a tab fails the job, naming the line.
    let job = run_job(&n, "invindex", "doc-1\tfine\nno tab here\n", 1).await;
    assert_eq!(job["status"], "failed", "{job}");
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("no tab: \"no tab here\""),
        "{job}"
    );
}

/// The `logstats` plugin over several chunks gives the counts and percentiles a sequential
/// pass computes (over 100 MiB with `WEFT_LONG=1`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_statistics_match_a_sequential_pass() {
    let n = TestNode::start().await;
    n.deploy("logstats", &crate::harness::guest("logstats"))
        .await;
    let mut x: u64 = 11;
    let mut next = |m: u64| {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % m
    };
    let mut input = String::new();
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    let mut times: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let lines = if crate::faults::long() {
        1_300_000
    } else {
        40_000
    };
    for _ in 0..lines {
        let path = format!("/p{}", next(25));
        let status = [200, 200, 200, 301, 404, 500][next(6) as usize];
        let ms = next(2000);
        input.push_str(&format!(
            "10.0.0.{} - - [02/Dec/2026:10:00:00 +0000] \"GET {path}?id={} HTTP/1.1\" {status} {} {}.{:03}\n",
            next(255),
            next(1000),
            next(90_000),
            ms / 1000,
            ms % 1000
        ));
        *statuses.entry(format!("status {status}")).or_default() += 1;
        times.entry(format!("p95 {path}")).or_default().push(ms);
    }
    assert!(
        input.len()
            > if crate::faults::long() {
                100 << 20
            } else {
                3 << 20
            },
        "several chunks (over 100 MiB in long mode): {} bytes",
        input.len()
    );
    let mut expected: BTreeMap<String, u64> = statuses;
    for (key, mut t) in times {
        t.sort_unstable();
        // Nearest rank: the smallest time that at least 95% of the requests stay within.
        let rank = (t.len() * 95).div_ceil(100);
        expected.insert(key, t[rank - 1]);
    }
    let job = run_job(&n, "logstats", input, 3).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    eprintln!(
        "{}: {} input bytes in {} ms",
        job["function"], job["input_bytes"], job["elapsed_ms"]
    );
    let id = job["id"].as_str().unwrap();
    let got: BTreeMap<String, u64> = records_of(&n, id)
        .await
        .into_iter()
        .map(|(key, value)| (key, value.as_u64().unwrap()))
        .collect();
    assert_eq!(got, expected);
}

const MIN_CHUNK: usize = 64 << 10;

/// Length-prefixed records (`records=length-prefixed`): records that hold newlines reach the
/// guest whole, the input is cut into chunks only between records, and input that ends
/// inside a record, or an unknown kind of records, gets a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn length_prefixed_records_reach_the_guest_whole() {
    let n = TestNode::start().await;
    n.deploy("hello", plugins::HELLO).await;
    n.deploy_ok("records", crate::harness::guest("guest-records"), &[])
        .await;
    let mut input = Vec::new();
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..6000 {
        let record = format!("record {}\nits second line\n{}", i % 37, "x".repeat(i % 23));
        input.extend_from_slice(&(record.len() as u32).to_le_bytes());
        input.extend_from_slice(record.as_bytes());
        *expected.entry(record).or_default() += 1;
    }
    // Chunks of the smallest size, 64 KiB: several map tasks.
    assert!(input.len() > 2 * MIN_CHUNK);
    let submit = |body: Vec<u8>, records: &'static str| {
        n.req(Method::POST, "/v1/jobs")
            .query(&[
                ("function", "records"),
                ("reducers", "3"),
                ("chunk_size", &MIN_CHUNK.to_string()),
                ("records", records),
            ])
            .body(body)
            .send()
    };
    let (status, job) = json_of(submit(input.clone(), "length-prefixed").await.unwrap()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let job = ended(&n, job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(
        job["progress"]["maps_total"].as_u64().unwrap() >= 2,
        "{job}"
    );
    let got: BTreeMap<String, u64> = records_of(&n, job["id"].as_str().unwrap())
        .await
        .into_iter()
        .map(|(k, v)| (k, v.as_u64().unwrap()))
        .collect();
    assert!(got == expected, "the counts differ from the records'");

    let cut = input[..input.len() - 3].to_vec();
    let (status, body) = json_of(submit(cut, "length-prefixed").await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("ends inside a length-prefixed record"),
        "{body}"
    );
    let (status, body) = json_of(submit(vec![], "csv").await.unwrap()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body["error"].as_str().unwrap().contains("`csv`"), "{body}");
    n.assert_hello_serves().await;
}
