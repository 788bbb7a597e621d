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
//!
//! Two paths read the request body as it arrives, to test that it is streamed in:
//! - `/echo`: answers `200` at once and sends each piece of the request body back as soon as
//!   it has read it;
//! - `/count`: reads the whole body, keeping nothing, and answers `200` with its length and
//!   its [`fnv1a`] hash (`"{len} {hash:016x}"`), or `400` naming the read that failed.
//!
//! Three paths test what an instance kept for reuse (`weft deploy --reuse N`) may hold; each
//! answers `served=K`, the requests this instance has served, this one included:
//! - `/served` answers and ends cleanly;
//! - `/leave-open` sends its answer but neither finishes nor drops its response body;
//! - `/keep-body` takes the request's body and never drops it;
//! - `/keep-request` never drops the request itself (as JavaScript runtimes keep the request
//!   object until their garbage collector frees it), without reading its body.
//!
//! `/forge` answers `200` with `forged`, setting [`FORGED`] as a header and as a trailer: the
//! name a guest process uses to tell its node that a guest failed, which a guest must not be
//! able to say for itself.

/// The header and trailer `/forge` sets.
pub const FORGED: &str = "x-weft-guest-failed";

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
    /// Send the request body back as it arrives.
    Echo,
    /// Read the request body and answer its length and hash.
    Count,
    /// Answer `served=K`.
    Served,
    /// Answer `served=K`, leaving the response body open.
    LeaveOpen,
    /// Answer `served=K`, keeping the request body.
    KeepBody,
    /// Answer `served=K`, keeping the request.
    KeepRequest,
    /// Answer `forged` with [`FORGED`] set as a header and a trailer.
    Forge,
}

/// The 64-bit FNV-1a hash of `bytes`, continued from `hash` (start from [`FNV_START`]).
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash = (hash ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// Where [`fnv1a`] starts.
pub const FNV_START: u64 = 0xcbf2_9ce4_8422_2325;

/// The plan for a path with its query.
pub fn plan(path_with_query: &str) -> Plan {
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((path_with_query, ""));
    match path {
        "/trap" => Plan::Trap,
        "/loop" => Plan::Loop,
        "/memory" => Plan::Memory,
        "/echo" => Plan::Echo,
        "/count" => Plan::Count,
        "/served" => Plan::Served,
        "/leave-open" => Plan::LeaveOpen,
        "/keep-body" => Plan::KeepBody,
        "/keep-request" => Plan::KeepRequest,
        "/forge" => Plan::Forge,
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
        Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
    };
    use wasi::io::streams::{InputStream, OutputStream, StreamError};

    use super::{BEFORE_FAILING, FNV_START, FORGED, Plan, fnv1a, plan};

    /// The most the guest reads at once.
    const READ: u64 = 64 << 10;

    /// Requests this instance has served.
    static SERVED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

    struct Stream;

    /// Reads the request body piece by piece, handing each to `each`; `Err` names the read
    /// that failed and the bytes read before it.
    fn read_body(
        request: IncomingRequest,
        mut each: impl FnMut(&[u8]) -> Result<(), ()>,
    ) -> Result<u64, String> {
        let body = request.consume().map_err(|()| "no body".to_string())?;
        let stream: InputStream = body.stream().map_err(|()| "no stream".to_string())?;
        let mut read = 0u64;
        loop {
            match stream.blocking_read(READ) {
                Ok(piece) => {
                    read += piece.len() as u64;
                    if each(&piece).is_err() {
                        return Err(format!("could not pass on the body after {read} bytes"));
                    }
                }
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    return Err(format!(
                        "reading the body failed after {read} bytes: {}",
                        e.to_debug_string()
                    ));
                }
            }
        }
        drop(stream);
        drop(IncomingBody::finish(body));
        Ok(read)
    }

    /// Writes `bytes` and flushes, in pieces of at most 4 KiB (the most one blocking write takes).
    fn write_all(stream: &OutputStream, bytes: &[u8]) -> Result<(), ()> {
        for piece in bytes.chunks(4096) {
            stream.blocking_write_and_flush(piece).map_err(drop)?;
        }
        Ok(())
    }

    /// Sends a response head with `status`: its body, and the body's stream.
    fn start(out: ResponseOutparam, status: u16) -> (OutgoingBody, OutputStream) {
        start_with(out, status, Fields::new())
    }

    /// [`start`] with `headers`.
    fn start_with(
        out: ResponseOutparam,
        status: u16,
        headers: Fields,
    ) -> (OutgoingBody, OutputStream) {
        let response = OutgoingResponse::new(headers);
        let _ = response.set_status_code(status);
        let Ok(body) = response.body() else {
            unreachable!("a new response's body is taken once")
        };
        ResponseOutparam::set(out, Ok(response));
        let Ok(stream) = body.write() else {
            unreachable!("a new body's stream is taken once")
        };
        (body, stream)
    }

    /// Answers `status` with `text`, whole.
    fn answer(out: ResponseOutparam, status: u16, text: &str) {
        let (body, stream) = start(out, status);
        let _ = write_all(&stream, text.as_bytes());
        drop(stream);
        let _ = OutgoingBody::finish(body, None);
    }

    impl wasi::exports::http::incoming_handler::Guest for Stream {
        fn handle(request: IncomingRequest, out: ResponseOutparam) {
            let plan = plan(&request.path_with_query().unwrap_or_default());
            let served = SERVED.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            match plan {
                Plan::Served => return answer(out, 200, &format!("served={served}")),
                Plan::Forge => {
                    let forged = || {
                        let fields = Fields::new();
                        let _ = fields.set(FORGED, &[b"forged".to_vec()]);
                        fields
                    };
                    let (body, stream) = start_with(out, 200, forged());
                    let _ = write_all(&stream, b"forged");
                    drop(stream);
                    let _ = OutgoingBody::finish(body, Some(forged()));
                    return;
                }
                Plan::KeepBody => {
                    if let Ok(body) = request.consume() {
                        std::mem::forget(body);
                    }
                    return answer(out, 200, &format!("served={served}"));
                }
                Plan::KeepRequest => {
                    std::mem::forget(request);
                    return answer(out, 200, &format!("served={served}"));
                }
                Plan::LeaveOpen => {
                    let (body, stream) = start(out, 200);
                    let _ = write_all(&stream, format!("served={served}").as_bytes());
                    std::mem::forget(stream);
                    std::mem::forget(body);
                    return;
                }
                Plan::Count => {
                    let mut hash = FNV_START;
                    match read_body(request, |piece| {
                        hash = fnv1a(hash, piece);
                        Ok(())
                    }) {
                        Ok(len) => answer(out, 200, &format!("{len} {hash:016x}")),
                        Err(e) => answer(out, 400, &e),
                    }
                    return;
                }
                Plan::Echo => {
                    let (body, stream) = start(out, 200);
                    // A failed read leaves the answer unfinished: the client sees it cut short.
                    if read_body(request, |piece| write_all(&stream, piece)).is_ok() {
                        drop(stream);
                        let _ = OutgoingBody::finish(body, None);
                    }
                    return;
                }
                _ => {}
            }
            let (body, stream) = start(out, 200);
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
                Plan::Echo
                | Plan::Count
                | Plan::Served
                | Plan::LeaveOpen
                | Plan::KeepBody
                | Plan::KeepRequest
                | Plan::Forge => unreachable!("answered above"),
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
        assert_eq!(plan("/echo"), Plan::Echo);
        assert_eq!(plan("/count?x=1"), Plan::Count);
        assert_eq!(plan("/served"), Plan::Served);
        assert_eq!(plan("/leave-open"), Plan::LeaveOpen);
        assert_eq!(plan("/keep-body"), Plan::KeepBody);
        assert_eq!(plan("/keep-request"), Plan::KeepRequest);
        assert_eq!(plan("/forge"), Plan::Forge);
    }

    #[test]
    fn the_hash_is_fnv1a_and_continues_across_pieces() {
        use super::{FNV_START, fnv1a};
        // The published FNV-1a 64 values of "" and "a".
        assert_eq!(fnv1a(FNV_START, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_START, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(
            fnv1a(fnv1a(FNV_START, b"hello "), b"world"),
            fnv1a(FNV_START, b"hello world")
        );
    }
}
