//! What survives a restart: functions, key-value data, compiled code.

use weft_host::plugins;

use crate::harness::TestNode;

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
