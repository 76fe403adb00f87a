//! Per-operator counters shared by all subtasks of a run, read for progress and the summary.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Counters of one node of the graph (summed over its subtasks).
#[derive(Debug)]
pub struct NodeMetrics {
    /// Rows received (sources: rows read).
    pub rows_in: AtomicU64,
    /// Rows emitted (sinks: rows written).
    pub rows_out: AtomicU64,
    /// Rows removed by a filter.
    pub filtered: AtomicU64,
    /// Rows (or whole files) that could not be read or computed: skipped or sent to the
    /// dead-letter output.
    pub rejected: AtomicU64,
    /// Rows too late for their windows (also sent to the `late` side output when read).
    pub dropped: AtomicU64,
    /// Windows: open windows (one per key and window) dropped unfired at a stop without `--drain`.
    pub discarded: AtomicU64,
    /// Event-time operators: the latest watermark (ms), for the live status.
    pub watermark: std::sync::atomic::AtomicI64,
    /// Time spent in this node's own work, in nanoseconds, summed over subtasks.
    pub nanos: AtomicU64,
    /// Sources: bytes read.
    pub bytes: AtomicU64,
    /// Sources: splits (files or parts of files) finished.
    pub splits: AtomicU64,
    /// Parquet sources: row groups not read, their statistics showing no row passes the filter.
    pub pruned: AtomicU64,
}

impl Default for NodeMetrics {
    fn default() -> Self {
        NodeMetrics {
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            filtered: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            discarded: AtomicU64::new(0),
            watermark: std::sync::atomic::AtomicI64::new(i64::MIN),
            nanos: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            splits: AtomicU64::new(0),
            pruned: AtomicU64::new(0),
        }
    }
}

impl NodeMetrics {
    /// Records a watermark (the largest seen).
    pub fn watermark(&self, w: i64) {
        self.watermark.fetch_max(w, Relaxed);
    }

    /// Adds to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Adds elapsed time.
    pub fn add_time(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

/// Counters for every node, indexed by node id.
#[derive(Debug)]
pub struct Metrics {
    /// One entry per node of the stream graph.
    pub nodes: Vec<NodeMetrics>,
}

impl Metrics {
    /// Zeroed counters for `n` nodes.
    pub fn new(n: usize) -> Self {
        Metrics { nodes: (0..n).map(|_| NodeMetrics::default()).collect() }
    }
}
