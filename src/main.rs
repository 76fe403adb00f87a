//! The `rivulet` binary: everything lives in the library; this maps its result to an exit code.
//!
//! Memory comes from the C library's allocator, tuned at start-up (see [`tune_allocator`]).
//! mimalloc was used before and dropped: on TPC-H over CSV and Parquet it kept 1.5 to 2 times
//! the memory glibc does (freed blocks of one thread or size were seldom reused by another),
//! and every page touched for the first time costs a kernel page clear; with its transparent
//! huge pages, runs that followed another process also stalled in page compaction (Q5 on
//! Parquet: 0.14 to 1.05 s). With glibc the same queries ran 10 to 40% faster and steadily.

#[cfg(target_env = "gnu")]
unsafe extern "C" {
    fn mallopt(param: i32, value: i32) -> i32;
}

/// glibc's `mallopt` parameters.
#[cfg(target_env = "gnu")]
mod param {
    pub const TRIM_THRESHOLD: i32 = -1;
    pub const MMAP_THRESHOLD: i32 = -3;
    pub const ARENA_MAX: i32 = -8;
}

/// Allocations from this size up are mapped on their own (glibc's largest mmap threshold).
#[cfg(target_env = "gnu")]
const OWN_MAPPING: usize = 32 << 20;

/// The environment variable that overrides each `mallopt` parameter, and the value set.
#[cfg(target_env = "gnu")]
fn settings() -> [(&'static str, i32, i32); 3] {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    [
        ("MALLOC_TRIM_THRESHOLD_", param::TRIM_THRESHOLD, i32::MAX),
        ("MALLOC_MMAP_THRESHOLD_", param::MMAP_THRESHOLD, OWN_MAPPING as i32),
        ("MALLOC_ARENA_MAX", param::ARENA_MAX, (2 * cores).min(64) as i32),
    ]
}

/// Keeps freed memory for reuse instead of returning it to the OS, and serves allocations of
/// up to 32 MiB from the heap rather than from fresh mappings: batches come and go at the same
/// sizes, and memory handed back (or freshly mapped) had to be faulted in and zeroed again.
/// Arenas are limited to two per core, so that memory one subtask thread frees is reused by
/// the others. The price is that the process keeps its peak memory until it exits. The
/// `MALLOC_*_` environment variables (or `GLIBC_TUNABLES`) still decide when set.
fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    {
        let unset = |name: &str| std::env::var_os(name).is_none() && std::env::var_os("GLIBC_TUNABLES").is_none();
        for (variable, param, value) in settings() {
            if unset(variable) {
                // SAFETY: mallopt only changes the allocator's parameters; called before any
                // thread but this one exists.
                unsafe { mallopt(param, value) };
            }
        }
    }
}

fn main() {
    tune_allocator();
    std::process::exit(rivulet::cli::main());
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(target_env = "gnu")]
    fn glibc_accepts_every_setting() {
        // mallopt returns 0 for a value it refuses (an mmap threshold above its maximum, say).
        use super::*;
        for (variable, param, value) in settings() {
            assert_eq!(unsafe { mallopt(param, value) }, 1, "mallopt({param}, {value}) for {variable}");
        }
    }
}
