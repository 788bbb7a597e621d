//! The host's integration tests: real nodes on 127.0.0.1:0 with temporary data directories,
//! real wasmtime, real sled and real HTTP. One binary, so it links once.

mod harness;

mod bad_input;
mod blobs;
mod cli;
mod cluster;
mod consensus;
mod consensus_faults;
mod convergence;
mod dashboard;
mod expiry;
mod faults;
mod fencing;
mod functions;
mod gateway;
mod guest_processes;
mod identity;
mod job_faults;
mod jobs;
mod kv_faults;
mod linearizable;
mod locked;
mod locks;
mod lockset;
mod metrics;
mod replication;
mod restart;
mod reuse;
mod safety;
mod standard;
mod streaming;
mod tokens;
mod wagi;
