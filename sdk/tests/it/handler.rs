//! Handlers, requests, responses and logs.

use weft_sdk::log::{self, Level};
use weft_sdk::testing::MockHost;
use weft_sdk::{Error, Request, Response};

fn echo(req: Request) -> Response {
    log::debug(format!("{} {}", req.method, req.path));
    Response::text(
        200,
        format!(
            "{} {} {} {}",
            req.method,
            req.path,
            req.query,
            req.body_str().unwrap()
        ),
    )
    .header("x-seen", req.header_value("x-in").unwrap_or("-"))
}
weft_sdk::http_handler!(echo);

fn parse(req: Request) -> Result<Response, Error> {
    let n: i64 = req.json()?;
    if n < 0 {
        return Err(Error::msg("n must not be negative"));
    }
    Ok(Response::json(&serde_json::json!({ "double": n * 2 })))
}
weft_sdk::http_handler!(parse);

#[test]
fn handler_sees_the_request() {
    let host = MockHost::new();
    let req = Request::post("/a/b?x=1", "body").header("X-In", "yes");
    let resp = host.call(echo, req);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body_str(), Ok("POST /a/b x=1 body"));
    assert_eq!(resp.header_value("X-Seen"), Some("yes"));
    assert_eq!(host.logs(), [(Level::Debug, "POST /a/b".to_owned())]);
}

#[test]
fn ok_results_are_sent_as_is() {
    let resp = MockHost::new().call(parse, Request::post("/", "21"));
    assert_eq!(
        (resp.status, resp.body_str()),
        (200, Ok(r#"{"double":42}"#))
    );
    assert_eq!(resp.header_value("content-type"), Some("application/json"));
}

#[test]
fn errors_become_500_with_the_message_and_are_logged() {
    let host = MockHost::new();
    let resp = host.call(parse, Request::post("/", "-1"));
    assert_eq!(
        (resp.status, resp.body_str()),
        (500, Ok("n must not be negative"))
    );
    assert_eq!(
        host.logs(),
        [(
            Level::Error,
            "handler failed: n must not be negative".to_owned()
        )]
    );

    let resp = host.call(parse, Request::post("/", "not json"));
    assert_eq!(resp.status, 500);
    assert!(
        resp.body_str()
            .unwrap()
            .starts_with("JSON encoding or decoding failed")
    );
}

#[test]
fn every_log_level_is_recorded_in_order() {
    let host = MockHost::new();
    log::trace("t");
    log::debug("d");
    log::info(String::from("i"));
    log::warn("w");
    log::error("e");
    let levels: Vec<Level> = host.logs().into_iter().map(|(level, _)| level).collect();
    assert_eq!(
        levels,
        [
            Level::Trace,
            Level::Debug,
            Level::Info,
            Level::Warn,
            Level::Error
        ]
    );
}

#[test]
fn builders_compose() {
    let resp = Response::new(201)
        .with_body("x")
        .header("A", "1")
        .with_status(202);
    assert_eq!((resp.status, resp.body.as_slice()), (202, b"x".as_slice()));
    assert_eq!(resp.headers, [("a".to_owned(), "1".to_owned())]);
    let req = Request::new("get", "no-slash");
    assert_eq!(
        (req.method.as_str(), req.path.as_str()),
        ("GET", "/no-slash")
    );
}
