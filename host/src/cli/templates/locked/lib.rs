//! `{{name}}`: a lock-protected handler. Deploy it with `--lock path:1`: Weft runs the requests
//! of one key (the first path segment) one at a time, on the key's owner, under the key's lock,
//! so the read-modify-write below needs no lock of its own, and a write made after the lock was
//! lost (the node paused past the lease) is refused instead of overwriting the next holder's.
//!
//! - `POST /ACCOUNT` with a whole number adds it to the account's balance, refusing to go below
//!   zero: `{"account":"ada","balance":30,"token":42}` (the lock's fencing token).
//! - `GET /ACCOUNT` answers the balance.

use weft_sdk::{Error, Request, Response, kv, locks};

/// Answers one request, under the lock of its account.
pub fn handle(req: Request) -> Result<Response, Error> {
    let account = req.path.trim_matches('/');
    if account.is_empty() || account.contains('/') {
        return Ok(Response::text(400, "use /ACCOUNT (one path segment)\n"));
    }
    let key = format!("balance/{account}");
    let balance: i64 = kv::get(&key)?.unwrap_or(0);
    match req.method.as_str() {
        "GET" => Ok(Response::json(
            &serde_json::json!({ "account": account, "balance": balance }),
        )),
        "POST" => {
            let Ok(amount) = req.body_str()?.trim().parse::<i64>() else {
                return Ok(Response::text(400, "the body is a whole number to add\n"));
            };
            let Some(new) = balance.checked_add(amount).filter(|b| *b >= 0) else {
                return Ok(Response::text(409, format!("the balance is {balance}\n")));
            };
            let token = locks::handler_lock().map_or(0, |(_, t)| t);
            match kv::set(&key, &new) {
                Ok(()) => Ok(Response::json(
                    &serde_json::json!({ "account": account, "balance": new, "token": token }),
                )),
                // The lock was lost: nothing was written; the client may retry.
                Err(e @ Error::Fenced(_)) => {
                    Ok(Response::text(503, format!("{e}\n")).header("retry-after", "1"))
                }
                Err(e) => Err(e),
            }
        }
        _ => Ok(Response::text(405, "use GET or POST\n").header("allow", "GET, POST")),
    }
}

weft_sdk::http_handler!(handle);

#[cfg(test)]
mod tests {
    use weft_sdk::Request;
    use weft_sdk::testing::MockHost;

    fn call(req: Request) -> (u16, String) {
        let resp = super::handle(req).unwrap();
        (resp.status, resp.body_str().unwrap().to_owned())
    }

    #[test]
    fn deposits_and_withdrawals_keep_the_balance_at_or_above_zero() {
        let host = MockHost::new();
        host.set_handler_lock(Some("ada"));
        assert_eq!(
            call(Request::post("/ada", "50")),
            (200, r#"{"account":"ada","balance":50,"token":1}"#.into())
        );
        assert_eq!(call(Request::post("/ada", "-20")).0, 200);
        assert_eq!(call(Request::post("/ada", "-31")).0, 409);
        assert_eq!(
            call(Request::get("/ada")).1,
            r#"{"account":"ada","balance":30}"#
        );
        assert_eq!(call(Request::post("/ada", "ten")).0, 400);
    }

    #[test]
    fn a_lost_lock_answers_503_and_writes_nothing() {
        let host = MockHost::new();
        host.set_handler_lock(Some("ada"));
        call(Request::post("/ada", "5"));
        host.lose_lock("ada");
        assert_eq!(call(Request::post("/ada", "5")).0, 503);
        host.set_handler_lock(Some("ada"));
        assert_eq!(
            call(Request::get("/ada")).1,
            r#"{"account":"ada","balance":5}"#
        );
    }
}
