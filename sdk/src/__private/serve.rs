//! The `wasi:http/incoming-handler` glue behind `http_handler!`: read the whole request, call the
//! handler, write status, headers and body.
//!
//! The glue reports its own problems on stderr, not through `weft:plugin/log`, so that a handler
//! that never logs imports nothing beyond `wasi:http/proxy` and runs under any wasi:http host.

use std::io::{Read, Write};

use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

use crate::{IntoResponse, Request, Response};

/// Serve one request with `handler`.
pub fn serve<R: IntoResponse>(
    incoming: IncomingRequest,
    out: ResponseOutparam,
    handler: fn(Request) -> R,
) {
    let response = match read_request(&incoming) {
        Ok(request) => handler(request).into_response(),
        Err(message) => {
            eprintln!("weft-sdk: {message}");
            Response::text(500, message)
        }
    };
    drop(incoming);
    send(response, out);
}

fn read_request(incoming: &IncomingRequest) -> Result<Request, String> {
    let method = match incoming.method() {
        Method::Get => "GET".to_owned(),
        Method::Head => "HEAD".to_owned(),
        Method::Post => "POST".to_owned(),
        Method::Put => "PUT".to_owned(),
        Method::Delete => "DELETE".to_owned(),
        Method::Connect => "CONNECT".to_owned(),
        Method::Options => "OPTIONS".to_owned(),
        Method::Trace => "TRACE".to_owned(),
        Method::Patch => "PATCH".to_owned(),
        Method::Other(other) => other,
    };
    let target = incoming.path_with_query().unwrap_or_default();
    let mut request = Request::from_target(method, &target);
    request.headers = incoming
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| {
            (
                name.to_ascii_lowercase(),
                String::from_utf8_lossy(&value).into_owned(),
            )
        })
        .collect();
    // A request with neither Content-Length nor Transfer-Encoding has no body (RFC 9112, 6.3),
    // so a plain GET costs no body stream at all.
    let has_body = request.headers.iter().any(|(name, value)| {
        (name == "content-length" && value.trim() != "0") || name == "transfer-encoding"
    });
    if has_body {
        let body = incoming
            .consume()
            .map_err(|()| "request body was already consumed".to_owned())?;
        {
            let mut stream = body
                .stream()
                .map_err(|()| "request body stream was already taken".to_owned())?;
            stream
                .read_to_end(&mut request.body)
                .map_err(|e| format!("could not read the request body: {e}"))?;
        }
        drop(IncomingBody::finish(body));
    }
    Ok(request)
}

fn send(mut response: Response, out: ResponseOutparam) {
    if response.header_value("content-length").is_none() {
        let length = response.body.len().to_string();
        response.headers.push(("content-length".to_owned(), length));
    }
    // One host call for all headers; header by header only to name a bad one.
    let entries: Vec<(String, Vec<u8>)> = response
        .headers
        .iter()
        .map(|(name, value)| (name.clone(), value.as_bytes().to_vec()))
        .collect();
    let headers = Fields::from_list(&entries).unwrap_or_else(|_| {
        let headers = Fields::new();
        for (name, value) in &response.headers {
            if let Err(e) = headers.append(name, value.as_bytes()) {
                eprintln!("weft-sdk: dropped response header {name:?}: {e:?}");
            }
        }
        headers
    });
    let outgoing = OutgoingResponse::new(headers);
    if outgoing.set_status_code(response.status).is_err() {
        eprintln!(
            "weft-sdk: invalid status code {}, answering 500",
            response.status
        );
        // 500 is always valid.
        let _ = outgoing.set_status_code(500);
    }
    let Ok(body) = outgoing.body() else {
        unreachable!("a new response's body is taken once")
    };
    ResponseOutparam::set(out, Ok(outgoing));
    let Ok(mut stream) = body.write() else {
        unreachable!("a new body's stream is taken once")
    };
    // wasi:io lets one call write and flush up to 4096 bytes; larger bodies go in pieces.
    let written = if response.body.len() <= 4096 {
        stream
            .blocking_write_and_flush(&response.body)
            .map_err(|e| format!("{e:?}"))
    } else {
        match stream.write_all(&response.body) {
            Ok(()) => stream.blocking_flush().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        }
    };
    drop(stream);
    if let Err(e) = written {
        eprintln!("weft-sdk: could not write the response body: {e}");
    }
    if let Err(e) = OutgoingBody::finish(body, None) {
        eprintln!("weft-sdk: could not finish the response body: {e:?}");
    }
}
