//! The SDK's behaviour as a guest author sees it, on the native mock host.
//! One binary so it links once; one module per concept.

mod handler;
mod kv;
mod mapreduce;
