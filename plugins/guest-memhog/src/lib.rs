//! `guest-memhog`: an adversarial guest that allocates 1 MiB blocks forever and touches every
//! page, to test the host's memory limits. It never returns: allocation eventually fails and
//! the guest aborts, which the host must turn into an error response.

use weft_sdk::{Request, Response};

const BLOCK: usize = 1 << 20;

/// Allocate until the host stops us.
pub fn hog(_req: Request) -> Response {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; BLOCK];
        for page in block.chunks_mut(4096) {
            page[0] = 1;
        }
        blocks.push(std::hint::black_box(block));
    }
}

weft_sdk::http_handler!(hog);
