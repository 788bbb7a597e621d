/// mimalloc instead of the system allocator: with glibc's, a node's memory grew to several
/// times its live heap as its data grew (sled allocates and frees many small pieces from many
/// threads), and a third of the put path's CPU went to `malloc` and `free` (bench/RESULTS.md).
/// Built with `no_thp` (Cargo.toml): otherwise mimalloc asks for transparent huge pages, and
/// an empty node's RSS was 74 MiB instead of 23.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weft_host::runtime::after_compile(give_back_compile_memory);
    weft_host::cli::main()
}

/// Returns to the system what compiling a module allocated and freed: Cranelift runs on
/// rayon's threads, and mimalloc keeps each thread's freed pages for that thread until it
/// allocates again, which those threads may not do for a long time. Measured on a release
/// build: a node holds 41.6 MB instead of 47.2 once `hello` is compiled, and about 2.5 MB
/// instead of 5 for each further module (bench/RESULTS.md).
fn give_back_compile_memory() {
    // SAFETY: `mi_collect` only frees mimalloc's own unused pages; it takes no pointer.
    #[allow(unsafe_code)]
    rayon::broadcast(|_| unsafe { libmimalloc_sys::mi_collect(true) });
    #[allow(unsafe_code)]
    unsafe {
        libmimalloc_sys::mi_collect(true)
    };
}
