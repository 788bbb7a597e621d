//! `logstats`: log analytics over access-log lines: requests per status code, and the 95th
//! percentile of the response time per path.
//!
//! A line is in the common log format with the response time in seconds at its end (nginx's
//! `$request_time`, Apache's `%T`/`%D` as seconds):
//! `127.0.0.1 - - [02/Dec/2026:10:00:00 +0000] "GET /a?x=1 HTTP/1.1" 200 512 0.042`.
//! The path is the request target without its query. Output keys are `status 200` (value: the
//! number of requests) and `p95 /a` (value: the 95th percentile in milliseconds, nearest rank:
//! the smallest time at least 95% of the path's requests took no longer than). A line that is
//! not in that form fails the task, naming the line.

use weft_sdk::{Emitter, Error, MapReduce};

/// Counts statuses and measures latency per path.
pub struct LogStats;

/// The 95th percentile by nearest rank of `times` (not empty), sorted in place.
pub fn p95(times: &mut [u64]) -> u64 {
    times.sort_unstable();
    let rank = (times.len() * 95).div_ceil(100).max(1);
    times[rank - 1]
}

/// A line's request path (query dropped), status and time in milliseconds.
pub fn parse(line: &str) -> Option<(&str, u16, u64)> {
    let (_, rest) = line.split_once('"')?;
    let (request, rest) = rest.split_once('"')?;
    let target = request.split_whitespace().nth(1)?;
    let path = target.split(['?', '#']).next()?;
    let mut fields = rest.split_whitespace();
    let status: u16 = fields.next()?.parse().ok()?;
    let _bytes = fields.next()?;
    let seconds: f64 = fields.next()?.parse().ok()?;
    if !(0.0..1e9).contains(&seconds) || fields.next().is_some() {
        return None;
    }
    Some((path, status, (seconds * 1000.0).round() as u64))
}

impl MapReduce for LogStats {
    type Key = String;
    type Value = Vec<u64>;
    type Output = u64;

    const HAS_COMBINER: bool = true;

    fn map(chunk: &str, out: &mut Emitter<String, Vec<u64>>) -> Result<(), Error> {
        for line in chunk.lines().filter(|l| !l.trim().is_empty()) {
            let Some((path, status, ms)) = parse(line) else {
                return Err(Error::msg(format!(
                    "logstats: not an access-log line (common log format, then the response time in seconds): {:?}",
                    line.chars().take(120).collect::<String>()
                )));
            };
            out.emit(format!("status {status}"), vec![1]);
            out.emit(format!("p95 {path}"), vec![ms]);
        }
        Ok(())
    }

    fn combine(
        key: String,
        values: Vec<Vec<u64>>,
        out: &mut Emitter<String, Vec<u64>>,
    ) -> Result<(), Error> {
        if key.starts_with("status ") {
            out.emit(key, vec![values.iter().flatten().sum()]);
        } else {
            // A percentile needs every time: gather them.
            out.emit(key, values.into_iter().flatten().collect());
        }
        Ok(())
    }

    fn reduce(
        key: String,
        values: Vec<Vec<u64>>,
        out: &mut Emitter<String, u64>,
    ) -> Result<(), Error> {
        let mut all: Vec<u64> = values.into_iter().flatten().collect();
        if key.starts_with("status ") {
            out.emit(key, all.iter().sum());
        } else if !all.is_empty() {
            out.emit(key, p95(&mut all));
        }
        Ok(())
    }
}

weft_sdk::export_mapreduce!(LogStats);

#[cfg(test)]
mod tests {
    use weft_sdk::testing::{run_mapreduce, try_run_mapreduce};

    fn line(path: &str, status: u16, seconds: f64) -> String {
        format!(
            "10.0.0.1 - - [02/Dec/2026:10:00:00 +0000] \"GET {path} HTTP/1.1\" {status} 512 {seconds}\n"
        )
    }

    #[test]
    fn counts_statuses_and_takes_the_p95_per_path() {
        let mut input = String::new();
        for i in 1..=100 {
            input.push_str(&line(
                "/a?q=1",
                if i % 10 == 0 { 500 } else { 200 },
                i as f64 / 1000.0,
            ));
        }
        input.push_str(&line("/b", 404, 0.5));
        let out = run_mapreduce::<super::LogStats>(&input, 2);
        assert_eq!(
            out,
            [
                ("p95 /a".to_string(), 95),
                ("p95 /b".to_string(), 500),
                ("status 200".to_string(), 90),
                ("status 404".to_string(), 1),
                ("status 500".to_string(), 10),
            ]
        );
    }

    #[test]
    fn nearest_rank() {
        assert_eq!(super::p95(&mut [7]), 7);
        assert_eq!(super::p95(&mut [3, 1, 2]), 3);
        assert_eq!(super::p95(&mut (1..=20).rev().collect::<Vec<_>>()), 19);
    }

    #[test]
    fn a_line_not_in_the_format_is_an_error_naming_it() {
        let e = try_run_mapreduce::<super::LogStats>("GET / 200\n", 1).unwrap_err();
        assert!(
            e.contains("not an access-log line") && e.contains("\"GET / 200\""),
            "{e}"
        );
    }
}
