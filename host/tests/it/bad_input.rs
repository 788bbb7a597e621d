//! Every bad input gets a clear error and the node keeps serving.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use weft_host::plugins;

use crate::harness::{TestNode, error_of, guest, json_of};

async fn node_with_hello() -> TestNode {
    let n = TestNode::start().await;
    n.deploy("hello", plugins::HELLO).await;
    n
}

/// Deploys, expects `status`, and returns the error message.
async fn deploy_fails(
    n: &TestNode,
    name: &str,
    bytes: Vec<u8>,
    query: &[(&str, &str)],
    status: StatusCode,
) -> String {
    let (got, body) = n.deploy_with(name, bytes, query).await;
    assert_eq!(got, status, "{body}");
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error message in {body}"))
        .to_string()
}

#[tokio::test]
async fn not_wasm_is_400_with_the_parser_message() {
    let n = node_with_hello().await;
    let msg = deploy_fails(
        &n,
        "junk",
        b"this is not wasm".to_vec(),
        &[],
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("not a valid WebAssembly component"), "{msg}");
    assert!(msg.contains("magic"), "the parser's own words: {msg}");
    // A core module is Wasm but not a component: served only as a WASI 0.1 program, which
    // this empty one is not.
    let core = b"\0asm\x01\0\0\0".to_vec();
    let msg = deploy_fails(&n, "core", core, &[], StatusCode::BAD_REQUEST).await;
    assert!(msg.contains("needs a `_start` export"), "{msg}");
    let msg = deploy_fails(&n, "empty", vec![], &[], StatusCode::BAD_REQUEST).await;
    assert!(msg.contains("empty"), "{msg}");
    let msg = deploy_fails(
        &n,
        "Bad Name",
        plugins::HELLO.to_vec(),
        &[],
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("not a valid function name"), "{msg}");
    let (status, _) = n.get("/fn/junk/").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a refused module leaves no function behind"
    );
    n.assert_hello_serves().await;
}

#[tokio::test]
async fn wrong_world_is_400_naming_the_missing_export() {
    let n = node_with_hello().await;
    let msg = deploy_fails(
        &n,
        "wc",
        plugins::WORDCOUNT.to_vec(),
        &[("kind", "http")],
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("wasi:http/incoming-handler"), "{msg}");
    assert!(
        msg.contains("weft:plugin/task"),
        "says what it exports instead: {msg}"
    );
    let msg = deploy_fails(
        &n,
        "h",
        plugins::HELLO.to_vec(),
        &[("kind", "mapreduce")],
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("weft:plugin/task"), "{msg}");
    let msg = deploy_fails(
        &n,
        "h",
        plugins::HELLO.to_vec(),
        &[("kind", "cron")],
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("kind"), "{msg}");
    // Calling a function the wrong way is refused too.
    n.deploy("wc", plugins::WORDCOUNT).await;
    let (status, body) = n.get("/fn/wc/").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&body),
        "function `wc` is a map/reduce task, not an HTTP handler; run it with POST /v1/jobs",
        "{body}"
    );
    let (status, body) = n
        .text(n.req(Method::POST, "/v1/jobs?function=hello").body("a\n"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&body),
        "function `hello` is an HTTP handler, not a map/reduce task; invoke it at /fn/hello/",
        "{body}"
    );
    n.assert_hello_serves().await;
}

#[tokio::test]
async fn oversized_module_is_413_before_compiling() {
    let n =
        TestNode::start_with(|c| c.limits.max_module_bytes = NonZeroUsize::new(100_000).unwrap())
            .await;
    let big = plugins::COUNTER.to_vec();
    assert!(big.len() > 100_000);
    let msg = deploy_fails(&n, "big", big.clone(), &[], StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(msg.contains("100000"), "{msg}");
    // Streamed without a length, it is cut off at the limit as well.
    let stream = futures::stream::iter(
        big.chunks(8192)
            .map(|c| Ok::<_, std::io::Error>(c.to_vec()))
            .collect::<Vec<_>>(),
    );
    let r = n
        .req(Method::PUT, "/v1/functions/big")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        n.metric("weft_module_cache_total{result=\"miss\"}").await,
        None,
        "nothing was compiled"
    );
    // A small module that is not a component is refused for what it is, and the node serves.
    let (status, _) = n
        .deploy_with("tiny", b"\0asm\x01\0\0\0".to_vec(), &[])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        n.get("/healthz").await,
        (StatusCode::OK, "ok\n".to_string())
    );
}

#[tokio::test]
async fn oversized_request_body_is_413() {
    let n =
        TestNode::start_with(|c| c.limits.max_request_body = NonZeroU64::new(1024).unwrap()).await;
    n.deploy("hello", plugins::HELLO).await;
    let (status, body) = n
        .text(n.req(Method::POST, "/fn/hello/x").body(vec![b'a'; 2048]))
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(
        error_of(&body),
        "request body is larger than the limit of 1024 bytes"
    );
    let (status, _) = n
        .text(n.req(Method::POST, "/fn/hello/x").body(vec![b'a'; 1024]))
        .await;
    assert_eq!(status, StatusCode::OK, "a body at the limit is fine");
    n.assert_hello_serves().await;
}

#[tokio::test]
async fn unknown_function_is_404() {
    let n = node_with_hello().await;
    let (status, body) = n.get("/fn/nobody/x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(error_of(&body), "no function named `nobody`");
    let (status, _) = n.get("/v1/functions/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = n
        .text(n.req(Method::POST, "/v1/jobs?function=nobody").body("x"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = json_of(n.req(Method::GET, "/no/such/route").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(
        body["error"].as_str().unwrap().contains("no such route"),
        "{body}"
    );
    let (status, body) = json_of(
        n.req(Method::POST, "/v1/jobs/0123/output")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(body["error"].as_str().unwrap().contains("method"), "{body}");
    n.assert_hello_serves().await;
}

#[tokio::test]
async fn trap_is_500_with_an_error_id_and_the_details_only_for_debug_functions() {
    let n = node_with_hello().await;
    n.deploy("panic", &guest("guest-panic")).await;
    let (status, body) = json_of(n.req(Method::GET, "/fn/panic/").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let error = body["error"].as_str().unwrap();
    let id = body["error_id"].as_str().unwrap();
    assert!(
        id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()),
        "{body}"
    );
    assert_eq!(
        error,
        format!("function `panic` trapped (error id {id}; the details are in the node's log)")
    );
    // Deployed with `debug`, its callers see the trap and the panic message from stderr.
    n.deploy_ok("panic", guest("guest-panic"), &[("debug", "true")])
        .await;
    let (status, body) = json_of(n.req(Method::GET, "/fn/panic/").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("trapped"), "{body}");
    assert!(error.contains("unreachable"), "the trap itself: {body}");
    assert!(
        error.contains("guest-panic: deliberate panic"),
        "the panic message from stderr: {body}"
    );
    assert!(body.get("error_id").is_none(), "{body}");
    n.assert_hello_serves().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_id_leads_to_the_details_in_the_nodes_log() {
    let cluster = crate::cluster::new_cluster();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("n");
    let any = "127.0.0.1:0".parse().unwrap();
    let node = crate::faults::Proc::start(
        cluster.path(),
        "n",
        &data,
        any,
        &[],
        &crate::faults::Opts::default(),
    )
    .await;
    let token = std::fs::read_to_string(cluster.path().join("admin.token")).unwrap();
    let http = crate::harness::client();
    let r = http
        .put(format!("{}/v1/functions/panic", node.http))
        .bearer_auth(token.trim())
        .body(guest("guest-panic"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let (status, body) = json_of(
        http.get(format!("{}/fn/panic/", node.http))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    let id = body["error_id"].as_str().unwrap().to_string();
    assert_eq!(
        body["error"],
        format!("function `panic` trapped (error id {id}; the details are in the node's log)")
    );
    let entry = crate::harness::wait_for(Duration::from_secs(20), "the id in the log", || async {
        let log = std::fs::read_to_string(data.join("node.log")).ok()?;
        // The entry with the id runs to the next line that starts a new entry (a timestamp):
        // the trap's backtrace spans several lines.
        let start = log[..log.find(&id)?].rfind('\n').map_or(0, |i| i + 1);
        let lines: Vec<&str> = log[start..].lines().collect();
        let end = (1..lines.len())
            .find(|&i| lines[i].starts_with("20") && lines[i].contains("Z "))
            .unwrap_or(lines.len());
        Some(lines[..end].join("\n"))
    })
    .await;
    assert!(
        entry.contains("function=panic") && entry.contains("guest-panic: deliberate panic"),
        "the log entry with the id: {entry}"
    );
}

/// Asserts that guest-stream, deployed on `n` as `stream`, sends 1 MiB whole.
pub(crate) async fn assert_whole_mib(n: &TestNode) {
    let r = n
        .req(Method::GET, "/fn/stream/big?kib=1024")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.bytes().await.unwrap().len(), 1 << 20);
}

/// Asserts that `r` came with its head (200) and a body that ended in an error.
pub(crate) async fn assert_cut_short(r: reqwest::Response, what: &str) {
    assert_eq!(r.status(), StatusCode::OK, "{what}: the head was out");
    match r.bytes().await {
        Ok(b) => panic!(
            "{what}: a body cut short after {} bytes arrived as complete",
            b.len()
        ),
        Err(e) => assert!(e.is_body() || e.is_decode(), "{what}: {e:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_cut_short_reaches_the_client_as_an_error() {
    let n = node_with_hello().await;
    n.deploy_ok(
        "stream",
        guest("guest-stream"),
        &[("timeout_ms", "1000"), ("memory_mb", "16")],
    )
    .await;
    // A body the guest finishes arrives whole: the reads below can succeed.
    crate::bad_input::assert_whole_mib(&n).await;
    let cut = || n.metric("weft_responses_cut_total");
    assert_eq!(n.metric("weft_responses_cut_total").await, Some(0.0));
    // The guest sends its head and 64 KiB, then traps, loops past its deadline, or runs out
    // of memory: the client's body ends in an error, never as a complete response.
    for (i, path) in ["/trap", "/loop", "/memory"].into_iter().enumerate() {
        let r = n
            .req(Method::GET, &format!("/fn/stream{path}"))
            .send()
            .await
            .unwrap();
        assert_cut_short(r, path).await;
        assert_eq!(cut().await, Some((i + 1) as f64), "{path}");
    }
    // A client that reads slowly: the guest waits to write until its deadline stops it (the
    // node counts it), and only then does the client read; it gets what was sent, then an
    // error.
    let r = n
        .req(Method::GET, "/fn/stream/big?kib=65536")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    crate::harness::wait_for(
        Duration::from_secs(30),
        "the slow read's guest stopped",
        || async { (cut().await? >= 4.0).then_some(()) },
    )
    .await;
    match r.bytes().await {
        Ok(b) => panic!(
            "a 64 MiB body cut short after {} bytes arrived as complete",
            b.len()
        ),
        Err(e) => assert!(e.is_body() || e.is_decode(), "{e:?}"),
    }
    assert_eq!(cut().await, Some(4.0));
    n.assert_hello_serves().await;
}

#[tokio::test]
async fn infinite_loop_is_stopped_at_its_deadline_with_504() {
    let n = node_with_hello().await;
    n.deploy_ok("spin", guest("guest-loop"), &[("timeout_ms", "300")])
        .await;
    let (status, body) = n.get("/fn/spin/").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(
        error_of(&body),
        "function `spin` exceeded its time limit of 300ms and was stopped"
    );
    n.assert_hello_serves().await;
}

#[tokio::test]
async fn a_looping_guest_does_not_starve_others() {
    let n = node_with_hello().await;
    n.deploy_ok("spin", guest("guest-loop"), &[("timeout_ms", "60000")])
        .await;
    // Occupy both cores' worth of worker threads with loops, then call hello.
    let spinning: Vec<_> = (0..4)
        .map(|_| {
            let req = n.req(Method::GET, "/fn/spin/");
            tokio::spawn(async move { req.send().await.map(|r| r.status()) })
        })
        .collect();
    crate::harness::wait_for(Duration::from_secs(30), "loops to start", || async {
        (n.metric("weft_instances").await == Some(4.0)).then_some(())
    })
    .await;
    for _ in 0..5 {
        n.assert_hello_serves().await;
    }
    assert!(
        spinning.iter().all(|t| !t.is_finished()),
        "the loops were still running while hello answered"
    );
    for t in spinning {
        t.abort();
    }
}

#[tokio::test]
async fn memory_growth_past_the_cap_is_500_naming_the_limit() {
    let n = node_with_hello().await;
    n.deploy_ok("hog", guest("guest-memhog"), &[("memory_mb", "32")])
        .await;
    let (status, body) = json_of(n.req(Method::GET, "/fn/hog/").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(
        body["error"],
        format!(
            "function `hog` hit its memory limit of 32 MiB and was stopped (error id {}; the details are in the node's log)",
            body["error_id"].as_str().unwrap()
        )
    );
    // The default cap (128 MiB) applies without a manifest limit.
    n.deploy("hog2", &guest("guest-memhog")).await;
    let (status, body) = json_of(n.req(Method::GET, "/fn/hog2/").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert_eq!(
        body["error"],
        format!(
            "function `hog2` hit its memory limit of 128 MiB and was stopped (error id {}; the details are in the node's log)",
            body["error_id"].as_str().unwrap()
        )
    );
    n.assert_hello_serves().await;
}

#[tokio::test]
async fn escaping_guest_sees_no_files_env_or_sockets() {
    let n = node_with_hello().await;
    n.deploy("escape", &guest("guest-escape")).await;
    let (status, body) = json_of(n.req(Method::GET, "/fn/escape/").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let err = |field: &str| {
        let v = body[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} missing in {body}"));
        assert!(
            v.starts_with("error"),
            "{field} should fail, got {v:?} in {body}"
        );
    };
    err("fs");
    err("hostname");
    err("tcp");
    err("udp");
    err("http");
    assert!(
        body["http"].as_str().unwrap().contains("HttpRequestDenied"),
        "outgoing HTTP is denied: {body}"
    );
    assert_eq!(
        body["env"],
        serde_json::json!([]),
        "no host environment: {body}"
    );
    assert_eq!(
        body["args"],
        serde_json::json!([]),
        "no host arguments: {body}"
    );
    n.assert_hello_serves().await;
}

#[tokio::test]
async fn bad_parameters_are_400() {
    let n = node_with_hello().await;
    let msg = deploy_fails(
        &n,
        "h",
        plugins::HELLO.to_vec(),
        &[("timeout_ms", "0")],
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        msg.contains("timeout_ms must be between 1 and 300000, not 0"),
        "{msg}"
    );
    let msg = deploy_fails(
        &n,
        "h",
        plugins::HELLO.to_vec(),
        &[("memory_mb", "5000")],
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(
        msg.contains("memory_mb must be between 1 and 1024, not 5000"),
        "{msg}"
    );
    let msg = deploy_fails(
        &n,
        "h",
        plugins::HELLO.to_vec(),
        &[("memory_mb", "18446744073709551615")],
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(msg.contains("memory_mb must be between"), "{msg}");
    let (status, body) = n
        .text(
            n.req(Method::POST, "/v1/jobs?function=hello&reducers=0")
                .body("x"),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        error_of(&body),
        "reducers must be between 1 and 1024, not 0"
    );
    let (status, _) = n.get("/v1/jobs/not-a-job-id").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    n.assert_hello_serves().await;
}

#[tokio::test]
async fn a_guest_blocked_in_a_host_call_is_stopped_at_its_deadline() {
    let n = node_with_hello().await;
    n.deploy_ok("sleeper", guest("guest-loop"), &[("timeout_ms", "300")])
        .await;
    let (status, body) = n.get("/fn/sleeper/sleep").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(
        error_of(&body),
        "function `sleeper` exceeded its time limit of 300ms and was stopped"
    );
    assert_eq!(
        n.metric("weft_instances").await,
        Some(0.0),
        "its instance slot was released"
    );
    n.assert_hello_serves().await;
}

#[tokio::test]
async fn the_guest_sees_the_raw_path_and_query() {
    let n = node_with_hello().await;
    let (status, body) = n.get("/fn/hello/a%20b/c%3Fd?x=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "Hello, a%20b/c%3Fd! (from Weft)\n");
}

#[tokio::test]
async fn a_full_instance_pool_answers_503_and_recovers() {
    let n =
        TestNode::start_with(|c| c.runtime.max_instances = std::num::NonZeroU32::new(1).unwrap())
            .await;
    n.deploy("hello", plugins::HELLO).await;
    // Its deadline is far enough off that a loaded machine still finds it spinning after
    // hello's 5 s wait for a slot (10 s was not, under the whole suite).
    n.deploy_ok("spin", guest("guest-loop"), &[("timeout_ms", "30000")])
        .await;
    let spinning = {
        let req = n.req(Method::GET, "/fn/spin/");
        tokio::spawn(async move { req.send().await.map(|r| r.status()) })
    };
    crate::harness::wait_for(
        Duration::from_secs(30),
        "the loop to take the only slot",
        || async { (n.metric("weft_instances").await == Some(1.0)).then_some(()) },
    )
    .await;
    let (status, body) = n.get("/fn/hello/x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(
        error_of(&body),
        "the node is at its limit of 1 concurrent instances; retry shortly"
    );
    assert!(!spinning.is_finished());
    spinning.abort();
    // Once the loop's deadline frees the slot, hello is served again.
    crate::harness::wait_for(Duration::from_secs(60), "the slot to be freed", || async {
        (n.get("/fn/hello/x").await.0 == StatusCode::OK).then_some(())
    })
    .await;
}

/// Whether `answer` holds a whole HTTP/1.1 response with a `content-length`.
pub(crate) fn complete(answer: &[u8]) -> bool {
    let text = String::from_utf8_lossy(answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    let length = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("content-length")
            .then(|| v.trim().parse::<usize>().ok())?
    });
    length.is_some_and(|len| body.len() >= len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_slower_than_the_limit_is_408_and_the_node_keeps_serving() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let n = TestNode::start_with(|c| c.limits.body_timeout = Duration::from_millis(300)).await;
    n.deploy("hello", plugins::HELLO).await;
    let addr = n.url.trim_start_matches("http://").to_string();
    for (what, head) in [
        (
            "request body",
            "POST /fn/hello/x HTTP/1.1\r\nhost: x\r\ncontent-length: 10\r\n\r\na",
        ),
        (
            "value",
            "PUT /v1/kv/notes/k HTTP/1.1\r\nhost: x\r\nauthorization: Bearer TOKEN\r\ncontent-length: 10\r\n\r\na",
        ),
    ] {
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        stream
            .write_all(head.replace("TOKEN", &n.token).as_bytes())
            .await
            .unwrap();
        // One byte of ten, and then nothing: the node answers once the limit has passed.
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), async {
            let mut buf = [0u8; 4096];
            loop {
                let got = stream.read(&mut buf).await.unwrap();
                answer.extend_from_slice(&buf[..got]);
                if got == 0 || complete(&answer) {
                    break;
                }
            }
        })
        .await;
        assert!(read.is_ok(), "{what}: no answer to a stalled body");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 408"), "{what}: {answer}");
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
        assert_eq!(
            error_of(body),
            format!("the {what} did not arrive within 0.3 s; send it faster or in a smaller piece")
        );
    }
    n.assert_hello_serves().await;
}

#[tokio::test]
async fn reserved_namespaces_are_read_only_and_values_have_a_size_limit() {
    let n = node_with_hello().await;
    for method in [Method::PUT, Method::DELETE] {
        let (status, body) = n
            .text(
                n.req(method.clone(), "/v1/kv/sys.functions/hello")
                    .body("x"),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{method}: {body}");
        assert_eq!(
            error_of(&body),
            "namespace `sys.functions` is kept by Weft itself (names starting with `sys.` are reserved); choose another namespace"
        );
    }
    // Reading it is allowed, and the refused writes changed nothing.
    let (status, body) = n.get("/v1/kv/sys.functions?prefix=").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["entries"].as_array().map(Vec::len), Some(0), "{body}");
    n.assert_hello_serves().await;

    // A value of exactly 1 MiB is taken; one byte more is 413, whether the length is
    // declared or the body is streamed without one.
    const MAX: usize = 1 << 20;
    let (status, body) = n
        .text(n.req(Method::PUT, "/v1/kv/notes/big").body(vec![b'v'; MAX]))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let too_big = vec![b'v'; MAX + 1];
    let streamed = futures::stream::iter(
        too_big
            .chunks(64 << 10)
            .map(|c| Ok::<_, std::io::Error>(bytes::Bytes::copy_from_slice(c)))
            .collect::<Vec<_>>(),
    );
    for (how, body) in [
        ("declared", reqwest::Body::from(too_big.clone())),
        ("streamed", reqwest::Body::wrap_stream(streamed)),
    ] {
        let (status, text) = n
            .text(n.req(Method::PUT, "/v1/kv/notes/big").body(body))
            .await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{how}: {text}");
        assert_eq!(
            error_of(&text),
            "value is larger than the limit of 1048576 bytes",
            "{how}"
        );
    }
    let (status, value, _) = crate::replication::get(&n, "/v1/kv/notes/big?r=1").await;
    assert_eq!(
        (status, value.len()),
        (StatusCode::OK, MAX),
        "the 1 MiB value stays"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_key_over_the_limit_gets_a_clear_error_and_stores_nothing() {
    // `counter` keys its count by the request path: a path of more than 4 KiB is a key over
    // the limit. The guest gets `too-large` with the limit, and says so (500).
    let n = TestNode::start().await;
    n.deploy("counter", weft_host::plugins::COUNTER).await;
    let long = "k".repeat(5000);
    let (status, body) = n.get(&format!("/fn/counter/{long}")).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        body.contains("a key of 5001 bytes is over the limit of 4096 bytes"),
        "{body}"
    );
    // Exactly 4 KiB (with the leading slash) is taken.
    let fits = "k".repeat(4095);
    assert_eq!(n.count(&format!("/fn/counter/{fits}")).await, 1);
    assert_eq!(n.count("/fn/counter/short").await, 1);
}
