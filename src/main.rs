//! The `rivulet` binary: everything lives in the library; this maps its result to an exit code.
use mimalloc::MiMalloc;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

fn main() {
    std::process::exit(rivulet::cli::main());
}
