//! `rivulet run`: plan, execute with progress on a terminal, print the summary.
use std::io::IsTerminal;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::progress::Progress;
use super::status::LiveStatus;
use super::summary::Summary;
use super::{PlanArgs, RunArgs};
use crate::error::Result;
use crate::exec::runtime::execute;
use crate::exec::source::StopRequest;
use crate::plan::compile;

/// Sets polars' environment before its first use: the size of its thread pool, and table
/// printing without elided rows (the stdout sink prints every row).
fn configure_polars(threads: Option<usize>) {
    let set = |key: &str, value: String| {
        if std::env::var_os(key).is_none() {
            // SAFETY: called at start-up, before any other thread exists.
            unsafe { std::env::set_var(key, value) };
        }
    };
    if let Some(n) = threads {
        // SAFETY: as above.
        unsafe { std::env::set_var("POLARS_MAX_THREADS", n.to_string()) };
    }
    set("POLARS_FMT_MAX_ROWS", "-1".into());
    set("POLARS_FMT_MAX_COLS", "-1".into());
    set("POLARS_FMT_STR_LEN", "200".into());
    set("POLARS_FMT_TABLE_HIDE_DATAFRAME_SHAPE_INFORMATION", "1".into());
    set("POLARS_TABLE_WIDTH", "65535".into());
}

/// Gets polars ready on a thread of its own while this one reads the pipeline and its sources'
/// metadata, which uses one core:
/// - first makes the 8 MiB of zeros polars keeps for all-zero buffers (null masks, a literal
///   compared with an empty column), made on first use by writing them: 2048 page faults,
///   3-4 ms, during which planning's first run of an operator waited for them (see
///   [`prefault_polars_zeros`]);
/// - then starts polars' async runtime and thread pool, and runs a small query on empty frames:
///   planning's first run of an operator on empty frames started both (four threads) and loaded
///   polars' planner and executors (page faults on its code), 4 ms on the critical path of
///   every run.
///
/// `run` calls it after `configure_polars`: the runtime and the pool read its environment
/// variables. `explain` and `validate` call it too (they run nothing, and use polars' defaults).
pub(super) fn warm_up_polars() {
    let _ = std::thread::Builder::new().name("rivulet-warm-up".into()).spawn(|| {
        prefault_polars_zeros();
        let _ = polars_arrow::bitmap::Bitmap::new_zeroed(1);
        std::sync::LazyLock::force(&polars_async::ASYNC);
        std::sync::LazyLock::force(&polars_core::runtime::THREAD_POOL);
        let _ = crate::plan::warm_up();
    });
}

/// The size and alignment of polars' block of zeros (`polars_buffer`'s `GLOBAL_ZEROES`).
const POLARS_ZEROS: (usize, usize) = (8 << 20, 4096);

/// Maps in, with one `madvise` call, the memory the allocator is about to hand polars for its
/// block of zeros: a block of the same size and alignment, allocated and freed on the same
/// thread, is where glibc serves the next one from. The kernel maps the 2048 pages in one call
/// instead of taking one page fault each: process start to first subtask went from 9.5 to
/// 8.3 ms (median of 15 runs of TPC-H Q5 on Parquet), since planning no longer waits for the
/// zeros. Kernels before 5.14 refuse `MADV_POPULATE_WRITE`; the pages are faulted in as before.
fn prefault_polars_zeros() {
    #[cfg(target_os = "linux")]
    {
        let (size, align) = POLARS_ZEROS;
        let layout = std::alloc::Layout::from_size_align(size, align).expect("a valid layout");
        // SAFETY: the block is allocated with a non-zero size, only advised (never read or
        // written here), and freed with the layout it was allocated with.
        unsafe {
            let block = std::alloc::alloc(layout);
            if !block.is_null() {
                libc::madvise(block.cast(), size, libc::MADV_POPULATE_WRITE);
                std::alloc::dealloc(block, layout);
            }
        }
    }
}

pub fn run(pipeline: &Path, plan: &PlanArgs, args: &RunArgs) -> Result<i32> {
    let RunArgs { quiet, json, threads, drain } = *args;
    configure_polars(threads);
    warm_up_polars();
    let compiled = compile(pipeline, &plan.overrides, plan.parallelism(), plan.follow)?;
    let exec = &compiled.execution;
    if !quiet {
        for node in &exec.job.stream.nodes {
            for note in node.notes.iter().filter(|n| n.starts_with(crate::plan::optimize::NEVER_BUILT)) {
                eprintln!("warning: operator '{}': {note}", node.name);
            }
        }
    }
    let show_progress = !quiet && std::io::stderr().is_terminal();
    // Bounded runs show progress bars; unbounded ones (tail mode) a live status.
    let progress = (show_progress && !plan.follow).then(|| Progress::new(&exec.job.stream));
    let status = (show_progress && plan.follow).then(|| LiveStatus::new(&exec.job.stream));
    let tick = |m: &crate::exec::metrics::Metrics| {
        if let Some(p) = &progress {
            p.update(m);
        }
        if let Some(s) = &status {
            s.update(m);
        }
    };
    // Ctrl-C on a bounded run aborts it: subtasks wind down, in-progress output is deleted. In
    // tail mode it stops the run cleanly: sources emit what they hold and finish, every batch
    // in flight reaches the sinks, which commit. A second Ctrl-C exits at once.
    let cancel = Arc::new(AtomicBool::new(false));
    let stop = StopRequest::new(drain);
    let unbounded = plan.follow
        || exec.job.stream.nodes.iter().any(|n| {
            matches!(&n.kind, crate::plan::logical::NodeKind::Source(c) if matches!(c.follow.as_ref().map(|f| &f.input), Some(crate::exec::sources::FollowInput::Tcp(_))))
        });
    let flag = if unbounded { stop.flag() } else { cancel.clone() };
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, std::sync::atomic::Ordering::SeqCst) {
            std::process::exit(130);
        }
    });
    let report = execute(exec, cancel, stop, show_progress.then_some(&tick as _));
    if let Some(p) = &progress {
        p.finish();
    }
    if let Some(s) = &status {
        s.finish();
    }
    let report = report?;
    let summary = Summary::new(exec, &report);
    if json {
        println!("{}", summary.to_json());
    } else if !quiet {
        eprint!("{}", summary.to_text());
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::POLARS_ZEROS;

    /// `prefault_polars_zeros` relies on glibc serving a block of the same size and alignment,
    /// freed on the same thread, from the same place. Another test thread sharing the arena
    /// can take it in between, so one of a few tries must see it.
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn a_freed_block_of_the_zeros_layout_is_served_again() {
        let (size, align) = POLARS_ZEROS;
        let layout = std::alloc::Layout::from_size_align(size, align).unwrap();
        let reused = std::thread::spawn(move || {
            (0..5).any(|_| unsafe {
                let first = std::alloc::alloc(layout);
                std::alloc::dealloc(first, layout);
                let second = std::alloc::alloc(layout);
                std::alloc::dealloc(second, layout);
                first == second
            })
        });
        assert!(reused.join().unwrap());
    }

    #[test]
    fn polars_makes_its_zeros_in_a_block_of_that_layout() {
        // The zeros are shared by every zeroed buffer up to their size, and aligned to a page.
        let (size, align) = POLARS_ZEROS;
        let a = polars_buffer::Buffer::<u8>::zeroed(size);
        let b = polars_buffer::Buffer::<u8>::zeroed(1);
        assert_eq!(a.as_ptr(), b.as_ptr());
        assert_eq!(a.as_ptr() as usize % align, 0);
        assert!(polars_buffer::Buffer::<u8>::zeroed(size + 1).as_ptr() != a.as_ptr());
    }
}
