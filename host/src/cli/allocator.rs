//! How the `weft` binary sets up its allocator (mimalloc, chosen in `main.rs`), here so that
//! the benchmarks run with the node's settings.

/// mimalloc's `mi_option_purge_delay`, the 16th of `mi_option_e` in its `mimalloc.h` (the same
/// in its v2 and v3; the Rust bindings name no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Makes mimalloc return pages to the system as soon as they are free, instead of a second
/// later and only once the freeing thread allocates again. Without it, what a burst of
/// connections allocated stayed with the threads that served them: an edge node held 29.4 MB
/// after 2,000 connections came and went instead of 25.9 (bench/RESULTS.md, "Footprint").
/// Serving `hello` was no slower in five side-by-side runs.
///
/// Call it first thing in `main`; it does nothing to a process that allocates otherwise.
pub fn return_freed_memory_at_once() {
    // SAFETY: sets one of mimalloc's integer options; it takes no pointer.
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0)
    };
}
