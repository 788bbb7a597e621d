//! Deploy, invoke, list, roll back, delete; auth; metrics.

use reqwest::{Method, StatusCode};
use weft_host::plugins;

use crate::harness::{TestNode, guest, json_of};

#[tokio::test]
async fn deploy_and_invoke_hello() {
    let n = TestNode::start().await;
    let f = n.deploy("hello", plugins::HELLO).await;
    assert_eq!(f["kind"], "http");
    assert_eq!(
        f["digest"].as_str().unwrap(),
        blake3::hash(plugins::HELLO).to_hex().as_str()
    );
    let (status, body) = n.get("/fn/hello/world").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Hello, world! (from Weft)\n")
    );
    let (status, body) = n.get("/fn/hello").await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::OK, "Hello from Weft!\n")
    );
}

#[tokio::test]
async fn counter_keeps_state_per_path() {
    let n = TestNode::start().await;
    n.deploy("counter", plugins::COUNTER).await;
    for expected in 1..=3 {
        let (status, body) = n.get("/fn/counter/a").await;
        assert_eq!(status, StatusCode::OK);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["count"], expected, "{body}");
        assert_eq!(v["path"], "/a");
    }
    assert_eq!(n.count("/fn/counter/b").await, 1);
    // Concurrent increments are not lost.
    let mut tasks = vec![];
    for _ in 0..20 {
        let req = n.req(Method::GET, "/fn/counter/c");
        tasks.push(tokio::spawn(
            async move { req.send().await.unwrap().status() },
        ));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(
        n.count("/fn/counter/c").await,
        21,
        "20 concurrent calls and this one"
    );
}

#[tokio::test]
async fn redeploy_rollback_list_and_delete() {
    let n = TestNode::start().await;
    n.deploy("f", plugins::HELLO).await;
    let v2 = n.deploy("f", plugins::COUNTER).await;
    assert_eq!(v2["version"], 2);
    assert_eq!(n.count("/fn/f/x").await, 1, "v2 serves");

    let (status, v) = json_of(
        n.req(Method::POST, "/v1/functions/f/rollback")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{v}");
    assert_eq!(v["version"], 1);
    let (status, body) = n.get("/fn/f/x").await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.starts_with("Hello, x!"), "rollback serves v1: {body}");

    let (status, v) = json_of(
        n.req(Method::POST, "/v1/functions/f/rollback")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT, "{v}");
    assert_eq!(
        v["error"], "function `f` has no earlier version to roll back to",
        "{v}"
    );

    let (status, list) = json_of(n.req(Method::GET, "/v1/functions").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (
            list[0]["name"].as_str(),
            list[0]["version"].as_u64(),
            list[0]["versions"].as_u64()
        ),
        (Some("f"), Some(1), Some(2))
    );

    let (status, record) =
        json_of(n.req(Method::GET, "/v1/functions/f").send().await.unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(record["history"].as_array().unwrap().len(), 2);

    let status = n
        .req(Method::DELETE, "/v1/functions/f")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = n.get("/fn/f/x").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let status = n
        .req(Method::DELETE, "/v1/functions/f")
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn write_routes_need_the_token() {
    let n = TestNode::start().await;
    n.deploy("hello", plugins::HELLO).await;
    let writes = [
        (Method::PUT, "/v1/functions/x"),
        (Method::DELETE, "/v1/functions/hello"),
        (Method::POST, "/v1/functions/hello/rollback"),
        (Method::POST, "/v1/jobs?function=hello"),
    ];
    for (method, path) in writes {
        let (status, body) = json_of(
            n.anon(method.clone(), path)
                .body(plugins::HELLO)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{method} {path} without a token: {body}"
        );
        assert!(body["error"].as_str().unwrap().contains("Bearer"), "{body}");
        let r = n
            .anon(method.clone(), path)
            .bearer_auth("wrong")
            .body(plugins::HELLO)
            .send()
            .await
            .unwrap();
        assert_eq!(
            r.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path} with a wrong token"
        );
        n.assert_hello_serves().await;
    }
    // Nothing was changed by the refused writes.
    let (_, list) = json_of(n.anon(Method::GET, "/v1/functions").send().await.unwrap()).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    // Invocation and reads are open.
    let (status, _) = n.text(n.anon(Method::GET, "/fn/hello/x")).await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = n.text(n.anon(Method::GET, "/healthz")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "ok\n"));
}

#[tokio::test]
async fn metrics_count_invocations_and_errors() {
    let n = TestNode::start().await;
    n.deploy("hello", plugins::HELLO).await;
    n.deploy("panic", &guest("guest-panic")).await;
    for _ in 0..3 {
        n.assert_hello_serves().await;
    }
    let (status, _) = n.get("/fn/panic/").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(
        n.metric("weft_invocations_total{function=\"hello\",outcome=\"ok\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(
        n.metric("weft_invocations_total{function=\"panic\",outcome=\"trap\"}")
            .await,
        Some(1.0)
    );
    assert_eq!(n.metric("weft_invocation_errors_total").await, Some(1.0));
    assert_eq!(
        n.metric("weft_invocation_duration_seconds_count{function=\"hello\"}")
            .await,
        Some(3.0)
    );
    assert_eq!(
        n.metric("weft_module_cache_total{result=\"miss\"}").await,
        Some(2.0)
    );
    assert_eq!(n.metric("weft_instances").await, Some(0.0));
}

/// The `weft` binary compiles in a child process: a `weft node` process serves what the child
/// compiled, counts a child compile and none on its own threads, and an invalid module gets
/// the compiler's own words back as 400 while the node serves on.
#[tokio::test]
async fn a_weft_process_compiles_in_a_child_and_passes_its_errors_on() {
    use crate::faults::{Opts, Proc};
    let cluster = crate::cluster::new_cluster();
    let root = tempfile::tempdir().unwrap();
    let any = "127.0.0.1:0".parse().unwrap();
    let p = Proc::start(
        cluster.path(),
        "n0",
        &root.path().join("n0"),
        any,
        &[],
        &Opts::default(),
    )
    .await;
    let token = std::fs::read_to_string(cluster.path().join("admin.token")).unwrap();
    let client = crate::harness::client();
    let deploy = |name: &str, bytes: Vec<u8>| {
        client
            .put(format!("{}/v1/functions/{name}", p.http))
            .bearer_auth(token.trim())
            .body(bytes)
            .send()
    };
    let r = deploy("hello", plugins::HELLO.to_vec()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let get = |path: &str| {
        let r = client.get(format!("{}{path}", p.http)).send();
        async { r.await.unwrap().text().await.unwrap() }
    };
    assert_eq!(get("/fn/hello/child").await, "Hello, child! (from Weft)\n");
    // The child's artifact is what the compiled-module cache holds, written as it came.
    let cached: Vec<_> = std::fs::read_dir(root.path().join("n0/cache"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(cached.len(), 1, "{cached:?}");
    assert!(std::fs::read(&cached[0]).unwrap().starts_with(b"\x7fELF"));
    assert_eq!(
        p.metric("weft_module_compiles_total{process=\"child\"}")
            .await,
        1.0
    );
    assert!(
        !get("/metrics")
            .await
            .contains("weft_module_compiles_total{process=\"node\"}"),
        "nothing compiled on the node's threads"
    );
    let r = deploy("junk", b"\0asm\x0d\0\x01\0 not a component".to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let msg = r.text().await.unwrap();
    assert!(
        msg.contains("not a valid WebAssembly component: failed to parse WebAssembly module"),
        "{msg}"
    );
    let r = deploy("hello", plugins::COUNTER.to_vec()).await.unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "the node compiles on");
    assert_eq!(
        p.metric("weft_module_compiles_total{process=\"child\"}")
            .await,
        2.0
    );
}

/// An edge node (`--profile edge`) gives the kernel back the pages of its executable once it
/// serves (`release_startup_code`), and deploys and serves after it: the code it needs comes
/// back from the file. How much it gives back is in bench/RESULTS.md ("Footprint"); here other
/// `weft` processes share the executable's pages, which the kernel then keeps.
#[tokio::test]
async fn an_edge_process_gives_back_its_start_up_code_and_serves_on() {
    use crate::faults::{Opts, Proc};
    let cluster = crate::cluster::new_cluster();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("n0");
    let opts = Opts {
        args: vec!["--profile".into(), "edge".into()],
        ..Opts::default()
    };
    let any = "127.0.0.1:0".parse().unwrap();
    let p = Proc::start(cluster.path(), "n0", &data, any, &[], &opts).await;
    let log = || std::fs::read_to_string(data.join("node.log")).unwrap();
    crate::harness::wait_for(
        std::time::Duration::from_secs(30),
        "the start-up code given back",
        || async { log().contains("gave the kernel back").then_some(()) },
    )
    .await;
    assert!(!log().contains("could not give back"), "{}", log());
    let token = std::fs::read_to_string(cluster.path().join("admin.token")).unwrap();
    let client = crate::harness::client();
    let r = client
        .put(format!("{}/v1/functions/hello", p.http))
        .bearer_auth(token.trim())
        .body(plugins::HELLO.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let r = client
        .get(format!("{}/fn/hello/edge", p.http))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "Hello, edge! (from Weft)\n");
}
