//! Plain request and response values for HTTP handlers.
//!
//! A handler sees the whole request at once (the SDK reads the body fully before calling it) and
//! returns a whole response; streaming is deliberately absent to keep handlers simple.
//! Header names are lowercase; values that are not UTF-8 are decoded lossily.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;

/// An HTTP request as a handler sees it.
///
/// `path` is the part after `/fn/{name}` and always starts with `/`:
/// `GET /fn/hello/world?x=1` arrives as method `GET`, path `/world`, query `x=1`
/// (the host strips the route before the request reaches the component).
///
/// ```
/// use weft_sdk::Request;
///
/// let req = Request::post("/items?dry_run=1", r#"{"id":7}"#).header("Content-Type", "application/json");
/// assert_eq!(req.method, "POST");
/// assert_eq!(req.path, "/items");
/// assert_eq!(req.query_param("dry_run"), Some("1"));
/// assert_eq!(req.header_value("content-type"), Some("application/json"));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Request {
    /// The method in upper case, e.g. `GET`.
    pub method: String,
    /// The path below the function's route, starting with `/` (`/` for the route itself).
    pub path: String,
    /// The raw query string without the `?`; empty when there is none.
    pub query: String,
    /// Header names (lowercase) and values, in arrival order; a name may repeat.
    pub headers: Vec<(String, String)>,
    /// The whole request body.
    pub body: Vec<u8>,
}

impl Request {
    /// A request with `method` for `target`, a path below the function's route optionally
    /// followed by `?query`.
    ///
    /// ```
    /// let req = weft_sdk::Request::new("patch", "/a/b?c=d");
    /// assert_eq!((req.method.as_str(), req.path.as_str(), req.query.as_str()), ("PATCH", "/a/b", "c=d"));
    /// ```
    pub fn new(method: impl Into<String>, target: &str) -> Self {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let path = if path.starts_with('/') {
            path.to_owned()
        } else {
            format!("/{path}")
        };
        Request {
            method: method.into().to_ascii_uppercase(),
            path,
            query: query.to_owned(),
            ..Request::default()
        }
    }

    /// A `GET` request for `target` (path and optional `?query`).
    ///
    /// ```
    /// assert_eq!(weft_sdk::Request::get("/x").method, "GET");
    /// ```
    pub fn get(target: &str) -> Self {
        Request::new("GET", target)
    }

    /// A `POST` request for `target` with `body`.
    ///
    /// ```
    /// let req = weft_sdk::Request::post("/x", "data");
    /// assert_eq!(req.body, b"data");
    /// ```
    pub fn post(target: &str, body: impl Into<Vec<u8>>) -> Self {
        Request::new("POST", target).with_body(body)
    }

    /// The request with its body replaced.
    ///
    /// ```
    /// let req = weft_sdk::Request::new("PUT", "/x").with_body(vec![1, 2]);
    /// assert_eq!(req.body, [1, 2]);
    /// ```
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The request with one more header (the name is lowercased).
    ///
    /// ```
    /// let req = weft_sdk::Request::get("/").header("X-Trace", "1");
    /// assert_eq!(req.headers, [("x-trace".to_owned(), "1".to_owned())]);
    /// ```
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of header `name` (case-insensitive).
    ///
    /// ```
    /// let req = weft_sdk::Request::get("/").header("accept", "text/plain");
    /// assert_eq!(req.header_value("Accept"), Some("text/plain"));
    /// ```
    pub fn header_value(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The first value of query parameter `name`, as written (no percent-decoding).
    ///
    /// ```
    /// let req = weft_sdk::Request::get("/?a=1&flag&b=x%20y");
    /// assert_eq!(req.query_param("b"), Some("x%20y"));
    /// assert_eq!(req.query_param("flag"), Some(""));
    /// assert_eq!(req.query_param("c"), None);
    /// ```
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query
            .split('&')
            .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value)
    }

    /// The body as UTF-8 text.
    ///
    /// ```
    /// assert_eq!(weft_sdk::Request::post("/", "hi").body_str().unwrap(), "hi");
    /// ```
    pub fn body_str(&self) -> Result<&str, Error> {
        std::str::from_utf8(&self.body)
            .map_err(|e| Error::msg(format!("request body is not UTF-8: {e}")))
    }

    /// The body decoded from JSON.
    ///
    /// ```
    /// let n: Vec<u8> = weft_sdk::Request::post("/", "[1,2]").json().unwrap();
    /// assert_eq!(n, [1, 2]);
    /// ```
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// Build the request a guest sees from the host's method and request target.
    ///
    /// Weft forwards the target below the function's route (`/fn/{name}/rest?query` arrives as
    /// `/rest?query`), so a component sees the same paths under Weft as under any other
    /// wasi:http server such as `wasmtime serve`.
    #[cfg_attr(not(all(target_arch = "wasm32", feature = "http")), allow(dead_code))]
    pub(crate) fn from_target(method: String, target: &str) -> Self {
        let mut req = Request::new(method, target);
        if req.path.is_empty() {
            req.path.push('/');
        }
        req
    }
}

/// An HTTP response built by a handler.
///
/// ```
/// use weft_sdk::Response;
///
/// let resp = Response::text(404, "no such item").header("cache-control", "no-store");
/// assert_eq!(resp.status, 404);
/// assert_eq!(resp.header_value("content-type"), Some("text/plain; charset=utf-8"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code, e.g. 200.
    pub status: u16,
    /// Header names (lowercase) and values. The SDK adds `content-length` when sending.
    pub headers: Vec<(String, String)>,
    /// The whole response body.
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    ///
    /// ```
    /// assert!(weft_sdk::Response::new(204).body.is_empty());
    /// ```
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// A `text/plain` response.
    ///
    /// ```
    /// let resp = weft_sdk::Response::text(200, "hi");
    /// assert_eq!(resp.body_str(), Ok("hi"));
    /// ```
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status)
            .header("content-type", "text/plain; charset=utf-8")
            .with_body(body.into())
    }

    /// A `200` `application/json` response; if `value` cannot be encoded, a `500` saying why.
    ///
    /// ```
    /// let resp = weft_sdk::Response::json(&serde_json::json!({"count": 3}));
    /// assert_eq!(resp.body_str(), Ok(r#"{"count":3}"#));
    /// assert_eq!(resp.header_value("content-type"), Some("application/json"));
    /// ```
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Self {
        match serde_json::to_vec(value) {
            Ok(body) => Response::new(200)
                .header("content-type", "application/json")
                .with_body(body),
            Err(e) => Response::error(Error::from(e)),
        }
    }

    /// A `500` response carrying `error`'s message, which is also logged.
    ///
    /// ```
    /// let resp = weft_sdk::Response::error(weft_sdk::Error::msg("disk on fire"));
    /// assert_eq!((resp.status, resp.body_str()), (500, Ok("disk on fire")));
    /// ```
    pub fn error(error: impl std::fmt::Display) -> Self {
        let message = error.to_string();
        crate::log::error(format!("handler failed: {message}"));
        Response::text(500, message)
    }

    /// The response with another status.
    ///
    /// ```
    /// assert_eq!(weft_sdk::Response::json(&1).with_status(201).status, 201);
    /// ```
    pub fn with_status(mut self, status: u16) -> Self {
        self.status = status;
        self
    }

    /// The response with its body replaced.
    ///
    /// ```
    /// let resp = weft_sdk::Response::new(200).with_body("ok");
    /// assert_eq!(resp.body, b"ok");
    /// ```
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The response with one more header (the name is lowercased).
    ///
    /// ```
    /// let resp = weft_sdk::Response::new(302).header("Location", "/elsewhere");
    /// assert_eq!(resp.header_value("location"), Some("/elsewhere"));
    /// ```
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_ascii_lowercase(), value.into()));
        self
    }

    /// The first value of header `name` (case-insensitive).
    ///
    /// ```
    /// assert_eq!(weft_sdk::Response::new(200).header_value("x"), None);
    /// ```
    pub fn header_value(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// The body as UTF-8 text, or `Err` with the UTF-8 error if it is not text.
    ///
    /// ```
    /// assert_eq!(weft_sdk::Response::text(200, "ok").body_str(), Ok("ok"));
    /// ```
    pub fn body_str(&self) -> Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(&self.body)
    }
}

/// What a handler may return: a [`Response`], or a `Result` whose error becomes a `500`.
///
/// ```
/// use weft_sdk::{Error, IntoResponse, Request, Response};
///
/// fn handler(req: Request) -> Result<Response, Error> {
///     let n: u32 = req.json()?;
///     Ok(Response::json(&(n * 2)))
/// }
/// let resp = handler(Request::post("/", "nope")).into_response();
/// assert_eq!(resp.status, 500);
/// ```
pub trait IntoResponse {
    /// Turn the handler's return value into the response to send.
    fn into_response(self) -> Response;
}

impl IntoResponse for Response {
    fn into_response(self) -> Response {
        self
    }
}

impl<E: std::fmt::Display> IntoResponse for Result<Response, E> {
    fn into_response(self) -> Response {
        self.unwrap_or_else(Response::error)
    }
}

fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(target: &str, path: &str, query: &str) {
        let req = Request::from_target("GET".into(), target);
        assert_eq!(
            (req.path.as_str(), req.query.as_str()),
            (path, query),
            "target {target}"
        );
    }

    #[test]
    fn splits_the_target_as_forwarded() {
        check("/world", "/world", "");
        check("/a/b?x=1", "/a/b", "x=1");
        check("/fn/x/y", "/fn/x/y", "");
        check("/?x=1", "/", "x=1");
        check("/plain/path?y", "/plain/path", "y");
        check("/", "/", "");
        check("", "/", "");
    }
}
