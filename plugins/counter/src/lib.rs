//! `counter`: counts requests per path in the function's key-value store.
//!
//! `GET /fn/counter/a` increments the counter for `/a` and answers `{"path":"/a","count":3}`;
//! `DELETE /fn/counter/a` resets it. The kv key is the path itself, the value an 8-byte counter.

use weft_sdk::{Error, Request, Response, kv};

/// Count (`GET`) or reset (`DELETE`) the requests to one path.
pub fn counter(req: Request) -> Result<Response, Error> {
    let count = match req.method.as_str() {
        "GET" => kv::increment(&req.path, 1)?,
        "DELETE" => {
            kv::delete(&req.path)?;
            0
        }
        _ => return Ok(Response::text(405, "use GET or DELETE\n").header("allow", "GET, DELETE")),
    };
    Ok(Response::json(
        &serde_json::json!({ "path": req.path, "count": count }),
    ))
}

weft_sdk::http_handler!(counter);

#[cfg(test)]
mod tests {
    use weft_sdk::Request;
    use weft_sdk::testing::MockHost;

    fn call(host: &MockHost, req: Request) -> (u16, String) {
        let resp = host.call(super::counter, req);
        (resp.status, resp.body_str().unwrap().to_owned())
    }

    #[test]
    fn counts_per_path() {
        let host = MockHost::new();
        assert_eq!(
            call(&host, Request::get("/a")),
            (200, r#"{"count":1,"path":"/a"}"#.into())
        );
        assert_eq!(
            call(&host, Request::get("/a")),
            (200, r#"{"count":2,"path":"/a"}"#.into())
        );
        assert_eq!(
            call(&host, Request::get("/b")),
            (200, r#"{"count":1,"path":"/b"}"#.into())
        );
        assert_eq!(weft_sdk::kv::counter("/a").unwrap(), 2);
    }

    #[test]
    fn delete_resets() {
        let host = MockHost::new();
        call(&host, Request::get("/a"));
        assert_eq!(
            call(&host, Request::new("DELETE", "/a")).1,
            r#"{"count":0,"path":"/a"}"#
        );
        assert_eq!(
            call(&host, Request::get("/a")).1,
            r#"{"count":1,"path":"/a"}"#
        );
    }

    #[test]
    fn store_failure_is_a_500() {
        let host = MockHost::new();
        host.fail_kv(Some("disk full"));
        let (status, body) = call(&host, Request::get("/a"));
        assert_eq!(status, 500);
        assert!(body.contains("disk full"), "{body}");
    }

    #[test]
    fn other_methods_are_rejected() {
        assert_eq!(call(&MockHost::new(), Request::post("/a", "")).0, 405);
    }
}
