/// mimalloc instead of the system allocator: with glibc's, a node's memory grew to several
/// times its live heap as its data grew (sled allocates and frees many small pieces from many
/// threads), and a third of the put path's CPU went to `malloc` and `free` (bench/RESULTS.md).
/// Built with `no_thp` (Cargo.toml): otherwise mimalloc asks for transparent huge pages, and
/// an empty node's RSS was 74 MiB instead of 23.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weft_host::cli::main()
}
