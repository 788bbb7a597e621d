//! The host side of the `weft:plugin` WIT package (`sdk/wit`), generated once for every
//! module of the runtime: the imports every guest may use, and the map/reduce world.

/// The imports a guest may use (`kv`, `locks`, `log`), with `kv` and `locks` async.
pub(super) mod handler {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "handler-imports",
        imports: { "weft:plugin/kv": async, "weft:plugin/locks": async },
        with: { "weft:plugin/locks.guard": crate::runtime::holding::Guard },
    });
}

/// The map/reduce world: `emit` traps on a guest over its limit; `log` is the one above.
pub(super) mod task {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "mapreduce",
        imports: { "weft:plugin/emit": trappable },
        exports: { default: async },
        with: { "weft:plugin/log": super::handler::weft::plugin::log },
    });
}

/// The standard `wasi:keyvalue` interfaces, served by the function's key-value namespace.
pub(super) mod keyvalue {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "wasi:keyvalue/imports",
        imports: { default: async },
        with: { "wasi:keyvalue/store.bucket": Bucket },
    });

    /// An open bucket: the function's key-value namespace (the only one it may open).
    pub struct Bucket;
}

/// The standard `wasi:config` interface, served by the function's configuration.
pub(super) mod config {
    wasmtime::component::bindgen!({
        path: "../sdk/wit",
        world: "wasi:config/imports",
    });
}
