//! `{{name}}`: an HTTP handler. Deployed as `{{name}}`, it serves `/fn/{{name}}/...`.
//!
//! - `GET /NAME` greets NAME and counts the visits per name in the function's key-value store:
//!   `{"hello":"ada","visits":3}`.
//! - `DELETE /NAME` forgets NAME's visits.

use weft_sdk::{Error, Request, Response, kv};

/// Answers one request. Each request runs in a fresh instance: keep state in `kv`.
pub fn handle(req: Request) -> Result<Response, Error> {
    let name = req.path.trim_matches('/');
    if name.is_empty() || name.contains('/') {
        return Ok(Response::text(400, "use /NAME (one path segment)\n"));
    }
    let key = format!("visits/{name}");
    match req.method.as_str() {
        "GET" => {
            let visits = kv::increment(&key, 1)?;
            Ok(Response::json(
                &serde_json::json!({ "hello": name, "visits": visits }),
            ))
        }
        "DELETE" => {
            kv::delete(&key)?;
            Ok(Response::text(204, ""))
        }
        _ => Ok(Response::text(405, "use GET or DELETE\n").header("allow", "GET, DELETE")),
    }
}

weft_sdk::http_handler!(handle);

#[cfg(test)]
mod tests {
    use weft_sdk::Request;
    use weft_sdk::testing::MockHost;

    fn call(host: &MockHost, req: Request) -> (u16, String) {
        let resp = host.call(super::handle, req);
        (resp.status, resp.body_str().unwrap().to_owned())
    }

    #[test]
    fn greets_and_counts_visits_per_name() {
        let host = MockHost::new();
        assert_eq!(
            call(&host, Request::get("/ada")),
            (200, r#"{"hello":"ada","visits":1}"#.into())
        );
        assert_eq!(
            call(&host, Request::get("/ada")).1,
            r#"{"hello":"ada","visits":2}"#
        );
        assert_eq!(
            call(&host, Request::get("/bob")).1,
            r#"{"hello":"bob","visits":1}"#
        );
        assert_eq!(call(&host, Request::new("DELETE", "/ada")).0, 204);
        assert_eq!(
            call(&host, Request::get("/ada")).1,
            r#"{"hello":"ada","visits":1}"#
        );
    }

    #[test]
    fn bad_requests_get_a_clear_answer() {
        let host = MockHost::new();
        assert_eq!(call(&host, Request::get("/")).0, 400);
        assert_eq!(call(&host, Request::get("/a/b")).0, 400);
        assert_eq!(call(&host, Request::post("/ada", "x")).0, 405);
    }
}
