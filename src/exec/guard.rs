//! Turns a panic inside a third-party decoder (polars on a corrupt Parquet file, say) into an
//! error message, without the panic's report on stderr: the caller reports it properly.
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Guarded calls in progress on any thread. polars decodes on its own pool, so a panic can
/// happen on a thread other than the caller's: while any guarded call runs, panic reports are
/// silenced everywhere (every panic in rivulet is caught and reported as an error anyway).
static GUARDED: AtomicUsize = AtomicUsize::new(0);
static HOOK: Once = Once::new();

/// Runs `f`; a panic in it becomes `Err` with the panic's message.
pub fn catch_panic<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if GUARDED.load(Ordering::SeqCst) == 0 {
                default(info);
            }
        }));
    });
    GUARDED.fetch_add(1, Ordering::SeqCst);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.fetch_sub(1, Ordering::SeqCst);
    result.map_err(|p| panic_message(p.as_ref()))
}

/// The text of a panic payload.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_an_error() {
        assert_eq!(catch_panic(|| 1), Ok(1));
        let e = catch_panic(|| -> i32 { panic!("boom {}", 7) }).unwrap_err();
        assert_eq!(e, "boom 7");
    }
}
