//! Scoped tokens: every route against every kind of token (table-driven), tokens honoured and
//! revoked on every node as soon as the change returns, expiry, and the CLI (whose node never
//! logs a token).

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::harness::{TestNode, json_of, wait_for};

/// What a route needs: nothing (anyone may call it), or a scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Needs {
    Anyone,
    Read,
    Invoke,
    Deploy,
    Admin,
}
use Needs::*;

/// Every route of `api::router`: its pattern as written there, a request that matches it, and
/// what it needs. A route added to the router without a row here fails
/// `every_route_is_in_the_table`.
const ROUTES: &[(&str, Method, &str, Needs)] = &[
    ("/v1/functions", Method::GET, "/v1/functions", Anyone),
    (
        "/v1/functions/{name}",
        Method::GET,
        "/v1/functions/t-fn",
        Anyone,
    ),
    (
        "/v1/functions/{name}",
        Method::PUT,
        "/v1/functions/t-fn",
        Deploy,
    ),
    (
        "/v1/functions/{name}",
        Method::DELETE,
        "/v1/functions/no-such-fn",
        Deploy,
    ),
    (
        "/v1/functions/{name}/rollback",
        Method::POST,
        "/v1/functions/no-such-fn/rollback",
        Deploy,
    ),
    ("/v1/jobs", Method::GET, "/v1/jobs", Read),
    (
        "/v1/jobs",
        Method::POST,
        "/v1/jobs?function=no-such-fn",
        Invoke,
    ),
    (
        "/v1/jobs/{id}",
        Method::GET,
        "/v1/jobs/0123456789abcdef0123456789abcdef",
        Read,
    ),
    (
        "/v1/jobs/{id}",
        Method::DELETE,
        "/v1/jobs/0123456789abcdef0123456789abcdef",
        Invoke,
    ),
    (
        "/v1/jobs/{id}/output",
        Method::GET,
        "/v1/jobs/0123456789abcdef0123456789abcdef/output",
        Read,
    ),
    (
        "/v1/jobs/{id}/cancel",
        Method::POST,
        "/v1/jobs/0123456789abcdef0123456789abcdef/cancel",
        Invoke,
    ),
    (
        "/v1/jobs/input/missing",
        Method::POST,
        "/v1/jobs/input/missing",
        Invoke,
    ),
    (
        "/v1/jobs/input/{digest}",
        Method::PUT,
        "/v1/jobs/input/not-a-digest",
        Invoke,
    ),
    ("/v1/locks", Method::GET, "/v1/locks", Read),
    (
        "/v1/locks/{key}",
        Method::POST,
        "/v1/locks/t-lock?lease=1s",
        Invoke,
    ),
    (
        "/v1/locks/{key}",
        Method::DELETE,
        "/v1/locks/t-lock?token=1",
        Invoke,
    ),
    (
        "/v1/locks/{key}/renew",
        Method::POST,
        "/v1/locks/t-lock/renew?token=1",
        Invoke,
    ),
    ("/v1/kv/{ns}", Method::GET, "/v1/kv/fn.t", Read),
    ("/v1/kv/{ns}/{*key}", Method::GET, "/v1/kv/fn.t/k", Read),
    ("/v1/kv/{ns}/{*key}", Method::PUT, "/v1/kv/fn.t/k", Invoke),
    (
        "/v1/kv/{ns}/{*key}",
        Method::DELETE,
        "/v1/kv/fn.t/k",
        Invoke,
    ),
    ("/v1/tokens", Method::GET, "/v1/tokens", Admin),
    ("/v1/tokens", Method::POST, "/v1/tokens", Admin),
    (
        "/v1/tokens/{id}",
        Method::DELETE,
        "/v1/tokens/0123456789ab",
        Admin,
    ),
    ("/v1/denied", Method::GET, "/v1/denied", Admin),
    ("/v1/denied/{node}", Method::PUT, "/v1/denied/nobody", Admin),
    (
        "/v1/denied/{node}",
        Method::DELETE,
        "/v1/denied/nobody",
        Admin,
    ),
    (
        "/v1/test-switches/partition",
        Method::PUT,
        "/v1/test-switches/partition",
        Admin,
    ),
    (
        "/v1/test-switches/register/{key}",
        Method::GET,
        "/v1/test-switches/register/t",
        Admin,
    ),
    (
        "/v1/test-switches/register/{key}",
        Method::PUT,
        "/v1/test-switches/register/t",
        Admin,
    ),
    (
        "/v1/test-switches/registers",
        Method::GET,
        "/v1/test-switches/registers",
        Admin,
    ),
    ("/fn/{name}", Method::GET, "/fn/no-such-fn", Anyone),
    ("/fn/{name}/", Method::POST, "/fn/no-such-fn/", Anyone),
    (
        "/fn/{name}/{*path}",
        Method::GET,
        "/fn/no-such-fn/a/b",
        Anyone,
    ),
    ("/v1/members", Method::GET, "/v1/members", Anyone),
    ("/v1/status", Method::GET, "/v1/status", Anyone),
    ("/healthz", Method::GET, "/healthz", Anyone),
    ("/metrics", Method::GET, "/metrics", Anyone),
];

/// The key-value namespace of a route's request, if it is a key-value route.
fn namespace_of(path: &str) -> Option<&str> {
    let rest = path.strip_prefix("/v1/kv/")?;
    Some(rest.split('/').next().unwrap())
}

#[test]
fn every_route_is_in_the_table() {
    let source = include_str!("../../src/api/mod.rs");
    let mut patterns = Vec::new();
    for (i, _) in source.match_indices(".route(") {
        let after = source[i + ".route(".len()..].trim_start();
        let pattern = after
            .strip_prefix('"')
            .and_then(|a| a.split_once('"'))
            .map(|(p, _)| p)
            .unwrap_or_else(|| panic!("a route whose path is not a literal: {}", &after[..40]));
        patterns.push(pattern);
    }
    assert!(patterns.len() >= 20, "found only {patterns:?}");
    for p in &patterns {
        assert!(
            ROUTES.iter().any(|(pattern, ..)| pattern == p),
            "route {p} is not in the tokens table: say what it needs"
        );
    }
    for (pattern, ..) in ROUTES {
        assert!(patterns.contains(pattern), "{pattern} is no longer a route");
    }
}

/// Creates a token through `node` with the cluster's token; returns its text and id.
async fn create(node: &TestNode, query: &[(&str, &str)]) -> (String, String) {
    let (status, body) = json_of(
        node.req(Method::POST, "/v1/tokens")
            .query(query)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{query:?}: {body}");
    (
        body["token"].as_str().unwrap().to_string(),
        body["id"].as_str().unwrap().to_string(),
    )
}

/// A kind of token the table is tried with: what it is, its text (none: no header), and
/// what it should be granted (none: nothing, 401): a scope and perhaps a namespace.
type Kind = (String, Option<String>, Option<Grant>);
type Grant = (Needs, Option<&'static str>);

/// What `node` answers to the route's request with `token` (none: no header).
async fn answer(
    node: &TestNode,
    method: &Method,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, String) {
    let mut req = node.anon(method.clone(), path);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if *method == Method::PUT || *method == Method::POST {
        // A body no handler takes as a change worth making: each answers 4xx past the check.
        req = req.body("[]");
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.text().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_kind_of_token_as_the_table_says() {
    let (_cluster, nodes) = crate::replication::ring_with(2, |_, _| {}).await;
    let (a, b) = (&nodes[0], &nodes[1]);
    // Tokens are made on one node and presented to the other: each is in the metadata group.
    let mut kinds: Vec<Kind> = vec![
        ("no token".into(), None, None),
        ("a wrong token".into(), Some("not-a-token".into()), None),
        (
            "a token of the right shape that was never made".into(),
            Some(format!("weft_0123456789ab_{}", "0".repeat(64))),
            None,
        ),
        (
            "the cluster's token".into(),
            Some(a.token.clone()),
            Some((Admin, None)),
        ),
    ];
    for (scope, needs) in [
        ("read", Read),
        ("invoke", Invoke),
        ("deploy", Deploy),
        ("admin", Admin),
    ] {
        let (t, _) = create(a, &[("scope", scope)]).await;
        kinds.push((format!("a {scope} token"), Some(t), Some((needs, None))));
    }
    for (scope, needs, ns) in [
        ("read", Read, "fn.t"),
        ("invoke", Invoke, "fn.t"),
        ("invoke", Invoke, "fn.other"),
    ] {
        let (t, _) = create(a, &[("scope", scope), ("namespace", ns)]).await;
        kinds.push((
            format!("a {scope} token for {ns}"),
            Some(t),
            Some((needs, Some(ns))),
        ));
    }
    let (revoked, id) = create(a, &[("scope", "admin")]).await;
    let r = a
        .req(Method::DELETE, &format!("/v1/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    kinds.push(("a revoked admin token".into(), Some(revoked), None));

    let mut checked = 0;
    for (pattern, method, path, needs) in ROUTES {
        for (kind, token, grant) in &kinds {
            let (status, body) = answer(b, method, path, token.as_deref()).await;
            let expected = match (needs, grant) {
                (Anyone, _) => None,
                (_, None) => Some(StatusCode::UNAUTHORIZED),
                (needs, Some((scope, ns))) => {
                    let in_scope = scope >= needs;
                    let in_namespace = ns.is_none() || *ns == namespace_of(path);
                    (!(in_scope && in_namespace)).then_some(StatusCode::FORBIDDEN)
                }
            };
            match expected {
                Some(refused) => {
                    assert_eq!(
                        status, refused,
                        "{method} {path} ({pattern}) with {kind}: {body}"
                    );
                    let error = serde_json::from_str::<Value>(&body).unwrap()["error"]
                        .as_str()
                        .unwrap()
                        .to_string();
                    assert!(!error.is_empty(), "{body}");
                }
                None => assert!(
                    status != StatusCode::UNAUTHORIZED && status != StatusCode::FORBIDDEN,
                    "{method} {path} ({pattern}) with {kind} was refused: {status} {body}"
                ),
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ROUTES.len() * kinds.len());

    // What a refusal says: which scope is needed, which namespace the token is limited to.
    let read = &kinds.iter().find(|k| k.0 == "a read token").unwrap().1;
    let (status, body) = answer(b, &Method::PUT, "/v1/kv/fn.t/k", read.as_deref()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        body.contains("`read`") && body.contains("`invoke`"),
        "{body}"
    );
    let other = &kinds
        .iter()
        .find(|k| k.0 == "a invoke token for fn.other")
        .unwrap()
        .1;
    let (_, body) = answer(b, &Method::GET, "/v1/kv/fn.t/k", other.as_deref()).await;
    assert!(
        body.contains("`fn.other`") && body.contains("`fn.t`"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_works_on_every_node_until_revoked_or_expired_and_lists_without_its_secret() {
    let (_cluster, nodes) = crate::replication::ring_with(3, |_, _| {}).await;
    let (token, id) = create(&nodes[0], &[("scope", "invoke"), ("name", "ci deploys")]).await;
    let put = |n: &TestNode, t: &str| {
        n.anon(Method::PUT, "/v1/kv/shared/k")
            .bearer_auth(t.to_string())
            .body("v")
            .send()
    };
    for n in &nodes {
        assert_eq!(put(n, &token).await.unwrap().status(), StatusCode::OK);
    }
    let (status, list) = json_of(
        nodes[2]
            .req(Method::GET, "/v1/tokens")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap();
    assert_eq!(listed["scope"], "invoke");
    assert_eq!(listed["name"], "ci deploys");
    let secret = token.rsplit('_').next().unwrap();
    assert!(!list.to_string().contains(secret), "{list}");

    // Revoked through one node: the others refuse it as soon as the revocation returns.
    let r = nodes[1]
        .req(Method::DELETE, &format!("/v1/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    for n in &nodes {
        let r = put(n, &token).await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{}", n.url);
    }
    let r = nodes[1]
        .req(Method::DELETE, &format!("/v1/tokens/{id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND, "revoked twice");

    // Bad requests for tokens are refused with what is wrong.
    for (query, says) in [
        (vec![], "scope"),
        (vec![("scope", "root")], "not a scope"),
        (
            vec![("scope", "deploy"), ("namespace", "fn.t")],
            "read or invoke",
        ),
        (
            vec![("scope", "read"), ("expires", "soon")],
            "not a duration",
        ),
        (
            vec![("scope", "read"), ("namespace", "Bad NS")],
            "not a namespace",
        ),
    ] {
        let (status, body) = json_of(
            nodes[0]
                .req(Method::POST, "/v1/tokens")
                .query(&query)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query:?}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(says),
            "{query:?}: {body}"
        );
    }

    // An expiring token works, then is refused as expired on every node.
    let (short, _) = create(&nodes[0], &[("scope", "read"), ("expires", "2s")]).await;
    let get = |n: &TestNode| {
        n.anon(Method::GET, "/v1/kv/shared/k")
            .bearer_auth(short.clone())
            .send()
    };
    assert_eq!(get(&nodes[2]).await.unwrap().status(), StatusCode::OK);
    for n in &nodes {
        wait_for(
            std::time::Duration::from_secs(20),
            "the token expires",
            || async {
                let r = get(n).await.unwrap();
                (r.status() == StatusCode::UNAUTHORIZED).then_some(r)
            },
        )
        .await;
    }
    let (_, body) = json_of(get(&nodes[1]).await.unwrap()).await;
    assert!(
        body["error"].as_str().unwrap().contains("expired"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_lists_and_revokes_tokens_and_the_node_never_logs_one() {
    use crate::faults::{Opts, Proc};
    let cluster = crate::cluster::new_cluster();
    let data = tempfile::tempdir().unwrap();
    let mut node = Proc::start(
        cluster.path(),
        "t1",
        &data.path().join("t1"),
        "127.0.0.1:0".parse().unwrap(),
        &[],
        &Opts::default(),
    )
    .await;
    let admin = std::fs::read_to_string(cluster.path().join("admin.token")).unwrap();
    let weft = |token: &str, args: &[&str]| {
        let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_weft"));
        c.args(args)
            .env("WEFT_NODE", &node.http)
            .env("WEFT_TOKEN", token.trim())
            .env("WEFT_LOG", "debug")
            .env("NO_COLOR", "1");
        c
    };
    let run = async |token: &str, args: &[&str]| {
        crate::harness::output_within(std::time::Duration::from_secs(60), &mut weft(token, args))
            .await
    };
    let out = run(
        &admin,
        &[
            "token",
            "create",
            "--scope",
            "invoke",
            "--namespace",
            "fn.t",
            "--expires",
            "30d",
            "--name",
            "ci",
        ],
    )
    .await;
    let token = crate::cli::ok(&out).trim().to_string();
    let told = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(token.starts_with("weft_"), "{token}");
    assert!(
        told.contains("scope invoke, namespace fn.t, expires 20"),
        "{told}"
    );
    let id = token.split('_').nth(1).unwrap().to_string();

    crate::cli::ok(&run(&token, &["kv", "put", "fn.t", "k", "v"]).await);
    let err = crate::cli::failed(&run(&token, &["kv", "put", "fn.u", "k", "v"]).await);
    assert!(err.contains("403") && err.contains("fn.t"), "{err}");
    let err = crate::cli::failed(&run(&token, &["token", "list"]).await);
    assert!(err.contains("403") && err.contains("admin"), "{err}");

    let list = crate::cli::ok(&run(&admin, &["token", "list"]).await);
    assert!(list.starts_with("ID\tSCOPE"), "{list}");
    let row = list
        .lines()
        .find(|l| l.starts_with(&id))
        .unwrap_or_else(|| panic!("{list}"));
    assert!(
        row.contains("\tinvoke\tfn.t\t") && row.ends_with("\tci"),
        "{row}"
    );
    let json: Value = serde_json::from_str(&crate::cli::ok(
        &run(&admin, &["token", "list", "--json"]).await,
    ))
    .unwrap();
    assert_eq!(json[0]["id"], id.as_str());

    crate::cli::ok(&run(&admin, &["token", "revoke", &id]).await);
    let err = crate::cli::failed(&run(&token, &["kv", "get", "fn.t", "k"]).await);
    assert!(err.contains("401") && err.contains("revoked"), "{err}");
    let err = crate::cli::failed(&run(&admin, &["token", "revoke", &id]).await);
    assert!(err.contains("404"), "{err}");
    let err = crate::cli::failed(&run(&admin, &["token", "create", "--scope", "root"]).await);
    assert!(err.contains("not a scope"), "{err}");

    // The deny list through the CLI (admin only).
    let err = crate::cli::failed(&run(&token, &["cluster", "denied"]).await);
    assert!(err.contains("401"), "{err}");
    crate::cli::ok(
        &run(
            &admin,
            &["cluster", "deny", "old-edge", "--reason", "retired"],
        )
        .await,
    );
    let denied = crate::cli::ok(&run(&admin, &["cluster", "denied"]).await);
    assert!(
        denied.starts_with("NODE\tSINCE\tREASON\nold-edge\t20") && denied.ends_with("\tretired\n"),
        "{denied}"
    );
    crate::cli::ok(&run(&admin, &["cluster", "allow", "old-edge"]).await);
    let denied = crate::cli::ok(&run(&admin, &["cluster", "denied"]).await);
    assert_eq!(denied, "no node is denied\n");
    let err = crate::cli::failed(&run(&admin, &["cluster", "allow", "old-edge"]).await);
    assert!(err.contains("404") && err.contains("not denied"), "{err}");
    let err = crate::cli::failed(&run(&admin, &["cluster", "deny", "t1"]).await);
    assert!(err.contains("400") && err.contains("another node"), "{err}");

    node.kill9().await;
    let log = std::fs::read_to_string(data.path().join("t1/node.log")).unwrap();
    assert!(
        log.contains("token created") && log.contains(&id),
        "the log has no token events:\n{log}"
    );
    let secret = token.rsplit('_').next().unwrap();
    assert!(!log.contains(secret), "the node logged a token's secret");
    assert!(
        !log.contains(admin.trim()),
        "the node logged the cluster's token"
    );
}
