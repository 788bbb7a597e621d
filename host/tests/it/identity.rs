//! Node identity on a running cluster: a renewed certificate is taken up without a restart
//! (and a wrong one refused), an expiring one is warned about, and a denied node is refused by
//! every node until it is allowed again.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use weft_host::membership::MemberState;
use weft_host::transport::ClusterDir;

use crate::cluster::{member, new_cluster, start_cluster_with, state_of, wait_converged};
use crate::harness::{TestNode, json_of, metric_sum, wait_for};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_presented_to_new_connections_without_a_restart() {
    let cluster = new_cluster();
    let dir = ClusterDir::new(cluster.path());
    let n1: weft_host::id::NodeId = "n1".parse().unwrap();
    // n1 starts with a certificate that runs out in 20 s.
    let now = time::OffsetDateTime::now_utc();
    let first_until = now + time::Duration::seconds(20);
    dir.issue_valid(&n1, Some((now - time::Duration::hours(1), first_until)))
        .unwrap();
    let nodes = start_cluster_with(cluster.path(), 2, |_, c| {
        c.cluster.transport.certificate_check_interval = Duration::from_millis(100);
    })
    .await;
    let (a, b) = (&nodes[0], &nodes[1]);
    wait_converged(&[a, b], 2).await;
    assert_eq!(b.metric("weft_tls_certificate_expiring").await, Some(1.0));
    assert_eq!(a.metric("weft_tls_certificate_expiring").await, Some(0.0));
    let left = b
        .metric("weft_tls_certificate_expires_in_seconds")
        .await
        .unwrap();
    assert!((0.0..=20.0).contains(&left), "{left}");

    // Renewed on disk: n1 takes it up.
    dir.issue(&n1).unwrap();
    let renewed = "weft_tls_certificate_reloads_total{result=\"renewed\"}";
    wait_for(DEADLINE, "n1 takes up its renewed certificate", || async {
        (b.metric(renewed).await == Some(1.0)).then_some(())
    })
    .await;
    assert_eq!(b.metric("weft_tls_certificate_expiring").await, Some(0.0));

    // Another node's certificate put in n1's files is refused; n1 keeps its own.
    let files = cluster.path().join("nodes");
    for ext in ["pem", "key"] {
        std::fs::copy(
            files.join(format!("n0.{ext}")),
            files.join(format!("n1.{ext}")),
        )
        .unwrap();
    }
    let refused = "weft_tls_certificate_reloads_total{result=\"refused\"}";
    wait_for(
        DEADLINE,
        "n1 refuses n0's certificate as its own",
        || async { (b.metric(refused).await == Some(1.0)).then_some(()) },
    )
    .await;
    assert_eq!(
        b.metric("weft_tls_certificate_reloads_total{result=\"renewed\"}")
            .await,
        Some(1.0),
        "the refused files count as no renewal"
    );

    // Once the first certificate has run out, a new node that knows only n1 joins through it:
    // n1 presents the renewed certificate to the new connection (the first would be refused).
    wait_for(DEADLINE, "n1's first certificate runs out", || async {
        (time::OffsetDateTime::now_utc() > first_until + time::Duration::seconds(1)).then_some(())
    })
    .await;
    let seed = b.node().quic_addr;
    let c = TestNode::start_with(|c| member(c, cluster.path(), "n2", &[seed])).await;
    wait_converged(&[a, b, &c], 3).await;
}

/// Restarts `n2` of `cluster` on its address, rejoining the members it remembers.
async fn restart_n2(n2: TestNode, cluster: &std::path::Path, ignore_deny_list: bool) -> TestNode {
    let quic = n2.node().quic_addr;
    n2.restart_with(|c| {
        member(c, cluster, "n2", &[]);
        c.cluster.listen = quic;
        c.cluster.transport.ignore_deny_list = ignore_deny_list;
    })
    .await
}

/// Denies `n2` through the first node.
async fn deny_n2(through: &TestNode) {
    let r = through
        .req(Method::PUT, "/v1/denied/n2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_without_the_deny_list_a_denied_node_rejoins() {
    let (cluster, mut nodes) = crate::replication::ring_with(3, |_, c| {
        c.cluster.transport.ignore_deny_list = true;
    })
    .await;
    let n2 = nodes.pop().unwrap();
    let (a, b) = (&nodes[0], &nodes[1]);
    deny_n2(a).await;
    let (_, list) = json_of(b.req(Method::GET, "/v1/denied").send().await.unwrap()).await;
    assert_eq!(list[0]["node"], "n2", "{list}");
    let n2 = restart_n2(n2, cluster.path(), true).await;
    wait_converged(&[a, b, &n2], 3).await;
    assert_eq!(
        metric_sum(&[a, b], "weft_handshakes_denied_total").await,
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_node_is_refused_everywhere_and_cannot_rejoin_until_allowed() {
    let (cluster, mut nodes) = crate::replication::ring_with(3, |_, _| {}).await;
    let denied = nodes.pop().unwrap();
    let (a, b) = (&nodes[0], &nodes[1]);

    let (status, body) = json_of(a.req(Method::PUT, "/v1/denied/n0").send().await.unwrap()).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "denying the node asked: {body}"
    );
    let (status, body) = json_of(
        a.req(Method::PUT, "/v1/denied/n2")
            .query(&[("reason", "decommissioned")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, list) = json_of(b.req(Method::GET, "/v1/denied").send().await.unwrap()).await;
    assert_eq!(list[0]["node"], "n2", "{list}");
    assert_eq!(list[0]["reason"], "decommissioned", "{list}");

    let gone = |n: &TestNode| !matches!(state_of(n, "n2"), Some((MemberState::Alive, _)));
    wait_for(DEADLINE, "n0 and n1 no longer count n2 alive", || async {
        (gone(a) && gone(b)).then_some(())
    })
    .await;

    // n2 restarted, as a decommissioned node brought back would be: its attempts to rejoin
    // are refused at the handshake, and it stays out.
    let denials = "weft_handshakes_denied_total";
    let before = metric_sum(&[a, b], denials).await;
    let denied = restart_n2(denied, cluster.path(), false).await;
    wait_for(DEADLINE, "n2's handshakes refused again", || async {
        (metric_sum(&[a, b], denials).await >= before + 3.0).then_some(())
    })
    .await;
    assert!(gone(a) && gone(b), "a denied node rejoined");
    assert!(metric_sum(&[a, b], "weft_handshakes_denied_total").await >= before + 3.0);

    // Allowed again, it rejoins by itself.
    let r = b.req(Method::DELETE, "/v1/denied/n2").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = b.req(Method::DELETE, "/v1/denied/n2").send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    wait_converged(&[a, b, &denied], 3).await;
}
