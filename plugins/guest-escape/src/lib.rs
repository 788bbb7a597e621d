//! `guest-escape`: an adversarial guest that tries to reach outside its sandbox and reports what
//! it saw, to test that the host grants no filesystem, environment, arguments or network.
//!
//! Every field of the JSON report is either the data obtained or `"error: ..."`:
//! `fs` (entries of `/`), `hostname` (`/etc/hostname`), `cwd`, `env` and `args` (lists),
//! `tcp` (connect to 127.0.0.1:80), `udp` (bind 0.0.0.0:0), `http` (an outgoing `wasi:http`
//! request to 127.0.0.1:80).
//! A sandboxed run shows errors or empty lists everywhere.

use std::net::{TcpStream, UdpSocket};

use serde_json::{Value, json};
use weft_sdk::{Request, Response};

/// Probe the sandbox and answer `200` with the report.
pub fn escape(_req: Request) -> Response {
    Response::json(&report())
}

/// What each probe saw.
pub fn report() -> Value {
    json!({
        "fs": outcome(std::fs::read_dir("/").and_then(|entries| {
            entries
                .map(|entry| entry.map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect::<Result<Vec<_>, _>>()
        })),
        "hostname": outcome(std::fs::read_to_string("/etc/hostname")),
        "cwd": outcome(std::env::current_dir().map(|dir| dir.display().to_string())),
        "env": std::env::vars().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
        "args": std::env::args().collect::<Vec<_>>(),
        "tcp": outcome(TcpStream::connect("127.0.0.1:80").map(|s| format!("connected to {:?}", s.peer_addr()))),
        "udp": outcome(UdpSocket::bind("0.0.0.0:0").map(|s| format!("bound {:?}", s.local_addr()))),
        "http": outgoing_http(),
    })
}

/// An outgoing `wasi:http` request to 127.0.0.1:80: its status, or the error.
#[cfg(target_arch = "wasm32")]
fn outgoing_http() -> Value {
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some("127.0.0.1:80"));
    let _ = request.set_path_with_query(Some("/"));
    match wasi::http::outgoing_handler::handle(request, None) {
        Ok(pending) => {
            pending.subscribe().block();
            match pending.get() {
                Some(Ok(Ok(response))) => json!(format!("status {}", response.status())),
                Some(Ok(Err(e))) => json!(format!("error: {e:?}")),
                other => json!(format!("error: {other:?}")),
            }
        }
        Err(e) => json!(format!("error: {e:?}")),
    }
}

/// Natively there is no wasi:http to try.
#[cfg(not(target_arch = "wasm32"))]
fn outgoing_http() -> Value {
    json!("error: not running as a wasm guest")
}

fn outcome<T: serde::Serialize>(result: std::io::Result<T>) -> Value {
    match result {
        Ok(value) => json!(value),
        Err(e) => json!(format!("error: {e}")),
    }
}

weft_sdk::http_handler!(escape);

#[cfg(test)]
mod tests {
    #[test]
    fn report_names_every_probe() {
        let resp =
            weft_sdk::testing::MockHost::new().call(super::escape, weft_sdk::Request::get("/"));
        assert_eq!(resp.status, 200);
        let report: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        for field in ["fs", "hostname", "cwd", "env", "args", "tcp", "udp", "http"] {
            assert!(report.get(field).is_some(), "missing {field} in {report}");
        }
    }
}
