//! `guest-memo`: a test guest that remembers, in its linear memory, what its instance was told,
//! to show what instance reuse (`weft deploy --reuse N`) keeps and what it never shares.
//!
//! `/remember/X` adds `X` to the instance's list, `/recall` leaves it as it is, and both answer
//! `served=K seen=A,B,...`: how many requests this instance has served, this one included, and
//! the list. `/trap` panics (a trap).
//!
//! Two paths test the conditions of reuse, and answer the same way:
//! - `/work/MS` computes for MS milliseconds of wall-clock time before answering, to show that
//!   a reused instance runs under its own request's deadline, not the one before;
//! - `/hold/KEY` takes the lock `KEY` and never lets go of it (the guard is forgotten), so the
//!   instance ends its request holding a lock, and must not serve another.

use std::sync::Mutex;

use weft_sdk::{Request, Response};

/// What this instance has served and been told.
static MEMORY: Mutex<(u32, Vec<String>)> = Mutex::new((0, Vec::new()));

/// Remember, recall or trap.
pub fn memo(req: Request) -> Response {
    let path = req.path.trim_matches('/');
    if path == "trap" {
        panic!("guest-memo: deliberate panic");
    }
    if let Some(ms) = path.strip_prefix("work/").and_then(|ms| ms.parse().ok()) {
        let until = std::time::Instant::now() + std::time::Duration::from_millis(ms);
        let mut x = 0u64;
        while std::time::Instant::now() < until {
            x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
        }
    }
    if let Some(key) = path.strip_prefix("hold/") {
        match weft_sdk::locks::lock(key, std::time::Duration::from_secs(5)) {
            Ok(guard) => std::mem::forget(guard),
            Err(e) => return Response::text(503, format!("lock {key}: {e}")),
        }
    }
    let mut memory = MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    memory.0 += 1;
    if let Some(x) = path.strip_prefix("remember/") {
        memory.1.push(x.to_string());
    }
    Response::text(
        200,
        format!("served={} seen={}", memory.0, memory.1.join(",")),
    )
}

weft_sdk::http_handler!(memo);

#[cfg(test)]
mod tests {
    use weft_sdk::Request;
    use weft_sdk::testing::MockHost;

    #[test]
    fn one_instance_remembers_what_it_was_told() {
        let host = MockHost::new();
        let call = |path: &str| {
            host.call(super::memo, Request::get(path))
                .body_str()
                .map(String::from)
        };
        assert_eq!(call("/remember/a").as_deref(), Ok("served=1 seen=a"));
        assert_eq!(call("/recall").as_deref(), Ok("served=2 seen=a"));
    }
}
