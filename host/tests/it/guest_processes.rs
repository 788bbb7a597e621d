//! Guest processes (`guest_processes`): HTTP handlers that use only WASI run in processes of
//! their own, as they would in the node; handlers that use Weft's imports, reuse their
//! instances or are smaller than `guest_process_min_bytes` run in the node; a guest process
//! that is killed fails only its own requests and is started again.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::harness::{TestNode, guest, json_of, wait_for};

/// A node with `count` guest processes, once they are all ready; they take components of
/// any size (the test guests are small).
async fn node_with_processes(count: u32) -> TestNode {
    weft_host::runtime::guest_processes_from(env!("CARGO_BIN_EXE_weft").into());
    let n = TestNode::start_with(|c| {
        c.runtime.guest_processes = count;
        c.runtime.guest_process_min_bytes = 0;
    })
    .await;
    ready(&n, count).await;
    n
}

/// Waits until `count` guest processes are ready.
async fn ready(n: &TestNode, count: u32) {
    wait_for(
        Duration::from_secs(30),
        "the guest processes ready",
        || async {
            (n.metric("weft_guest_processes").await == Some(f64::from(count))).then_some(())
        },
    )
    .await
}

async fn sent(n: &TestNode) -> f64 {
    n.metric("weft_guest_process_requests_total")
        .await
        .expect("the metric is exported")
}

/// The guest processes of the node on `n`'s data directory (children of this test process,
/// told apart by the cache directory on their command line).
fn guest_pids(n: &TestNode) -> Vec<u32> {
    let dir = n.dir.path().display().to_string();
    let me = std::process::id();
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // The parent's pid is the second field after the command's closing parenthesis.
        let parent = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if parent == Some(me)
            && args.get(1).map(String::as_str) == Some(weft_host::runtime::GUEST_ARG)
            && args.iter().any(|a| a.starts_with(&dir))
        {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_only_handlers_run_in_guest_processes_and_the_others_in_the_node() {
    let n = node_with_processes(2).await;
    assert_eq!(guest_pids(&n).len(), 2, "two guest processes of this node");

    // `hello` imports nothing of Weft's: it runs in a guest process, and answers as in the node.
    n.deploy("hello", &guest("hello")).await;
    let before = sent(&n).await;
    n.assert_hello_serves().await;
    assert_eq!(
        n.metric("weft_guest_process_requests_total").await,
        Some(before + 1.0),
        "hello ran in a guest process"
    );

    // A client's path that looks like the node's module upload is the guest's like any other.
    let (status, body) = n
        .text(
            n.req(Method::PUT, &format!("/fn/hello/module/{}", "0".repeat(64)))
                .body("not an artifact"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.starts_with("Hello, "), "{body}");

    // `counter` uses the key-value store: it runs in the node, and its writes are kept.
    n.deploy("counter", &guest("counter")).await;
    let before = sent(&n).await;
    for expected in 1..=2 {
        assert_eq!(n.count("/fn/counter/visits").await, expected);
    }
    assert_eq!(sent(&n).await, before, "counter ran in the node");

    // A trap in a guest process is told and counted as one in the node is.
    n.deploy_ok("panic", guest("guest-panic"), &[("debug", "true")])
        .await;
    let (status, body) = json_of(n.req(Method::GET, "/fn/panic/").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("function `panic` trapped"), "{body}");
    assert!(
        error.contains("guest-panic: deliberate panic"),
        "the panic message from the guest process's stderr: {body}"
    );
    assert_eq!(
        n.metric("weft_invocations_total{function=\"panic\",outcome=\"trap\"}")
            .await,
        Some(1.0)
    );

    // A time limit stops a guest in a guest process too.
    n.deploy_ok("spin", guest("guest-loop"), &[("timeout_ms", "300")])
        .await;
    let (status, body) = json_of(n.req(Method::GET, "/fn/spin/").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("time limit"),
        "{body}"
    );

    // A function that reuses its instances runs in the node, and keeps its instance there.
    n.deploy_ok("memo", guest("guest-memo"), &[("reuse", "1000")])
        .await;
    let before = sent(&n).await;
    let (status, body) = n.get("/fn/memo/remember/secret").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Its instance goes back to the pool after the answer: ask until a request lands on it.
    wait_for(
        Duration::from_secs(10),
        "a request served by the reused instance",
        || async {
            let (_, body) = n.get("/fn/memo/recall").await;
            body.contains("seen=secret").then_some(())
        },
    )
    .await;
    assert_eq!(sent(&n).await, before, "memo ran in the node");

    // A deployment may keep a handler in the node whatever its size.
    n.deploy_ok("hello-node", guest("hello"), &[("run_in", "node")])
        .await;
    let before = sent(&n).await;
    let (status, body) = n.get("/fn/hello-node/x").await;
    assert!(
        status == StatusCode::OK && body.starts_with("Hello, "),
        "{body}"
    );
    assert_eq!(sent(&n).await, before, "hello-node ran in the node");

    // Asking for a guest process is refused, naming why, for what only the node can run.
    for (name, module, query, why) in [
        ("c", guest("counter"), vec![], "imports `weft:plugin/"),
        (
            "m",
            guest("guest-memo"),
            vec![("reuse", "10")],
            "give reuse or run_in=process",
        ),
        (
            "w",
            guest("wordcount"),
            vec![],
            "this component is a mapreduce function",
        ),
        (
            "l",
            guest("hello"),
            vec![("lock", "path:1")],
            "give lock or run_in=process",
        ),
    ] {
        let query = [query, vec![("run_in", "process")]].concat();
        let (status, body) = n.deploy_with(name, module, &query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{name}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(why),
            "{name}: {body}"
        );
    }
    let (status, body) = n
        .deploy_with("h", guest("hello"), &[("run_in", "elsewhere")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("run_in must be"),
        "{body}"
    );

    // Components smaller than `guest_process_min_bytes` run in the node.
    let hello_bytes = guest("hello").len() as u64;
    let n = n
        .restart_with(|c| {
            c.runtime.guest_processes = 2;
            c.runtime.guest_process_min_bytes = hello_bytes + 1;
        })
        .await;
    ready(&n, 2).await;
    n.assert_hello_serves().await;
    assert_eq!(sent(&n).await, 0.0, "hello ran in the node");

    // Unless its deployment asks for a guest process.
    n.deploy_ok("hello-process", guest("hello"), &[("run_in", "process")])
        .await;
    let (status, body) = n.get("/fn/hello-process/x").await;
    assert!(
        status == StatusCode::OK && body.starts_with("Hello, "),
        "{body}"
    );
    assert_eq!(sent(&n).await, 1.0, "hello-process ran in a guest process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_process_killed_mid_request_fails_that_request_and_is_started_again() {
    lost_mid_request("KILL").await;
}

/// A stopped process keeps its link open: only the node's pings, unanswered for 10 s
/// (at the test's `max_instances`), tell it apart from a busy one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_process_stopped_mid_request_is_found_by_its_pings_and_replaced() {
    lost_mid_request("STOP").await;
}

/// Whether `pid` is a process that has not ended (a zombie has).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next());
        !matches!(state, Some("Z" | "X"))
    })
}

/// Sends `signal` to a node's only guest process while it runs a request with a time limit
/// far off: the request fails naming the process, which is ended and replaced, and the new
/// one serves.
async fn lost_mid_request(signal: &str) {
    let n = node_with_processes(1).await;
    n.deploy("hello", &guest("hello")).await;
    n.deploy_ok(
        "spin",
        guest("guest-loop"),
        &[("timeout_ms", "60000"), ("debug", "true")],
    )
    .await;
    let [pid] = guest_pids(&n)[..] else {
        panic!("one guest process: {:?}", guest_pids(&n));
    };
    // The same module under a short time limit, so that the process has it before the kill.
    n.deploy_ok("quick", guest("guest-loop"), &[("timeout_ms", "100")])
        .await;
    let (status, body) = n.get("/fn/quick/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    let before = sent(&n).await;
    let spinning = tokio::spawn({
        let request = n.req(Method::GET, "/fn/spin/");
        async move { json_of(request.send().await.unwrap()).await }
    });
    wait_for(
        Duration::from_secs(10),
        "the request sent to the guest process",
        || async { (sent(&n).await > before).then_some(()) },
    )
    .await;
    let sent_signal = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &pid.to_string()])
        .status()
        .unwrap();
    assert!(sent_signal.success());

    // The request it was running fails, naming the process, long before its time limit.
    let (status, body) = tokio::time::timeout(Duration::from_secs(40), spinning)
        .await
        .expect("the request ends when its guest process is lost")
        .unwrap();
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains(&format!("guest process {pid} stopped")),
        "{body}"
    );

    // Another process takes its place, and serves.
    wait_for(
        Duration::from_secs(30),
        "the guest process's end noticed",
        || async {
            let restarts = n.metric("weft_guest_process_restarts_total").await;
            (restarts >= Some(1.0)).then_some(())
        },
    )
    .await;
    ready(&n, 1).await;
    assert_eq!(
        n.metric("weft_guest_process_restarts_total").await,
        Some(1.0),
        "the guest process was started again"
    );
    wait_for(
        Duration::from_secs(30),
        "the lost process ended",
        || async { (!alive(pid)).then_some(()) },
    )
    .await;
    let pids = guest_pids(&n);
    assert!(pids.len() == 1 && pids[0] != pid, "a new process: {pids:?}");
    let before = sent(&n).await;
    n.assert_hello_serves().await;
    assert_eq!(sent(&n).await, before + 1.0, "hello ran in the new process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_giving_up_by_the_thousand_leave_the_guest_process_serving() {
    use futures::StreamExt;
    let n = node_with_processes(1).await;
    n.deploy("hello", &guest("hello")).await;
    // `/sleep` waits in a host call until its time limit: no answer comes before it.
    n.deploy_ok("nap", guest("guest-loop"), &[("timeout_ms", "100")])
        .await;
    let before = sent(&n).await;
    // Each request given up after it reached the guest process resets its stream on the link.
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let url = format!("{}/fn/nap/sleep", n.url);
    futures::stream::iter(0..3000)
        .for_each_concurrent(32, |_| {
            let request = impatient.get(&url).bearer_auth(&n.token).send();
            async move {
                let _ = request.await;
            }
        })
        .await;
    let given_up = sent(&n).await - before;
    assert!(
        given_up > 1100.0,
        "requests that reached the process: {given_up}"
    );
    assert_eq!(
        n.metric("weft_guest_process_restarts_total").await,
        Some(0.0),
        "the guest process and its link lived on"
    );
    let before = sent(&n).await;
    n.assert_hello_serves().await;
    assert_eq!(sent(&n).await, before + 1.0, "hello ran in the process");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways_through_a_guest_process_and_a_late_failure_cuts_the_body() {
    use crate::streaming::{chunked, count_of_pieces};
    let n = node_with_processes(1).await;
    n.deploy_ok("stream", guest("guest-stream"), &[("timeout_ms", "5000")])
        .await;
    let before = sent(&n).await;

    // Half a body in, and its echo out before the other half is sent.
    crate::streaming::echo_half_a_body(&n).await;

    // A chunked body reaches the guest whole and in order.
    let pieces = vec![b"alpha".to_vec(), vec![7u8; 300_000], b"omega".to_vec()];
    let expected = count_of_pieces(pieces.iter().map(Vec::as_slice));
    let (status, text) = n
        .text(
            n.req(Method::POST, "/fn/stream/count")
                .body(chunked(pieces)),
        )
        .await;
    assert_eq!((status, text), (StatusCode::OK, expected));

    // A large answer comes out whole.
    crate::bad_input::assert_whole_mib(&n).await;

    // A guest that traps after its head: the client's body ends in an error.
    let r = n.req(Method::GET, "/fn/stream/trap").send().await.unwrap();
    crate::bad_input::assert_cut_short(r, "/trap").await;
    assert_eq!(n.metric("weft_responses_cut_total").await, Some(1.0));

    // A guest cannot mark its answer as failed: that header and trailer are the process's.
    let r = n.req(Method::GET, "/fn/stream/forge").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        !r.headers().contains_key("x-weft-guest-failed"),
        "{:?}",
        r.headers()
    );
    assert_eq!(r.text().await.expect("a whole body"), "forged");
    assert_eq!(n.metric("weft_responses_cut_total").await, Some(1.0));
    assert_eq!(sent(&n).await, before + 5.0, "all five ran in the process");
}

/// `bytes` with a custom section naming `tag` appended: the same component under another
/// digest.
fn variant(bytes: &[u8], tag: &str) -> Vec<u8> {
    let name = b"weft-test-variant";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(tag.as_bytes());
    assert!(payload.len() < 128, "a one-byte size");
    let mut out = bytes.to_vec();
    out.extend_from_slice(&[0, payload.len() as u8]);
    out.extend_from_slice(&payload);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeployed_modules_leave_the_node_and_its_guest_processes() {
    let n = node_with_processes(1).await;
    let held = || async {
        (
            n.metric("weft_modules_prepared").await.unwrap(),
            n.metric("weft_guest_process_modules").await.unwrap(),
        )
    };
    let serves = |name: &'static str| {
        let n = &n;
        async move {
            let (status, body) = n.get(&format!("/fn/{name}/x")).await;
            assert!(
                status == StatusCode::OK && body.starts_with("Hello, "),
                "{name}: {body}"
            );
        }
    };
    let hello = guest("hello");
    let versions: Vec<Vec<u8>> = (1..=4).map(|v| variant(&hello, &format!("v{v}"))).collect();
    // `other` names the first version for as long as it lives.
    n.deploy("other", &versions[0]).await;
    serves("other").await;
    for v in &versions {
        n.deploy("app", v).await;
        serves("app").await;
    }
    // The process says what it holds, once it has dropped what the node let go of.
    let settled = |expected: (f64, f64)| {
        let held = &held;
        async move {
            wait_for(Duration::from_secs(10), "the modules held", || async {
                let now = held().await;
                (now == expected).then_some(())
            })
            .await
        }
    };
    // app's current version and the one a rollback would restore, and other's.
    settled((3.0, 3.0)).await;
    assert_eq!(sent(&n).await, 5.0, "every request ran in the process");

    // A deleted function's module goes too.
    let r = n
        .req(Method::DELETE, "/v1/functions/other")
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    settled((2.0, 2.0)).await;

    // A rollback finds its module held (nothing loaded from disk), and lets go of the newer.
    let from_disk = || async {
        n.metric("weft_module_cache_total{result=\"disk\"}")
            .await
            .unwrap_or(0.0)
    };
    let rollback = || async {
        let r = n
            .req(Method::POST, "/v1/functions/app/rollback")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
        serves("app").await;
    };
    let disk = from_disk().await;
    rollback().await;
    assert_eq!(from_disk().await, disk, "v3 was held for the rollback");
    settled((1.0, 1.0)).await;

    // One more goes to a version let go of: loaded from disk, and sent to the process again.
    rollback().await;
    assert_eq!(from_disk().await, disk + 1.0, "v2 came from the disk cache");
    settled((1.0, 1.0)).await;
    assert_eq!(
        sent(&n).await,
        7.0,
        "the rolled-back versions ran in the process"
    );
}

/// Compiled code mapped into process `pid` (anonymous executable mappings: one per module's
/// code while it lives).
fn code_mappings(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .unwrap()
        .lines()
        .filter(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            fields.len() == 5 && fields[1] == "r-xp"
        })
        .count()
}

/// The node as a process of its own, so that the code mapped into it is its modules' alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_that_ran_leaves_the_node_process_when_let_go_of() {
    let cluster = crate::cluster::new_cluster();
    let root = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let opts = crate::faults::Opts::default();
    let node =
        crate::faults::Proc::start(cluster.path(), "n", &root.path().join("n"), any, &[], &opts)
            .await;
    let pid = node.child.id().unwrap();
    let token = std::fs::read_to_string(cluster.path().join("admin.token")).unwrap();
    let http = crate::harness::client();
    let hello = guest("hello");
    let mut mapped = Vec::new();
    for v in 1..=4 {
        let r = http
            .put(format!("{}/v1/functions/app", node.http))
            .bearer_auth(token.trim())
            .body(variant(&hello, &format!("v{v}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let r = http
            .get(format!("{}/fn/app/x", node.http))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        mapped.push(code_mappings(pid));
    }
    // The current version's code, and from the second on the one a rollback would restore.
    let first = mapped[0];
    assert_eq!(
        mapped,
        [first, first + 1, first + 1, first + 1],
        "the code of every version that ran stayed mapped"
    );
}
