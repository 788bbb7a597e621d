//! `hello`: the smallest useful Weft HTTP handler, used as the benchmark baseline.
//!
//! `GET /fn/hello/world` answers `200 Hello, world! (from Weft)`; the route itself answers
//! `Hello from Weft!`. A request with a body gets its size back: `Hello, world! (from Weft, 5
//! bytes)`. It touches no host import, so it measures the platform's own overhead.

use weft_sdk::{Request, Response};

/// Greet the caller by the path below the function's route.
pub fn hello(req: Request) -> Response {
    let name = req.path.trim_matches('/');
    let size = match req.body.len() {
        0 => String::new(),
        n => format!(", {n} bytes"),
    };
    if name.is_empty() {
        Response::text(200, format!("Hello from Weft{size}!\n"))
    } else {
        Response::text(200, format!("Hello, {name}! (from Weft{size})\n"))
    }
}

weft_sdk::http_handler!(hello);

#[cfg(test)]
mod tests {
    use weft_sdk::Request;
    use weft_sdk::testing::MockHost;

    fn check(path: &str, expected: &str) {
        let resp = MockHost::new().call(super::hello, Request::get(path));
        assert_eq!(resp.status, 200);
        assert_eq!(resp.body_str(), Ok(expected), "path {path}");
    }

    #[test]
    fn greets_by_path() {
        check("/world", "Hello, world! (from Weft)\n");
        check("/a/b/", "Hello, a/b! (from Weft)\n");
        check("/", "Hello from Weft!\n");
        let resp = MockHost::new().call(super::hello, Request::post("/x", "abc"));
        assert_eq!(resp.body_str(), Ok("Hello, x! (from Weft, 3 bytes)\n"));
    }
}
