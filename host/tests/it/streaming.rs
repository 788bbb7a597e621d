//! A request body streams into an HTTP handler as the client sends it: the handler answers
//! before the body has all come, the node holds no body whole (its memory stays flat however
//! large the body), and the limits still hold: 413 past `max_request_body`, whether it is
//! declared or chunked, and the smaller `max_buffered_request_body` for the handlers that get
//! their body whole.

use std::num::{NonZeroU64, NonZeroUsize};
use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use weft_host::plugins;

use crate::harness::{TestNode, error_of, guest, wait_for};

/// What `guest-stream`'s `/count` answers for a body of `pieces`, in order: its length and
/// FNV-1a hash (computed here independently of the guest's).
pub(crate) fn count_of_pieces<'a>(pieces: impl IntoIterator<Item = &'a [u8]>) -> String {
    let (mut len, mut hash) = (0usize, 0xcbf2_9ce4_8422_2325u64);
    for piece in pieces {
        len += piece.len();
        for b in piece {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{len} {hash:016x}")
}

/// What `guest-stream`'s `/count` answers for `body`.
fn count_of(body: &[u8]) -> String {
    count_of_pieces([body])
}

/// A chunked body of `pieces`, sent one at a time (no `Content-Length`).
pub(crate) fn chunked(pieces: Vec<Vec<u8>>) -> reqwest::Body {
    reqwest::Body::wrap_stream(futures::stream::iter(
        pieces.into_iter().map(Ok::<_, std::io::Error>),
    ))
}

/// Reads from `tcp` into `got` until `want` is in it, within 20 s.
async fn read_until(tcp: &mut tokio::net::TcpStream, got: &mut Vec<u8>, want: &str) {
    let mut buf = [0u8; 4096];
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while !String::from_utf8_lossy(got).contains(want) {
            let n = tcp.read(&mut buf).await.unwrap();
            assert!(n > 0, "the node closed: {}", String::from_utf8_lossy(got));
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    assert!(
        found.is_ok(),
        "no {want:?} in {:?}",
        String::from_utf8_lossy(got)
    );
}

/// Sends half a body to `guest-stream`'s `/echo` (deployed as `stream` on `n`), checks that
/// its echo comes back before the other half is sent, then sends that and reads the answer to
/// its end; returns the connection and what it read.
pub(crate) async fn echo_half_a_body(n: &TestNode) -> (tokio::net::TcpStream, Vec<u8>) {
    let addr = n.url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(
        b"POST /fn/stream/echo HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\n\r\nfirst half",
    )
    .await
    .unwrap();
    // Half the body is sent and the rest held back: the echo of the first half must come.
    let mut got = Vec::new();
    read_until(&mut tcp, &mut got, "first half").await;
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(!text.contains("other half"), "{text}");
    tcp.write_all(b"other half").await.unwrap();
    // The rest, and the end of the chunked answer.
    read_until(&mut tcp, &mut got, "other half").await;
    read_until(&mut tcp, &mut got, "0\r\n\r\n").await;
    (tcp, got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_echoes_half_a_body_before_the_rest_is_sent() {
    let n = TestNode::start().await;
    n.deploy_ok("stream", guest("guest-stream"), &[]).await;
    let (mut tcp, got) = echo_half_a_body(&n).await;
    let text = String::from_utf8_lossy(&got).to_string();
    assert!(
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{text}"
    );

    // The connection serves its next request.
    tcp.write_all(b"GET /fn/stream/big?kib=1 HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let mut next = Vec::new();
    read_until(&mut tcp, &mut next, "0\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&next).starts_with("HTTP/1.1 200"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_the_limit_are_413_declared_or_chunked_and_buffered_handlers_have_their_own() {
    let n = TestNode::start_with(|c| {
        c.limits.max_request_body = NonZeroU64::new(64 << 10).unwrap();
        c.limits.max_buffered_request_body = NonZeroUsize::new(1 << 10).unwrap();
    })
    .await;
    n.deploy_ok("stream", guest("guest-stream"), &[]).await;
    n.deploy("echo", plugins::WAGI_ECHO).await;
    n.deploy_ok("bank", guest("bank"), &[("lock", "header:x-branch")])
        .await;

    let body: Vec<u8> = (0..64u32 << 10).map(|i| (i * 7 % 251) as u8).collect();
    // At the limit, declared or chunked, the handler reads all of it. One byte over, declared,
    // it is refused before the handler starts; chunked, the handler's read fails at the limit
    // and the client is told why, not the handler's 400.
    let mut over = body.clone();
    over.push(1);
    let too_large = "request body is larger than the limit of 65536 bytes";
    for (what, sent, is_chunked) in [
        ("at the limit, declared", &body, false),
        ("at the limit, chunked", &body, true),
        ("over, declared", &over, false),
        ("over, chunked", &over, true),
    ] {
        let request = n.anon(Method::POST, "/fn/stream/count");
        let request = match is_chunked {
            true => request.body(chunked(sent.chunks(5000).map(<[u8]>::to_vec).collect())),
            false => request.body(sent.clone()),
        };
        let (status, text) = n.text(request).await;
        if sent.len() > 64 << 10 {
            assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{what}: {text}");
            assert_eq!(error_of(&text), too_large, "{what}");
        } else {
            assert_eq!((status, text), (StatusCode::OK, count_of(sent)), "{what}");
        }
    }

    // The handlers that get their body whole: 2 KiB is over their limit.
    let two = vec![b'a'; 2 << 10];
    for (what, request) in [
        ("WAGI", n.anon(Method::POST, "/fn/echo/x")),
        (
            "lock-protected",
            n.anon(Method::POST, "/fn/bank/deposit")
                .header("x-branch", "b"),
        ),
    ] {
        let (status, text) = n.text(request.body(two.clone())).await;
        assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{what}: {text}");
        assert_eq!(
            error_of(&text),
            "request body is larger than the limit of 1024 bytes",
            "{what}"
        );
    }
    let (status, text) = n
        .text(n.anon(Method::POST, "/fn/echo/x").body(vec![b'a'; 1 << 10]))
        .await;
    assert_eq!(status, StatusCode::OK, "WAGI at its limit: {text}");

    // The node serves on.
    let (status, text) = n
        .text(n.anon(Method::POST, "/fn/stream/count").body("abc"))
        .await;
    assert_eq!((status, text), (StatusCode::OK, count_of(b"abc")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_much_larger_than_the_nodes_memory_growth_streams_through_a_process() {
    use crate::faults::{Opts, Proc};
    const MIB: usize = 1 << 20;
    // 256 MiB by default; 1 GiB (the default limit) in long runs.
    let mib = if std::env::var_os("WEFT_LONG").is_some() {
        1024
    } else {
        256
    };
    let cluster = crate::cluster::new_cluster();
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("n0");
    let any = "127.0.0.1:0".parse().unwrap();
    let p = Proc::start(cluster.path(), "n0", &data, any, &[], &Opts::default()).await;
    let token = std::fs::read_to_string(cluster.path().join("admin.token")).unwrap();
    let client = crate::harness::client();
    let r = client
        .put(format!("{}/v1/functions/stream", p.http))
        .bearer_auth(token.trim())
        .body(guest("guest-stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let pid = p.child.id().expect("running");
    let peak = || {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
            .expect("VmHWM in kB")
            * 1024
    };
    // Warm: one request of 1 MiB, so the instance pool and buffers have been touched.
    let piece = bytes::Bytes::from((0..MIB).map(|i| (i % 253) as u8).collect::<Vec<u8>>());
    // `pieces` MiB, made as they are sent: the test holds one piece, not the body.
    let count = |pieces: usize| {
        let piece = piece.clone();
        let body =
            futures::stream::iter((0..pieces).map(move |_| Ok::<_, std::io::Error>(piece.clone())));
        client
            .post(format!("{}/fn/stream/count", p.http))
            .body(reqwest::Body::wrap_stream(body))
            .send()
    };
    let r = count(1).await.unwrap();
    assert_eq!(r.text().await.unwrap(), count_of(&piece));
    let before = peak();
    let r = count(mib).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let answer = r.text().await.unwrap();
    assert_eq!(
        answer,
        count_of_pieces(std::iter::repeat_n(&piece[..], mib))
    );
    let after = peak();
    // A node holding the body would have grown by all of it.
    let grown = after.saturating_sub(before);
    eprintln!(
        "{mib} MiB streamed through; peak memory from {} to {} MiB",
        before / MIB,
        after / MIB
    );
    assert!(
        grown < 64 * MIB,
        "the node's peak memory grew by {} MiB while {mib} MiB streamed through (from {} to {} MiB)",
        grown / MIB,
        before / MIB,
        after / MIB
    );
    wait_for(Duration::from_secs(10), "the node serving on", || async {
        let r = count(1).await.ok()?;
        (r.text().await.ok()? == count_of(&piece)).then_some(())
    })
    .await;
}
