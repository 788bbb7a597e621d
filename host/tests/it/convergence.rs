//! Replicas converging after faults, on in-process clusters over real QUIC: a partition that
//! heals, and nodes joining and leaving while clients write.
//!
//! The default suite runs a 10 s partition with 2,000 keys written in bulk on the two sides
//! and one join/leave run; `WEFT_LONG=1` runs a 60 s partition with 100,000 keys written in
//! bulk and ten join/leave runs.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;

use crate::cluster::{new_cluster, start_cluster, wait_converged};
use crate::faults::long;
use crate::harness::metric_sum;
use crate::harness::{TestNode, wait_for};
use crate::replication::{get, put, wait_ring};

const CONVERGE: Duration = Duration::from_secs(60);

/// Acknowledged writes: key -> value (`None`: deleted).
type Acked = Arc<Mutex<BTreeMap<String, Option<String>>>>;

/// Writes unique keys through `nodes` in turn, about `per_second` a second, until `stop`;
/// records those acknowledged.
async fn writer(
    nodes: Vec<(String, String)>,
    prefix: String,
    per_second: u64,
    acked: Acked,
    stop: tokio_util::sync::CancellationToken,
) -> (u64, u64) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
    let (mut ok, mut failed) = (0, 0);
    for i in 0u64.. {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        let node = &nodes[i as usize % nodes.len()];
        if put_acked(&http, node, format!("{prefix}{i}"), format!("v{i}"), &acked).await {
            ok += 1;
        } else {
            failed += 1;
        }
    }
    (ok, failed)
}

/// Writes `key` through the node at `(url, token)`; records it if acknowledged.
async fn put_acked(
    http: &reqwest::Client,
    (url, token): &(String, String),
    key: String,
    value: String,
    acked: &Acked,
) -> bool {
    let r = http
        .put(format!("{url}/v1/kv/data/{key}"))
        .bearer_auth(token)
        .body(value.clone())
        .send()
        .await;
    let ok = matches!(&r, Ok(r) if r.status() == StatusCode::OK);
    if ok {
        acked.lock().unwrap().insert(key, Some(value));
    }
    ok
}

/// Writes `count` unique keys through `nodes` in turn, `concurrency` at a time, as fast as
/// they are taken; records those acknowledged and returns how many were.
async fn bulk(
    nodes: Vec<(String, String)>,
    prefix: &str,
    count: u64,
    concurrency: usize,
    acked: &Acked,
) -> u64 {
    use futures::StreamExt;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    futures::stream::iter(0..count)
        .map(|i| {
            let node = &nodes[i as usize % nodes.len()];
            put_acked(&http, node, format!("{prefix}{i}"), format!("b{i}"), acked)
        })
        .buffer_unordered(concurrency)
        .fold(0, |n, ok| async move { n + u64::from(ok) })
        .await
}

/// Waits until `more` writes beyond the `since` acknowledged so far are acknowledged, so that
/// each phase of a test sees writes however fast the phase itself is.
async fn wait_acked(acked: &Acked, since: usize, more: usize) -> usize {
    wait_for(
        CONVERGE,
        &format!("{more} more writes acknowledged"),
        || async {
            let n = acked.lock().unwrap().len();
            (n >= since + more).then_some(n)
        },
    )
    .await
}

fn endpoints(nodes: &[&TestNode]) -> Vec<(String, String)> {
    nodes
        .iter()
        .map(|t| (t.url.clone(), t.token.clone()))
        .collect()
}

/// Asserts that every node reads every acknowledged write (and no deleted key).
async fn assert_all_readable(nodes: &[&TestNode], acked: &BTreeMap<String, Option<String>>) {
    use futures::StreamExt;
    for t in nodes {
        futures::stream::iter(acked)
            .for_each_concurrent(16, |(k, v)| async move {
                let (status, body, _) = get(t, &format!("/v1/kv/data/{k}")).await;
                match v {
                    Some(v) => assert_eq!(
                        (status, body.as_str()),
                        (StatusCode::OK, v.as_str()),
                        "{k} on {}",
                        t.node().name
                    ),
                    None => assert_eq!(
                        status,
                        StatusCode::NOT_FOUND,
                        "deleted {k} came back on {}: {body}",
                        t.node().name
                    ),
                }
            })
            .await;
    }
}

/// Whether every acknowledged write is held by every one of its key's owners (a deleted key
/// by none of them).
fn owners_hold(nodes: &[&TestNode], acked: &BTreeMap<String, Option<String>>) -> bool {
    let ns: weft_host::replication::Namespace = "data".parse().unwrap();
    let by_name = |n: &weft_host::id::NodeId| nodes.iter().find(|t| t.node().name == *n).unwrap();
    acked.iter().all(|(k, v)| {
        nodes[0]
            .node()
            .replication
            .owners(&ns, k.as_bytes())
            .iter()
            .all(|o| {
                let held = by_name(o)
                    .node()
                    .replication
                    .local_entry(&ns, k.as_bytes())
                    .unwrap()
                    .and_then(|e| e.value);
                held.as_deref() == v.as_ref().map(|v| v.as_bytes())
            })
    })
}

/// Whether every pair of nodes has equal Merkle roots over the keys they share.
fn roots_agree(nodes: &[&TestNode]) -> bool {
    let roots: Vec<_> = nodes
        .iter()
        .map(|t| t.node().replication.roots().unwrap())
        .collect();
    for (i, a) in nodes.iter().enumerate() {
        for (j, b) in nodes.iter().enumerate() {
            if i == j {
                continue;
            }
            // A pair agrees only when each has a tree for the other, and the trees match.
            match (roots[i].get(&b.node().name), roots[j].get(&a.node().name)) {
                (Some(x), Some(y)) if x == y => {}
                _ => return false,
            }
        }
    }
    true
}

/// Anti-entropy rounds `t` completed.
pub(crate) fn rounds(t: &TestNode) -> u64 {
    t.node().replication.status().anti_entropy_rounds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healed_partition_converges_without_losing_or_resurrecting_anything() {
    let split_for = Duration::from_secs(if long() { 60 } else { 10 });
    let cluster = new_cluster();
    let nodes = start_cluster(cluster.path(), 5).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    wait_converged(&all, 5).await;
    wait_ring(&all, 5).await;

    // Keys written before the split; half of them are deleted during it, on one side.
    let acked: Acked = Arc::default();
    for i in 0..40 {
        let (status, body) = put(&nodes[i % 5], "data", &format!("old{i}"), "old", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        acked
            .lock()
            .unwrap()
            .insert(format!("old{i}"), Some("old".into()));
    }

    // Split 2 | 3, both ways, and write on both sides.
    let (left, right) = all.split_at(2);
    let addrs =
        |side: &[&TestNode]| -> Vec<_> { side.iter().map(|t| t.node().quic_addr).collect() };
    for t in left {
        t.node().partition_for_tests(&addrs(right));
    }
    for t in right {
        t.node().partition_for_tests(&addrs(left));
    }
    // Once each side runs on a ring of its own, each writes many keys the other side's
    // replicas miss: they differ from their peers' when the partition heals.
    wait_ring(left, 2).await;
    wait_ring(right, 3).await;
    let per_side = if long() { 50_000 } else { 1_000 };
    let (bulk_left, bulk_right) = tokio::join!(
        bulk(endpoints(left), "bulkleft", per_side, 16, &acked),
        bulk(endpoints(right), "bulkright", per_side, 16, &acked),
    );
    assert!(
        bulk_left > per_side * 9 / 10 && bulk_right > per_side * 9 / 10,
        "each side's own ring acknowledges its writes: {bulk_left} and {bulk_right} of {per_side}"
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let writers = [
        tokio::spawn(writer(
            endpoints(left),
            "left".into(),
            50,
            acked.clone(),
            stop.clone(),
        )),
        tokio::spawn(writer(
            endpoints(right),
            "right".into(),
            50,
            acked.clone(),
            stop.clone(),
        )),
    ];
    tokio::time::sleep(split_for / 2).await; // half the partition, not a wait
    for i in 0..20 {
        let key = format!("old{i}");
        let r = left[i % 2]
            .req(reqwest::Method::DELETE, &format!("/v1/kv/data/{key}"))
            .send()
            .await
            .unwrap();
        if r.status() == StatusCode::OK {
            acked.lock().unwrap().insert(key, None);
        } else {
            // A delete that was not acknowledged may still take effect: expect nothing of it.
            acked.lock().unwrap().remove(&key);
        }
    }
    tokio::time::sleep(split_for / 2).await; // the rest of the partition
    stop.cancel();
    let [left_writer, right_writer] = writers;
    let (left_ok, _) = left_writer.await.unwrap();
    let (right_ok, _) = right_writer.await.unwrap();
    {
        let acked = acked.lock().unwrap();
        let on = |side: &str| acked.keys().filter(|k| k.starts_with(side)).count() as u64;
        assert_eq!((on("left"), on("right")), (left_ok, right_ok));
    }
    assert!(
        left_ok > 0 && right_ok > 0,
        "each side of the partition acknowledges writes: {left_ok} left, {right_ok} right"
    );
    let written = left_ok + right_ok;

    // Heal. Once the cluster and its rings are whole again, the replicas agree within two
    // anti-entropy rounds.
    for t in &all {
        t.node().partition_for_tests(&[]);
    }
    wait_converged(&all, 5).await;
    wait_for(CONVERGE, "rings of 5 everywhere", || async {
        all.iter()
            .all(|t| t.node().replication.status().nodes.len() == 5)
            .then_some(())
    })
    .await;
    let before: Vec<u64> = all.iter().map(|t| rounds(t)).collect();
    let sent = metric_sum(&all, "weft_kv_anti_entropy_bytes_sent_total").await;
    let received = metric_sum(&all, "weft_kv_anti_entropy_bytes_received_total").await;
    let acked = acked.lock().unwrap().clone();
    // The rounds are read as soon as the roots agree: checking that every owner holds every
    // write reads every key and takes a while, and rounds go on meanwhile.
    let taken: Vec<u64> = wait_for(
        CONVERGE,
        "equal Merkle roots everywhere, every write on its owners",
        || async {
            if !roots_agree(&all) {
                return None;
            }
            let taken: Vec<u64> = all
                .iter()
                .zip(&before)
                .map(|(t, b)| rounds(t) - b)
                .collect();
            owners_hold(&all, &acked).then_some(taken)
        },
    )
    .await;
    assert!(
        taken.iter().all(|&r| r <= 2),
        "anti-entropy rounds to agree after healing: {taken:?}"
    );

    // Anti-entropy moved entries both ways to heal the partition, and counted its bytes.
    assert!(metric_sum(&all, "weft_kv_anti_entropy_pulled_total").await > 0.0);
    assert!(metric_sum(&all, "weft_kv_anti_entropy_pushed_total").await > 0.0);
    assert!(metric_sum(&all, "weft_kv_anti_entropy_bytes_sent_total").await > sent);
    assert!(metric_sum(&all, "weft_kv_anti_entropy_bytes_received_total").await > received);
    let exchanged = metric_sum(&all, "weft_kv_anti_entropy_bytes_sent_total").await
        + metric_sum(&all, "weft_kv_anti_entropy_bytes_received_total").await
        - sent
        - received;
    let deleted = acked.values().filter(|v| v.is_none()).count();
    assert!(deleted > 0, "no delete was acknowledged");
    assert_all_readable(&all, &acked).await;
    // No node still holds a live copy of a deleted key. The owners agree already; a node that
    // took keys while the ring was split and no longer owns them hands them off and drops them
    // in the first anti-entropy round after the transition (`ReplicationConfig::transition`).
    let deleted_keys: Vec<&String> = acked
        .iter()
        .filter(|(_, v)| v.is_none())
        .map(|(k, _)| k)
        .collect();
    wait_for(
        CONVERGE,
        "no live copy of a deleted key anywhere",
        || async {
            for t in &all {
                for k in &deleted_keys {
                    let (status, _, _) = get(t, &format!("/v1/kv/data/{k}?local=true")).await;
                    if status != StatusCode::NOT_FOUND {
                        return None;
                    }
                }
            }
            Some(())
        },
    )
    .await;
    for t in &all {
        for (k, _) in acked.iter().filter(|(_, v)| v.is_none()) {
            let (status, _, _) = get(t, &format!("/v1/kv/data/{k}?local=true")).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{k} on {}", t.node().name);
        }
    }
    eprintln!(
        "partition of {split_for:?}: {} writes ({bulk_left} + {bulk_right} in bulk) and {deleted} deletes acknowledged; rounds to agree after healing {taken:?}; anti-entropy bytes exchanged after healing {exchanged} ({:.0} per key written)",
        written + bulk_left + bulk_right,
        exchanged / (written + bulk_left + bulk_right) as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_joining_and_leaving_during_writes_lose_nothing() {
    let runs = if long() { 10 } else { 1 };
    for run in 0..runs {
        let cluster = new_cluster();
        let mut nodes = start_cluster(cluster.path(), 3).await;
        {
            let all: Vec<&TestNode> = nodes.iter().collect();
            wait_converged(&all, 3).await;
            wait_ring(&all, 3).await;
        }
        let acked: Acked = Arc::default();
        // Clients write through the two nodes that stay, at 100 writes a second.
        let stop = tokio_util::sync::CancellationToken::new();
        let write = tokio::spawn(writer(
            endpoints(&[&nodes[0], &nodes[2]]),
            format!("run{run}-"),
            100,
            acked.clone(),
            stop.clone(),
        ));
        let before = wait_acked(&acked, 0, 10).await;
        // A fourth node joins.
        let seed = nodes[0].node().quic_addr;
        let path = cluster.path().to_path_buf();
        nodes.push(TestNode::start_with(|c| crate::cluster::member(c, &path, "n3", &[seed])).await);
        // Writes go on while it joins and the keys move (a transition may end within a second).
        let joined = wait_acked(&acked, before, 20).await;
        {
            let all: Vec<&TestNode> = nodes.iter().collect();
            wait_converged(&all, 4).await;
            wait_ring(&all, 4).await;
            // With N = 3 of 4, each of the first three no longer owns a quarter of its keys:
            // once the transition is over, it drops them, as their new owners hold them.
            wait_for(CONVERGE, "handed-off keys dropped", || async {
                (metric_sum(&all, "weft_kv_handed_off_total").await > 0.0).then_some(())
            })
            .await;
            assert!(metric_sum(&all, "weft_kv_handed_off_total").await > 0.0);
        }
        let left = wait_acked(&acked, joined, 10).await;
        // Then one of the first three leaves.
        let leaving = nodes.remove(1);
        leaving.stop().await;
        wait_acked(&acked, left, 10).await;
        {
            let all: Vec<&TestNode> = nodes.iter().collect();
            wait_for(CONVERGE, "the ring without the node that left", || async {
                all.iter()
                    .all(|t| t.node().replication.status().nodes.len() == 3)
                    .then_some(())
            })
            .await;
            wait_ring(&all, 3).await;
        }
        stop.cancel();
        let (ok, failed) = write.await.unwrap();
        let acked = acked.lock().unwrap().clone();
        assert_eq!(acked.len() as u64, ok, "run {run}");
        let all: Vec<&TestNode> = nodes.iter().collect();
        assert_all_readable(&all, &acked).await;

        eprintln!("run {run}: {ok} writes acknowledged, {failed} refused, none lost");
    }
}

/// Which of `nodes` hold `key` of `ns` themselves: `Some(true)` a value (expired or not),
/// `Some(false)` a tombstone.
pub(crate) fn held(nodes: &[&TestNode], ns: &str, key: &str) -> Vec<Option<bool>> {
    let ns: weft_host::replication::Namespace = ns.parse().unwrap();
    nodes
        .iter()
        .map(|t| {
            t.node()
                .replication
                .local_entry(&ns, key.as_bytes())
                .unwrap()
                .map(|e| e.value.is_some())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_are_collected_only_when_no_replica_can_bring_the_key_back() {
    let cluster = new_cluster();
    let grace = Duration::from_millis(1500);
    let config = |name: &'static str, seeds: Vec<std::net::SocketAddr>| {
        let path = cluster.path().to_path_buf();
        move |c: &mut weft_host::NodeConfig| {
            crate::cluster::member(c, &path, name, &seeds);
            c.replication.tombstone_grace = grace;
        }
    };
    let n0 = TestNode::start_with(config("n0", vec![])).await;
    let seed = n0.node().quic_addr;
    let n1 = TestNode::start_with(config("n1", vec![seed])).await;
    let mut n2 = TestNode::start_with(config("n2", vec![seed])).await;
    wait_converged(&[&n0, &n1, &n2], 3).await;
    wait_ring(&[&n0, &n1, &n2], 3).await;

    // First with the rule, then without it, to show what it prevents; for a deleted key, and
    // for a key whose value expired (collected as a tombstone from its expiry on).
    for (key, rule_off, expire) in [
        ("gone", false, false),
        ("back", true, false),
        ("expired", false, true),
        ("expired-back", true, true),
    ] {
        let (status, body) = put(&n0, "data", key, "old", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        wait_for(CONVERGE, "three copies", || async {
            (held(&[&n0, &n1, &n2], "data", key) == [Some(true); 3]).then_some(())
        })
        .await;
        // n2 goes away holding the old value, and the key is deleted (or written with a short
        // TTL) meanwhile.
        let dir = n2.stop().await;
        let up = [&n0, &n1];
        wait_for(CONVERGE, "a ring of two", || async {
            up.iter()
                .all(|t| {
                    let s = t.node().replication.status();
                    s.nodes.len() == 2 && !s.in_transition
                })
                .then_some(())
        })
        .await;
        for t in up {
            t.node().replication.set_collect_while_down(rule_off);
        }
        let collected_before = metric_sum(&up, "weft_kv_tombstones_collected_total").await;
        if expire {
            let (status, body) = put(&n0, "data", key, "new", &[("ttl", "500ms")]).await;
            assert_eq!(status, StatusCode::OK, "{body}");
        } else {
            let r = n0
                .req(reqwest::Method::DELETE, &format!("/v1/kv/data/{key}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        // Anti-entropy rounds (1 s apart) take the tombstones past the grace: four, or six
        // for an expiring value, whose grace counts from its expiry.
        let need = if expire { 6 } else { 4 };
        let (r0, r1) = (rounds(&n0), rounds(&n1));
        wait_for(CONVERGE, "anti-entropy rounds past the grace", || async {
            (rounds(&n0) >= r0 + need && rounds(&n1) >= r1 + need).then_some(())
        })
        .await;
        if rule_off {
            assert_eq!(
                held(&up, "data", key),
                [None, None],
                "collected while n2 was down"
            );
        } else {
            // An expired value is held as it was written (a value), a deletion as a tombstone.
            assert_eq!(
                held(&up, "data", key),
                [Some(expire); 2],
                "kept while n2 is down"
            );
        }
        // n2 comes back with the old value.
        n2 = TestNode::start_in(dir, config("n2", vec![seed])).await;
        let all = [&n0, &n1, &n2];
        wait_converged(&all, 3).await;
        wait_ring(&all, 3).await;
        if rule_off {
            // Anti-entropy spreads n2's old value: the deleted key is back.
            wait_for(CONVERGE, "the deleted key to come back", || async {
                (get(&n0, &format!("/v1/kv/data/{key}")).await.0 == StatusCode::OK).then_some(())
            })
            .await;
        } else {
            // With every member up, the tombstones are collected everywhere, and the key
            // stays deleted.
            wait_for(CONVERGE, "the tombstones collected everywhere", || async {
                (held(&all, "data", key) == [None; 3]).then_some(())
            })
            .await;
            for t in all {
                let (status, body, _) = get(t, &format!("/v1/kv/data/{key}")).await;
                assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
            }
            // The key's primary collected it, once (n2 counts from its restart).
            assert_eq!(
                metric_sum(&all, "weft_kv_tombstones_collected_total").await - collected_before,
                1.0
            );
        }
    }
}
