//! `bank`: accounts keyed by id. A transfer takes both accounts' locks and moves money, so
//! the total never changes, and it is applied exactly once per transfer id.
//!
//! - `PUT /acct/ID` with a JSON integer body opens the account with that balance (or sets it).
//! - `GET /acct/ID` answers `{"balance":70,"applied":["t1"]}`: the balance, and the transfers
//!   applied to the account.
//! - `POST /transfer` with `{"id":"t1","from":"a","to":"b","amount":30}` moves the money.
//!   Retrying a transfer with the same id after an error applies what is missing of it and
//!   nothing twice: the debit is written first, each account records the ids applied to it.
//!
//! Errors: 404 for an unknown account, 409 for too little money, 400 for a bad request, 503
//! when a lock is not granted in time, a lock was lost mid-transfer, or the store is down
//! (retry with the same id).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_sdk::{Error, Request, Response, kv, locks};

/// How long a transfer waits for its two locks.
const LOCK_WAIT: Duration = Duration::from_secs(10);

/// One account as stored under `acct/ID`.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Account {
    /// The money in it.
    pub balance: i64,
    /// The transfers applied to it, oldest first.
    pub applied: Vec<String>,
}

/// A transfer request.
#[derive(Debug, Deserialize)]
pub struct Transfer {
    /// Names the transfer: a retry with the same id is applied at most once.
    pub id: String,
    /// The account debited.
    pub from: String,
    /// The account credited.
    pub to: String,
    /// How much, above 0.
    pub amount: i64,
}

fn key(id: &str) -> String {
    format!("acct/{id}")
}

fn load(id: &str) -> Result<Option<Account>, Error> {
    kv::get(&key(id))
}

/// The bank's routes.
pub fn bank(req: Request) -> Response {
    let segments: Vec<&str> = req.path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match (req.method.as_str(), segments.as_slice()) {
        ("GET", ["acct", id]) => match load(id) {
            Ok(Some(a)) => Ok(Response::json(&a)),
            Ok(None) => Ok(Response::text(404, format!("no account `{id}`\n"))),
            Err(e) => Err(e),
        },
        ("PUT", ["acct", id]) => open(id, &req),
        ("POST", ["transfer"]) => match req.json::<Transfer>() {
            Ok(t) => transfer(&t),
            Err(e) => Ok(Response::text(400, format!("bad transfer: {e}\n"))),
        },
        _ => Ok(Response::text(
            404,
            "routes: GET|PUT /acct/ID, POST /transfer\n",
        )),
    };
    result.unwrap_or_else(failed)
}

fn open(id: &str, req: &Request) -> Result<Response, Error> {
    let Ok(balance) = req.json::<i64>() else {
        return Ok(Response::text(400, "the body must be a JSON integer\n"));
    };
    locks::with_lock(&[&key(id)], LOCK_WAIT, || {
        let mut account = load(id)?.unwrap_or_default();
        account.balance = balance;
        kv::set(&key(id), &account)?;
        Ok(Response::json(&account))
    })
}

fn transfer(t: &Transfer) -> Result<Response, Error> {
    if t.from == t.to || t.amount <= 0 || t.id.is_empty() {
        return Ok(Response::text(
            400,
            "a transfer needs an id, two different accounts and an amount above 0\n",
        ));
    }
    let (from_key, to_key) = (key(&t.from), key(&t.to));
    locks::with_lock(&[&from_key, &to_key], LOCK_WAIT, || {
        let (Some(mut from), Some(mut to)) = (load(&t.from)?, load(&t.to)?) else {
            return Ok(Response::text(404, "no such account\n"));
        };
        let debited = from.applied.contains(&t.id);
        if !debited {
            if from.balance < t.amount {
                return Ok(Response::text(
                    409,
                    format!(
                        "`{}` holds {}, less than {}\n",
                        t.from, from.balance, t.amount
                    ),
                ));
            }
            from.balance -= t.amount;
            from.applied.push(t.id.clone());
            kv::set(&from_key, &from)?;
        }
        if !to.applied.contains(&t.id) {
            to.balance += t.amount;
            to.applied.push(t.id.clone());
            kv::set(&to_key, &to)?;
        }
        Ok(Response::json(&serde_json::json!({
            "id": t.id, "from": from.balance, "to": to.balance,
        })))
    })
}

/// A failure as the client sees it: 503 (retry) for what passes, 500 for the rest.
fn failed(e: Error) -> Response {
    match e {
        Error::Fenced(_) | Error::LockTimeout(_) | Error::Unavailable(_) => {
            Response::text(503, format!("{e}\n")).header("retry-after", "1")
        }
        e => Response::error(e),
    }
}

weft_sdk::http_handler!(bank);

#[cfg(test)]
mod tests {
    use weft_sdk::Request;
    use weft_sdk::testing::MockHost;

    use super::Account;

    fn call(req: Request) -> (u16, String) {
        let resp = super::bank(req);
        (resp.status, resp.body_str().unwrap().to_owned())
    }

    fn account(id: &str) -> Account {
        weft_sdk::kv::get(&format!("acct/{id}")).unwrap().unwrap()
    }

    fn transfer(id: &str, from: &str, to: &str, amount: i64) -> (u16, String) {
        call(Request::post(
            "/transfer",
            format!(r#"{{"id":"{id}","from":"{from}","to":"{to}","amount":{amount}}}"#),
        ))
    }

    #[test]
    fn transfers_move_money_once_and_keep_the_total() {
        let host = MockHost::new();
        assert_eq!(call(Request::new("PUT", "/acct/a").with_body("100")).0, 200);
        assert_eq!(call(Request::new("PUT", "/acct/b").with_body("5")).0, 200);
        assert_eq!(transfer("t1", "a", "b", 30).0, 200);
        // The same id again changes nothing.
        assert_eq!(transfer("t1", "a", "b", 30).0, 200);
        assert_eq!((account("a").balance, account("b").balance), (70, 35));
        assert_eq!(transfer("t2", "b", "a", 500).0, 409);
        assert_eq!(transfer("t3", "a", "nobody", 1).0, 404);
        assert_eq!(transfer("t4", "a", "a", 1).0, 400);
        assert_eq!(account("a").applied, ["t1"]);
        assert!(host.held_locks().is_empty(), "the locks were released");
    }

    #[test]
    fn a_lost_lock_stops_the_transfer_and_a_retry_completes_it_once() {
        let host = MockHost::new();
        call(Request::new("PUT", "/acct/a").with_body("100"));
        call(Request::new("PUT", "/acct/b").with_body("0"));
        // A half-done transfer: the debit was written, then the node lost the lock.
        let mut a = account("a");
        a.balance -= 10;
        a.applied.push("t1".into());
        weft_sdk::kv::set("acct/a", &a).unwrap();
        // While another holder has the account, the transfer answers 503.
        host.lock_elsewhere("acct/b", true);
        assert_eq!(transfer("t1", "a", "b", 10).0, 503);
        host.lock_elsewhere("acct/b", false);
        // The retry credits b and does not debit a again.
        assert_eq!(transfer("t1", "a", "b", 10).0, 200);
        assert_eq!((account("a").balance, account("b").balance), (90, 10));
    }

    #[test]
    fn writes_after_a_lost_lock_are_refused() {
        let host = MockHost::new();
        call(Request::new("PUT", "/acct/a").with_body("1"));
        let guard = weft_sdk::locks::lock("acct/a", std::time::Duration::ZERO).unwrap();
        host.lose_lock("acct/a");
        assert!(matches!(
            weft_sdk::kv::set("acct/a", &0),
            Err(weft_sdk::Error::Fenced(_))
        ));
        drop(guard);
        assert_eq!(account("a").balance, 1);
    }
}
