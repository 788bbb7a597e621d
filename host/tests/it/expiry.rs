//! Values with a time to live on a 3-node cluster: an expired key reads as absent on every
//! node at once (before any collection), conditional writes see it as absent, expired entries
//! are collected like tombstones, and guests write with a TTL (plain and lock-protected).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use weft_host::plugins;

use crate::convergence::held;
use crate::harness::{TestNode, metric_sum, wait_for};
use crate::replication::{get, put, ring_with};

const WAIT: Duration = Duration::from_secs(30);

/// Whether each node holds an entry of `key` in `ns` itself (expired or not).
fn stored(nodes: &[&TestNode], ns: &str, key: &str) -> Vec<bool> {
    held(nodes, ns, key).iter().map(Option::is_some).collect()
}

async fn status_everywhere(nodes: &[&TestNode], path: &str) -> Vec<StatusCode> {
    let mut out = vec![];
    for t in nodes {
        out.push(get(t, path).await.0);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_absent_on_every_node_and_then_collected() {
    let (_cluster, nodes) = ring_with(3, |_, c| {
        c.replication.tombstone_grace = Duration::from_secs(3);
    })
    .await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];

    // Bad TTLs are refused, and a deletion takes none.
    for (ttl, says) in [
        ("0s", "above 0"),
        ("soon", "not a duration"),
        ("100000h", "at most 10 years"),
    ] {
        let (status, body) = put(a, "cache", "k", "v", &[("ttl", ttl)]).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{ttl}: {body}");
        assert!(body.to_string().contains(says), "{ttl}: {body}");
    }
    let r = a
        .req(Method::DELETE, "/v1/kv/cache/k?ttl=1s")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    let (status, body) = put(a, "cache", "session", "s1", &[("ttl", "2s")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = put(b, "cache", "lasting", "l1", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Every node reads it, with the time it has left.
    for t in &all {
        let r = t
            .req(Method::GET, "/v1/kv/cache/session")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let left: u64 = r.headers()["x-weft-ttl-ms"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(left <= 2000, "{left} ms left");
        let r = t
            .req(Method::GET, "/v1/kv/cache/lasting")
            .send()
            .await
            .unwrap();
        assert!(r.headers().get("x-weft-ttl-ms").is_none());
    }
    let (_, page) = c.json(c.req(Method::GET, "/v1/kv/cache")).await;
    let keys: Vec<(&str, bool)> = page["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["key"].as_str().unwrap(), e.get("ttl_ms").is_some()))
        .collect();
    assert_eq!(keys, [("lasting", false), ("session", true)], "{page}");
    wait_for(WAIT, "three copies", || async {
        (stored(&all, "cache", "session") == [true; 3]).then_some(())
    })
    .await;

    // Once one node reads it as absent, every node does: the expiry is in the entry, and
    // no node needs to hear of it.
    wait_for(WAIT, "the session to expire", || async {
        (get(a, "/v1/kv/cache/session").await.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert_eq!(
        status_everywhere(&all, "/v1/kv/cache/session").await,
        [StatusCode::NOT_FOUND; 3]
    );
    for t in &all {
        let (status, body, _) = get(t, "/v1/kv/cache/session?local=true").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "a local read too: {body}");
    }
    // Not collected yet: the entries are still stored everywhere (grace 3 s).
    assert_eq!(stored(&all, "cache", "session"), [true; 3]);
    let (_, page) = c.json(c.req(Method::GET, "/v1/kv/cache")).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1, "{page}");
    // An expired key is absent to a conditional write.
    let (status, body) = put(
        c,
        "cache",
        "session",
        "s2",
        &[("if_absent", "true"), ("ttl", "1s")],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, value, _) = get(b, "/v1/kv/cache/session").await;
    assert!(
        status == StatusCode::NOT_FOUND || value == "s2",
        "the new value, or it expired already: {status} {value}"
    );

    // Past the grace, the expired entries are collected like tombstones, and the lasting
    // value stays.
    wait_for(WAIT, "the expired entries collected everywhere", || async {
        (stored(&all, "cache", "session") == [false; 3]).then_some(())
    })
    .await;
    assert!(metric_sum(&all, "weft_kv_tombstones_collected_total").await >= 1.0);
    assert_eq!(
        status_everywhere(&all, "/v1/kv/cache/lasting").await,
        [StatusCode::OK; 3]
    );
    assert_eq!(stored(&all, "cache", "lasting"), [true; 3]);

    // The CLI writes with a TTL and shows what is left.
    let out = crate::cli::ok(
        &crate::cli::weft(a, &["kv", "put", "cache", "cli", "v", "--ttl", "1h"]).await,
    );
    assert!(out.starts_with("version "), "{out}");
    let got = crate::cli::weft(b, &["kv", "get", "cache", "cli"]).await;
    let stderr = String::from_utf8_lossy(&got.stderr);
    assert_eq!(crate::cli::ok(&got), "v\n");
    assert!(stderr.contains("expires in"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_cache_with_a_ttl() {
    let (_cluster, nodes) = ring_with(3, |_, _| {}).await;
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    a.deploy("cache", plugins::CACHE).await;
    // The same guest as a lock-protected handler: its writes go through the line's gate.
    a.deploy_ok(
        "locked-cache",
        plugins::CACHE.to_vec(),
        &[("lock", "path:2")],
    )
    .await;

    for f in ["cache", "locked-cache"] {
        let x_cache = |r: &reqwest::Response| {
            r.headers()
                .get("x-cache")
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let path = format!("/fn/{f}/primes/1000?ttl=2");
        let r = a.req(Method::GET, &path).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(x_cache(&r).as_deref(), Some("miss"), "{f}");
        assert_eq!(r.text().await.unwrap(), r#"{"below":1000,"primes":168}"#);
        // Another node answers from the replicated store.
        let r = b.req(Method::GET, &path).send().await.unwrap();
        assert_eq!(x_cache(&r).as_deref(), Some("hit"), "{f}");
        // And once the TTL ran out, from the origin again.
        wait_for(WAIT, "the cached answer to expire", || async {
            let r = c.req(Method::GET, &path).send().await.unwrap();
            (x_cache(&r).as_deref() == Some("miss")).then_some(())
        })
        .await;
    }
    // A TTL out of range is refused to the guest with a clear error.
    let r = a
        .req(Method::GET, "/fn/cache/primes/10?ttl=999999999999")
        .send()
        .await
        .unwrap();
    let (status, body) = (r.status(), r.text().await.unwrap());
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
}
