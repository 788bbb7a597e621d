//! `guest-loop`: an adversarial guest that never returns, to test the host's CPU limits
//! (fuel or epoch interruption). The loop has side effects the optimiser cannot remove.

use weft_sdk::{Request, Response};

/// Spin forever.
pub fn spin(req: Request) -> Response {
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
