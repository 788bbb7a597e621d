//! Weft's host: the node (store, Wasm runtime, map/reduce, HTTP API) and the `weft` CLI.
//!
//! See `host/ARCHITECTURE.md` for the map of modules and their invariants.

pub mod api;
pub mod blobs;
pub mod cli;
pub mod config;
pub mod consensus;
pub mod denylist;
pub mod functions;
pub mod id;
pub mod locks;
pub mod mapreduce;
pub mod membership;
pub mod metrics;
pub mod millis;
pub mod node;
pub mod placement;
pub mod plugins;
pub mod replication;
pub mod ring;
pub mod rpc;
pub mod runtime;
pub mod store;
pub mod tasks;
pub mod tokens;
pub mod transport;

pub use config::NodeConfig;
pub use node::Node;
