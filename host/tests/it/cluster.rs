//! Clusters of in-process nodes over real QUIC on loopback: joining, the member views,
//! leaving, rejoining after a restart, and what the transport refuses.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use reqwest::StatusCode;
use tempfile::TempDir;
use weft_host::NodeConfig;
use weft_host::config::{MembershipConfig, ReplicationConfig};
use weft_host::membership::MemberState;
use weft_host::membership::wire::{MembershipWire, Request, Response};
use weft_host::rpc::{self, Wire};
use weft_host::transport::frame::{self, ClusterId, HEADER_LEN, Kind};
use weft_host::transport::testing::{self, ClientCert};
use weft_host::transport::{ClusterDir, Credentials};

use crate::harness::{TestNode, wait_for};

const CONVERGE: Duration = Duration::from_secs(20);

/// A new cluster directory.
pub fn new_cluster() -> TempDir {
    let dir = tempfile::tempdir().unwrap();
    ClusterDir::new(dir.path()).init().unwrap();
    dir
}

/// Makes `c` a member of `cluster` named `name`, joining `seeds`, with fast test timings.
pub fn member(c: &mut NodeConfig, cluster: &Path, name: &str, seeds: &[SocketAddr]) {
    c.cluster.dir = Some(cluster.to_path_buf());
    c.cluster.name = Some(name.to_string());
    c.cluster.join = seeds.to_vec();
    c.cluster.membership = MembershipConfig::test();
    c.replication = ReplicationConfig::test();
}

/// Starts `n` nodes of `cluster`, each joining the first.
pub async fn start_cluster(cluster: &Path, n: usize) -> Vec<TestNode> {
    start_cluster_with(cluster, n, |_, _| {}).await
}

/// Starts `n` nodes of `cluster` (`n0`, `n1`, ...), each joining the first, with `f`
/// adjusting the config of node `i` after the test defaults.
pub async fn start_cluster_with(
    cluster: &Path,
    n: usize,
    f: impl Fn(usize, &mut NodeConfig),
) -> Vec<TestNode> {
    let mut nodes: Vec<TestNode> = Vec::new();
    for i in 0..n {
        let seeds: Vec<SocketAddr> = nodes
            .first()
            .map(|f| f.node().quic_addr)
            .into_iter()
            .collect();
        let node = TestNode::start_with(|c| {
            member(c, cluster, &format!("n{i}"), &seeds);
            f(i, c);
        })
        .await;
        nodes.push(node);
    }
    nodes
}

/// Waits until every node in `nodes` sees exactly `alive` live members.
pub async fn wait_converged(nodes: &[&TestNode], alive: usize) {
    wait_for(
        CONVERGE,
        &format!("{alive} alive members everywhere"),
        || async {
            nodes
                .iter()
                .all(|n| {
                    let set = n.node().membership.members();
                    set.count(MemberState::Alive) == alive && set.count(MemberState::Suspect) == 0
                })
                .then_some(())
        },
    )
    .await;
}

/// The state of `name` in `node`'s view.
pub fn state_of(node: &TestNode, name: &str) -> Option<(MemberState, u64)> {
    node.node()
        .membership
        .members()
        .members
        .iter()
        .find(|m| m.node.as_str() == name)
        .map(|m| (m.state, m.bump))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_converge_leave_and_rejoin_after_restart() {
    let cluster = new_cluster();
    let mut nodes = start_cluster(cluster.path(), 5).await;
    wait_converged(&nodes.iter().collect::<Vec<_>>(), 5).await;

    // The members view, over HTTP.
    let (status, body) = nodes[2].get("/v1/members").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 5, "{body}");
    assert_eq!(
        members.iter().filter(|m| m["self"] == true).count(),
        1,
        "{body}"
    );
    assert_eq!(members[0]["node"], "n2", "this node comes first: {body}");
    for m in members {
        assert_eq!(m["state"], "alive", "{body}");
        assert!(
            m["http"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{body}"
        );
        assert!(
            m["addr"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{body}"
        );
    }
    assert_eq!(
        nodes[0].metric("weft_members{state=\"alive\"}").await,
        Some(5.0)
    );
    assert!(
        nodes[0]
            .metric("weft_gossip_bytes_total{direction=\"sent\"}")
            .await
            > Some(0.0)
    );
    // Connections form as members probe each other; then every peer has an RTT.
    wait_for(CONVERGE, "an RTT for every peer", || async {
        let set = nodes[2].node().membership.members();
        set.members
            .iter()
            .all(|m| m.is_self || m.rtt_ms.is_some())
            .then_some(())
    })
    .await;
    // Free capacity is gossiped too (16 slots in the test config, all idle).
    wait_for(CONVERGE, "every member's free capacity known", || async {
        let set = nodes[1].node().membership.members();
        set.members.iter().all(|m| m.free == Some(16)).then_some(())
    })
    .await;

    // A node that leaves on purpose is seen down by the others at once, not after a suspicion.
    let leaver = nodes.pop().unwrap();
    let leaver_dir = leaver.stop().await;
    wait_for(CONVERGE, "n4 down everywhere", || async {
        nodes
            .iter()
            .all(|n| state_of(n, "n4").map(|s| s.0) == Some(MemberState::Down))
            .then_some(())
    })
    .await;
    drop(leaver_dir);

    // A restarted node rejoins the members it remembers, with no seed given, under a newer identity.
    let (_, old_bump) = state_of(&nodes[0], "n3").unwrap();
    let n3 = nodes.pop().unwrap();
    let quic = n3.node().quic_addr;
    let cluster_path = cluster.path().to_path_buf();
    let n3 = n3
        .restart_with(|c| {
            member(c, &cluster_path, "n3", &[]);
            c.cluster.listen = quic;
        })
        .await;
    nodes.push(n3);
    wait_for(CONVERGE, "the restarted n3 alive everywhere", || async {
        nodes
            .iter()
            .all(|n| {
                matches!(state_of(n, "n3"), Some((MemberState::Alive, bump)) if bump > old_bump)
                    && n.node().membership.members().count(MemberState::Alive) == 4
            })
            .then_some(())
    })
    .await;
}

/// What the node at `addr` answers to one raw stream from a client presenting `cert`.
pub async fn answer(
    addr: SocketAddr,
    trust: &Credentials,
    cert: ClientCert<'_>,
    bytes: &[u8],
) -> (Kind, String) {
    let resp = testing::exchange(addr, trust, cert, bytes, None)
        .await
        .expect("a certified client gets an answer");
    let h = frame::decode_header(&resp, trust.cluster, 1 << 20).expect("a frame back");
    (
        h.kind,
        String::from_utf8_lossy(&resp[HEADER_LEN..]).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_bad_frames_are_refused_and_the_node_keeps_serving() {
    let cluster = new_cluster();
    let dir = ClusterDir::new(cluster.path());
    let a = TestNode::start_with(|c| member(c, cluster.path(), "a", &[])).await;
    let addr = a.node().quic_addr;
    let probe = dir.load(&dir_issue(&dir, "probe")).unwrap();
    let ours = probe.cluster;

    // A well-formed ping from a certified client is answered.
    let ping = frame::encode(
        ours,
        Kind::Request,
        &rpc::encode_request::<MembershipWire>(&Request::Ping { suspected: None }),
    );
    let (kind, _) = answer(addr, &probe, ClientCert::From(&probe), &ping).await;
    assert_eq!(kind, Kind::Response);
    let resp = testing::exchange(addr, &probe, ClientCert::From(&probe), &ping, None)
        .await
        .unwrap();
    match rpc::decode_response::<MembershipWire>(&resp[HEADER_LEN..]).unwrap() {
        Response::Pong { node, .. } => assert_eq!(node.as_str(), "a"),
        other => panic!("expected a pong, got {other:?}"),
    }

    // Clients without a certificate from this cluster's CA get no connection at all.
    let others = new_cluster();
    let other_dir = ClusterDir::new(others.path());
    let stranger = other_dir.load(&dir_issue(&other_dir, "stranger")).unwrap();
    let old = {
        let name = "old".parse().unwrap();
        dir.issue_valid(
            &name,
            Some((
                time::OffsetDateTime::now_utc() - time::Duration::days(400),
                time::OffsetDateTime::now_utc() - time::Duration::days(30),
            )),
        )
        .unwrap();
        dir.load(&name).unwrap()
    };
    let accepted = a.metric("weft_frames_accepted_total").await.unwrap();
    let failed = a.metric("weft_handshakes_failed_total").await.unwrap();
    let gossip = frame::encode(ours, Kind::Gossip, b"hello");
    for (cert, what) in [
        (ClientCert::From(&stranger), "another cluster's certificate"),
        (ClientCert::From(&old), "an expired certificate"),
        (ClientCert::None, "no certificate"),
    ] {
        let r = testing::exchange(addr, &probe, cert, &ping, Some(&gossip)).await;
        assert!(r.is_err(), "a client with {what} got an answer: {r:?}");
    }
    wait_for(CONVERGE, "three refused handshakes counted", || async {
        (a.metric("weft_handshakes_failed_total").await.unwrap() >= failed + 3.0).then_some(())
    })
    .await;
    assert_eq!(
        a.metric("weft_handshakes_failed_total").await,
        Some(failed + 3.0)
    );
    assert_eq!(
        a.metric("weft_frames_accepted_total").await.unwrap(),
        accepted,
        "no frame from a stranger may be accepted"
    );

    // A whole node of another cluster cannot join.
    let intruder = TestNode::start_with(|c| member(c, others.path(), "intruder", &[addr])).await;
    wait_for(CONVERGE, "the intruder's attempts refused", || async {
        (a.metric("weft_handshakes_failed_total").await.unwrap() >= failed + 5.0).then_some(())
    })
    .await;
    assert_eq!(a.node().membership.members().members.len(), 1);
    assert_eq!(intruder.node().membership.members().members.len(), 1);

    // Certified clients sending bad frames get an error frame naming the problem.
    let mut future = ping.clone();
    future[2..4].copy_from_slice(&99u16.to_be_bytes());
    let mut truncated = frame::header(ours, Kind::Request, 100).to_vec();
    truncated.extend_from_slice(&[0; 10]);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (future, "protocol version 99"),
        (
            frame::encode(ClusterId([7; 8]), Kind::Request, b"x"),
            "cluster 0707070707070707",
        ),
        (truncated, "truncated frame"),
        (
            frame::header(ours, Kind::Request, 1 << 30).to_vec(),
            "exceeds the limit",
        ),
        (b"GET / HTTP/1.1\r\n\r\n".to_vec(), "bad magic"),
        (
            frame::encode(ours, Kind::Request, &[0xff]),
            "malformed request (1 bytes): no service tag",
        ),
        (
            frame::encode(ours, Kind::Request, &[0xff, 1, 0]),
            "no service with tag 255",
        ),
        (
            frame::encode(ours, Kind::Request, &[MembershipWire::TAG, 99, 0]),
            "the membership service here speaks version 1, and this request version 99",
        ),
        (
            frame::encode(
                ours,
                Kind::Request,
                &[MembershipWire::TAG, MembershipWire::VERSION, 0xff, 0xff],
            ),
            "malformed membership request",
        ),
        (
            frame::encode(ours, Kind::Gossip, b"x"),
            "expected a request frame",
        ),
    ];
    let rejected = a.metric("weft_frames_rejected_total").await.unwrap();
    for (bytes, expected) in cases {
        let (kind, msg) = answer(addr, &probe, ClientCert::From(&probe), &bytes).await;
        assert_eq!(kind, Kind::Error, "{expected}: {msg}");
        assert!(msg.contains(expected), "expected `{expected}` in `{msg}`");
    }
    // The five whose header fails a check are counted as rejected frames.
    assert_eq!(
        a.metric("weft_frames_rejected_total").await,
        Some(rejected + 5.0)
    );

    // Random bytes on the UDP port, short and long, never crash the node.
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..400 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let len = 1 + (seed as usize % 1500);
        let mut junk: Vec<u8> = (0..len)
            .map(|j| (seed >> (j % 56)) as u8 ^ j as u8)
            .collect();
        if i % 4 == 0 {
            junk[0] = 0xc0; // a QUIC long header, so the parser goes further
        }
        testing::send_udp(addr, &junk).await.unwrap();
    }
    let (kind, _) = answer(addr, &probe, ClientCert::From(&probe), &ping).await;
    assert_eq!(kind, Kind::Response, "the node answers after the junk");
    let (status, _) = a.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
}

/// Issues a certificate for `name` in `dir`.
pub fn dir_issue(dir: &ClusterDir, name: &str) -> weft_host::id::NodeId {
    let id = name.parse().unwrap();
    dir.issue(&id).unwrap();
    id
}

/// A service of the test's own, defined here alone: registering it on a node's router and
/// calling it from another node needs no edit of any shared file.
struct EchoWire;

impl Wire for EchoWire {
    const NAME: &'static str = "echo";
    const TAG: u8 = 200;
    const VERSION: u8 = 1;
    type Request = String;
    type Response = (String, String);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_of_the_tests_own_is_called_between_two_nodes() {
    use futures::FutureExt;
    let cluster = new_cluster();
    let nodes = start_cluster(cluster.path(), 2).await;
    let (a, b) = (nodes[0].node(), nodes[1].node());
    let request = "hello".to_string();
    // Not registered yet: refused with the reason.
    let e = rpc::call::<EchoWire>(a.transport(), b.quic_addr, &request)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no service with tag 200"), "{e}");
    let me = b.name.clone();
    b.router()
        .register::<EchoWire, _>(move |caller, text: String| {
            let me = me.clone();
            async move {
                let from = caller.node.map(|n| n.to_string()).unwrap_or_default();
                Ok((format!("{me} heard {text}"), from))
            }
            .boxed()
        });
    let (echo, from) = rpc::call::<EchoWire>(a.transport(), b.quic_addr, &request)
        .await
        .unwrap();
    assert_eq!(echo, "n1 heard hello");
    assert_eq!(
        from, "n0",
        "the caller's certified name reaches the service"
    );
}
