//! `guest-panic`: an adversarial guest that panics on every request, to test that the host turns
//! a trap into an error response and keeps serving.

use weft_sdk::{Request, Response};

/// Panic with a recognisable message.
pub fn boom(_req: Request) -> Response {
    panic!("guest-panic: deliberate panic");
}

weft_sdk::http_handler!(boom);

#[cfg(test)]
mod tests {
    #[test]
    #[should_panic(expected = "guest-panic: deliberate panic")]
    fn panics() {
        weft_sdk::testing::MockHost::new().call(super::boom, weft_sdk::Request::get("/"));
    }
}
