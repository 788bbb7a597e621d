//! Guests and locks: the `locks` import (the `bank` plugin takes two accounts' locks per
//! transfer) and lock-protected handlers (the `ledger` plugin, deployed with `--lock`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use weft_host::replication::ReplicationSwitches;

use crate::cluster::{new_cluster, start_cluster_with};
use crate::harness::{TestNode, guest, metric_sum, wait_for};
use crate::replication::wait_ring;

/// Opens `accounts` accounts of `each`.
async fn open_accounts(n: &TestNode, f: &str, accounts: usize, each: i64) {
    for i in 0..accounts {
        let (code, v) = n
            .json(
                n.req(Method::PUT, &format!("/fn/{f}/acct/a{i}"))
                    .header("x-branch", "0")
                    .body(each.to_string()),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{v}");
    }
    // The guest lets its locks go in the background, which can end after its answer.
    let prefix = format!("fn.{f}:");
    wait_for(
        Duration::from_secs(10),
        "the accounts' locks released",
        || async {
            let (_, v) = n.json(n.req(Method::GET, "/v1/locks")).await;
            (!v.to_string().contains(&prefix)).then_some(())
        },
    )
    .await;
}

/// Every account: balance and the transfers applied to it.
async fn accounts(n: &TestNode, f: &str, accounts: usize) -> BTreeMap<String, (i64, Vec<String>)> {
    let mut out = BTreeMap::new();
    for i in 0..accounts {
        let (code, v) = n
            .json(
                n.req(Method::GET, &format!("/fn/{f}/acct/a{i}"))
                    .header("x-branch", "0"),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        let applied = v["applied"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect();
        out.insert(format!("a{i}"), (v["balance"].as_i64().unwrap(), applied));
    }
    out
}

/// The bank's transfers take two accounts' locks each; the same bank deployed as a
/// lock-protected handler (one line per branch, given in a header) takes them too, and its
/// writes go around the line's output gate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_under_two_locks_keep_the_total() {
    let n = Arc::new(TestNode::start().await);
    n.deploy("bank", &guest("bank")).await;
    transfers_keep_the_total(&n, "bank").await;
    n.deploy_ok("lbank", guest("bank"), &[("lock", "header:x-branch")])
        .await;
    transfers_keep_the_total(&n, "lbank").await;
}

async fn transfers_keep_the_total(n: &Arc<TestNode>, f: &'static str) {
    const ACCOUNTS: usize = 6;
    open_accounts(n, f, ACCOUNTS, 100).await;

    // 8 clients, 25 transfers each, between random pairs (both directions, so pairs
    // contend and a lock order that depended on the naming would deadlock).
    let mut clients = Vec::new();
    for c in 0..8u64 {
        let n = n.clone();
        clients.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(c);
            let mut done = Vec::new();
            for t in 0..25 {
                let from = rng.random_range(0..ACCOUNTS);
                let to = (from + rng.random_range(1..ACCOUNTS)) % ACCOUNTS;
                let id = format!("c{c}-{t}");
                let body = serde_json::json!({
                    "id": id, "from": format!("a{from}"), "to": format!("a{to}"),
                    "amount": rng.random_range(1..40),
                });
                let (code, v) = n
                    .json(
                        n.req(Method::POST, &format!("/fn/{f}/transfer"))
                            .header("x-branch", (c % 2).to_string())
                            .json(&body),
                    )
                    .await;
                match code {
                    StatusCode::OK => done.push((id, format!("a{from}"), format!("a{to}"))),
                    StatusCode::CONFLICT => {}
                    other => panic!("transfer {id}: {other} {v}"),
                }
            }
            done
        }));
    }
    let mut done = Vec::new();
    for c in clients {
        done.extend(c.await.unwrap());
    }
    assert!(
        done.len() > 50,
        "only {} transfers went through",
        done.len()
    );

    let all = accounts(n, f, ACCOUNTS).await;
    let total: i64 = all.values().map(|(b, _)| b).sum();
    assert_eq!(total, 100 * ACCOUNTS as i64, "{all:?}");
    for (id, from, to) in &done {
        for acct in [from, to] {
            let times = all[acct].1.iter().filter(|t| *t == id).count();
            assert_eq!(times, 1, "transfer {id} applied {times} times to {acct}");
        }
    }
    // Every guard was released: no lock of the bank is left held (a line's own lock is let
    // go once the line stays empty).
    let prefix = format!("fn.{f}:");
    let locks = wait_for(
        Duration::from_secs(10),
        "the bank's locks released",
        || async {
            let (code, v) = n.json(n.req(Method::GET, "/v1/locks")).await;
            assert_eq!(code, StatusCode::OK, "{v}");
            let held: Vec<Value> = v
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l["key"].as_str().unwrap().starts_with(&prefix))
                .cloned()
                .collect();
            held.is_empty().then_some(v)
        },
    )
    .await;
    assert!(locks.is_array());
}

/// The `ledger`'s log of `key`: (value, token) in order.
async fn ledger_log(n: &TestNode, key: &str) -> Vec<(String, u64)> {
    let (code, v) = n
        .json(n.req(Method::GET, &format!("/fn/ledger/{key}")))
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    v.as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["value"].as_str().unwrap().to_string(),
                i["token"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_protected_handler_runs_one_request_per_key_at_a_time_under_growing_tokens() {
    let n = Arc::new(TestNode::start().await);
    let bytes = guest("ledger");
    // What a deployment may not ask for.
    for (query, says) in [
        (&[("lock", "path:0")][..], "not a route key"),
        (&[("lock", "path:1"), ("route_key", "path:1")], "not both"),
        (&[("lock_wait", "1s")], "give lock too"),
        (&[("lock", "path:1"), ("lock_wait", "0s")], "above 0"),
    ] {
        let (code, v) = n.deploy_with("ledger", bytes.clone(), query).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{query:?}: {v}");
        assert!(v["error"].as_str().unwrap().contains(says), "{v}");
    }
    let wordcount = guest("wordcount");
    let (code, v) = n.deploy_with("wc", wordcount, &[("lock", "path:1")]).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");
    let f = n
        .deploy_ok("ledger", bytes, &[("lock", "path:1"), ("lock_wait", "20s")])
        .await;
    assert_eq!(
        (f["lock"].as_str(), f["lock_wait_ms"].as_u64()),
        (Some("path:1"), Some(20_000))
    );

    // A request without a key cannot be run under its lock.
    let (code, v) = n.json(n.req(Method::POST, "/fn/ledger/").body("x")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{v}");

    // 8 clients append 15 items each to one key, and one to keys of their own.
    let mut clients = Vec::new();
    for c in 0..8 {
        let n = n.clone();
        clients.push(tokio::spawn(async move {
            for i in 0..15 {
                let (code, v) = n
                    .json(
                        n.req(Method::POST, "/fn/ledger/hot")
                            .body(format!("{c}-{i}")),
                    )
                    .await;
                assert_eq!(code, StatusCode::OK, "{v}");
            }
            let (code, v) = n
                .json(
                    n.req(Method::POST, &format!("/fn/ledger/own-{c}"))
                        .body("x"),
                )
                .await;
            assert_eq!(code, StatusCode::OK, "{v}");
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let log = ledger_log(&n, "hot").await;
    assert_eq!(log.len(), 120, "a lost update: {log:?}");
    let mut values: Vec<&str> = log.iter().map(|(v, _)| v.as_str()).collect();
    values.sort();
    values.dedup();
    assert_eq!(values.len(), 120, "an item twice: {log:?}");
    assert!(
        log.windows(2).all(|w| w[0].1 <= w[1].1) && log[0].1 > 0,
        "tokens go back: {log:?}"
    );
    // Requests in line reused the lock: fewer acquisitions than requests.
    let acquired = n
        .metric("weft_locked_requests_total{function=\"ledger\",outcome=\"acquired\"}")
        .await
        .unwrap_or(0.0);
    let reused = n
        .metric("weft_locked_requests_total{function=\"ledger\",outcome=\"reused\"}")
        .await
        .unwrap_or(0.0);
    // 128 appends and the read of the log.
    assert_eq!(
        acquired + reused,
        129.0,
        "acquired {acquired}, reused {reused}"
    );
    assert!(reused > 0.0, "no request reused a held lock");
    let distinct: std::collections::BTreeSet<u64> = log.iter().map(|(_, t)| *t).collect();
    assert!(
        distinct.len() < 120,
        "every append took a lock of its own: {distinct:?}"
    );
    // A key used every 100 ms, one request at a time, keeps its lock: its line never stays
    // empty for `LINGER` (500 ms), so one acquisition serves all, plus one for each 5 s
    // held (`HOLD_AT_MOST`) and one to spare for a stall that outlasts the linger. A line
    // forgotten `LINGER` after it *first* emptied takes the lock about every half second.
    let paced_from = std::time::Instant::now();
    for i in 0..20 {
        let (code, v) = n
            .json(n.req(Method::POST, "/fn/ledger/paced").body(format!("{i}")))
            .await;
        assert_eq!(code, StatusCode::OK, "{v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let paced: std::collections::BTreeSet<u64> = ledger_log(&n, "paced")
        .await
        .iter()
        .map(|(_, t)| *t)
        .collect();
    let allowed = 2 + (paced_from.elapsed().as_secs() / 5) as usize;
    assert!(
        paced.len() <= allowed,
        "a key used every 100 ms took its lock {} times (at most {allowed} expected): {paced:?}",
        paced.len()
    );
    // The line drained, and the lock was let go.
    wait_for(
        Duration::from_secs(10),
        "the ledger's locks released",
        || async {
            let (_, v) = n.json(n.req(Method::GET, "/v1/locks")).await;
            (!v.to_string().contains("fn.ledger:")).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_lock_is_not_free_in_time_gets_503_with_retry_after() {
    let n = TestNode::start().await;
    n.deploy_ok(
        "ledger",
        guest("ledger"),
        &[("lock", "header:x-account"), ("lock_wait", "300ms")],
    )
    .await;
    // Someone else holds the key's lock through the lock service.
    let (code, held) = n
        .json(
            n.req(Method::POST, "/v1/locks/fn.ledger:acct~2f7")
                .query(&[("holder", "ops"), ("lease", "60s")]),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{held}");
    let post = || {
        n.req(Method::POST, "/fn/ledger/acct7")
            .header("x-account", "acct/7")
            .body("entry")
    };
    let r = post().send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers()["retry-after"], "1");
    let said = r.text().await.unwrap();
    assert!(said.contains("held by ops"), "{said}");
    assert_eq!(
        n.metric("weft_locked_requests_total{function=\"ledger\",outcome=\"busy\"}")
            .await,
        Some(1.0)
    );
    // Once it is released, the request goes through, under a larger token.
    let token = held["token"].as_u64().unwrap();
    let (code, v) = n
        .json(
            n.req(Method::DELETE, "/v1/locks/fn.ledger:acct~2f7")
                .query(&[("token", token.to_string())]),
        )
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{v}");
    let (code, v) = n.json(post()).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert!(v["token"].as_u64().unwrap() > token, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_locks_shows_the_function_holding_or_waiting_for_each_lock() {
    use crate::cli::{ok, weft};
    let n = Arc::new(TestNode::start().await);
    n.deploy("bank", &guest("bank")).await;
    open_accounts(&n, "bank", 2, 100).await;
    // An operator holds account a1: a transfer's guest waits for it in line.
    let (code, held) = n
        .json(
            n.req(Method::POST, "/v1/locks/fn.bank:acct~2fa1")
                .query(&[("holder", "ops"), ("lease", "60s")]),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{held}");
    let transfer = {
        let n = n.clone();
        tokio::spawn(async move {
            let body = serde_json::json!({"id": "t1", "from": "a0", "to": "a1", "amount": 5});
            n.json(n.req(Method::POST, "/fn/bank/transfer").json(&body))
                .await
        })
    };
    let waiter = wait_for(Duration::from_secs(10), "the transfer in line", || async {
        let (_, v) = n.json(n.req(Method::GET, "/v1/locks")).await;
        let list = v.as_array()?.clone();
        let lock = list.iter().find(|l| l["key"] == "fn.bank:acct~2fa1")?;
        lock["waiters"]
            .as_array()?
            .first()?
            .as_str()
            .map(String::from)
    })
    .await;
    assert!(
        waiter.starts_with(&format!("bank on {} (invocation ", n.node().name)),
        "{waiter}"
    );
    // `weft locks` shows both: the holder of a1 and the guest that holds a0 and waits for a1.
    let table = ok(&weft(&n, &["locks"]).await);
    assert!(table.contains("ops") && table.contains(&waiter), "{table}");
    // Released, the transfer goes through.
    let token = held["token"].as_u64().unwrap().to_string();
    let (code, v) = n
        .json(
            n.req(Method::DELETE, "/v1/locks/fn.bank:acct~2fa1")
                .query(&[("token", token.as_str())]),
        )
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{v}");
    let (code, v) = transfer.await.unwrap();
    assert_eq!(code, StatusCode::OK, "{v}");
}

/// The count of `counter` function `f` at path `/key`, as a quorum read on `n` sees it.
async fn stored_count(n: &TestNode, f: &str, key: &str) -> i64 {
    let r = n
        .req(Method::GET, &format!("/v1/kv/fn.{f}/%2F{key}"))
        .send()
        .await
        .unwrap();
    if r.status() == StatusCode::NOT_FOUND {
        return 0;
    }
    assert_eq!(r.status(), StatusCode::OK);
    let bytes = r.bytes().await.unwrap();
    i64::from_le_bytes(bytes[..].try_into().expect("an 8-byte counter"))
}

/// The output gate: the requests of a hot key run while the writes of those before them go
/// out (in shared batches), and yet no answer comes before its write is acknowledged (a
/// quorum read on another node sees it), and no request misses an earlier one's write.
/// And a key that several lines write (the lock is on a header, the counter on the path)
/// loses no update: a line whose write finds the key changed behind it answers 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_keys_answers_follow_their_writes_and_see_every_earlier_one() {
    if let Err(found) = gated_counters(ReplicationSwitches::default()).await {
        panic!("{found}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_a_gate_that_answers_before_its_writes_land_is_caught() {
    let found = gated_counters(ReplicationSwitches {
        gate_answers_early: true,
        ..Default::default()
    })
    .await
    .expect_err("the checker found nothing with answers sent before the writes");
    assert!(
        found.contains("before its write was acknowledged"),
        "{found}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_a_gate_that_writes_unconditionally_loses_updates_of_a_shared_key() {
    let found = gated_counters(ReplicationSwitches {
        gate_writes_unconditionally: true,
        ..Default::default()
    })
    .await
    .expect_err("the checker found nothing with unconditional writes");
    assert!(found.contains("a lost update"), "{found}");
}

/// Whether the gates' counters fit `requests` requests that each wrote one key: at least one
/// batch, at least one write per batch, at most one write per request.
fn gate_fits(batches: f64, writes: f64, requests: i64) -> Result<(), String> {
    if batches >= 1.0 && writes >= batches && writes <= requests as f64 {
        Ok(())
    } else {
        Err(format!(
            "{batches} batches of {writes} writes for {requests} requests"
        ))
    }
}

/// The checks of the tests above, on a 3-node cluster with `switches`: `Err` says what the
/// first failed check found.
async fn gated_counters(switches: ReplicationSwitches) -> Result<(), String> {
    let cluster = new_cluster();
    let nodes = start_cluster_with(cluster.path(), 3, |_, c| {
        c.replication.unsafe_switches = switches;
    })
    .await;
    let nodes = Arc::new(nodes);
    let all: Vec<&TestNode> = nodes.iter().collect();
    wait_ring(&all, 3).await;
    nodes[0]
        .deploy_ok(
            "counter",
            guest("counter"),
            &[("lock", "path:1"), ("lock_wait", "20s")],
        )
        .await;
    for (i, n) in nodes.iter().enumerate() {
        wait_for(
            Duration::from_secs(20),
            "the counter deployed everywhere",
            || async {
                let (code, _) = n.get(&format!("/fn/counter/warm-{i}")).await;
                (code == StatusCode::OK).then_some(())
            },
        )
        .await;
    }
    let (clients, each) = (8, 20);
    let mut tasks = Vec::new();
    for c in 0..clients {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            let (mut counts, mut early) = (Vec::new(), None);
            for i in 0..each {
                let count = nodes[(c + i) % 3].count("/fn/counter/hot").await as i64;
                let stored = stored_count(&nodes[(c + i + 1) % 3], "counter", "hot").await;
                if stored < count && early.is_none() {
                    early = Some(format!(
                        "answered {count} before its write was acknowledged: a quorum read after the answer saw {stored}"
                    ));
                }
                counts.push(count);
            }
            (counts, early)
        }));
    }
    let mut counts = Vec::new();
    for t in tasks {
        let (c, early) = t.await.unwrap();
        if let Some(found) = early {
            return Err(found);
        }
        counts.extend(c);
    }
    counts.sort();
    let requests = (clients * each) as i64;
    if counts != (1..=requests).collect::<Vec<_>>() {
        return Err(format!("a lost update on the hot key: counts {counts:?}"));
    }
    assert_eq!(stored_count(&nodes[2], "counter", "hot").await, requests);
    // The writes went out through the gate: at most one per request (fewer where a batch
    // carried several requests' writes of the key).
    assert_eq!(
        gate_fits(
            metric_sum(&all, "weft_kv_gate_batches_total").await,
            metric_sum(&all, "weft_kv_gate_writes_total").await,
            requests + 3,
        ),
        Ok(())
    );

    // Three users' lines increment one path's counter.
    nodes[0]
        .deploy_ok(
            "shared",
            guest("counter"),
            &[("lock", "header:x-user"), ("lock_wait", "20s")],
        )
        .await;
    let mut tasks = Vec::new();
    for c in 0..6 {
        let nodes = nodes.clone();
        tasks.push(tokio::spawn(async move {
            let (mut counts, mut refused) = (Vec::new(), 0);
            for i in 0..20 {
                let n = &nodes[(c + i) % 3];
                let user = format!("user-{}", c % 3);
                let r = n
                    .req(Method::GET, "/fn/shared/total")
                    .header("x-user", user)
                    .send()
                    .await
                    .unwrap();
                let status = r.status();
                let body = r.text().await.unwrap();
                match status {
                    StatusCode::OK => {
                        let v: Value = serde_json::from_str(&body).unwrap();
                        counts.push(v["count"].as_i64().unwrap());
                    }
                    // Not found while the deployment spreads; refused when the key changed
                    // behind the line: neither is counted as done.
                    StatusCode::NOT_FOUND | StatusCode::SERVICE_UNAVAILABLE => refused += 1,
                    s => panic!("{s}: {body}"),
                }
            }
            (counts, refused)
        }));
    }
    let (mut counts, mut refused) = (Vec::new(), 0);
    for t in tasks {
        let (c, r) = t.await.unwrap();
        counts.extend(c);
        refused += r;
    }
    let done = counts.len();
    counts.sort();
    counts.dedup();
    if counts.len() != done {
        return Err(format!(
            "two increments of the shared key answered the same count: a lost update ({done} answered, {} distinct)",
            counts.len()
        ));
    }
    let stored = stored_count(&nodes[1], "shared", "total").await;
    assert!(
        done > 0 && stored >= done as i64 && stored <= (done + refused) as i64,
        "{done} increments answered, {refused} refused, {stored} stored"
    );
    eprintln!("shared key: {done} increments answered, {refused} refused, {stored} stored");
    Ok(())
}
