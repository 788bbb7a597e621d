//! `ledger`: an append-only log per key, through a lock-protected handler.
//!
//! Deploy it with `--lock path:1`: the platform runs the requests of one key one at a time,
//! on the key's owner, under the key's lock, so the read-modify-write below needs no lock of
//! its own.
//!
//! - `POST /KEY` with any body appends it to the log of `KEY` and answers
//!   `{"key":"KEY","index":3,"token":42}`: its place in the log and the fencing token of the
//!   lock it was written under.
//! - `GET /KEY` answers the log: `[{"value":"...","token":42}, ...]`, oldest first.

use serde::{Deserialize, Serialize};
use weft_sdk::{Error, Request, Response, kv, locks};

/// One entry of a log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// What was appended (the request body, as text).
    pub value: String,
    /// The fencing token of the handler's lock when it was appended (0 without one).
    pub token: u64,
}

fn log_key(key: &str) -> String {
    format!("log/{key}")
}

/// The ledger's routes.
pub fn ledger(req: Request) -> Result<Response, Error> {
    let key = req.path.trim_matches('/');
    if key.is_empty() || key.contains('/') {
        return Ok(Response::text(400, "use /KEY (one path segment)\n"));
    }
    let mut log: Vec<Item> = kv::get(&log_key(key))?.unwrap_or_default();
    match req.method.as_str() {
        "GET" => Ok(Response::json(&log)),
        "POST" => {
            let token = locks::handler_lock().map_or(0, |(_, t)| t);
            log.push(Item {
                value: req.body_str()?.to_owned(),
                token,
            });
            match kv::set(&log_key(key), &log) {
                Ok(()) => Ok(Response::json(&serde_json::json!({
                    "key": key, "index": log.len() - 1, "token": token,
                }))),
                Err(e @ Error::Fenced(_)) => {
                    Ok(Response::text(503, format!("{e}\n")).header("retry-after", "1"))
                }
                Err(e) => Err(e),
            }
        }
        _ => Ok(Response::text(405, "use GET or POST\n").header("allow", "GET, POST")),
    }
}

weft_sdk::http_handler!(ledger);

#[cfg(test)]
mod tests {
    use weft_sdk::Request;
    use weft_sdk::testing::MockHost;

    use super::Item;

    fn call(req: Request) -> (u16, String) {
        let resp = super::ledger(req).unwrap();
        (resp.status, resp.body_str().unwrap().to_owned())
    }

    #[test]
    fn appends_in_order_with_the_handlers_token() {
        let host = MockHost::new();
        host.set_handler_lock(Some("orders"));
        assert_eq!(
            call(Request::post("/orders", "first")),
            (200, r#"{"index":0,"key":"orders","token":1}"#.into())
        );
        call(Request::post("/orders", "second"));
        let (status, body) = call(Request::get("/orders"));
        assert_eq!(status, 200);
        let log: Vec<Item> = serde_json::from_str(&body).unwrap();
        let values: Vec<&str> = log.iter().map(|i| i.value.as_str()).collect();
        assert_eq!(values, ["first", "second"]);
        assert_eq!(call(Request::get("/a/b")).0, 400);
    }

    #[test]
    fn a_lost_lock_answers_503_and_appends_nothing() {
        let host = MockHost::new();
        host.set_handler_lock(Some("orders"));
        call(Request::post("/orders", "kept"));
        host.lose_lock("orders");
        assert_eq!(call(Request::post("/orders", "lost")).0, 503);
        host.set_handler_lock(Some("orders"));
        let (_, body) = call(Request::get("/orders"));
        assert!(body.contains("kept") && !body.contains("lost"), "{body}");
    }
}
