//! `guest-loop`: an adversarial guest that never returns, to test the host's time limits.
//!
//! `/` spins on the CPU (the loop has side effects the optimiser cannot remove), so only epoch
//! interruption stops it. `/sleep` blocks in a host call (a WASI clock wait) and runs no Wasm at
//! all, so only a wall-clock limit around the whole invocation stops it.

use weft_sdk::{Request, Response};

/// Spin forever, or sleep forever on `/sleep`.
pub fn spin(req: Request) -> Response {
    if req.path == "/sleep" {
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
    let mut state = req.body.len() as u64;
    loop {
        state = std::hint::black_box(
            state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1),
        );
    }
}

weft_sdk::http_handler!(spin);
