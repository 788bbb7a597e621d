//! The export macros. Each expands, on wasm32, to the component export for its kind of guest
//! (only when the matching feature is on) and, on native targets, to a signature check only.

/// Export `handler` as the component's `wasi:http/incoming-handler`.
///
/// `handler` is a `fn(Request) -> R` where `R` is a [`Response`](crate::Response) or a
/// `Result<Response, E: Display>` (an error answers `500` with its message).
/// On wasm32 this needs the `http` feature; on native targets it only checks the signature,
/// so the crate's tests call the handler through [`testing::MockHost`](crate::testing::MockHost).
///
/// ```
/// use weft_sdk::{Request, Response};
///
/// fn handle(_req: Request) -> Result<Response, weft_sdk::Error> {
///     Ok(Response::text(200, "ok"))
/// }
/// weft_sdk::http_handler!(handle);
/// ```
#[macro_export]
macro_rules! http_handler {
    ($handler:path) => {
        $crate::__http_handler_glue!($handler);
    };
}

#[cfg(all(target_arch = "wasm32", feature = "http"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __http_handler_glue {
    ($handler:path) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct WeftHttpHandler;
            impl $crate::__private::wasi::exports::http::incoming_handler::Guest for WeftHttpHandler {
                fn handle(
                    request: $crate::__private::wasi::http::types::IncomingRequest,
                    response_out: $crate::__private::wasi::http::types::ResponseOutparam,
                ) {
                    $crate::__private::serve(request, response_out, $handler);
                }
            }
            $crate::__private::wasi::http::proxy::export!(
                WeftHttpHandler with_types_in $crate::__private::wasi
            );
        };
    };
}

#[cfg(all(target_arch = "wasm32", not(feature = "http")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __http_handler_glue {
    ($handler:path) => {
        compile_error!("`weft_sdk::http_handler!` needs the `http` feature of weft-sdk");
    };
}

#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __http_handler_glue {
    ($handler:path) => {
        const _: () = {
            #[allow(dead_code)]
            fn check() {
                $crate::__private::check_handler($handler);
            }
        };
    };
}

/// Export the [`MapReduce`](crate::MapReduce) implementation `T` as the component's
/// `weft:plugin/task` interface.
///
/// On wasm32 this needs the `mapreduce` feature; on native targets it only checks the type, and
/// [`testing::run_mapreduce`](crate::testing::run_mapreduce) runs the task in memory.
///
/// ```
/// use weft_sdk::{Emitter, Error, MapReduce};
///
/// struct LineCount;
/// impl MapReduce for LineCount {
///     type Key = ();
///     type Value = u64;
///     type Output = u64;
///     fn map(chunk: &str, out: &mut Emitter<(), u64>) -> Result<(), Error> {
///         out.emit((), chunk.lines().count() as u64);
///         Ok(())
///     }
///     fn reduce(_: (), values: Vec<u64>, out: &mut Emitter<(), u64>) -> Result<(), Error> {
///         out.emit((), values.iter().sum());
///         Ok(())
///     }
/// }
/// weft_sdk::export_mapreduce!(LineCount);
/// ```
#[macro_export]
macro_rules! export_mapreduce {
    ($task:ty) => {
        $crate::__mapreduce_glue!($task);
    };
}

#[cfg(all(target_arch = "wasm32", feature = "mapreduce"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __mapreduce_glue {
    ($task:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            use $crate::__private::task_bindings::exports::weft::plugin::task;
            struct WeftTask;
            impl task::Guest for WeftTask {
                fn info() -> task::TaskInfo {
                    task::TaskInfo {
                        has_combiner: $crate::__private::has_combiner::<$task>(),
                    }
                }
                fn map(
                    chunk: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::map::<$task>(&chunk)
                }
                fn combine(
                    groups: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::combine::<$task>(&groups)
                }
                fn reduce(
                    groups: ::std::vec::Vec<u8>,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::__private::reduce::<$task>(&groups)
                }
            }
            $crate::__private::task_bindings::export_task!(
                WeftTask with_types_in $crate::__private::task_bindings
            );
        };
    };
}

#[cfg(all(target_arch = "wasm32", not(feature = "mapreduce")))]
#[doc(hidden)]
#[macro_export]
macro_rules! __mapreduce_glue {
    ($task:ty) => {
        compile_error!("`weft_sdk::export_mapreduce!` needs the `mapreduce` feature of weft-sdk");
    };
}

#[cfg(not(target_arch = "wasm32"))]
#[doc(hidden)]
#[macro_export]
macro_rules! __mapreduce_glue {
    ($task:ty) => {
        const _: () = {
            #[allow(dead_code)]
            fn check() {
                $crate::__private::check_task::<$task>();
            }
        };
    };
}
