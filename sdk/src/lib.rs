//! Write [Weft](https://example.invalid/weft) functions in Rust.
//!
//! A Weft function is a WASI 0.2 component of one of two kinds:
//!
//! * an **HTTP handler**: a plain `fn(Request) -> Response` exported with [`http_handler!`],
//!   which may use the key-value store ([`kv`]), the cluster's locks ([`locks`]) and the
//!   node's log ([`log`]);
//! * a **map/reduce task**: a type implementing [`MapReduce`] exported with [`export_mapreduce!`].
//!
//! Build a guest with `cargo build --release --target wasm32-wasip2` and enable the feature
//! matching its kind (`http` or `mapreduce`): each feature adds only that kind's exports to the
//! component, so an HTTP handler never carries the map/reduce world and vice versa.
//!
//! On native targets the SDK routes every host call to an in-memory mock, so a guest's logic is
//! unit-tested with plain `cargo test` through the [`testing`] module.
//!
//! ```
//! use weft_sdk::{Request, Response};
//!
//! fn greet(req: Request) -> Response {
//!     weft_sdk::log::info(format!("greeting {}", req.path));
//!     Response::text(200, format!("Hello, {}!", req.path.trim_start_matches('/')))
//! }
//! weft_sdk::http_handler!(greet);
//!
//! let host = weft_sdk::testing::MockHost::new();
//! let resp = host.call(greet, Request::get("/world"));
//! assert_eq!(resp.body_str(), Ok("Hello, world!"));
//! ```
//!
//! Typed keys and values cross the host boundary as JSON (`serde_json`) so that the host, the CLI
//! and guests in other languages can read them; see [`kv`] and [`MapReduce`] for the details.
#![deny(missing_docs)]

mod error;
mod host;
pub mod http;
pub mod kv;
pub mod locks;
pub mod log;
mod macros;
pub mod mapreduce;
mod records;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;

#[doc(hidden)]
pub mod __private;

pub use error::Error;
pub use http::{IntoResponse, Request, Response};
pub use mapreduce::{Emitter, MapReduce};
