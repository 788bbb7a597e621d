//! `guest-standard`: a `wasi:http` handler that imports only standard interfaces,
//! `wasi:keyvalue@0.2.0-draft` (store, atomics, batch) and `wasi:config/store@0.2.0-rc.1`,
//! through its own `wit-bindgen` bindings and no Weft SDK: the shape of a component written
//! for Spin or wasmCloud. Each route answers plain text:
//!
//! - `GET /config/KEY`: the configuration value (404 if absent); `GET /config`: every
//!   `KEY=VALUE`, one per line.
//! - `PUT /kv/KEY` stores the body; `GET /kv/KEY` reads it (404 if absent); `DELETE /kv/KEY`;
//!   `GET /exists/KEY`: `true` or `false`.
//! - `POST /incr/KEY?by=N`: the number after adding N.
//! - `POST /batch`: sets `a=1`, `b=2`, `c=3` in one call, reads `a`, `b` and `zz` in one call
//!   (answering `a=1 b=2 zz=-`), then deletes `a` and `b` in one call.
//! - `GET /keys`: every key, one per line, read a page at a time.
//! - `GET /open/NAME`: opens bucket NAME and says whether that worked.

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Route<'a> {
    /// One configuration value, or all (`None`).
    Config(Option<&'a str>),
    /// A key-value operation on one key: method and key.
    Kv(&'a str, &'a str),
    /// Whether a key holds a value.
    Exists(&'a str),
    /// Add to a counter.
    Incr(&'a str, u64),
    /// The batch calls.
    Batch,
    /// Every key.
    Keys,
    /// Open a bucket by name.
    Open(&'a str),
    /// Anything else.
    Unknown,
}

/// The route of `method` and `path_with_query`.
pub fn route<'a>(method: &'a str, path_with_query: &'a str) -> Route<'a> {
    let (path, query) = path_with_query
        .split_once('?')
        .unwrap_or((path_with_query, ""));
    let by = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("by="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    match (method, path) {
        ("GET", "/config") => Route::Config(None),
        ("GET", p) if p.starts_with("/config/") => Route::Config(Some(&p[8..])),
        (m, p) if p.starts_with("/kv/") => Route::Kv(m, &p[4..]),
        ("GET", p) if p.starts_with("/exists/") => Route::Exists(&p[8..]),
        ("POST", p) if p.starts_with("/incr/") => Route::Incr(&p[6..], by),
        ("POST", "/batch") => Route::Batch,
        ("GET", "/keys") => Route::Keys,
        ("GET", p) if p.starts_with("/open/") => Route::Open(&p[6..]),
        _ => Route::Unknown,
    }
}

#[cfg(target_arch = "wasm32")]
mod guest {
    mod kv {
        wit_bindgen::generate!({
            path: "../../sdk/wit",
            world: "wasi:keyvalue/imports",
            generate_all,
        });
    }
    mod config {
        wit_bindgen::generate!({
            path: "../../sdk/wit",
            world: "wasi:config/imports",
            generate_all,
        });
    }

    use config::wasi::config::store as config_store;
    use kv::wasi::keyvalue::{atomics, batch, store};
    use wasi::http::types::{
        Fields, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
    };

    use super::{Route, route};

    struct Standard;

    fn body_of(request: &IncomingRequest) -> Vec<u8> {
        let mut out = Vec::new();
        let Ok(body) = request.consume() else {
            return out;
        };
        let Ok(stream) = body.stream() else {
            return out;
        };
        while let Ok(chunk) = stream.blocking_read(64 << 10) {
            out.extend_from_slice(&chunk);
        }
        out
    }

    fn answer(out: ResponseOutparam, status: u16, text: &[u8]) {
        let response = OutgoingResponse::new(Fields::new());
        let _ = response.set_status_code(status);
        let Ok(body) = response.body() else {
            return;
        };
        ResponseOutparam::set(out, Ok(response));
        if let Ok(stream) = body.write() {
            // At most 4 KiB a call, as `blocking-write-and-flush` allows.
            for piece in text.chunks(4096) {
                if stream.blocking_write_and_flush(piece).is_err() {
                    break;
                }
            }
        }
        let _ = OutgoingBody::finish(body, None);
    }

    fn said(e: store::Error) -> String {
        match e {
            store::Error::NoSuchStore => "no such store".into(),
            store::Error::AccessDenied => "access denied".into(),
            store::Error::Other(m) => m,
        }
    }

    fn serve(request: &IncomingRequest) -> Result<(u16, Vec<u8>), String> {
        let method = match request.method() {
            Method::Get => "GET",
            Method::Put => "PUT",
            Method::Post => "POST",
            Method::Delete => "DELETE",
            _ => "OTHER",
        };
        let target = request.path_with_query().unwrap_or_default();
        let route = route(method, &target);
        if let Route::Config(key) = route {
            return match key {
                Some(k) => match config_store::get(k).map_err(|e| format!("{e:?}"))? {
                    Some(v) => Ok((200, v.into_bytes())),
                    None => Ok((404, b"no such configuration key".to_vec())),
                },
                None => {
                    let mut all = config_store::get_all().map_err(|e| format!("{e:?}"))?;
                    all.sort();
                    let lines: Vec<String> =
                        all.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
                    Ok((200, lines.concat().into_bytes()))
                }
            };
        }
        if let Route::Open(name) = route {
            return Ok(match store::open(name) {
                Ok(_) => (200, b"opened".to_vec()),
                Err(e) => (400, said(e).into_bytes()),
            });
        }
        let bucket = store::open("default").map_err(said)?;
        Ok(match route {
            Route::Kv("PUT", key) => {
                bucket.set(key, &body_of(request)).map_err(said)?;
                (204, vec![])
            }
            Route::Kv("GET", key) => match bucket.get(key).map_err(said)? {
                Some(v) => (200, v),
                None => (404, b"absent".to_vec()),
            },
            Route::Kv("DELETE", key) => {
                bucket.delete(key).map_err(said)?;
                (204, vec![])
            }
            Route::Exists(key) => (
                200,
                bucket.exists(key).map_err(said)?.to_string().into_bytes(),
            ),
            Route::Incr(key, by) => (
                200,
                atomics::increment(&bucket, key, by)
                    .map_err(said)?
                    .to_string()
                    .into_bytes(),
            ),
            Route::Batch => {
                let pairs: Vec<(String, Vec<u8>)> = [("a", "1"), ("b", "2"), ("c", "3")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                    .collect();
                batch::set_many(&bucket, &pairs).map_err(said)?;
                let keys: Vec<String> = ["a", "b", "zz"].iter().map(|k| k.to_string()).collect();
                let got = batch::get_many(&bucket, &keys).map_err(said)?;
                let shown: Vec<String> = keys
                    .iter()
                    .zip(got)
                    .map(|(k, v)| match v {
                        Some((_, v)) => format!("{k}={}", String::from_utf8_lossy(&v)),
                        None => format!("{k}=-"),
                    })
                    .collect();
                batch::delete_many(&bucket, &keys[..2]).map_err(said)?;
                (200, shown.join(" ").into_bytes())
            }
            Route::Keys => {
                let mut keys = Vec::new();
                let mut cursor = None;
                loop {
                    let page = bucket.list_keys(cursor).map_err(said)?;
                    keys.extend(page.keys);
                    match page.cursor {
                        Some(c) => cursor = Some(c),
                        None => break,
                    }
                }
                (
                    200,
                    keys.iter()
                        .map(|k| format!("{k}\n"))
                        .collect::<String>()
                        .into_bytes(),
                )
            }
            _ => (404, b"unknown route".to_vec()),
        })
    }

    impl wasi::exports::http::incoming_handler::Guest for Standard {
        fn handle(request: IncomingRequest, out: ResponseOutparam) {
            match serve(&request) {
                Ok((status, text)) => answer(out, status, &text),
                Err(e) => answer(out, 500, e.as_bytes()),
            }
        }
    }

    wasi::http::proxy::export!(Standard);
}

#[cfg(test)]
mod tests {
    use super::{Route, route};

    #[test]
    fn requests_find_their_routes() {
        assert_eq!(
            route("GET", "/config/greeting"),
            Route::Config(Some("greeting"))
        );
        assert_eq!(route("GET", "/config"), Route::Config(None));
        assert_eq!(route("PUT", "/kv/a"), Route::Kv("PUT", "a"));
        assert_eq!(route("POST", "/incr/hits?by=5"), Route::Incr("hits", 5));
        assert_eq!(route("POST", "/incr/hits"), Route::Incr("hits", 1));
        assert_eq!(route("GET", "/keys"), Route::Keys);
        assert_eq!(route("GET", "/open/other"), Route::Open("other"));
        assert_eq!(route("GET", "/nope"), Route::Unknown);
    }
}
