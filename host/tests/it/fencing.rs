//! Fenced writes in the replicated store: a write made under a lock carries its fencing
//! token; replicas keep the highest token seen per lock and refuse a write under a lower one,
//! and versions order by token first. The checker runs a holder that lost its lock and goes
//! on writing; the control test shows that it catches the lost update when fencing is off.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use weft_host::config::ReplicationSwitches;
use weft_host::id::LockKey;

use crate::cluster::{member, new_cluster, start_cluster_with, wait_converged};
use crate::consensus::wait_group;
use crate::harness::{TestNode, wait_for};
use crate::replication::{get, put, wait_ring};

const WAIT: Duration = Duration::from_secs(20);

async fn acquire(n: &TestNode, holder: &str, lease: &str) -> Result<u64, String> {
    let (code, v): (StatusCode, Value) = n
        .json(n.req(Method::POST, "/v1/locks/acct").query(&[
            ("holder", holder),
            ("lease", lease),
            ("wait", "20s"),
        ]))
        .await;
    if code != StatusCode::OK {
        return Err(format!("{holder} could not take the lock: {code} {v}"));
    }
    v["token"].as_u64().ok_or(format!("no token in {v}"))
}

/// A write of `bank/KEY` under lock `acct` with `token`.
async fn write(n: &TestNode, key: &str, value: &str, token: u64) -> (StatusCode, Value) {
    let token = token.to_string();
    put(
        n,
        "bank",
        key,
        value,
        &[("lock", "acct"), ("token", &token)],
    )
    .await
}

/// The token in a version as printed (`HLC.NODE[.TOKEN]`, hex).
fn token_of(version: &str) -> u64 {
    version
        .split('.')
        .nth(2)
        .map_or(0, |t| u64::from_str_radix(t, 16).unwrap())
}

/// A write by holder `a` under `t1` after `t2` was granted and used: `Err` unless refused.
async fn stale_write(n: &TestNode, key: &str, value: &str, t1: u64, t2: u64) -> Result<(), String> {
    let (code, v) = write(n, key, value, t1).await;
    if code == StatusCode::OK {
        return Err(format!(
            "a write of {key} under superseded token {t1} was acknowledged ({v}); token {t2} was granted and used"
        ));
    }
    let said = v["error"].as_str().unwrap_or_default().to_string();
    let expected = format!("lock `acct` was granted again (token {t2})");
    if code != StatusCode::CONFLICT || !said.contains(&expected) {
        return Err(format!("a stale write of {key} got {code} {v}"));
    }
    Ok(())
}

/// Holder `a` writes under its grant, loses the lock to `b` (its lease runs out), and goes on
/// reading and writing, while node 2 is down and learns of `b`'s grant only from copies.
/// `Err` says what went wrong.
async fn stale_holder(switches: ReplicationSwitches) -> Result<(), String> {
    let cluster = new_cluster();
    let mut nodes = start_cluster_with(cluster.path(), 3, |_, c| {
        c.replication.unsafe_switches = switches;
        c.cluster.locks.min_lease = Duration::from_millis(50);
    })
    .await;
    {
        let all: Vec<&TestNode> = nodes.iter().collect();
        wait_converged(&all, 3).await;
        wait_ring(&all, 3).await;
        wait_group(&all, 3, 0).await;
    }
    let n0 = &nodes[0];
    let t1 = acquire(n0, "a", "300ms").await?;
    let (code, v) = write(n0, "acct", "100", t1).await;
    if code != StatusCode::OK {
        return Err(format!("the holder's write failed: {code} {v}"));
    }
    // `a`'s lease runs out; `b` gets the lock under a larger token.
    let t2 = acquire(n0, "b", "30s").await?;
    if t2 <= t1 {
        return Err(format!("token {t2} after {t1}"));
    }
    // Node 2 misses what follows: hints and anti-entropy bring it (and its token) later.
    let down = nodes.pop().unwrap().stop().await;
    let n0 = &nodes[0];
    // `b` reads before it writes. `a` does not know it lost the lock, and writes what `b`
    // did not see: that write must be refused, or `b`'s write would lose it (a lost update).
    let t2s = t2.to_string();
    let fenced_read = [("lock", "acct"), ("token", t2s.as_str())];
    let (code, body) = n0
        .text(n0.req(Method::GET, "/v1/kv/bank/acct").query(&fenced_read))
        .await;
    if (code, body.as_str()) != (StatusCode::OK, "100") {
        return Err(format!("the new holder read {code} {body}"));
    }
    stale_write(&nodes[1], "acct", "999", t1, t2).await?;
    let (code, v) = write(n0, "acct", "50", t2).await;
    if code != StatusCode::OK {
        return Err(format!("the new holder's write failed: {code} {v}"));
    }
    // Nor may `a` write a key `b` never touched, nor read under its old grant.
    stale_write(&nodes[1], "other", "x", t1, t2).await?;
    let t1s = t1.to_string();
    let (code, body) = nodes[1]
        .text(
            nodes[1]
                .req(Method::GET, "/v1/kv/bank/acct")
                .query(&[("lock", "acct"), ("token", t1s.as_str())]),
        )
        .await;
    if code != StatusCode::CONFLICT {
        return Err(format!(
            "a read under superseded token {t1} got {code} {body}"
        ));
    }

    if !switches.no_fencing {
        // Node 1 coordinated two refused writes and a refused read; the replicas refused them.
        assert_eq!(
            nodes[1].metric("weft_kv_fenced_writes_total").await,
            Some(3.0)
        );
        assert!(nodes[0].metric("weft_kv_fenced_total").await >= Some(1.0));
    }

    // Node 2 comes back and is brought the new holder's write, token and all.
    let seed = nodes[0].node().quic_addr;
    let n2 = TestNode::start_in(down, |c| {
        member(c, cluster.path(), "n2", &[seed]);
        c.replication.unsafe_switches = switches;
    })
    .await;
    nodes.push(n2);
    let lock: LockKey = "acct".parse().unwrap();
    wait_for(WAIT, "node 2 given the new holder's write", || async {
        let (code, body, _) = get(&nodes[2], "/v1/kv/bank/acct?local=true").await;
        (code == StatusCode::OK && body == "50").then_some(())
    })
    .await;
    // The stale write of `other` was held as a hint for node 2 too: delivered after the new
    // holder's, it is refused there and dropped.
    wait_for(WAIT, "node 2's hints delivered", || async {
        (nodes[0].node().replication.status().hints == 0
            && nodes[1].node().replication.status().hints == 0)
            .then_some(())
    })
    .await;
    let (code, body, _) = get(&nodes[2], "/v1/kv/bank/other?local=true").await;
    if code != StatusCode::NOT_FOUND {
        return Err(format!(
            "node 2 took the stale hint of `other`: {code} {body}"
        ));
    }
    let seen = nodes[2].node().replication.fence_seen(&lock).unwrap();
    if seen != t2 {
        return Err(format!("node 2 saw token {seen} for the lock, not {t2}"));
    }
    for n in &nodes {
        let (code, body, version) = get(n, "/v1/kv/bank/acct").await;
        if (code, body.as_str()) != (StatusCode::OK, "50") {
            return Err(format!(
                "acct reads {code} {body:?}, not the new holder's 50"
            ));
        }
        let token = token_of(&version.unwrap_or_default());
        if token != t2 {
            return Err(format!("acct's version carries token {token}, not {t2}"));
        }
        let (code, body, _) = get(n, "/v1/kv/bank/other").await;
        if code != StatusCode::NOT_FOUND {
            return Err(format!("the refused write of `other` shows: {code} {body}"));
        }
    }
    // A write under no lock (an operator's) still goes above the fenced one.
    let (code, v) = put(&nodes[0], "bank", "acct", "7", &[]).await;
    if code != StatusCode::OK {
        return Err(format!(
            "an unfenced write after fenced ones failed: {code} {v}"
        ));
    }
    let (_, body, version) = get(&nodes[1], "/v1/kv/bank/acct").await;
    if body != "7" || token_of(&version.clone().unwrap_or_default()) != t2 {
        return Err(format!(
            "after the operator's write acct is {body:?} at {version:?}"
        ));
    }
    for n in nodes {
        n.stop().await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_lost_its_lock_has_its_writes_refused_and_copies_carry_tokens() {
    stale_holder(ReplicationSwitches::default()).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_without_fencing_a_stale_holder_overwrites_the_new_one() {
    let off = ReplicationSwitches {
        no_fencing: true,
        ..Default::default()
    };
    let found = stale_holder(off).await.unwrap_err();
    eprintln!("the checker found: {found}");
    assert!(
        found.contains("under superseded token") && found.contains("was acknowledged"),
        "{found}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fenced_write_needs_a_lock_and_a_token() {
    let n = TestNode::start().await;
    for query in [
        &[("lock", "acct")][..],
        &[("token", "3")],
        &[("lock", "acct"), ("token", "0")],
        &[("lock", "bad/key"), ("token", "3")],
        // A token the lock service never issued would raise the lock's mark above every
        // real holder's.
        &[("lock", "acct"), ("token", "999999999")],
        // Fencing relies on the namespace's quorums.
        &[("lock", "acct"), ("token", "1"), ("w", "1")],
    ] {
        let (code, v) = put(&n, "bank", "k", "v", query).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{query:?}: {v}");
    }
    n.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_and_writes_under_a_lock() {
    use crate::cli::{failed, ok, weft};
    let n = TestNode::start().await;
    let t1 = acquire(&n, "a", "30s").await.unwrap();
    let t1s = t1.to_string();
    let under = ["--lock", "acct", "--lock-token", t1s.as_str()];
    ok(&weft(
        &n,
        &[&["kv", "put", "bank", "k", "one"][..], &under].concat(),
    )
    .await);
    let read = ok(&weft(&n, &[&["kv", "get", "bank", "k"][..], &under].concat()).await);
    assert_eq!(read.trim(), "one");
    // Another holder takes the lock once `a` lets go, and writes.
    let (code, v) = n
        .json(
            n.req(Method::DELETE, "/v1/locks/acct")
                .query(&[("token", t1s.as_str())]),
        )
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{v}");
    let t2 = acquire(&n, "b", "30s").await.unwrap();
    let (code, v) = write(&n, "k", "two", t2).await;
    assert_eq!(code, StatusCode::OK, "{v}");
    for command in [
        &["kv", "put", "bank", "k", "three"][..],
        &["kv", "get", "bank", "k"],
        &["kv", "del", "bank", "k"],
    ] {
        let said = failed(&weft(&n, &[command, &under].concat()).await);
        assert!(said.contains("was granted again"), "{command:?}: {said}");
    }
    // Both flags or neither.
    let said = failed(&weft(&n, &["kv", "get", "bank", "k", "--lock", "acct"]).await);
    assert!(said.contains("--lock-token"), "{said}");
    n.stop().await;
}
