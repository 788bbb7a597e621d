//! WASI 0.1 programs served the CGI way (WAGI, as Spin and the original Wagi do): a core
//! module built for `wasm32-wasip1` with a `_start` is made a component at deploy, with
//! `wit-component` and the preview1 command adapter, and each request runs it once: the request
//! line and headers as environment variables (RFC 3875), the body on stdin, and its stdout is
//! the response: header lines, an empty line, the body. It gets nothing else: no files, no
//! sockets, no other variables, and the same memory cap and deadline as any handler.

use std::collections::BTreeSet;

/// The largest response a program may print, headers and body together: 16 MiB. Beyond it
/// its writes fail, and the request fails with it.
pub const MAX_OUTPUT: usize = 16 << 20;

/// The largest header section of a response: 64 KiB.
const MAX_HEAD: usize = 64 << 10;

/// Whether `bytes` are a core WebAssembly module (not a component).
pub fn is_core_module(bytes: &[u8]) -> bool {
    wasmparser::Parser::is_core_wasm(bytes)
}

/// Makes a WASI 0.1 program a component, or says why it cannot serve the CGI way.
pub fn componentize(module: &[u8]) -> Result<Vec<u8>, String> {
    let mut exports = BTreeSet::new();
    let mut foreign = BTreeSet::new();
    for payload in wasmparser::Parser::new(0).parse_all(module) {
        let payload = payload.map_err(|e| format!("the module is not valid WebAssembly: {e}"))?;
        match payload {
            wasmparser::Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import =
                        import.map_err(|e| format!("the module's imports do not read: {e}"))?;
                    if import.module != "wasi_snapshot_preview1" {
                        foreign.insert(format!("{}::{}", import.module, import.name));
                    }
                }
            }
            wasmparser::Payload::ExportSection(list) => {
                for export in list {
                    let export =
                        export.map_err(|e| format!("the module's exports do not read: {e}"))?;
                    exports.insert(export.name.to_owned());
                }
            }
            _ => {}
        }
    }
    if !exports.contains("_start") {
        let shown: Vec<&str> = exports.iter().map(String::as_str).take(8).collect();
        return Err(format!(
            "a WASI 0.1 module is served the CGI way (WAGI) and needs a `_start` export (a program with `main`, built for wasm32-wasip1); this one exports {}",
            if shown.is_empty() {
                "nothing".to_owned()
            } else {
                shown.join(", ")
            }
        ));
    }
    if !foreign.is_empty() {
        let shown: Vec<&str> = foreign.iter().map(String::as_str).take(8).collect();
        return Err(format!(
            "the module imports {}, which Weft does not provide: a WAGI program may import only `wasi_snapshot_preview1`",
            shown.join(", ")
        ));
    }
    wit_component::ComponentEncoder::default()
        .module(module)
        .and_then(|e| {
            e.adapter(
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
                wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_COMMAND_ADAPTER,
            )
        })
        .and_then(|e| e.validate(true).encode())
        .map_err(|e| format!("the module could not be made a component: {e:#}"))
}

/// What a request tells the program.
pub struct CgiRequest<'a> {
    /// The function's name (for `SCRIPT_NAME`, `/fn/NAME`).
    pub function: &'a str,
    /// The method, upper case.
    pub method: &'a str,
    /// The path below the function, from `/`.
    pub path: &'a str,
    /// The query string without `?`.
    pub query: &'a str,
    /// The headers (lowercase names).
    pub headers: &'a http::HeaderMap,
    /// The body's length.
    pub body_len: usize,
}

/// The environment of one request (RFC 3875 section 4.1): the meta-variables, and each
/// header as `HTTP_NAME` (upper case, `-` as `_`).
pub fn environment(r: &CgiRequest<'_>) -> Vec<(String, String)> {
    let header = |name: &str| {
        r.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let host = header("host");
    let (server, port) = host.rsplit_once(':').unwrap_or((host.as_str(), "80"));
    let mut env: Vec<(String, String)> = [
        ("GATEWAY_INTERFACE", "CGI/1.1".to_owned()),
        (
            "SERVER_SOFTWARE",
            format!("weft/{}", env!("CARGO_PKG_VERSION")),
        ),
        ("SERVER_PROTOCOL", "HTTP/1.1".to_owned()),
        ("SERVER_NAME", server.to_owned()),
        ("SERVER_PORT", port.to_owned()),
        ("REQUEST_METHOD", r.method.to_owned()),
        ("SCRIPT_NAME", format!("/fn/{}", r.function)),
        ("PATH_INFO", r.path.to_owned()),
        ("PATH_TRANSLATED", r.path.to_owned()),
        ("QUERY_STRING", r.query.to_owned()),
        ("CONTENT_LENGTH", r.body_len.to_string()),
        ("CONTENT_TYPE", header("content-type")),
        (
            "X_FULL_URL",
            format!(
                "http://{host}/fn/{}{}{}{}",
                r.function,
                r.path,
                if r.query.is_empty() { "" } else { "?" },
                r.query
            ),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    for (name, value) in r.headers {
        let Ok(value) = value.to_str() else { continue };
        let var = format!(
            "HTTP_{}",
            name.as_str().to_ascii_uppercase().replace('-', "_")
        );
        match env.iter_mut().find(|(k, _)| *k == var) {
            // A repeated header: its values joined, as a proxy would.
            Some((_, v)) => {
                v.push_str(", ");
                v.push_str(value);
            }
            None => env.push((var, value.to_owned())),
        }
    }
    env
}

/// A program's response.
#[derive(Debug, PartialEq, Eq)]
pub struct CgiResponse {
    /// The status: from `Status:`, 302 with a `Location:` and no status, else 200.
    pub status: u16,
    /// The other header lines, in order.
    pub headers: Vec<(String, String)>,
    /// What follows the empty line.
    pub body: Vec<u8>,
}

/// Reads a program's output: header lines (`\n` or `\r\n`), an empty line, the body.
pub fn parse_output(out: &[u8]) -> Result<CgiResponse, String> {
    let (head_len, body_at) = find_blank_line(out).ok_or_else(|| {
        if out.is_empty() {
            "the program printed nothing: a response starts with header lines (such as `Content-Type: text/plain`) and an empty line".to_owned()
        } else {
            "the program's output has no empty line ending its header lines".to_owned()
        }
    })?;
    if head_len > MAX_HEAD {
        return Err(format!(
            "the program's header lines are {head_len} bytes, over the limit of {MAX_HEAD}"
        ));
    }
    let head = std::str::from_utf8(&out[..head_len])
        .map_err(|_| "the program's header lines are not UTF-8".to_owned())?;
    let mut status = None;
    let mut headers = Vec::new();
    for line in head.lines().filter(|l| !l.is_empty()) {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| format!("`{line}` is not a header line (NAME: VALUE)"))?;
        let (name, value) = (name.trim(), value.trim());
        if name.eq_ignore_ascii_case("status") {
            let code = value
                .split_whitespace()
                .next()
                .and_then(|c| c.parse::<u16>().ok())
                .filter(|c| (100..=999).contains(c))
                .ok_or_else(|| format!("`Status: {value}` does not start with a status code"))?;
            status = Some(code);
        } else {
            http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("`{name}` is not a header name"))?;
            http::HeaderValue::from_str(value)
                .map_err(|_| format!("the value of `{name}` is not a header value"))?;
            headers.push((name.to_owned(), value.to_owned()));
        }
    }
    let redirect = headers
        .iter()
        .any(|(n, _)| n.eq_ignore_ascii_case("location"));
    Ok(CgiResponse {
        status: status.unwrap_or(if redirect { 302 } else { 200 }),
        headers,
        body: out[body_at..].to_vec(),
    })
}

/// Where the header lines end and the body starts.
fn find_blank_line(out: &[u8]) -> Option<(usize, usize)> {
    let mut line_start = 0;
    for (i, &b) in out.iter().enumerate() {
        if b == b'\n' {
            let line = &out[line_start..i];
            if line.is_empty() || line == b"\r" {
                return Some((line_start, i + 1));
            }
            line_start = i + 1;
        }
    }
    None
}

impl super::Runtime {
    /// Runs a WASI program once for a request: `env` and `body` in, its printed response out.
    pub async fn handle_wagi(
        &self,
        function: &crate::id::FunctionName,
        pre: &wasmtime_wasi::p2::bindings::CommandPre<super::GuestState>,
        limits: super::InvocationLimits,
        env: Vec<(String, String)>,
        body: bytes::Bytes,
        slot: super::Slot,
    ) -> Result<CgiResponse, super::RuntimeError> {
        let stdout = wasmtime_wasi::p2::pipe::MemoryOutputPipe::new(MAX_OUTPUT);
        let access = super::Access {
            cgi: Some(super::state::Cgi {
                env,
                stdin: body,
                stdout: stdout.clone(),
            }),
            ..Default::default()
        };
        let mut store = self.store(function, limits, access, None);
        let pre = pre.clone();
        let name = function.clone();
        let task = self.tasks.spawn_joined(async move {
            let _slot = slot;
            let ran = super::with_deadline(limits, async {
                let command = pre.instantiate_async(&mut store).await?;
                command.wasi_cli_run().call_run(&mut store).await
            })
            .await;
            match ran {
                Ok(Ok(())) => Ok(()),
                // `exit(0)`, as C programs end.
                Err(e)
                    if e.downcast_ref::<wasmtime_wasi::I32Exit>()
                        .is_some_and(|x| x.0 == 0) =>
                {
                    Ok(())
                }
                Ok(Err(())) => Err(super::RuntimeError::Guest {
                    function: name.clone(),
                    message: format!(
                        "the program exited with a failure{}",
                        super::stderr_suffix(&store.data().stderr_tail())
                    ),
                }),
                Err(e) => Err(super::classify(&name, limits, store.data(), e)),
            }
        });
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(join) => {
                return Err(super::RuntimeError::Host(format!(
                    "the invocation task failed: {join}"
                )));
            }
        }
        let out = stdout.contents();
        parse_output(&out).map_err(|message| super::RuntimeError::Guest {
            function: function.clone(),
            message: if out.len() >= MAX_OUTPUT {
                format!("the program printed more than {MAX_OUTPUT} bytes")
            } else {
                message
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_headers_a_blank_line_and_a_body() {
        let r = parse_output(b"Content-Type: text/plain\nX-A: 1\n\nhello\n\nworld").unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(
            r.headers,
            [
                ("Content-Type".into(), "text/plain".into()),
                ("X-A".into(), "1".into())
            ]
        );
        assert_eq!(r.body, b"hello\n\nworld");
        let r =
            parse_output(b"Status: 404 Not Found\r\nContent-Type: text/plain\r\n\r\nno").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"no"[..]));
        let r = parse_output(b"Location: /elsewhere\n\n").unwrap();
        assert_eq!(r.status, 302);
        for (bad, says) in [
            (&b""[..], "printed nothing"),
            (b"Content-Type: text/plain\nhello", "no empty line"),
            (b"just text\n\n", "is not a header line"),
            (b"Status: teapot\n\n", "status code"),
            (b"Bad Name: x\n\n", "not a header name"),
        ] {
            let e = parse_output(bad).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
    }

    #[test]
    fn the_environment_has_the_request_and_its_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert("host", "example.com:8080".parse().unwrap());
        headers.insert("x-greeting", "hi".parse().unwrap());
        headers.append("accept", "a".parse().unwrap());
        headers.append("accept", "b".parse().unwrap());
        let env = environment(&CgiRequest {
            function: "echo",
            method: "POST",
            path: "/a/b",
            query: "x=1",
            headers: &headers,
            body_len: 5,
        });
        let var = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(var("REQUEST_METHOD"), Some("POST"));
        assert_eq!(var("PATH_INFO"), Some("/a/b"));
        assert_eq!(var("QUERY_STRING"), Some("x=1"));
        assert_eq!(var("CONTENT_LENGTH"), Some("5"));
        assert_eq!(var("SCRIPT_NAME"), Some("/fn/echo"));
        assert_eq!(var("SERVER_NAME"), Some("example.com"));
        assert_eq!(var("SERVER_PORT"), Some("8080"));
        assert_eq!(var("HTTP_X_GREETING"), Some("hi"));
        assert_eq!(var("HTTP_ACCEPT"), Some("a, b"));
        assert_eq!(
            var("X_FULL_URL"),
            Some("http://example.com:8080/fn/echo/a/b?x=1")
        );
    }

    #[test]
    fn only_a_program_of_wasi_0_1_componentizes() {
        let program = crate::plugins::WAGI_ECHO;
        assert!(is_core_module(program));
        let component = componentize(program).unwrap();
        assert!(!is_core_module(&component));
        // Modules without `_start`, or importing more than WASI, are in `tests/it/wagi.rs`.
        assert!(componentize(b"\0asm\x01\0\0\0\x01").is_err());
    }
}
