//! The gateway's limits against abusive clients, over raw TCP: slow and idle clients are
//! closed, oversized heads get 431, connections beyond the limit get 503, and the node serves
//! on after each.
use std::num::NonZeroUsize;
use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bad_input::complete;
use crate::harness::{TestNode, wait_for};

async fn connect(n: &TestNode) -> TcpStream {
    TcpStream::connect(n.url.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Reads until the node has sent one whole answer (head and `content-length` bytes of body)
/// or closed the connection; the bytes read and whether the node closed it.
async fn read_answer(stream: &mut TcpStream) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return true,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
            if complete(&got) {
                return false;
            }
        }
    })
    .await
    .expect("the node neither answered nor closed the connection within 30 s");
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_clients_are_closed_after_the_header_timeout() {
    let n = TestNode::start_with(|c| c.limits.header_timeout = Duration::from_millis(500)).await;

    // Slowloris: a request line, then one header line every 100 ms, forever. The node must
    // hang up on it; with no header timeout the loop would run into the deadline below.
    let mut slow = connect(&n).await;
    slow.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut buf = [0u8; 1024];
    let mut answer = Vec::new();
    let hung_up = tokio::time::timeout(Duration::from_secs(20), async {
        for line in 0u64.. {
            tokio::select! {
                read = slow.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return line,
                    Ok(k) => answer.extend_from_slice(&buf[..k]),
                },
                _ = tick.tick() => {
                    if slow.write_all(format!("x-slow-{line}: y\r\n").as_bytes()).await.is_err() {
                        return line;
                    }
                }
            }
        }
        unreachable!()
    })
    .await;
    let lines = hung_up.expect("a client trickling header lines was still open after 20 s");
    assert!(
        lines >= 2,
        "closed before the client was slow ({lines} lines)"
    );
    assert!(
        !String::from_utf8_lossy(&answer).contains(" 200 "),
        "the trickled request was served: {}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(
        n.metric("weft_http_connections_closed_total{reason=\"header_timeout\"}")
            .await,
        Some(1.0),
        "the slow client is counted"
    );

    // An idle kept-alive connection: one request served, then silence until the node closes.
    let mut idle = connect(&n).await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (first, closed) = read_answer(&mut idle).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(!closed, "kept alive after the first answer");
    let (rest, closed) = read_answer(&mut idle).await;
    assert!(closed && rest.is_empty(), "idle connection got {rest:?}");

    // On a new connection: the client's pooled one has been idle past the timeout too, and
    // a pool may hand it out just as the node closes it.
    let r = crate::harness::client()
        .get(format!("{}/healthz", n.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_is_431_and_the_node_serves_on() {
    let n = TestNode::start().await;
    for (size, expected) in [
        (8 << 10, "HTTP/1.1 200"),
        (20 << 10, "HTTP/1.1 431"),
        (200 << 10, "HTTP/1.1 431"),
    ] {
        let mut stream = connect(&n).await;
        let head = format!(
            "GET /healthz HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
            "a".repeat(size)
        );
        // The node may answer and close before taking the whole head.
        let _ = stream.write_all(head.as_bytes()).await;
        let (answer, _) = read_answer(&mut stream).await;
        assert!(
            answer.starts_with(expected),
            "a {size}-byte header: {answer:?}"
        );
    }
    // A close is counted once hyper's connection has ended, which may be just after the
    // client has read the 431 (one loaded CI run read the count at 1).
    crate::harness::wait_for(
        std::time::Duration::from_secs(10),
        "both oversized heads counted",
        || async {
            let closed = n
                .metric("weft_http_connections_closed_total{reason=\"headers_too_large\"}")
                .await;
            assert!(
                closed <= Some(2.0),
                "{closed:?} closes counted for two heads"
            );
            (closed == Some(2.0)).then_some(())
        },
    )
    .await;
    let (status, body) = n.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_beyond_the_limit_is_503_until_one_closes() {
    let n =
        TestNode::start_with(|c| c.limits.max_connections = NonZeroUsize::new(3).unwrap()).await;
    // Three kept-alive connections, each answered once, so each holds a slot.
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect(&n).await;
        stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, closed) = read_answer(&mut stream).await;
        assert!(answer.starts_with("HTTP/1.1 200") && !closed, "{answer}");
        held.push(stream);
    }
    let mut extra = connect(&n).await;
    let _ = extra
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
        .await;
    let (answer, _) = read_answer(&mut extra).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("retry-after: 1"), "{answer}");
    assert!(
        answer.contains(
            "this node has 3 client connections open, its limit ([limits] max_connections)"
        ),
        "{answer}"
    );

    // One held connection closes: its slot serves a new client. (Raw connections, because an
    // HTTP client's pool may open a new connection at any time, which the limit would refuse.)
    drop(held.pop());
    let fresh = wait_for(Duration::from_secs(10), "a slot to come free", || async {
        let mut stream = connect(&n).await;
        let _ = stream
            .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
            .await;
        let (answer, closed) = read_answer(&mut stream).await;
        (answer.starts_with("HTTP/1.1 200") && !closed).then_some(stream)
    })
    .await;
    // Read the metrics over a connection that already holds a slot.
    held[0]
        .write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (metrics, _) = read_answer(&mut held[0]).await;
    let sample = |name: &str| -> Option<f64> {
        metrics.lines().find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')
                .map(|v| v.parse().unwrap())
        })
    };
    assert!(
        sample("weft_http_connections_closed_total{reason=\"too_many_connections\"}")
            .is_some_and(|refused| refused >= 1.0),
        "refusals counted: {metrics}"
    );
    assert_eq!(
        sample("weft_http_connections"),
        Some(3.0),
        "two held connections and the fresh one"
    );
    drop(fresh);
}
