//! The metadata group between real nodes over QUIC: forming a group, committing through any
//! member, linearizable reads, and a late member catching up from a streamed snapshot.

use std::time::Duration;

use weft_host::consensus::{Command, LockCommand, LockOutcome, Outcome, RaftId};

use crate::cluster::{member, new_cluster, start_cluster_with, wait_converged};
use crate::harness::{TestNode, wait_for};

const ELECTION: Duration = Duration::from_secs(20);

fn write(key: &str, value: &str, expect: Option<u64>) -> Command {
    Command::Write {
        key: key.into(),
        value: Some(value.as_bytes().to_vec()),
        expect,
    }
}

/// Waits until the voters of `nodes` agree on one leader and the group has `voters` voters
/// and `learners` learners; returns the leader's id.
pub async fn wait_group(nodes: &[&TestNode], voters: usize, learners: usize) -> RaftId {
    wait_for(
        ELECTION,
        &format!("a group of {voters} voters and {learners} learners with one leader"),
        || async {
            let ms: Vec<_> = nodes.iter().map(|t| t.node().consensus.metrics()).collect();
            let leader = ms[0].current_leader?;
            let agreed = ms.iter().all(|m| {
                let g = m.membership_config.membership();
                m.current_leader == Some(leader)
                    && g.voter_ids().count() == voters
                    && g.learner_ids().count() == learners
            });
            agreed.then_some(leader)
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_forms_by_itself_commits_through_any_member_and_a_late_member_catches_up() {
    let cluster = new_cluster();
    // Snapshots every 10 entries, none kept behind them: a member added later must take a
    // snapshot.
    let fast = |c: &mut weft_host::NodeConfig| {
        c.cluster.consensus.snapshot_every = 10;
        c.cluster.consensus.keep_after_snapshot = 0;
    };
    let nodes = start_cluster_with(cluster.path(), 3, |_, c| fast(c)).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    wait_converged(&all, 3).await;
    let ids: Vec<RaftId> = nodes.iter().map(|t| t.node().consensus.id()).collect();
    let unique: std::collections::BTreeSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 3, "every node has its own id: {ids:?}");

    // The first node formed the group; the leader added the others and made them voters.
    let leader = wait_group(&all, 3, 0).await;
    assert!(ids.contains(&leader));
    // `/v1/status` shows the group: every voter, the leader by name.
    let leader_name = nodes[ids.iter().position(|i| *i == leader).unwrap()]
        .node()
        .name
        .to_string();
    for t in &nodes {
        let (code, s) = t.json(t.anon(reqwest::Method::GET, "/v1/status")).await;
        assert_eq!(code, reqwest::StatusCode::OK, "{s}");
        let g = &s["consensus"];
        assert_eq!(g["leader"], leader_name.as_str(), "{g}");
        let mut voters: Vec<&str> = g["voters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap())
            .collect();
        voters.sort();
        assert_eq!(voters, ["n0", "n1", "n2"], "{g}");
        assert_eq!(
            s["node"],
            t.node().name.as_str(),
            "the ring's fields are still there"
        );
    }

    // Writes through every voter, forwarded to the leader: each is applied at its own index,
    // in order.
    let mut last = 0;
    for (i, t) in nodes[..3].iter().enumerate() {
        let (index, outcome) = t
            .node()
            .consensus
            .propose(write("k", &format!("v{i}"), None))
            .await
            .unwrap();
        assert!(index > last, "{index} after {last}");
        assert_eq!(outcome, Outcome::Written { revision: index });
        last = index;
    }
    // A conditional write against an old revision changes nothing; against the current one
    // it applies.
    let (_, stale) = nodes[1]
        .node()
        .consensus
        .propose(write("k", "stale", Some(1)))
        .await
        .unwrap();
    assert_eq!(stale, Outcome::Conflict { current: last });
    let (index, outcome) = nodes[2]
        .node()
        .consensus
        .propose(write("k", "v3", Some(last)))
        .await
        .unwrap();
    assert_eq!(outcome, Outcome::Written { revision: index });
    // A linearizable read on every voter sees the last write.
    for t in &nodes[..3] {
        let got = t
            .node()
            .consensus
            .read(|s| s.registers.get("k").map(|x| (x.value.clone(), x.revision)))
            .await
            .unwrap();
        assert_eq!(got, Some((b"v3".to_vec(), index)), "{}", t.node().name);
    }

    // Locks through the group: the token is the index of the granting entry, and the waiter
    // that takes over gets a larger one.
    let lock = |c: LockCommand| Command::Lock(c);
    let acquire = |holder: &str| {
        lock(LockCommand::Acquire {
            key: "job-7".into(),
            holder: holder.into(),
            lease_ms: 10_000,
            queue: true,
        })
    };
    let (index, granted) = nodes[1]
        .node()
        .consensus
        .propose(acquire("p"))
        .await
        .unwrap();
    assert_eq!(
        granted,
        Outcome::Lock(LockOutcome::Granted { token: index })
    );
    let (_, queued) = nodes[2]
        .node()
        .consensus
        .propose(acquire("q"))
        .await
        .unwrap();
    assert_eq!(queued, Outcome::Lock(LockOutcome::Queued { ahead: 0 }));
    let release = lock(LockCommand::Release {
        key: "job-7".into(),
        token: index,
    });
    let (handed, outcome) = nodes[0].node().consensus.propose(release).await.unwrap();
    assert!(handed > index);
    assert_eq!(
        outcome,
        Outcome::Lock(LockOutcome::Done {
            next: Some(("q".into(), handed))
        })
    );

    // Enough entries for several snapshots, with the log behind them purged.
    for i in 0..40 {
        let key = format!("r{i}");
        nodes[i % 3]
            .node()
            .consensus
            .propose(write(&key, "x", Some(0)))
            .await
            .unwrap();
    }
    let on_leader = nodes
        .iter()
        .find(|t| t.node().consensus.id() == leader)
        .unwrap();
    let m = on_leader.node().consensus.metrics();
    assert!(m.snapshot.is_some(), "the leader took a snapshot");
    assert!(m.purged.is_some(), "and purged the log behind it");
    assert_eq!(on_leader.metric("weft_raft_leader").await, Some(1.0));
    // Applied entries only grow: at least as many as the metrics read above.
    assert!(
        on_leader.metric("weft_raft_applied_entries").await
            >= m.last_applied.map(|l| l.index as f64 + 1.0)
    );
    assert!(on_leader.metric("weft_raft_snapshot_entries").await >= Some(10.0));

    // A fourth node joins: the leader adds it as a learner (4 nodes keep 3 voters). Its log
    // starts after the purge, so it catches up from the leader's snapshot, streamed, and
    // then the log.
    let fourth = TestNode::start_with(|c| {
        member(c, cluster.path(), "n3", &[nodes[0].node().quic_addr]);
        fast(c);
    })
    .await;
    let late = fourth.node();
    let (code, s) = fourth
        .json(fourth.anon(reqwest::Method::GET, "/v1/status"))
        .await;
    assert_eq!(code, reqwest::StatusCode::OK, "{s}");
    wait_for(
        ELECTION,
        "the late member holding every register",
        || async {
            let have = late.consensus.read_local(|s| s.registers.scan("r").count());
            (have == 40 && late.consensus.metrics().snapshot.is_some()).then_some(())
        },
    )
    .await;
    assert_eq!(
        late.consensus
            .read_local(|s| s.registers.get("k").map(|x| x.value.clone())),
        Some(b"v3".to_vec())
    );
    // The lock table came with the snapshot.
    assert_eq!(
        late.consensus
            .read_local(|s| s.locks.get("job-7").map(|l| (l.holder.clone(), l.token))),
        Some(("q".to_string(), handed))
    );
    assert!(fourth.metric("weft_raft_snapshots_installed_total").await >= Some(1.0));
    assert!(on_leader.metric("weft_raft_snapshots_built_total").await >= Some(1.0));
    let mut all = all;
    all.push(&fourth);
    wait_group(&all, 3, 1).await;
    let (_, s) = fourth
        .json(fourth.anon(reqwest::Method::GET, "/v1/status"))
        .await;
    assert_eq!(s["consensus"]["role"], "learner", "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_member_keeps_its_id_and_everything_committed() {
    // One node, its own one-voter group; snapshots every 10 entries so the restart loads a
    // snapshot and replays the log after it.
    let snapshots = |c: &mut weft_host::NodeConfig| {
        c.cluster.consensus.snapshot_every = 10;
        c.cluster.consensus.keep_after_snapshot = 3;
    };
    let t = TestNode::start_with(snapshots).await;
    let id = t.node().consensus.id();
    // A lone node with nothing to join forms its own group.
    wait_for(ELECTION, "this node leading its group", || async {
        (t.node().consensus.metrics().current_leader == Some(id)).then_some(())
    })
    .await;
    let mut last = 0;
    for i in 0..25 {
        let (index, _) = t
            .node()
            .consensus
            .propose(write(&format!("r{i:02}"), &format!("v{i}"), None))
            .await
            .unwrap();
        last = index;
    }
    assert!(t.node().consensus.metrics().snapshot.is_some());

    let t = t.restart_with(snapshots).await;
    assert_eq!(t.node().consensus.id(), id, "the id is kept");
    wait_for(ELECTION, "this node leading its group again", || async {
        (t.node().consensus.metrics().current_leader == Some(id)).then_some(())
    })
    .await;
    let (count, r24) = t
        .node()
        .consensus
        .read(|s| {
            let r24 = s
                .registers
                .get("r24")
                .map(|r| (r.value.clone(), r.revision));
            (s.registers.scan("r").count(), r24)
        })
        .await
        .unwrap();
    assert_eq!(count, 25);
    assert_eq!(r24, Some((b"v24".to_vec(), last)));
    // And it goes on committing after the entries it had.
    let (index, _) = t
        .node()
        .consensus
        .propose(write("after", "x", Some(0)))
        .await
        .unwrap();
    assert!(index > last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_quorum_deploys_and_locks_answer_503_while_invocations_and_kv_go_on() {
    let cluster = new_cluster();
    let quick = |c: &mut weft_host::NodeConfig| {
        c.cluster.consensus.propose_timeout = Duration::from_secs(1);
    };
    let mut nodes = start_cluster_with(cluster.path(), 3, |_, c| quick(c)).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    wait_converged(&all, 3).await;
    wait_group(&all, 3, 0).await;
    nodes[0].deploy("hello", weft_host::plugins::HELLO).await;
    // Two of the three voters stop: the one left has no quorum.
    let last = nodes.remove(2);
    for t in nodes {
        t.stop().await;
    }
    let (code, body) = last
        .deploy_with("other", weft_host::plugins::HELLO.to_vec(), &[])
        .await;
    // (Here the module's blob, which needs two copies, is refused first.)
    assert_eq!(code, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let says = "the metadata group has no leader that can take this now (no leader with a quorum of voters answered within 1000 ms); try again shortly";
    let (code, body) = last
        .json(last.req(reqwest::Method::DELETE, "/v1/functions/hello"))
        .await;
    assert_eq!(code, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], says);
    let (code, body) = last
        .json(last.req(reqwest::Method::POST, "/v1/locks/k"))
        .await;
    assert_eq!(code, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error"], says);
    let (code, body) = last
        .json(last.req(reqwest::Method::GET, "/v1/functions"))
        .await;
    assert_eq!(code, reqwest::StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // This node's copy still answers when asked for, and serves invocations.
    let (code, body) = last
        .json(last.req(reqwest::Method::GET, "/v1/functions?local=true"))
        .await;
    assert_eq!(code, reqwest::StatusCode::OK, "{body}");
    assert_eq!(body[0]["name"], "hello", "{body}");
    last.assert_hello_serves().await;
    // The key-value store keeps its own quorums: one replica is enough when asked for, once
    // the ring has settled (while the ring from before the two left is still consulted, its
    // set needs enough answers to overlap reads made under it: 503 meanwhile, by design).
    crate::harness::wait_for(Duration::from_secs(30), "a w=1 write accepted", || async {
        let (code, _) = last
            .text(
                last.req(reqwest::Method::PUT, "/v1/kv/notes/k?w=1")
                    .body("v"),
            )
            .await;
        (code == reqwest::StatusCode::OK).then_some(())
    })
    .await;
    let (code, body) = last.get("/v1/kv/notes/k?r=1").await;
    assert_eq!((code, body.as_str()), (reqwest::StatusCode::OK, "v"));
}
