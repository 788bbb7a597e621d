//! Instance reuse (`weft deploy --reuse N`): what an instance keeps between the requests of its
//! function, and when it is dropped instead (another function, a trap, N requests, a redeploy,
//! idle time, a slot needed elsewhere).

use std::time::Duration;

use reqwest::StatusCode;
use weft_host::plugins;

use crate::harness::{TestNode, guest, metric_in, wait_for};

/// `guest-memo`'s answer at `path` below `function`: `served=K seen=...`, once its instance
/// has settled.
async fn memo(n: &TestNode, function: &str, path: &str) -> String {
    let (status, body) = n.get(&format!("/fn/{function}/{path}")).await;
    settled(n).await;
    assert_eq!(status, StatusCode::OK, "{function}/{path}: {body}");
    body
}

/// Waits until every live instance is idle: the instance of the request just answered is back
/// in the pool, or dropped. An answer can reach its client before that, and a request sent at
/// once would then get a fresh instance whether the last one was to be kept or not; the tests
/// below send each request only after this.
async fn settled(n: &TestNode) {
    wait_for(
        Duration::from_secs(10),
        "the last request's instance kept or dropped",
        || async {
            let (_, text) = n.get("/metrics").await;
            let live = metric_in(&text, "weft_instances");
            (live.is_some() && live == metric_in(&text, "weft_instances_idle")).then_some(())
        },
    )
    .await
}

/// Deploys `guest-memo` as `a` and `b` with `--reuse 3`, tells `a` a secret and asks `a`
/// again: returns what `b` then answers, after checking that `a`'s second request ran in the
/// same instance and saw the secret.
async fn what_b_sees_after_a(n: &TestNode) -> String {
    for name in ["a", "b"] {
        n.deploy_ok(name, guest("guest-memo"), &[("reuse", "3")])
            .await;
    }
    assert_eq!(
        memo(n, "a", "remember/secret").await,
        "served=1 seen=secret"
    );
    // The same function's next request runs in the same instance and sees what it left.
    assert_eq!(memo(n, "a", "recall").await, "served=2 seen=secret");
    memo(n, "b", "recall").await
}

#[tokio::test]
async fn a_reused_instance_keeps_memory_for_its_function_only_and_never_after_a_trap() {
    let n = TestNode::start().await;
    let memo_guest = guest("guest-memo");
    n.deploy("fresh", &memo_guest).await;
    let reuses = "weft_instance_reuses_total";
    assert_eq!(n.metric("weft_instance_reuses_total").await, Some(0.0));

    // Another function of the same module never sees what `a`'s instance holds.
    assert_eq!(what_b_sees_after_a(&n).await, "served=1 seen=");
    assert_eq!(memo(&n, "a", "recall").await, "served=3 seen=secret");
    // Three requests served: the next gets a fresh instance.
    assert_eq!(memo(&n, "a", "recall").await, "served=1 seen=");
    assert_eq!(n.metric(reuses).await, Some(2.0));

    // A trap: the instance that trapped is dropped, not reused.
    assert_eq!(memo(&n, "a", "remember/x").await, "served=2 seen=x");
    let (status, _) = n.get("/fn/a/trap").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(memo(&n, "a", "recall").await, "served=1 seen=");
    assert_eq!(
        n.metric(reuses).await,
        Some(4.0),
        "the trapping request had reused one"
    );

    // A redeploy (same module, another configuration) starts from fresh instances.
    assert_eq!(memo(&n, "a", "remember/y").await, "served=2 seen=y");
    n.deploy_ok(
        "a",
        memo_guest.clone(),
        &[("reuse", "3"), ("config", r#"{"k":"v"}"#)],
    )
    .await;
    assert_eq!(memo(&n, "a", "recall").await, "served=1 seen=");

    // Without --reuse, every request gets a fresh instance.
    assert_eq!(memo(&n, "fresh", "remember/z").await, "served=1 seen=z");
    assert_eq!(memo(&n, "fresh", "recall").await, "served=1 seen=");

    // What reuse is refused for, with the reason.
    for (query, bytes, expected) in [
        (
            vec![("reuse", "0")],
            memo_guest.clone(),
            "reuse must be between 1 and",
        ),
        (
            vec![("reuse", "2000000")],
            memo_guest.clone(),
            "reuse must be between 1 and",
        ),
        (
            vec![("reuse", "2"), ("lock", "path:1")],
            memo_guest.clone(),
            "give reuse or lock, not both",
        ),
        (
            vec![("reuse", "2")],
            plugins::WORDCOUNT.to_vec(),
            "reuse is for wasi:http handlers",
        ),
    ] {
        let (status, body) = n.deploy_with("refused", bytes, &query).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query:?}: {body}");
        assert!(body.to_string().contains(expected), "{query:?}: {body}");
    }
}

/// The control: with idle instances kept by module instead of by function (a test switch),
/// `b` takes the instance `a` left and sees its secret, so the check above catches a pool that
/// shares instances across functions.
#[tokio::test]
async fn control_instances_shared_across_functions_leak_what_one_function_left() {
    let n =
        TestNode::start_with(|c| c.runtime.unsafe_share_instances_across_functions = true).await;
    assert_eq!(what_b_sees_after_a(&n).await, "served=3 seen=secret");
}

#[tokio::test]
async fn idle_instances_give_their_slots_up_and_expire() {
    // Two slots, both held by idle instances: a request of a third function takes one.
    let n = TestNode::start_with(|c| {
        c.runtime.max_instances = std::num::NonZeroU32::new(2).unwrap();
        c.runtime.reuse_idle = Duration::from_secs(3600);
    })
    .await;
    for name in ["a", "b"] {
        n.deploy_ok(name, guest("guest-memo"), &[("reuse", "100")])
            .await;
    }
    n.deploy("hello", plugins::HELLO).await;
    memo(&n, "a", "remember/1").await;
    memo(&n, "b", "remember/2").await;
    assert_eq!(n.metric("weft_instances_idle").await, Some(2.0));
    n.assert_hello_serves().await;
    assert_eq!(
        n.metric("weft_instances_idle").await,
        Some(1.0),
        "hello took the slot of the instance idle the longest"
    );
    assert_eq!(
        memo(&n, "a", "recall").await,
        "served=1 seen=",
        "a's was dropped"
    );
    assert_eq!(
        memo(&n, "b", "recall").await,
        "served=2 seen=2",
        "b's was kept"
    );
    // A node stopped with an instance idle restarts on the same data (the idle store, which holds
    // handles on the node's services, went with the runtime) and starts afresh.
    let n = n.restart().await;
    n.deploy_ok("b", guest("guest-memo"), &[("reuse", "100")])
        .await;
    assert_eq!(memo(&n, "b", "recall").await, "served=1 seen=");

    // An instance idle past `reuse_idle` is dropped.
    let n = TestNode::start_with(|c| c.runtime.reuse_idle = Duration::from_millis(200)).await;
    n.deploy_ok("a", guest("guest-memo"), &[("reuse", "100")])
        .await;
    memo(&n, "a", "remember/1").await;
    wait_for(
        Duration::from_secs(10),
        "the idle instance dropped",
        || async { (n.metric("weft_instances_idle").await == Some(0.0)).then_some(()) },
    )
    .await;
    assert_eq!(memo(&n, "a", "recall").await, "served=1 seen=");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_instance_runs_under_its_own_requests_deadline() {
    let n = TestNode::start().await;
    n.deploy_ok(
        "a",
        guest("guest-memo"),
        &[("reuse", "10"), ("timeout_ms", "1000")],
    )
    .await;
    // Each request computes for 600 ms of its 1 s: the second, in the same instance, would
    // pass the first one's deadline 400 ms in, and is stopped only if that deadline was kept.
    assert_eq!(memo(&n, "a", "work/600").await, "served=1 seen=");
    assert_eq!(memo(&n, "a", "work/600").await, "served=2 seen=");
    // And its own deadline still holds: a request longer than it is stopped (504), and the
    // instance is not reused after.
    let (status, body) = n.get("/fn/a/work/5000").await;
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(memo(&n, "a", "recall").await, "served=1 seen=");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_left_holding_a_lock_or_an_http_resource_is_not_reused() {
    let n = TestNode::start().await;
    n.deploy_ok("memo", guest("guest-memo"), &[("reuse", "10")])
        .await;
    n.deploy_ok("stream", guest("guest-stream"), &[("reuse", "10")])
        .await;

    // A lock the guest never let go of: the instance is dropped, and the lock with it, so the
    // next request (in a fresh instance) takes it again at once.
    assert_eq!(memo(&n, "memo", "hold/k").await, "served=1 seen=");
    assert_eq!(memo(&n, "memo", "hold/k").await, "served=1 seen=");
    assert_eq!(memo(&n, "memo", "recall").await, "served=1 seen=");
    assert_eq!(memo(&n, "memo", "recall").await, "served=2 seen=");

    // guest-stream is reused when it ends cleanly...
    let client = crate::harness::client();
    let n = &n;
    // A GET, or with `body` a POST; its answer must end within 20 s.
    let send = |path: &'static str, body: Option<&'static str>| {
        let url = format!("{}/fn/stream{path}", n.url);
        let request = match body {
            Some(body) => client.post(url).body(body),
            None => client.get(url),
        };
        async move {
            let r = tokio::time::timeout(Duration::from_secs(20), async {
                let r = request.send().await.unwrap();
                (r.status(), r.text().await.unwrap())
            })
            .await;
            let r = r.unwrap_or_else(|_| panic!("{path}: the answer did not end within 20 s"));
            settled(n).await;
            r
        }
    };
    let get = |path: &'static str| send(path, None);
    assert_eq!(get("/served").await, (StatusCode::OK, "served=1".into()));
    assert_eq!(get("/served").await, (StatusCode::OK, "served=2".into()));
    // ...but not after leaving its response body open: the body ends (kept, the instance
    // would hold it open for ever), and the next request gets a fresh instance.
    assert_eq!(
        get("/leave-open").await,
        (StatusCode::OK, "served=3".into())
    );
    assert_eq!(get("/served").await, (StatusCode::OK, "served=1".into()));
    // Nor after keeping its request's body unread (the client's connection could not go on to
    // its next request): the next request gets a fresh instance.
    assert_eq!(
        send("/keep-body", Some("a body")).await,
        (StatusCode::OK, "served=2".into())
    );
    assert_eq!(get("/served").await, (StatusCode::OK, "served=1".into()));
    // Keeping a request whose body was empty holds nothing of the client's: reused.
    assert_eq!(
        get("/keep-request").await,
        (StatusCode::OK, "served=2".into())
    );
    assert_eq!(get("/served").await, (StatusCode::OK, "served=3".into()));
    // The same with a body, unread: the instance is dropped.
    assert_eq!(
        send("/keep-request", Some("a body")).await,
        (StatusCode::OK, "served=4".into())
    );
    assert_eq!(get("/served").await, (StatusCode::OK, "served=1".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_that_keeps_every_request_is_reused_only_up_to_the_bound() {
    let bound = weft_host::runtime::MAX_HELD_RESOURCES;
    let n = TestNode::start().await;
    n.deploy_ok("stream", guest("guest-stream"), &[("reuse", "100000")])
        .await;
    // `/keep-request` never drops its request, as a garbage-collected guest that does not
    // collect. After the k-th such request the instance holds k of them: reused up to the
    // bound, dropped past it.
    let client = crate::harness::client();
    let get = |path: &str| {
        let request = client.get(format!("{}/fn/stream{path}", n.url)).send();
        async {
            let r = request.await.unwrap();
            let r = (r.status(), r.text().await.unwrap());
            settled(&n).await;
            r
        }
    };
    for k in 1..=bound {
        assert_eq!(
            get("/keep-request").await,
            (StatusCode::OK, format!("served={k}"))
        );
    }
    // Holding exactly the bound, it is still reused...
    assert_eq!(
        get("/served").await,
        (StatusCode::OK, format!("served={}", bound + 1))
    );
    // ...and one more kept request takes it past: the next request gets a fresh instance.
    assert_eq!(
        get("/keep-request").await,
        (StatusCode::OK, format!("served={}", bound + 2))
    );
    assert_eq!(get("/served").await, (StatusCode::OK, "served=1".into()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_whose_client_goes_away_before_its_answer_runs_to_its_end() {
    let n = TestNode::start().await;
    n.deploy_ok("a", guest("guest-memo"), &[("reuse", "10")])
        .await;
    // The client goes away while its request computes (for 1.5 s) before answering...
    let request = {
        let url = format!("{}/fn/a/work/1500", n.url);
        tokio::spawn(async move { crate::harness::client().get(url).send().await })
    };
    wait_for(Duration::from_secs(10), "the guest running", || async {
        (n.metric("weft_instances").await == Some(1.0)).then_some(())
    })
    .await;
    request.abort();
    assert!(
        request.await.is_err_and(|e| e.is_cancelled()),
        "the client went away"
    );
    // ...and the guest still runs to its end (an instance cut short would not be kept): the
    // next request is its instance's second.
    settled(&n).await;
    assert_eq!(memo(&n, "a", "recall").await, "served=2 seen=");
}
