//! The blob service between real nodes: a blob far larger than one frame streams between
//! nodes in pieces, is verified, and a corrupt copy is skipped and replaced; and its control,
//! where the digest check is switched off and the corrupt copy gets through.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use rand::{RngExt, SeedableRng};

use crate::harness::{TestNode, wait_for};
use crate::replication::ring_with;

/// 100 MiB: more than six times the 16 MiB frame cap.
const SIZE: usize = 100 << 20;

/// Three nodes; a random blob of `size` bytes put on node 0 (and so streamed to the two
/// others, all three being its replicas); then node 2 loses its copy, and the first node it
/// will ask holds one with a byte flipped. Returns the nodes, the bytes put, and what node 2
/// reads, with node 2's blob directory trusting what it gets when `trust` is set.
async fn a_corrupt_copy_first_in_line(size: usize, trust: bool) -> Scenario {
    let (cluster, nodes) = ring_with(3, |_, _| {}).await;
    let all: Vec<&TestNode> = nodes.iter().collect();

    let mut bytes = vec![0u8; size];
    rand::rngs::StdRng::seed_from_u64(7).fill(&mut bytes[..]);
    let bytes = Bytes::from(bytes);
    let digest = nodes[0].node().blobs.put(bytes.clone()).await.unwrap();
    assert_eq!(digest, weft_host::id::Digest::of(&bytes));
    wait_for(
        Duration::from_secs(60),
        "every node holding the blob",
        || async {
            all.iter()
                .all(|t| t.node().blobs.dir().verify(digest).is_ok())
                .then_some(())
        },
    )
    .await;
    for t in &nodes[1..] {
        let got = t.node().blobs.stats().bytes_received.load(Relaxed);
        assert_eq!(got, size as u64, "{}", t.node().name);
        assert_eq!(
            t.metric("weft_blob_bytes_received_total").await,
            Some(size as f64)
        );
    }

    let reader = &nodes[2];
    reader.node().blobs.dir().remove(digest).unwrap();
    let me = reader.node().name.clone();
    let first = reader
        .node()
        .placement
        .replicas(digest.as_bytes(), 3)
        .into_iter()
        .find(|n| *n != me)
        .unwrap();
    let bad = nodes.iter().find(|t| t.node().name == first).unwrap();
    let mut corrupt = bytes.to_vec();
    corrupt[size / 2] ^= 0xff;
    bad.node()
        .blobs
        .dir()
        .corrupt_for_tests(digest, &corrupt)
        .unwrap();
    drop(corrupt);
    reader.node().blobs.dir().trust_blobs_for_tests(trust);
    let got = reader.node().blobs.get(digest).await.unwrap();
    (cluster, nodes, bytes, got)
}

/// The cluster directory (kept while the nodes run), the nodes, the bytes put, and the bytes
/// node 2 read.
type Scenario = (tempfile::TempDir, Vec<TestNode>, Bytes, Vec<u8>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_blob_streams_between_nodes_and_a_corrupt_copy_is_skipped() {
    let (_cluster, nodes, bytes, got) = a_corrupt_copy_first_in_line(SIZE, false).await;
    let digest = weft_host::id::Digest::of(&bytes);
    let reader = &nodes[2];
    assert!(got == bytes, "the bytes read are the bytes put");
    let stats = reader.node().blobs.stats();
    assert_eq!(stats.corrupt.load(Relaxed), 1, "one corrupt copy skipped");
    assert_eq!(stats.fetched.load(Relaxed), 1);
    assert_eq!(reader.metric("weft_blobs_corrupt_total").await, Some(1.0));
    // Both the bad copy and the good one were streamed in full.
    assert_eq!(stats.bytes_received.load(Relaxed), 3 * SIZE as u64);

    // The corrupt copy is replaced from the reader's good one.
    wait_for(
        Duration::from_secs(60),
        "the corrupt copy replaced",
        || async {
            nodes
                .iter()
                .all(|t| t.node().blobs.dir().verify(digest).is_ok())
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_a_node_that_trusts_blob_copies_takes_a_corrupt_one() {
    // The same scenario, smaller, with the reader's digest check switched off: the checker
    // of the test above ("the bytes read are the bytes put") finds the corrupt copy.
    let (_cluster, nodes, bytes, got) = a_corrupt_copy_first_in_line(8 << 20, true).await;
    assert_eq!(got.len(), bytes.len());
    assert!(
        got != bytes,
        "without the check, the corrupt copy is what the reader gets"
    );
    assert_eq!(nodes[2].node().blobs.stats().corrupt.load(Relaxed), 0);
}
