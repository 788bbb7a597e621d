/// mimalloc instead of the system allocator: with glibc's, a node's memory grew to several
/// times its live heap as its data grew (sled allocates and frees many small pieces from many
/// threads), and a third of the put path's CPU went to `malloc` and `free` (bench/RESULTS.md).
/// Built with `no_thp` (Cargo.toml): otherwise mimalloc asks for transparent huge pages, and
/// an empty node's RSS was 74 MiB instead of 23.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    weft_host::cli::return_freed_memory_at_once();
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == weft_host::runtime::CHILD_ARG)
    {
        return weft_host::runtime::child_main();
    }
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == weft_host::runtime::GUEST_ARG)
    {
        return weft_host::runtime::guest_main();
    }
    // Compile modules in a child running this same executable (`/proc/self/exe` is the file
    // this process started from, even if an upgrade has replaced it on disk since).
    let exe = if cfg!(target_os = "linux") {
        std::path::PathBuf::from("/proc/self/exe")
    } else {
        std::env::current_exe().unwrap_or_default()
    };
    weft_host::runtime::compile_in_child(exe.clone());
    // Guest processes (`guest_processes`) run this same executable too.
    weft_host::runtime::guest_processes_from(exe);
    weft_host::cli::main()
}
