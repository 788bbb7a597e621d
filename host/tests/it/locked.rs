//! Guests and locks: the `locks` import (the `bank` plugin takes two accounts' locks per
//! transfer) and lock-protected handlers (the `ledger` plugin, deployed with `--lock`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngExt, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{TestNode, guest, wait_for};

/// Opens `accounts` accounts of `each`.
async fn open_accounts(n: &TestNode, accounts: usize, each: i64) {
    for i in 0..accounts {
        let (code, v) = n
            .json(
                n.req(Method::PUT, &format!("/fn/bank/acct/a{i}"))
                    .body(each.to_string()),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{v}");
    }
}

/// Every account: balance and the transfers applied to it.
async fn accounts(n: &TestNode, accounts: usize) -> BTreeMap<String, (i64, Vec<String>)> {
    let mut out = BTreeMap::new();
    for i in 0..accounts {
        let (code, v) = n
            .json(n.req(Method::GET, &format!("/fn/bank/acct/a{i}")))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_transfers_under_two_locks_keep_the_total() {
    let n = Arc::new(TestNode::start().await);
    n.deploy("bank", &guest("bank")).await;
    const ACCOUNTS: usize = 6;
    open_accounts(&n, ACCOUNTS, 100).await;

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
                    .json(n.req(Method::POST, "/fn/bank/transfer").json(&body))
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

    let all = accounts(&n, ACCOUNTS).await;
    let total: i64 = all.values().map(|(b, _)| b).sum();
    assert_eq!(total, 100 * ACCOUNTS as i64, "{all:?}");
    for (id, from, to) in &done {
        for acct in [from, to] {
            let times = all[acct].1.iter().filter(|t| *t == id).count();
            assert_eq!(times, 1, "transfer {id} applied {times} times to {acct}");
        }
    }
    // Every guard was released: no lock of the bank is left held.
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
                .filter(|l| l["key"].as_str().unwrap().starts_with("fn.bank:"))
                .cloned()
                .collect();
            held.is_empty().then_some(v)
        },
    )
    .await;
    assert!(locks.is_array());
}
