//! The replicated key-value store on in-process clusters over real QUIC: reads on any node
//! see writes made on any other, conditional writes, deletes, scans, bad input, and guests'
//! `kv` backed by the replicas.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::cluster::{new_cluster, start_cluster, wait_converged};
use crate::harness::{TestNode, metric_sum, wait_for};

const CONVERGE: Duration = Duration::from_secs(20);

/// Waits until every node's ring holds `n` nodes and no earlier ring is consulted.
pub async fn wait_ring(nodes: &[&TestNode], n: usize) {
    wait_for(CONVERGE, &format!("a ring of {n} everywhere"), || async {
        nodes
            .iter()
            .all(|t| {
                let s = t.node().replication.status();
                s.nodes.len() == n && !s.in_transition
            })
            .then_some(())
    })
    .await;
}

/// `n` nodes of a new cluster, started with `f` adjusting node `i`'s config, once they see
/// each other alive and share one ring (the cluster's directory lives as long as the first).
pub async fn ring_with(
    n: usize,
    f: impl Fn(usize, &mut weft_host::NodeConfig),
) -> (tempfile::TempDir, Vec<TestNode>) {
    let cluster = new_cluster();
    let nodes = crate::cluster::start_cluster_with(cluster.path(), n, f).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    wait_converged(&all, n).await;
    wait_ring(&all, n).await;
    (cluster, nodes)
}

/// PUT a value; returns status and JSON.
pub async fn put(
    node: &TestNode,
    ns: &str,
    key: &str,
    value: &str,
    query: &[(&str, &str)],
) -> (StatusCode, serde_json::Value) {
    let r = node
        .req(Method::PUT, &format!("/v1/kv/{ns}/{key}"))
        .query(query)
        .body(value.to_string())
        .send()
        .await
        .unwrap();
    crate::harness::json_of(r).await
}

/// GET a value: status, body and version header.
pub async fn get(node: &TestNode, path: &str) -> (StatusCode, String, Option<String>) {
    let r = node.req(Method::GET, path).send().await.unwrap();
    let version = r
        .headers()
        .get("x-weft-version")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status(), r.text().await.unwrap(), version)
}

/// How many nodes hold `key` of `ns` themselves (a live value).
async fn holders(nodes: &[&TestNode], ns: &str, key: &str) -> usize {
    let mut n = 0;
    for t in nodes {
        let (status, _, _) = get(t, &format!("/v1/kv/{ns}/{key}?local=true")).await;
        n += (status == StatusCode::OK) as usize;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_share_one_store() {
    let (_cluster, nodes) = ring_with(3, |_, _| {}).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];

    // Written on one node, read on another; at least W = 2 copies exist when the write is
    // acknowledged, and anti-entropy brings the third.
    let (status, body) = put(a, "users", "alice", "1", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v1 = body["version"].as_str().unwrap().to_string();
    assert!(holders(&all, "users", "alice").await >= 2);
    let (status, value, version) = get(c, "/v1/kv/users/alice").await;
    assert_eq!((status, value.as_str()), (StatusCode::OK, "1"));
    assert_eq!(version.as_deref(), Some(v1.as_str()));
    wait_for(CONVERGE, "three copies of alice", || async {
        (holders(&all, "users", "alice").await == 3).then_some(())
    })
    .await;

    // Compare and set: the right version wins once; a stale one gets 409 with the current one.
    let (status, body) = put(b, "users", "alice", "2", &[("if_version", &v1)]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v2 = body["version"].as_str().unwrap().to_string();
    let (status, body) = put(c, "users", "alice", "3", &[("if_version", &v1)]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["current"].as_str(), Some(v2.as_str()), "{body}");
    let (status, body) = put(a, "users", "alice", "4", &[("if_absent", "true")]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = put(a, "users", "bob", "b", &[("if_absent", "true")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, value, _) = get(a, "/v1/kv/users/alice").await;
    assert_eq!((status, value.as_str()), (StatusCode::OK, "2"));

    // A delete is seen everywhere, and the key can be created again with if_absent.
    let r = b
        .req(Method::DELETE, "/v1/kv/users/alice")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for t in &all {
        let (status, body, _) = get(t, "/v1/kv/users/alice").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
    let (status, body) = put(c, "users", "alice", "again", &[("if_absent", "true")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Scans merge every node's copies, in key order, page by page.
    for i in 0..7 {
        let (status, body) = put(a, "scan", &format!("k{i}"), &format!("v{i}"), &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, body) = put(a, "scan", "other", "x", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = c
        .json(c.req(Method::GET, "/v1/kv/scan?prefix=k&limit=4"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let keys: Vec<&str> = body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, ["k0", "k1", "k2", "k3"], "{body}");
    assert_eq!(body["next"], "k4", "{body}");
    let (status, body) = c
        .json(c.req(Method::GET, "/v1/kv/scan?prefix=k&start=k4&limit=4"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["entries"].as_array().unwrap().len(), 3, "{body}");
    assert!(body.get("next").is_none(), "{body}");

    // Bad input gets a clear 4xx, and the store keeps serving.
    let cases: [(Method, &str, StatusCode, &str); 6] = [
        (
            Method::GET,
            "/v1/kv/Bad!/x",
            StatusCode::BAD_REQUEST,
            "namespace",
        ),
        (
            Method::PUT,
            "/v1/kv/users/x?w=4",
            StatusCode::BAD_REQUEST,
            "w must be between 1 and n = 3",
        ),
        (
            Method::GET,
            "/v1/kv/users/x?r=0",
            StatusCode::BAD_REQUEST,
            "r must be",
        ),
        (
            Method::PUT,
            "/v1/kv/users/x?if_version=zz",
            StatusCode::BAD_REQUEST,
            "not a version",
        ),
        (
            Method::PUT,
            "/v1/kv/users/x?if_version=1.2&if_absent=true",
            StatusCode::BAD_REQUEST,
            "not both",
        ),
        (
            Method::GET,
            "/v1/kv/users/nobody",
            StatusCode::NOT_FOUND,
            "no key `nobody`",
        ),
    ];
    for (method, path, want, says) in cases {
        let (status, body) = a.text(a.req(method.clone(), path)).await;
        assert_eq!(status, want, "{method} {path}: {body}");
        let error = crate::harness::error_of(&body);
        assert!(error.contains(says), "{method} {path}: {body}");
    }
    let long = "k".repeat(5000);
    let (status, body) = put(a, "users", &long, "v", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["error"],
        "a key of 5000 bytes is over the limit of 4096 bytes"
    );
    let (status, _) = a.text(a.anon(Method::GET, "/v1/kv/users/bob")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, value, _) = get(b, "/v1/kv/users/bob").await;
    assert_eq!((status, value.as_str()), (StatusCode::OK, "b"));

    // The status shows the ring: three nodes, shares summing to one.
    let (status, body) = b.json(b.anon(Method::GET, "/v1/status")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shares: f64 = body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["share"].as_f64().unwrap())
        .sum();
    assert!((shares - 1.0).abs() < 1e-9, "{body}");
    assert_eq!(body["default"], "3/2/2", "{body}");
    assert_eq!(b.metric("weft_ring_nodes").await, Some(3.0));
    // Each write `a` coordinates is counted once.
    let before = a.metric("weft_kv_writes_total").await.unwrap();
    for k in ["c1", "c2", "c3"] {
        let (status, body) = put(a, "counted", k, "v", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(a.metric("weft_kv_writes_total").await, Some(before + 3.0));
}

/// Writes that come for a peer while a request of writes to it is on its way go together in
/// the next request; every one of them is acknowledged and readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_to_a_peer_go_together() {
    use futures::StreamExt;
    let (_cluster, nodes) = ring_with(3, |_, _| {}).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    let writes = |from: u64| {
        futures::stream::iter(from..from + 200)
            .map(|i| {
                let node = &nodes[0];
                async move {
                    let (status, body) =
                        put(node, "data", &format!("b{i}"), &format!("v{i}"), &[]).await;
                    assert_eq!(status, StatusCode::OK, "{body}");
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<()>>()
    };
    // Rounds of 200 writes, 32 at a time, until one request carried more than one write.
    let (mut round, all) = (0, &all);
    wait_for(CONVERGE, "a request carrying several writes", || {
        round += 1;
        let this = writes(round * 1000);
        async move {
            this.await;
            assert!(metric_sum(&all[..1], "weft_kv_write_batches_total").await > 0.0);
            let batches = metric_sum(&all[..1], "weft_kv_write_batches_total").await;
            let carried = metric_sum(&all[..1], "weft_kv_batched_writes_total").await;
            // Each of the 200 writes of a round went to both peers.
            assert!(
                metric_sum(&all[..1], "weft_kv_batched_writes_total").await >= 400.0 * round as f64,
                "{carried} writes in {batches} requests after {round} rounds"
            );
            (carried > batches).then_some(())
        }
    })
    .await;
    // Each write changed the journals of at least two replicas (its entry and its index
    // entry: two changes), and a sync of a journal served several writes: 32 wait at once.
    assert!(
        metric_sum(all, "weft_kv_journal_changes_total").await >= 800.0 * round as f64,
        "after {round} rounds"
    );
    assert!(
        metric_sum(all, "weft_kv_journal_syncs_total").await
            < metric_sum(all, "weft_kv_journal_changes_total").await / 2.0
    );
    assert!(
        metric_sum(all, "weft_kv_journal_bytes_total").await
            > metric_sum(all, "weft_kv_journal_changes_total").await * 10.0
    );
    // Segments of 32 MiB are far from full.
    assert_eq!(
        metric_sum(all, "weft_kv_journal_checkpoints_total").await,
        0.0
    );
    for i in [1000, 1099, 1199] {
        let (status, body, _) = get(&nodes[2], &format!("/v1/kv/data/b{i}")).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, format!("v{i}").as_str())
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_counter_lives_in_the_replicated_store() {
    let (_cluster, nodes) = ring_with(3, |_, _| {}).await;
    let a = &nodes[0];
    a.deploy("counter", weft_host::plugins::COUNTER).await;
    // Concurrent increments through the guest's kv import: none is lost.
    let calls = (0..10).map(|_| a.get("/fn/counter/hits"));
    for (status, body) in futures::future::join_all(calls).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(a.count("/fn/counter/hits").await, 11);
    // The counter is in the function's namespace, readable from another node.
    let (status, value, _) = get(&nodes[2], "/v1/kv/fn.counter/%2Fhits").await;
    assert_eq!(status, StatusCode::OK, "{value}");
    assert_eq!(value.as_bytes(), 11i64.to_le_bytes());

    // Two functions that share a namespace share their data; others do not see it.
    for name in ["left", "right"] {
        let (status, body) = a
            .deploy_with(
                name,
                weft_host::plugins::COUNTER.to_vec(),
                &[("kv_namespace", "shared")],
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }
    assert_eq!(a.count("/fn/left/n").await, 1);
    assert_eq!(nodes[1].count("/fn/right/n").await, 2);
    assert_eq!(a.count("/fn/counter/n").await, 1);
    let (status, value, _) = get(&nodes[2], "/v1/kv/shared/%2Fn").await;
    assert_eq!(
        (status, value.as_bytes()),
        (StatusCode::OK, &2i64.to_le_bytes()[..])
    );
    let (status, body) = a
        .deploy_with(
            "bad-ns",
            weft_host::plugins::COUNTER.to_vec(),
            &[("kv_namespace", "Not Valid")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_deployed_on_one_node_runs_on_every_node() {
    use std::sync::atomic::Ordering::Relaxed;
    use weft_host::id::Digest;
    use weft_host::ring::{DEFAULT_VNODES, Ring, RingNode};

    let cluster = new_cluster();
    let nodes = start_cluster(cluster.path(), 5).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    wait_converged(&all, 5).await;
    wait_ring(&all, 5).await;
    let hello = weft_host::plugins::HELLO;
    let digest = Digest::of(hello);
    nodes[0].deploy("hello", hello).await;

    // The upload is on the node that took it and on the digest's replicas: some node has no
    // copy. That node still knows the function, and answers with it.
    let holds = |t: &TestNode| t.node().blobs.dir().size(digest).unwrap().is_some();
    let holders: Vec<&TestNode> = nodes.iter().filter(|t| holds(t)).collect();
    assert!(
        (2..=4).contains(&holders.len()),
        "{} holders",
        holders.len()
    );
    let c = nodes
        .iter()
        .find(|t| !holds(t))
        .expect("a node without the module");
    let (status, body) = c.get("/v1/functions").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{body}");
    assert_eq!(listed[0]["name"], "hello", "{body}");
    assert_eq!(listed[0]["digest"], digest.to_string(), "{body}");

    // Corrupt every copy but the one C would try last, so C meets bad bytes first.
    let ring = Ring::new(
        nodes.iter().map(|t| RingNode {
            node: t.node().name.clone(),
            tags: vec![],
        }),
        DEFAULT_VNODES,
    );
    let mut order = ring.replicas(digest.as_bytes(), 3);
    for n in ring.nodes() {
        if !order.contains(&n) {
            order.push(n);
        }
    }
    let order: Vec<&TestNode> = order
        .iter()
        .filter_map(|n| holders.iter().find(|t| t.node().name == *n).copied())
        .collect();
    let (good, bad) = order.split_last().unwrap();
    assert!(!bad.is_empty());
    for t in bad {
        t.node()
            .blobs
            .dir()
            .corrupt_for_tests(digest, b"not the module")
            .unwrap();
    }
    let (status, body) = c.get("/fn/hello/from-c").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("Hello, from-c!"), "{body}");
    let stats = c.node().blobs.stats();
    assert_eq!(stats.fetched.load(Relaxed), 1);
    assert_eq!(stats.corrupt.load(Relaxed), bad.len() as u64);
    assert_eq!(c.metric("weft_blobs_fetched_total").await, Some(1.0));
    assert_eq!(
        c.metric("weft_blobs_corrupt_total").await,
        Some(bad.len() as f64)
    );
    // Fetched and compiled once; the good copy is untouched and the bad ones are repaired.
    for _ in 0..3 {
        assert_eq!(c.get("/fn/hello/again").await.0, StatusCode::OK);
    }
    assert_eq!(stats.fetched.load(Relaxed), 1);
    assert!(good.node().blobs.dir().read(digest).is_ok());
    wait_for(CONVERGE, "corrupt copies replaced", || async {
        bad.iter()
            .all(|t| t.node().blobs.dir().read(digest).is_ok())
            .then_some(())
    })
    .await;

    // Redeploy, rollback and delete on other nodes are seen by C at once.
    nodes[1].deploy("hello", weft_host::plugins::COUNTER).await;
    assert_eq!(c.count("/fn/hello/x").await, 1);
    let (status, body) = nodes[2]
        .text(nodes[2].req(Method::POST, "/v1/functions/hello/rollback"))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = c.get("/fn/hello/back").await;
    assert!(
        status == StatusCode::OK && body.contains("Hello, back!"),
        "{body}"
    );
    let (status, _) = nodes[3]
        .text(nodes[3].req(Method::DELETE, "/v1/functions/hello"))
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for t in &all {
        let (status, body) = t.get("/fn/hello/gone").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_handlers_run_on_their_keys_owner() {
    let (_cluster, nodes) = ring_with(3, |_, _| {}).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    let counter = weft_host::plugins::COUNTER;
    let (status, body) = nodes[0]
        .deploy_with("tally", counter.to_vec(), &[("route_key", "path:1")])
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // A stateless handler runs where the request lands.
    nodes[0].deploy("hello", weft_host::plugins::HELLO).await;
    for t in &all {
        let r = t.req(Method::GET, "/fn/hello/x").send().await.unwrap();
        let ran = r.headers()["x-weft-node"].to_str().unwrap().to_string();
        assert_eq!(ran, t.node().name.as_str());
    }

    // Each keyed request runs on its key's owner, whichever node it lands on; so the counts
    // of one key go up by one per request, in order, from every node.
    let ns: weft_host::replication::Namespace = "fn.tally".parse().unwrap();
    let mut owners = std::collections::BTreeSet::new();
    for k in 0..6 {
        let key = format!("k{k}");
        let owner = nodes[0]
            .node()
            .replication
            .owners(&ns, key.as_bytes())
            .remove(0);
        owners.insert(owner.clone());
        for (i, t) in all.iter().enumerate() {
            let r = t
                .req(Method::GET, &format!("/fn/tally/{key}/x"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            let ran = r.headers()["x-weft-node"].to_str().unwrap().to_string();
            assert_eq!(ran, owner.as_str(), "key {key} landed on {}", t.node().name);
            let v: serde_json::Value = r.json().await.unwrap();
            assert_eq!(
                v,
                serde_json::json!({"count": i + 1, "path": format!("/{key}/x")})
            );
        }
    }
    assert!(owners.len() >= 2, "six keys all owned by {owners:?}");

    // Bad manifests and requests without a key get clear errors.
    let (status, body) = nodes[1]
        .deploy_with("bad", counter.to_vec(), &[("route_key", "cookie:x")])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        body["error"],
        "`cookie:x` is not a route key: use path:N (N from 1), header:NAME or query:NAME"
    );
    let (status, body) = nodes[1]
        .deploy_with(
            "bad",
            weft_host::plugins::WORDCOUNT.to_vec(),
            &[("route_key", "path:1")],
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = nodes[2].get("/fn/tally").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(
        crate::harness::error_of(&body),
        "function `tally` runs each request on the owner of its key, taken from path:1, and this request has none"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyed_handlers_take_their_key_from_a_header_or_the_query() {
    let (_cluster, nodes) = ring_with(3, |_, _| {}).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    for (name, route, place) in [
        ("byheader", "header:x-user", "header"),
        ("byquery", "query:user", "query"),
    ] {
        nodes[0]
            .deploy_ok(
                name,
                weft_host::plugins::COUNTER.to_vec(),
                &[("route_key", route)],
            )
            .await;
        let ns = weft_host::replication::Namespace::of_function(&name.parse().unwrap());
        let mut owners = std::collections::BTreeSet::new();
        for k in 0..6 {
            let key = format!("u{k}");
            let owner = nodes[0]
                .node()
                .replication
                .owners(&ns, key.as_bytes())
                .remove(0);
            owners.insert(owner.clone());
            for (i, t) in all.iter().enumerate() {
                let req = t.req(Method::GET, &format!("/fn/{name}/p"));
                let req = match place {
                    "header" => req.header("x-user", &key),
                    _ => req.query(&[("user", &key)]),
                };
                let r = req.send().await.unwrap();
                assert_eq!(r.status(), StatusCode::OK);
                let ran = r.headers()["x-weft-node"].to_str().unwrap().to_string();
                assert_eq!(ran, owner.as_str(), "{route} {key} on {}", t.node().name);
                // The counter counts per path; one path, so it counts this key's requests
                // on its owner.
                let v: serde_json::Value = r.json().await.unwrap();
                assert_eq!(v["count"], (k * 3 + i + 1) as u64, "{route} {key}");
            }
        }
        assert!(owners.len() >= 2, "six keys all owned by {owners:?}");
        let (status, body) = nodes[1].get(&format!("/fn/{name}/p")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            crate::harness::error_of(&body),
            format!(
                "function `{name}` runs each request on the owner of its key, taken from {route}, and this request has none"
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keyed_request_whose_owner_cannot_be_reached_runs_where_it_landed() {
    let cluster = new_cluster();
    let nodes = crate::cluster::start_cluster_with(cluster.path(), 3, |_, c| {
        // The cut-off owner stays on the ring (suspected, not down) within the test.
        c.cluster.membership.suspicion_multiplier = 300.0;
    })
    .await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    wait_converged(&all, 3).await;
    wait_ring(&all, 3).await;
    nodes[0]
        .deploy_ok(
            "tally",
            weft_host::plugins::COUNTER.to_vec(),
            &[("route_key", "path:1")],
        )
        .await;
    let ns = weft_host::replication::Namespace::of_function(&"tally".parse().unwrap());
    let n2 = nodes[2].node().replication.me().clone();
    let key = (0..)
        .map(|i| format!("k{i}"))
        .find(|k| nodes[0].node().replication.owners(&ns, k.as_bytes())[0] == n2)
        .unwrap();
    nodes[0]
        .node()
        .partition_for_tests(&[nodes[2].node().quic_addr]);
    nodes[2]
        .node()
        .partition_for_tests(&[nodes[0].node().quic_addr]);
    let r = nodes[0]
        .req(Method::GET, &format!("/fn/tally/{key}/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["x-weft-node"], "n0", "run where it landed");
}
