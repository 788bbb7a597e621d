//! The only place that talks to the host.
//!
//! On wasm32 every call goes to the component's imports (`weft:plugin/kv`, `locks`, `log` and `emit`);
//! on native targets to a thread-local in-memory mock that [`crate::testing`] inspects.
//! Both backends expose the same byte-level functions, so the typed layers above are shared.

#[cfg(not(target_arch = "wasm32"))]
pub(crate) mod mock;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use mock::{
    Guard, emit, handler_lock, kv_delete, kv_get, kv_increment, kv_set, kv_set_with_ttl, lock, log,
};

#[cfg(target_arch = "wasm32")]
pub(crate) mod wasm;
#[cfg(target_arch = "wasm32")]
pub(crate) use wasm::{
    Guard, emit, handler_lock, kv_delete, kv_get, kv_increment, kv_set, kv_set_with_ttl, lock, log,
};
