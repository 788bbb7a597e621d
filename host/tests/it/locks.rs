//! The lock service through the HTTP API and the CLI: grants with fencing tokens, waiting in
//! line, hand-over, renewal, expiry of a lease nobody renews, and the errors.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cli::{failed, ok, weft};
use crate::harness::{TestNode, error_of, wait_for};

async fn acquire(n: &TestNode, key: &str, query: &[(&str, &str)]) -> (StatusCode, Value) {
    n.json(
        n.req(Method::POST, &format!("/v1/locks/{key}"))
            .query(query),
    )
    .await
}

fn token(v: &Value) -> u64 {
    v["token"]
        .as_u64()
        .unwrap_or_else(|| panic!("no token in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_grant_growing_tokens_queue_hand_over_renew_and_expire() {
    let n = TestNode::start_with(|c| {
        c.cluster.locks.min_lease = Duration::from_millis(50);
    })
    .await;

    // A grant: the token is the index of the granting entry.
    let (code, a) = acquire(&n, "orders", &[("lease", "30s"), ("holder", "alice")]).await;
    assert_eq!(code, StatusCode::OK, "{a}");
    assert_eq!(a["holder"], "alice");
    assert_eq!(a["lease_ms"], 30_000);
    let t1 = token(&a);
    // Asking again under the holder's name gives the same token back.
    let (_, again) = acquire(&n, "orders", &[("holder", "alice")]).await;
    assert_eq!(token(&again), t1);
    // Another holder that does not wait is refused at once, told who holds it.
    let (code, b) = acquire(&n, "orders", &[("holder", "bob")]).await;
    assert_eq!(code, StatusCode::CONFLICT, "{b}");
    assert_eq!(
        b["error"],
        format!("lock `orders` is held by alice under token {t1}")
    );

    // Bob waits in line; the list shows him, and the lease the leader judges.
    let waiter = {
        let req = n.req(Method::POST, "/v1/locks/orders").query(&[
            ("holder", "bob"),
            ("wait", "30s"),
            ("lease", "20s"),
        ]);
        tokio::spawn(async move {
            let r = req.send().await.unwrap();
            (r.status(), r.json::<Value>().await.unwrap())
        })
    };
    let list = wait_for(Duration::from_secs(10), "bob in line", || async {
        let (code, v) = n.json(n.req(Method::GET, "/v1/locks")).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        (v[0]["waiters"] == serde_json::json!(["bob"])).then_some(v)
    })
    .await;
    assert_eq!(list[0]["key"], "orders", "{list}");
    assert_eq!(list[0]["holder"], "alice", "{list}");
    assert_eq!(token(&list[0]), t1);
    let left = list[0]["lease_left_ms"]
        .as_u64()
        .expect("the leader judges");
    // At most the lease, plus the lock delay when the node took over as leader after the grant.
    assert!(left > 0 && left <= 30_000 + 2_000, "{list}");

    // Renewing under the token works; releasing hands the lock to bob under a larger token.
    let (code, r) = n
        .json(
            n.req(Method::POST, "/v1/locks/orders/renew")
                .query(&[("token", t1)]),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{r}");
    assert_eq!(token(&r), t1);
    let (code, body) = n
        .text(
            n.req(Method::DELETE, "/v1/locks/orders")
                .query(&[("token", t1)]),
        )
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    let (code, b) = waiter.await.unwrap();
    assert_eq!(code, StatusCode::OK, "{b}");
    assert_eq!(b["holder"], "bob");
    let t2 = token(&b);
    assert!(t2 > t1, "{t2} after {t1}");
    // The old token can neither renew nor release.
    for (method, path) in [
        (Method::POST, "/v1/locks/orders/renew"),
        (Method::DELETE, "/v1/locks/orders"),
    ] {
        let (code, v) = n.json(n.req(method, path).query(&[("token", t1)])).await;
        assert_eq!(code, StatusCode::CONFLICT, "{v}");
        assert_eq!(
            v["error"],
            format!(
                "token {t1} does not hold lock `orders` (it is held under token {t2}; the lease ran out or it was released)"
            )
        );
    }

    // A lease nobody renews runs out: the leader expires it and the waiter gets the lock.
    let (_, c) = acquire(&n, "short", &[("holder", "carol"), ("lease", "300ms")]).await;
    let t3 = token(&c);
    let (code, d) = acquire(&n, "short", &[("holder", "dave"), ("wait", "20s")]).await;
    assert_eq!(code, StatusCode::OK, "{d}");
    assert_eq!(d["holder"], "dave");
    assert!(token(&d) > t3);
    // The expiry is counted when its proposal returns to the leader's task, which can come
    // just after the waiter was granted the lock: the count is waited for.
    assert!(
        wait_for(Duration::from_secs(10), "the expiry counted", || async {
            n.metric("weft_lock_expiries_total")
                .await
                .filter(|v| *v >= 1.0)
        })
        .await
            >= 1.0
    );
    // A wait that runs out leaves the line and says who holds the lock.
    let (code, e) = acquire(&n, "short", &[("holder", "erin"), ("wait", "200ms")]).await;
    assert_eq!(code, StatusCode::CONFLICT, "{e}");
    let msg = e["error"].as_str().unwrap();
    assert!(
        msg.starts_with(&format!(
            "lock `short` is held by dave under token {}; waited ",
            token(&d)
        )),
        "{msg}"
    );
    let (_, list) = n.json(n.req(Method::GET, "/v1/locks")).await;
    let short = list
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["key"] == "short")
        .unwrap();
    assert_eq!(short["waiters"], serde_json::json!([]), "erin left: {list}");

    // Counters moved.
    assert!(n.metric("weft_lock_grants_total").await >= Some(4.0));
    assert!(n.metric("weft_lock_waits_total").await >= Some(3.0));
    assert!(n.metric("weft_lock_wait_timeouts_total").await >= Some(1.0));
    assert!(n.metric("weft_lock_releases_total").await >= Some(1.0));
    assert_eq!(n.metric("weft_locks_held").await, Some(2.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_lock_requests_get_clear_errors() {
    let n = TestNode::start().await;
    // (method, path, query, status, error)
    type Case<'a> = (
        Method,
        &'a str,
        Vec<(&'a str, &'a str)>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Method::POST,
            "/v1/locks/k",
            vec![("lease", "10")],
            StatusCode::BAD_REQUEST,
            "lease: `10` is not a duration: write a whole number and a unit, as in 250ms, 10s, 2m, 1h or 30d",
        ),
        (
            Method::POST,
            "/v1/locks/k",
            vec![("lease", "1ms")],
            StatusCode::BAD_REQUEST,
            "lease must be between 100ms and 10m, not 1ms",
        ),
        (
            Method::POST,
            "/v1/locks/k",
            vec![("wait", "1h")],
            StatusCode::BAD_REQUEST,
            "wait must be at most 5m, not 1h",
        ),
        (
            Method::POST,
            "/v1/locks/a%20b",
            vec![],
            StatusCode::BAD_REQUEST,
            "`a b` is not a lock key: use 1 to 256 printable ASCII characters other than `/`, `?`, `#`, `%` and space",
        ),
        (
            Method::DELETE,
            "/v1/locks/k",
            vec![("token", "x")],
            StatusCode::BAD_REQUEST,
            "",
        ),
        (
            Method::DELETE,
            "/v1/locks/k",
            vec![("token", "7")],
            StatusCode::CONFLICT,
            "token 7 does not hold lock `k` (nobody holds it; the lease ran out or it was released)",
        ),
    ];
    for (method, path, query, want, message) in cases {
        let (code, body) = n.text(n.req(method.clone(), path).query(&query)).await;
        assert_eq!(code, want, "{method} {path} {query:?}: {body}");
        if !message.is_empty() {
            assert_eq!(error_of(&body), message, "{method} {path} {query:?}");
        }
    }
    // Every lock route needs the token.
    for (method, path) in [
        (Method::GET, "/v1/locks"),
        (Method::POST, "/v1/locks/k"),
        (Method::POST, "/v1/locks/k/renew?token=1"),
        (Method::DELETE, "/v1/locks/k?token=1"),
    ] {
        let (code, body) = n.text(n.anon(method.clone(), path)).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED, "{method} {path}: {body}");
    }
    // Nothing was granted by the refused requests.
    let (_, list) = n.json(n.req(Method::GET, "/v1/locks")).await;
    assert_eq!(list, serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_commands_take_list_renew_and_release() {
    let n = TestNode::start().await;
    let out = ok(&weft(
        &n,
        &[
            "lock", "acquire", "deploys", "--lease", "1m", "--holder", "ci",
        ],
    )
    .await);
    let t: u64 = out
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("a token: {out}"));
    let listed = ok(&weft(&n, &["locks"]).await);
    assert!(
        listed.starts_with("KEY\tHOLDER\tTOKEN\tLEASE LEFT\tWAITERS\n"),
        "{listed}"
    );
    assert!(listed.contains(&format!("deploys\tci\t{t}\t")), "{listed}");
    let json: Value = serde_json::from_str(&ok(&weft(&n, &["locks", "--json"]).await)).unwrap();
    assert_eq!(token(&json[0]), t);
    let err = failed(&weft(&n, &["lock", "acquire", "deploys"]).await);
    assert!(err.contains("409") && err.contains("held by ci"), "{err}");
    ok(&weft(&n, &["lock", "renew", "deploys", &t.to_string()]).await);
    ok(&weft(&n, &["lock", "release", "deploys", &t.to_string()]).await);
    let err = failed(&weft(&n, &["lock", "release", "deploys", &t.to_string()]).await);
    assert!(
        err.contains("409") && err.contains("does not hold"),
        "{err}"
    );
    assert_eq!(ok(&weft(&n, &["locks"]).await), "no locks are held\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_whose_client_goes_away_leaves_the_line() {
    let n = TestNode::start().await;
    let (_, a) = acquire(&n, "k", &[("holder", "alice"), ("lease", "1m")]).await;
    let t = token(&a);
    let waiter = {
        let req = n
            .req(Method::POST, "/v1/locks/k")
            .query(&[("holder", "gone"), ("wait", "1m")]);
        tokio::spawn(async move { req.send().await })
    };
    wait_for(Duration::from_secs(10), "the waiter in line", || async {
        let (_, v) = n.json(n.req(Method::GET, "/v1/locks")).await;
        (v[0]["waiters"] == serde_json::json!(["gone"])).then_some(())
    })
    .await;
    // The client goes away: its request is dropped, and with it its place in line.
    waiter.abort();
    wait_for(Duration::from_secs(10), "the line empty again", || async {
        let (_, v) = n.json(n.req(Method::GET, "/v1/locks")).await;
        (v[0]["waiters"] == serde_json::json!([])).then_some(())
    })
    .await;
    // So alice's release frees the lock instead of handing it to nobody.
    let (code, body) = n
        .text(n.req(Method::DELETE, "/v1/locks/k").query(&[("token", t)]))
        .await;
    assert_eq!(code, StatusCode::NO_CONTENT, "{body}");
    let (_, v) = n.json(n.req(Method::GET, "/v1/locks")).await;
    assert_eq!(v, serde_json::json!([]));
}
