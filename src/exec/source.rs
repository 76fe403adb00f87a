//! The source contract: a subtask polls its source for batches until it says it is finished.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use polars::prelude::DataFrame;

use crate::error::Result;

/// What a poll returned.
#[derive(Debug)]
pub enum Poll {
    /// A batch of rows.
    Batch(DataFrame),
    /// Records that could not be read, as a dead-letter frame for the side output.
    Rejected(DataFrame),
    /// Every row of a split (a Parquet row group, a file, a byte range) has been returned: the
    /// operators chained after the source hear of it (see [`crate::exec::operator::Operator::on_split_end`]).
    SplitEnd,
    /// Nothing available right now (tail mode); poll again later.
    Idle,
    /// No more data will ever come (bounded input done).
    Finished,
}

/// What a source subtask knows about its place in the job.
#[derive(Clone, Debug)]
pub struct SourceContext {
    /// Index of this subtask among the source's subtasks.
    pub subtask: usize,
    /// Number of subtasks of the source.
    pub parallelism: usize,
    /// Most rows in one emitted batch.
    pub batch_rows: usize,
    /// Set when the job is failing or was interrupted: return promptly.
    pub cancel: Arc<AtomicBool>,
    /// Set when an unbounded job is asked to stop cleanly: sources emit what they hold and
    /// finish, so every batch in flight reaches the sinks.
    pub stop: Arc<AtomicBool>,
}

impl SourceContext {
    /// True when the job asked every subtask to stop.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// True when unbounded sources should finish (a clean stop).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }
}

/// How an unbounded job is asked to stop cleanly (Ctrl-C in tail mode), and what happens to
/// windows still open then: with `drain`, every open window fires first (as at the end of a
/// bounded input); without it they are discarded and counted in the summary, since their rows
/// are not complete.
#[derive(Clone, Debug, Default)]
pub struct StopRequest {
    flag: Arc<AtomicBool>,
    drain: bool,
}

impl StopRequest {
    /// A request not made yet; `drain` says whether open windows fire at the stop.
    pub fn new(drain: bool) -> Self {
        StopRequest { flag: Arc::new(AtomicBool::new(false)), drain }
    }

    /// The flag that makes the request (set from a signal handler).
    pub fn flag(&self) -> Arc<AtomicBool> {
        self.flag.clone()
    }

    /// True once the stop was asked for.
    pub fn requested(&self) -> bool {
        self.flag.load(Ordering::Relaxed)
    }

    /// True when the job is stopping and open windows must not fire: the end of input a
    /// window sees then is the stop, not the end of its data.
    pub fn discards_open_windows(&self) -> bool {
        !self.drain && self.requested()
    }
}

/// Reads a part of the input (this subtask's splits).
///
/// `open` is called once on the subtask's thread, then `poll` until it returns `Finished` or
/// an error. An `Err` fails the job and must name the file, line and column when it is about
/// the data.
pub trait Source: Send {
    /// Prepares reading this subtask's share of the input.
    fn open(&mut self, ctx: &SourceContext) -> Result<()>;
    /// Next batch, `Idle` when none is ready yet, or `Finished`.
    fn poll(&mut self) -> Result<Poll>;

    /// Called after `open` when the subtask has other inputs to read before it polls (the right
    /// sides of joins chained with this source): gets what reading needs ready meanwhile.
    fn prepare(&mut self) -> Result<()> {
        Ok(())
    }

    /// For a checkpoint, between polls: moves what the source holds back (lines waiting for
    /// their batch) into the batches it hands out next, and returns its position just after
    /// the last of them, so that [`Source::restore`] resumes with the row after. None when the
    /// source cannot resume (standard input, TCP, and bounded files, which a run reads again).
    fn snapshot(&mut self) -> Result<Option<Vec<u8>>> {
        Ok(None)
    }

    /// Resumes from a position returned by [`Source::snapshot`]; called after `open`, before
    /// the first poll.
    fn restore(&mut self, _position: &[u8]) -> Result<()> {
        Err(crate::error::Error::execution("source", "?", "this source cannot resume from a checkpoint"))
    }
}
