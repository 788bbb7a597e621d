//! The blob service between real nodes: a blob far larger than one frame streams between
//! nodes in pieces, is verified, and a corrupt copy is skipped and replaced.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::Bytes;
use rand::{RngExt, SeedableRng};

use crate::cluster::{new_cluster, start_cluster, wait_converged};
use crate::harness::{TestNode, wait_for};
use crate::replication::wait_ring;

/// 100 MiB: more than six times the 16 MiB frame cap.
const SIZE: usize = 100 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_blob_streams_between_nodes_and_a_corrupt_copy_is_skipped() {
    let cluster = new_cluster();
    let nodes = start_cluster(cluster.path(), 3).await;
    let all: Vec<&TestNode> = nodes.iter().collect();
    wait_converged(&all, 3).await;
    wait_ring(&all, 3).await;

    let mut bytes = vec![0u8; SIZE];
    rand::rngs::StdRng::seed_from_u64(7).fill(&mut bytes[..]);
    let bytes = Bytes::from(bytes);
    let digest = nodes[0].node().blobs.put(bytes.clone()).await.unwrap();
    assert_eq!(digest, weft_host::id::Digest::of(&bytes));

    // With three nodes every node is one of the digest's three replicas: the two others
    // pulled the blob from node 0 over QUIC before the put returned (two of them at least;
    // the third within moments) and checked it.
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
        assert_eq!(got, SIZE as u64, "{}", t.node().name);
        assert_eq!(
            t.metric("weft_blob_bytes_received_total").await,
            Some(SIZE as f64)
        );
    }

    // Node 2 loses its copy; the first node it will ask holds a corrupt one (same length,
    // one byte changed in the middle).
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
    corrupt[SIZE / 2] ^= 0xff;
    bad.node()
        .blobs
        .dir()
        .corrupt_for_tests(digest, &corrupt)
        .unwrap();
    drop(corrupt);

    let got = reader.node().blobs.get(digest).await.unwrap();
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
        || async { bad.node().blobs.dir().verify(digest).is_ok().then_some(()) },
    )
    .await;
}
