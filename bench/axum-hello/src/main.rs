//! The HTTP limit for `bench/compare-serve.sh`: a plain axum handler on a multi-threaded tokio
//! runtime that answers `GET /fn/hello/{name}` as the `hello` component does, with no Wasm.
//!
//! Run: `cargo run --release -p axum-hello -- 127.0.0.1:8080`

use axum::Router;
use axum::extract::Path;
use axum::routing::get;

async fn hello(Path(name): Path<String>) -> String {
    format!("Hello, {name}! (from Weft)\n")
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8080".into());
    let app = Router::new().route("/fn/hello/{name}", get(hello));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    axum::serve(listener, app).await
}
