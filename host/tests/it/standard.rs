//! A component that imports only standard interfaces (`wasi:keyvalue` store, atomics and
//! batch, `wasi:config/store`), built from a `wit-bindgen` guest with no Weft SDK, deploys
//! unchanged and runs on a 3-node cluster: its key-value calls go to the replicated store, its
//! configuration is what the deploy gave, and a rollback brings back the previous version's.

use reqwest::{Method, StatusCode};

use crate::harness::{TestNode, guest};
use crate::replication::ring_with;

async fn call(n: &TestNode, method: Method, path: &str, body: &str) -> (StatusCode, String) {
    let r = n
        .req(method, &format!("/fn/std{path}"))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_component_of_standard_interfaces_runs_unchanged() {
    let (_cluster, nodes) = ring_with(3, |_, _| {}).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    let [a, b, c] = [&nodes[0], &nodes[1], &nodes[2]];
    let bytes = guest("guest-standard");
    a.deploy_ok(
        "std",
        bytes.clone(),
        &[("config", r#"{"greeting":"hello","region":"eu"}"#)],
    )
    .await;

    // wasi:config: what the deploy gave, on every node.
    assert_eq!(
        call(b, Method::GET, "/config/greeting", "").await,
        (StatusCode::OK, "hello".into())
    );
    assert_eq!(
        call(c, Method::GET, "/config", "").await,
        (StatusCode::OK, "greeting=hello\nregion=eu\n".into())
    );
    assert_eq!(
        call(a, Method::GET, "/config/none", "").await.0,
        StatusCode::NOT_FOUND
    );

    // wasi:keyvalue/store on the replicated store: written on one node, read on another, and
    // the same key in the function's namespace over the HTTP API.
    assert_eq!(
        call(a, Method::PUT, "/kv/user", "ada").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(b, Method::GET, "/kv/user", "").await,
        (StatusCode::OK, "ada".into())
    );
    let (status, value, _) = crate::replication::get(c, "/v1/kv/fn.std/user").await;
    assert_eq!((status, value.as_str()), (StatusCode::OK, "ada"));
    assert_eq!(call(c, Method::GET, "/exists/user", "").await.1, "true");
    assert_eq!(
        call(c, Method::DELETE, "/kv/user", "").await.0,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        call(a, Method::GET, "/kv/user", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(b, Method::GET, "/exists/user", "").await.1, "false");

    // wasi:keyvalue/atomics: concurrent increments from every node lose nothing.
    let incs = (0..12).map(|i| {
        let n = all[i % 3];
        async move { call(n, Method::POST, "/incr/hits?by=2", "").await }
    });
    for (status, body) in futures::future::join_all(incs).await {
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    assert_eq!(call(a, Method::GET, "/kv/hits", "").await.1, "24");
    // A value that is not a number is refused with a clear error.
    call(a, Method::PUT, "/kv/word", "seven").await;
    let (status, body) = call(b, Method::POST, "/incr/word", "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("not a number"), "{body}");

    // wasi:keyvalue/batch.
    assert_eq!(
        call(a, Method::POST, "/batch", "").await,
        (StatusCode::OK, "a=1 b=2 zz=-".into())
    );
    assert_eq!(
        call(b, Method::GET, "/kv/a", "").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(call(b, Method::GET, "/kv/c", "").await.1, "3");

    // list-keys, a page at a time (1,000 keys a page): 1,500 keys written over the API.
    for i in 0..1500 {
        let (status, body) =
            crate::replication::put(a, "fn.std", &format!("k{i:04}"), "v", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let (status, keys) = call(c, Method::GET, "/keys", "").await;
    assert_eq!(status, StatusCode::OK);
    let keys: Vec<&str> = keys.lines().collect();
    let mut want: Vec<String> = (0..1500).map(|i| format!("k{i:04}")).collect();
    want.extend(["c", "hits", "word"].map(String::from));
    want.sort();
    assert_eq!(keys, want);

    // Only the function's own bucket opens.
    let (status, body) = call(a, Method::GET, "/open/other", "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("open it as \"default\""), "{body}");

    // A redeploy with other configuration is read at once, and a rollback brings back the
    // previous version's.
    a.deploy_ok("std", bytes, &[("config", r#"{"greeting":"bonjour"}"#)])
        .await;
    assert_eq!(
        call(a, Method::GET, "/config/greeting", "").await.1,
        "bonjour"
    );
    let r = a
        .req(Method::POST, "/v1/functions/std/rollback")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        call(a, Method::GET, "/config/greeting", "").await.1,
        "hello"
    );

    // Bad configuration is refused at deploy.
    let (status, body) = a
        .deploy_with("std2", guest("guest-standard"), &[("config", r#"{"n":1}"#)])
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.to_string().contains("JSON object of strings"),
        "{body}"
    );
}
