//! What survives a restart: functions, key-value data, compiled code.

use weft_host::plugins;

use crate::harness::{TestNode, wait_for};

#[tokio::test]
async fn restarted_node_serves_without_recompiling_and_keeps_state() {
    let n = TestNode::start().await;
    n.deploy("hello", plugins::HELLO).await;
    n.deploy("counter", plugins::COUNTER).await;
    assert_eq!(n.count("/fn/counter/a").await, 1);
    assert_eq!(n.count("/fn/counter/a").await, 2);
    assert_eq!(
        n.metric("weft_module_cache_total{result=\"miss\"}").await,
        Some(2.0)
    );

    let n = n.restart().await;
    n.assert_hello_serves().await;
    assert_eq!(n.count("/fn/counter/a").await, 3, "the count survived");
    assert_eq!(
        n.metric("weft_module_cache_total{result=\"miss\"}").await,
        None,
        "nothing compiled after restart"
    );
    assert_eq!(
        n.metric("weft_module_cache_total{result=\"disk\"}").await,
        Some(2.0)
    );
    assert_eq!(n.metric("weft_compile_seconds_total").await, Some(0.0));
}

#[tokio::test]
async fn a_corrupt_cached_artifact_is_recompiled() {
    let n = TestNode::start().await;
    n.deploy("hello", plugins::HELLO).await;
    let cache = n.dir.path().join("cache");
    let artifacts: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(artifacts.len(), 1, "one compiled artifact: {artifacts:?}");
    for path in artifacts {
        std::fs::write(path, b"garbage").unwrap();
    }
    let n = n.restart().await;
    n.assert_hello_serves().await;
    assert_eq!(
        n.metric("weft_module_cache_total{result=\"miss\"}").await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_records_of_an_earlier_version_move_into_the_metadata_group_once() {
    use weft_host::functions::{Deployment, FunctionRecord, LEGACY_NAMESPACE};
    use weft_host::id::{Digest, Namespace};
    use weft_host::replication::Overrides;
    use weft_host::runtime::FunctionKind;

    // What an earlier version left behind: hello's module as a blob, and its record in the
    // replicated store's namespace `sys.functions`.
    let t = TestNode::start().await;
    let n = t.node();
    n.blobs
        .put(bytes::Bytes::from_static(plugins::HELLO))
        .await
        .unwrap();
    let name = "hello".parse().unwrap();
    let record = FunctionRecord::deployed(
        None,
        &name,
        Deployment {
            digest: Digest::of(plugins::HELLO),
            kind: FunctionKind::Http,
            size: plugins::HELLO.len() as u64,
            limits: Default::default(),
            lock_key: None,
            lock_wait_ms: None,
            route_key: None,
            kv_namespace: None,
            debug: false,
            config: Default::default(),
            deployed_at_ms: 1,
        },
    );
    let ns: Namespace = LEGACY_NAMESPACE.parse().unwrap();
    n.replication
        .put(
            &ns,
            b"hello",
            Some(record.encode()),
            None,
            &[],
            Overrides::default(),
        )
        .await
        .unwrap();

    // After the upgrade (a restart), the function is in the group and serves.
    let t = t.restart().await;
    let body = wait_for(
        std::time::Duration::from_secs(20),
        "hello moved into the metadata group",
        || async {
            let (code, body) = t.get("/fn/hello/world").await;
            (code == reqwest::StatusCode::OK).then_some(body)
        },
    )
    .await;
    assert_eq!(body, "Hello, world! (from Weft)\n");
    // Deleted afterwards, it does not come back: the move happens once.
    let (code, body) = t
        .text(t.req(reqwest::Method::DELETE, "/v1/functions/hello"))
        .await;
    assert_eq!(code, reqwest::StatusCode::NO_CONTENT, "{body}");
    let t = t.restart().await;
    let moved = t
        .node()
        .functions
        .adopt_earlier_records(&t.node().replication)
        .await
        .unwrap();
    assert_eq!(moved, 0);
    let (code, _) = t.get("/fn/hello/world").await;
    assert_eq!(code, reqwest::StatusCode::NOT_FOUND);
}
