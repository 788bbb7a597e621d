//! `guest-stream`: an adversarial guest that sends its response head and part of its body, and
//! then fails, to test that a body cut short reaches the client as an error and never as a
//! complete response. It speaks `wasi:http` directly (the SDK answers with whole bodies only).
//!
//! Every path answers `200` with a chunked body of `x` bytes, 4 KiB at a time:
//! - `/trap`: 64 KiB, then a panic;
//! - `/loop`: 64 KiB, then a loop that never returns (the deadline stops it);
//! - `/memory`: 64 KiB, then allocation without end (the memory cap stops it);
//! - `/big?kib=N`: N KiB, then the body is finished properly (a client that reads slowly
//!   keeps the guest waiting to write, until its deadline).

/// The bytes of the body sent before the guest fails.
pub const BEFORE_FAILING: usize = 64 << 10;

/// What a request path asks for: the body's size in KiB and how the guest ends.
#[derive(Debug, PartialEq, Eq)]
pub enum Plan {
    /// Send `kib` KiB and finish.
    Finish(usize),
    /// Send [`BEFORE_FAILING`] bytes, then panic.
    Trap,
    /// Send [`BEFORE_FAILING`] bytes, then spin.
    Loop,
    /// Send [`BEFORE_FAILING`] bytes, then allocate until stopped.
    Memory,
}

/// The plan for a path with its query.
pub fn plan(path_with_query: &str) -> Plan {
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((path_with_query, ""));
    match path {
        "/trap" => Plan::Trap,
        "/loop" => Plan::Loop,
        "/memory" => Plan::Memory,
        _ => Plan::Finish(
            query
                .split('&')
                .find_map(|kv| kv.strip_prefix("kib="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(1),
        ),
    }
}

#[cfg(target_arch = "wasm32")]
mod guest {
    use wasi::http::types::{
        Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
    };

    use super::{BEFORE_FAILING, Plan, plan};

    struct Stream;

    impl wasi::exports::http::incoming_handler::Guest for Stream {
        fn handle(request: IncomingRequest, out: ResponseOutparam) {
            let plan = plan(&request.path_with_query().unwrap_or_default());
            let response = OutgoingResponse::new(Fields::new());
            let Ok(body) = response.body() else {
                unreachable!("a new response's body is taken once")
            };
            ResponseOutparam::set(out, Ok(response));
            let Ok(stream) = body.write() else {
                unreachable!("a new body's stream is taken once")
            };
            let bytes = match plan {
                Plan::Finish(kib) => kib << 10,
                _ => BEFORE_FAILING,
            };
            let piece = [b'x'; 4096];
            let mut sent = 0;
            while sent < bytes {
                let n = piece.len().min(bytes - sent);
                if stream.blocking_write_and_flush(&piece[..n]).is_err() {
                    return;
                }
                sent += n;
            }
            match plan {
                Plan::Finish(_) => {
                    drop(stream);
                    let _ = OutgoingBody::finish(body, None);
                }
                Plan::Trap => panic!("guest-stream: deliberate panic after {sent} bytes"),
                Plan::Loop => {
                    let mut state = sent as u64;
                    loop {
                        state = std::hint::black_box(
                            state
                                .wrapping_mul(6_364_136_223_846_793_005)
                                .wrapping_add(1),
                        );
                    }
                }
                Plan::Memory => {
                    let mut blocks: Vec<Vec<u8>> = Vec::new();
                    loop {
                        let mut block = vec![0u8; 1 << 20];
                        for page in block.chunks_mut(4096) {
                            page[0] = 1;
                        }
                        blocks.push(std::hint::black_box(block));
                    }
                }
            }
        }
    }

    wasi::http::proxy::export!(Stream);
}

#[cfg(test)]
mod tests {
    use super::{Plan, plan};

    #[test]
    fn paths_give_plans() {
        assert_eq!(plan("/trap"), Plan::Trap);
        assert_eq!(plan("/loop"), Plan::Loop);
        assert_eq!(plan("/memory"), Plan::Memory);
        assert_eq!(plan("/big?kib=1024"), Plan::Finish(1024));
        assert_eq!(plan("/big?x=1&kib=3"), Plan::Finish(3));
        assert_eq!(plan("/"), Plan::Finish(1));
    }
}
