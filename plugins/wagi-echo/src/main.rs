//! `wagi-echo`: a plain WASI 0.1 program (`wasm32-wasip1`, with `main`), served by Weft the
//! CGI way (WAGI): the request line and headers arrive as environment variables, the body on
//! stdin, and what it prints is the response: header lines, an empty line, the body.
//!
//! It answers `200` with a JSON echo of the request, or for `/status/N` the status `N` (with
//! a `Status:` header), or for `/fail` a failure exit, which Weft answers with 500.

use std::io::{Read, Write};

/// The response to print for a request: header lines, an empty line, then the body.
pub fn respond(env: &[(String, String)], body: &[u8]) -> Result<Vec<u8>, String> {
    let var = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    };
    let path = var("PATH_INFO");
    if path == "/fail" {
        return Err("asked to fail".into());
    }
    let status = path
        .strip_prefix("/status/")
        .and_then(|n| n.parse::<u16>().ok());
    let echo = format!(
        "{{\"method\":{:?},\"path\":{:?},\"query\":{:?},\"greeting\":{:?},\"content_length\":{:?},\"body\":{:?},\"env\":{}}}\n",
        var("REQUEST_METHOD"),
        path,
        var("QUERY_STRING"),
        var("HTTP_X_GREETING"),
        var("CONTENT_LENGTH"),
        String::from_utf8_lossy(body),
        env.len(),
    );
    let mut out = Vec::new();
    if let Some(s) = status {
        out.extend_from_slice(format!("Status: {s} Chosen\n").as_bytes());
    }
    out.extend_from_slice(b"Content-Type: application/json\nX-Echoed-By: wagi-echo\n\n");
    out.extend_from_slice(echo.as_bytes());
    Ok(out)
}

fn main() {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let mut body = Vec::new();
    if std::io::stdin().read_to_end(&mut body).is_err() {
        std::process::exit(2);
    }
    match respond(&env, &body) {
        Ok(out) => {
            let mut stdout = std::io::stdout().lock();
            if stdout
                .write_all(&out)
                .and_then(|()| stdout.flush())
                .is_err()
            {
                std::process::exit(3);
            }
        }
        Err(e) => {
            eprintln!("wagi-echo: {e}");
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::respond;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn echoes_the_request_with_headers_first() {
        let e = env(&[
            ("REQUEST_METHOD", "POST"),
            ("PATH_INFO", "/a"),
            ("QUERY_STRING", "x=1"),
        ]);
        let out = String::from_utf8(respond(&e, b"hi").unwrap()).unwrap();
        let (head, body) = out.split_once("\n\n").unwrap();
        assert_eq!(
            head,
            "Content-Type: application/json\nX-Echoed-By: wagi-echo"
        );
        assert!(
            body.contains(r#""method":"POST","path":"/a","query":"x=1""#),
            "{body}"
        );
        assert!(body.contains(r#""body":"hi""#), "{body}");
    }

    #[test]
    fn a_status_path_sets_the_status_and_fail_fails() {
        let out = respond(&env(&[("PATH_INFO", "/status/418")]), b"").unwrap();
        assert!(out.starts_with(b"Status: 418 Chosen\n"));
        assert!(respond(&env(&[("PATH_INFO", "/fail")]), b"").is_err());
    }
}
