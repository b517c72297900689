//! The `writ` binary: the command line in `writ::cli` (feature `cli`).

/// mimalloc instead of the system allocator: decisions allocate many small
/// strings, and `writ serve` answers about a third more requests a second
/// with it (docs/performance.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    writ::cli::main()
}
