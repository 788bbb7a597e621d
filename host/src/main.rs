/// mimalloc instead of the system allocator: with glibc's, a node's memory grew to several
/// times its live heap as its data grew (sled allocates and frees many small pieces from many
/// threads), and a third of the put path's CPU went to `malloc` and `free` (bench/RESULTS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weft_host::cli::main()
}
