//! The `rivulet` binary: everything lives in the library; this maps its result to an exit code.

#[cfg(not(feature = "system-allocator"))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

// mimalloc's C API (the library the allocator links); the Rust bindings do not name this option.
#[cfg_attr(feature = "system-allocator", allow(dead_code))]
unsafe extern "C" {
    #[cfg(test)]
    fn mi_option_get(option: i32) -> std::ffi::c_long;
    fn mi_option_set(option: i32, value: std::ffi::c_long);
}

/// `mi_option_purge_delay` in mimalloc 3's option enum.
#[cfg_attr(feature = "system-allocator", allow(dead_code))]
const PURGE_DELAY: i32 = 15;

/// Keeps freed memory mapped instead of returning it to the OS a second later: batches come and
/// go at the same sizes, and memory handed back had to be faulted in and zeroed again (with
/// transparent huge pages, occasionally compacted), which cost TPC-H Q18 up to 0.4 s on some
/// runs. The price is that the process keeps its peak memory until it exits. The environment
/// variable `MIMALLOC_PURGE_DELAY` (milliseconds) still decides when it is set.
fn keep_freed_memory() {
    // Profiling builds use the system allocator (see Cargo.toml); mimalloc is not linked then.
    #[cfg(not(feature = "system-allocator"))]
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: setting an option is allowed at any time; it only affects later purges.
        unsafe { mi_option_set(PURGE_DELAY, -1) };
    }
}

fn main() {
    keep_freed_memory();
    std::process::exit(rivulet::cli::main());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(not(feature = "system-allocator"))]
    fn the_purge_delay_option_is_the_one_set() {
        // mimalloc 3's default purge delay is 1000 ms: option 15 must be it.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() && std::env::var_os("MIMALLOC_RESET_DELAY").is_none() {
            assert_eq!(unsafe { mi_option_get(PURGE_DELAY) }, 1000);
        }
        keep_freed_memory();
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(unsafe { mi_option_get(PURGE_DELAY) }, -1);
        }
    }
}
