//! Map/reduce jobs on a cluster of three real `weft` processes, with faults: a worker killed
//! (SIGKILL) while it maps, another while it reduces, the coordinator killed mid-job, and a
//! worker stopped (SIGSTOP), and a coordinator paused past its lease that must commit nothing
//! once it resumes (with a control that turns the fencing off). Every job must end
//! `succeeded` with output identical to a sequential count, each key once.
//!
//! The guest is `guest-mapfaults`: every word is counted, and a word starting with `spin`
//! keeps its map task (and its reducer) busy for about half a second, so the faults land while
//! tasks run.

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::faults::{Opts, Proc, start_procs_with};
use crate::harness::{client, guest, json_of, wait_for};

/// Chunks of the job's input (the smallest chunk size, 64 KiB, each with one slow word).
const CHUNKS: usize = 9;
const REDUCERS: u32 = 6;

struct Setup {
    _cluster: tempfile::TempDir,
    /// The nodes' data and logs (kept with `WEFT_KEEP_LOGS=1`).
    _root: Option<tempfile::TempDir>,
    procs: Vec<Proc>,
    token: String,
}

async fn setup() -> Setup {
    setup_with(|_| Opts::default()).await
}

/// [`setup`] with node `i` started as `opts(i)` says.
async fn setup_with(opts: impl Fn(usize) -> Opts) -> Setup {
    let cluster = crate::cluster::new_cluster();
    let root = tempfile::tempdir().unwrap();
    let procs = start_procs_with(cluster.path(), root.path(), 3, opts).await;
    let token = std::fs::read_to_string(cluster.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let r = client()
        .put(format!("{}/v1/functions/faults", procs[0].http))
        .query(&[("timeout_ms", "120000")])
        .bearer_auth(&token)
        .body(guest("guest-mapfaults"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    Setup {
        _cluster: cluster,
        _root: if std::env::var_os("WEFT_KEEP_LOGS").is_some() {
            eprintln!("the nodes' data and logs stay in {}", root.keep().display());
            None
        } else {
            Some(root)
        },
        procs,
        token,
    }
}

/// The input (a word per line, one `spin{i}` per chunk) and its sequential word count.
fn input() -> (String, BTreeMap<String, u64>) {
    let mut text = String::new();
    let mut counts = BTreeMap::new();
    for c in 0..CHUNKS {
        let mut chunk = format!("spin{c}\n");
        let mut i = 0;
        while chunk.len() < 64 << 10 {
            chunk.push_str(&format!("w{}\n", (c * 7 + i) % 97));
            i += 1;
        }
        for w in chunk.lines() {
            *counts.entry(w.to_string()).or_default() += 1;
        }
        text.push_str(&chunk);
    }
    (text, counts)
}

impl Setup {
    fn at(&self, name: &str) -> &Proc {
        self.procs.iter().find(|p| p.name == name).unwrap()
    }

    async fn submit(&self, at: usize, body: String) -> String {
        let (status, job) = json_of(
            client()
                .post(format!("{}/v1/jobs", self.procs[at].http))
                .query(&[
                    ("function", "faults"),
                    ("reducers", &REDUCERS.to_string()),
                    ("chunk_size", "65536"),
                ])
                .bearer_auth(&self.token)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{job}");
        job["id"].as_str().unwrap().to_string()
    }

    async fn record(&self, p: &Proc, id: &str, wait_ms: u64) -> Option<Value> {
        let r = client()
            .get(format!("{}/v1/jobs/{id}", p.http))
            .query(&[("wait_ms", wait_ms.to_string())])
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .ok()?;
        (r.status() == StatusCode::OK).then_some(())?;
        r.json().await.ok()
    }

    /// Waits until the job has ended, asking `p`.
    async fn ended(&self, p: &Proc, id: &str) -> Value {
        wait_for(Duration::from_secs(240), "the job to end", || async {
            let job = self.record(p, id, 1000).await?;
            (job["status"] != "running").then_some(job)
        })
        .await
    }

    /// The job's output, checked against the sequential count: every key once.
    async fn check_output(&self, p: &Proc, id: &str, expected: &BTreeMap<String, u64>) {
        let text = client()
            .get(format!("{}/v1/jobs/{id}/output", p.http))
            .bearer_auth(&self.token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let mut got = BTreeMap::new();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            let key = v["key"].as_str().unwrap().to_string();
            let before = got.insert(key.clone(), v["value"].as_u64().unwrap());
            assert!(before.is_none(), "key {key} is in the output twice");
        }
        assert_eq!(got.len(), expected.len(), "keys in the output");
        assert!(
            got == *expected,
            "the output differs from the sequential count"
        );
    }

    /// Waits until `pred` holds of the job's record (asked of `p`) and some node other than
    /// the coordinator runs an instance; returns that node's name and the record.
    async fn busy_worker(
        &self,
        p: &Proc,
        id: &str,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> (String, Value) {
        wait_for(Duration::from_secs(120), what, || async {
            let job = self.record(p, id, 0).await?;
            if job["status"] != "running" || !pred(&job) {
                return None;
            }
            let coordinator = job["coordinator"].as_str()?.to_string();
            for w in self.procs.iter().filter(|w| w.name != coordinator) {
                if instances(w).await? >= 1.0 {
                    return Some((w.name.clone(), job));
                }
            }
            None
        })
        .await
    }
}

/// A node's `/metrics`, if it answers.
async fn scrape(p: &Proc) -> Option<String> {
    client()
        .get(format!("{}/metrics", p.http))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
}

/// Live instances on a node, if it answers.
async fn instances(p: &Proc) -> Option<f64> {
    scrape(p)
        .await?
        .lines()
        .find_map(|l| l.strip_prefix("weft_instances ")?.parse().ok())
}

fn progress(job: &Value, field: &str) -> u64 {
    job["progress"][field].as_u64().unwrap_or_default()
}

/// Without faults, the job's tasks spread over the three nodes, reducers pull map output
/// from the other nodes, and every map runs where its chunk is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_on_every_node_next_to_its_chunks() {
    let s = setup().await;
    let (text, expected) = input();
    let id = s.submit(1, text).await;
    let job = s.ended(&s.procs[1], &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let by_node = job["tasks_by_node"].as_object().expect("tasks by node");
    assert_eq!(by_node.len(), 3, "tasks ran on every node: {job}");
    assert!(job["fetched_bytes"].as_u64().unwrap() > 0, "{job}");
    // Three nodes, three copies of each chunk: every node holds every chunk.
    assert_eq!(
        progress(&job, "maps_local"),
        progress(&job, "maps_started"),
        "{job}"
    );
    s.check_output(&s.procs[2], &id, &expected).await;
    // The end removed every map commit, and none written in the background landed after it:
    // the metadata group holds the spec, one commit per reducer, and the end.
    let left: Vec<String> = registers(&s, &s.procs[2], &id)
        .await
        .into_iter()
        .map(|(key, _)| key)
        .collect();
    let mut want = vec![format!("job/{id}"), format!("job/{id}/end")];
    want.extend((0..REDUCERS).map(|p| format!("job/{id}/reduce/{p}")));
    want.sort();
    assert_eq!(left, want, "the job's registers after its end");
    // Every node drops the job's map output, and gives back its memory.
    for p in &s.procs {
        wait_for(Duration::from_secs(30), "map output dropped", || async {
            (p.metric("weft_job_map_outputs").await == 0.0
                && p.metric("weft_job_memory_bytes").await == 0.0)
                .then_some(())
        })
        .await;
    }
}

/// A worker killed while it runs map tasks: its tasks run again on the other nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_map_is_replaced() {
    let mut s = setup().await;
    let (text, expected) = input();
    let id = s.submit(0, text).await;
    let (victim, _) = s
        .busy_worker(&s.procs[0], &id, "a worker mapping", |j| {
            progress(j, "maps_done") < progress(j, "maps_total")
        })
        .await;
    let i = s.procs.iter().position(|p| p.name == victim).unwrap();
    s.procs[i].kill9().await;
    let job = s.ended(&s.procs[0], &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    // Its attempts ran again: retried once it was found gone, or first as speculative copies.
    assert!(
        progress(&job, "retries") + progress(&job, "speculative") >= 1,
        "{job}"
    );
    s.check_output(&s.procs[0], &id, &expected).await;
}

/// A worker killed while it reduces: its reducer runs again elsewhere, and the map output
/// it held is computed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_reduce_is_replaced_and_its_map_output_recomputed() {
    let mut s = setup().await;
    let (text, expected) = input();
    let id = s.submit(0, text).await;
    let (victim, _) = s
        .busy_worker(&s.procs[0], &id, "a worker reducing", |j| {
            progress(j, "maps_done") == progress(j, "maps_total")
                && progress(j, "reduces_done") < progress(j, "reduces_total")
        })
        .await;
    let i = s.procs.iter().position(|p| p.name == victim).unwrap();
    s.procs[i].kill9().await;
    let job = s.ended(&s.procs[0], &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(progress(&job, "maps_recomputed") >= 1, "{job}");
    s.check_output(&s.procs[0], &id, &expected).await;
}

/// The coordinator killed mid-job: another node takes the job's lock with a larger token and
/// finishes it from what was recorded, without duplicating output.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_coordinator_is_replaced_and_the_output_is_exact() {
    let mut s = setup().await;
    let (text, expected) = input();
    let id = s.submit(0, text).await;
    let first = wait_for(Duration::from_secs(120), "some maps done", || async {
        let job = s.record(&s.procs[0], &id, 0).await?;
        (progress(&job, "maps_done") >= 2).then_some(job)
    })
    .await;
    assert_eq!(first["coordinator"], "n0", "{first}");
    s.procs[0].kill9().await;
    let job = s.ended(&s.procs[1], &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let next = job["coordinator"].as_str().unwrap();
    assert!(next == "n1" || next == "n2", "{job}");
    s.check_output(s.at("n2"), &id, &expected).await;
}

/// A worker stopped (SIGSTOP) while it maps: the job does not wait for it; its tasks run
/// again elsewhere (as speculative copies, or once the node is found down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_worker_does_not_hold_up_the_job() {
    let s = setup().await;
    let (text, expected) = input();
    let id = s.submit(0, text).await;
    let (victim, _) = s
        .busy_worker(&s.procs[0], &id, "a worker mapping", |j| {
            progress(j, "maps_done") < progress(j, "maps_total")
        })
        .await;
    let stopped = s.at(&victim);
    stopped.signal("-STOP");
    let job = s.ended(&s.procs[0], &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    assert!(
        progress(&job, "speculative") + u64::from(progress(&job, "retries") > 0) >= 1,
        "{job}"
    );
    s.check_output(&s.procs[0], &id, &expected).await;
    stopped.signal("-CONT");
}

/// The registers the metadata group holds of job `id`, with their revisions, asked of `p`.
async fn registers(s: &Setup, p: &Proc, id: &str) -> Vec<(String, u64)> {
    let (status, listed) = json_of(
        client()
            .get(format!("{}/v1/test-switches/registers", p.http))
            .query(&[("prefix", format!("job/{id}"))])
            .bearer_auth(&s.token)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    serde_json::from_value(listed).unwrap()
}

/// A node's job commits written and refused (`weft_job_commits_total`), if it answers.
async fn commits(p: &Proc) -> Option<(f64, f64)> {
    let text = scrape(p).await?;
    assert!(text.contains("# TYPE weft_job_commits_total counter"));
    let of = |outcome: &str| {
        let series = format!("weft_job_commits_total{{outcome=\"{outcome}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&series)?.parse().ok())
            .unwrap_or(0.0)
    };
    Some((of("written"), of("refused")))
}

/// Whether the process is stopped (state `T` in `/proc/PID/stat`).
fn is_stopped(p: &Proc) -> bool {
    let pid = p.child.id().expect("running");
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(')')?.1.trim_start().starts_with('T')))
        .unwrap_or(false)
}

/// What a coordinator paused past its lease did once it resumed.
struct Resumed {
    /// The job's registers when another node had ended it, before the paused one resumed.
    before: Vec<(String, u64)>,
    /// The same once the paused coordinator had stopped.
    after: Vec<(String, u64)>,
    /// The resumed coordinator's commits written and refused.
    written: f64,
    refused: f64,
}

impl Resumed {
    /// The fencing rule: nothing the resumed coordinator tried to commit applied.
    fn check(&self) -> Result<(), String> {
        if self.written > 0.0 || self.before != self.after {
            return Err(format!(
                "the paused coordinator committed {} times after another node took over; the job's registers were {:?} and are {:?}",
                self.written, self.before, self.after
            ));
        }
        Ok(())
    }
}

/// n0 coordinates a job and stops itself (SIGSTOP) just before its first commit, with its
/// lease renewed within the last third of it: the pause a lease alone cannot guard against. Another node
/// takes the job over with a larger token and ends it; then n0 resumes (SIGCONT), its commit
/// goes out, and it stops coordinating. `extra` are more arguments of n0.
async fn paused_coordinator(extra: &[&str]) -> Resumed {
    let mut args = vec!["--stop-before-job-commit-for-tests".to_string()];
    args.extend(extra.iter().map(|a| a.to_string()));
    let s = setup_with(|i| Opts {
        args: if i == 0 { args.clone() } else { Vec::new() },
        ..Opts::default()
    })
    .await;
    let (text, expected) = input();
    let id = s.submit(0, text).await;
    let paused = &s.procs[0];
    wait_for(Duration::from_secs(120), "n0 to stop itself", || async {
        is_stopped(paused).then_some(())
    })
    .await;
    let job = s.ended(&s.procs[1], &id).await;
    assert_eq!(job["status"], "succeeded", "{job}");
    let next = job["coordinator"].as_str().unwrap();
    assert!(next == "n1" || next == "n2", "{job}");
    s.check_output(&s.procs[1], &id, &expected).await;
    let before = registers(&s, &s.procs[1], &id).await;
    paused.signal("-CONT");
    // The resumed coordinator sends its commit, then stops coordinating: n0 answers with the
    // recorded end instead of its live record.
    let (written, refused) = wait_for(
        Duration::from_secs(120),
        "n0's coordinator to try its commit and stop",
        || async {
            let (written, refused) = commits(paused).await?;
            let job = s.record(paused, &id, 0).await?;
            (written + refused >= 1.0 && job["status"] != "running").then_some((written, refused))
        },
    )
    .await;
    let after = registers(&s, &s.procs[1], &id).await;
    s.check_output(&s.procs[1], &id, &expected).await;
    Resumed {
        before,
        after,
        written,
        refused,
    }
}

/// A coordinator paused between its lease's last renewal and a commit, for longer than the
/// lease: when it resumes, its commit is refused by its token and the metadata group holds
/// exactly what the coordinator that took over recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_coordinator_commits_nothing_after_a_takeover() {
    let resumed = paused_coordinator(&[]).await;
    assert!(resumed.refused >= 1.0, "the commit was refused");
    resumed.check().unwrap();
}

/// The control: with job commits unfenced, the same paused coordinator's commit lands after
/// another node ended the job, and the check above catches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_without_fencing_a_paused_coordinators_commit_lands() {
    let resumed = paused_coordinator(&["--no-fencing-for-tests"]).await;
    let caught = resumed.check().expect_err("a stale commit landed");
    assert!(caught.contains("committed"), "{caught}");
}
