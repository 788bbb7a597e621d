//! `cache`: a read-through cache with a time to live, in front of a slow origin.
//!
//! `GET /fn/cache/primes/N` answers how many primes there are below `N` (the origin: trial
//! division, so a large `N` takes a while). The first request computes it and stores the answer
//! in the function's key-value store for `?ttl=` seconds (default 30); until then every node
//! answers from the store (`x-cache: hit`), after it the key reads as absent everywhere and the
//! next request computes it again (`x-cache: miss`). `DELETE /fn/cache/primes/N` drops the
//! entry at once. Guests have no network access, so the origin here is a computation; the
//! pattern is the same for any slow source.

use std::time::Duration;

use weft_sdk::{Error, Request, Response, kv};

/// The largest `N` asked of the origin.
const MAX_N: u64 = 50_000_000;

/// Serve one request: from the cache, or from the origin (then cached).
pub fn cache(req: Request) -> Result<Response, Error> {
    let Some(n) = req.path.strip_prefix("/primes/") else {
        return Ok(Response::text(404, "try GET /primes/N\n"));
    };
    let n: u64 = match n.parse() {
        Ok(n) if n <= MAX_N => n,
        _ => {
            return Ok(Response::text(
                400,
                format!("N must be a whole number up to {MAX_N}, not `{n}`\n"),
            ));
        }
    };
    let key = format!("primes/{n}");
    match req.method.as_str() {
        "GET" => {}
        "DELETE" => {
            let existed = kv::delete(&key)?;
            return Ok(Response::json(&serde_json::json!({ "dropped": existed })));
        }
        _ => return Ok(Response::text(405, "use GET or DELETE\n").header("allow", "GET, DELETE")),
    }
    let ttl = match req.query_param("ttl").map(str::parse::<u64>) {
        None => 30,
        Some(Ok(s)) if s > 0 => s,
        Some(_) => {
            return Ok(Response::text(
                400,
                "ttl is a whole number of seconds above 0\n",
            ));
        }
    };
    if let Some(count) = kv::get::<u64>(&key)? {
        return Ok(answer(n, count).header("x-cache", "hit"));
    }
    let count = primes_below(n);
    kv::set_with_ttl(&key, &count, Duration::from_secs(ttl))?;
    Ok(answer(n, count).header("x-cache", "miss"))
}

fn answer(n: u64, count: u64) -> Response {
    Response::json(&serde_json::json!({ "below": n, "primes": count }))
}

/// The slow origin: primes below `n` by trial division.
fn primes_below(n: u64) -> u64 {
    (2..n)
        .filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0))
        .count() as u64
}

weft_sdk::http_handler!(cache);

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use weft_sdk::Request;
    use weft_sdk::testing::MockHost;

    fn get(host: &MockHost, path: &str) -> (u16, Option<String>, String) {
        let resp = host.call(super::cache, Request::get(path));
        let cache = resp.header_value("x-cache").map(str::to_owned);
        (resp.status, cache, resp.body_str().unwrap().to_owned())
    }

    #[test]
    fn a_miss_fills_the_cache_until_the_ttl_runs_out() {
        let host = MockHost::new();
        let body = r#"{"below":100,"primes":25}"#.to_owned();
        assert_eq!(
            get(&host, "/primes/100?ttl=10"),
            (200, Some("miss".into()), body.clone())
        );
        assert_eq!(
            get(&host, "/primes/100"),
            (200, Some("hit".into()), body.clone())
        );
        host.advance(Duration::from_secs(9));
        assert_eq!(get(&host, "/primes/100").1.as_deref(), Some("hit"));
        host.advance(Duration::from_secs(1));
        assert_eq!(get(&host, "/primes/100"), (200, Some("miss".into()), body));
    }

    #[test]
    fn delete_drops_the_entry_and_bad_input_is_refused() {
        let host = MockHost::new();
        get(&host, "/primes/10");
        let resp = host.call(super::cache, Request::new("DELETE", "/primes/10"));
        assert_eq!(resp.body_str().unwrap(), r#"{"dropped":true}"#);
        assert_eq!(get(&host, "/primes/10").1.as_deref(), Some("miss"));
        assert_eq!(get(&host, "/primes/ten").0, 400);
        assert_eq!(get(&host, "/primes/10?ttl=0").0, 400);
        assert_eq!(get(&host, "/other").0, 404);
    }

    #[test]
    fn the_origin_counts_primes() {
        assert_eq!(
            [0, 2, 3, 10, 100, 1000].map(super::primes_below),
            [0, 0, 1, 4, 25, 168]
        );
    }
}
