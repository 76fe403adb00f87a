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
/// - starts its async runtime and thread pool, and runs a small query on empty frames: planning's
///   first run of an operator on empty frames started both (four threads) and loaded polars'
///   planner and executors (page faults on its code), 4 ms on the critical path of every run;
/// - then makes the 8 MiB of zeros polars keeps for all-zero buffers (null masks, empty
///   arrays), made on first use by writing them: 2048 page faults, about 3 ms (the stdout
///   sink's CSV header needs them).
///
/// Called after `configure_polars`: the runtime and the pool read its environment variables.
fn warm_up_polars() {
    let _ = std::thread::Builder::new().name("rivulet-warm-up".into()).spawn(|| {
        std::sync::LazyLock::force(&polars_async::ASYNC);
        std::sync::LazyLock::force(&polars_core::runtime::THREAD_POOL);
        let _ = crate::plan::warm_up();
        polars_arrow::bitmap::Bitmap::new_zeroed(1)
    });
}

pub fn run(pipeline: &Path, plan: &PlanArgs, args: &RunArgs) -> Result<i32> {
    let RunArgs { quiet, json, threads, drain } = *args;
    configure_polars(threads);
    warm_up_polars();
    let compiled = compile(pipeline, &plan.overrides, plan.parallelism(), plan.follow)?;
    let exec = &compiled.execution;
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
