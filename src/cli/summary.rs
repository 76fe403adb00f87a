//! The run summary: rows in / out / filtered and time per operator, as a table or JSON.
use std::fmt::Write;

use serde_json::json;

use crate::exec::metrics::NodeMetrics;
use crate::exec::runtime::RunReport;
use crate::plan::execution::ExecutionGraph;

pub struct Row {
    name: String,
    /// Names of the nodes this one reads from.
    inputs: Vec<String>,
    operation: String,
    parallelism: usize,
    rows_in: u64,
    rows_out: u64,
    filtered: u64,
    rejected: u64,
    dropped: u64,
    /// Open windows not fired at a stop without `--drain`.
    discarded: u64,
    seconds: f64,
    bytes: u64,
    /// Parquet row groups skipped by their statistics.
    pruned: u64,
}

pub struct Summary {
    pipeline: String,
    elapsed: f64,
    rows: Vec<Row>,
    peak_rss: Option<u64>,
}

/// Peak resident memory of this process so far, in bytes (Linux `VmHWM`).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

impl Summary {
    pub fn new(exec: &ExecutionGraph, report: &RunReport) -> Self {
        let stream = &exec.job.stream;
        let rows = stream
            .nodes
            .iter()
            .zip(&report.metrics.nodes)
            .enumerate()
            .map(|(id, (n, m))| Row {
                name: n.name.clone(),
                inputs: stream.inputs(id).map(|e| stream.nodes[e.from].name.clone()).collect(),
                operation: n.label.clone(),
                parallelism: n.parallelism,
                rows_in: NodeMetrics::get(&m.rows_in),
                rows_out: NodeMetrics::get(&m.rows_out),
                filtered: NodeMetrics::get(&m.filtered),
                rejected: NodeMetrics::get(&m.rejected),
                dropped: NodeMetrics::get(&m.dropped),
                discarded: NodeMetrics::get(&m.discarded),
                seconds: NodeMetrics::get(&m.nanos) as f64 / 1e9,
                bytes: NodeMetrics::get(&m.bytes),
                pruned: NodeMetrics::get(&m.pruned),
            })
            .collect();
        Summary { pipeline: stream.name.clone(), elapsed: report.elapsed.as_secs_f64(), rows, peak_rss: peak_rss() }
    }

    pub fn to_text(&self) -> String {
        let mut s = format!("pipeline '{}' finished in {:.3} s", self.pipeline, self.elapsed);
        if let Some(rss) = self.peak_rss {
            let _ = write!(s, ", peak memory {:.0} MB", rss as f64 / 1e6);
        }
        s.push('\n');
        let w = self.rows.iter().map(|r| r.name.len()).max().unwrap_or(8).max(8);
        let ow = self.rows.iter().map(|r| r.operation.len()).max().unwrap_or(9).max(9);
        let _ = writeln!(
            s,
            "  {:w$}  {:ow$}  {:>3}  {:>12}  {:>12}  {:>12}  {:>12}  {:>12}  {:>9}",
            "operator", "operation", "p", "rows in", "rows out", "filtered", "rejected", "late", "time"
        );
        for r in &self.rows {
            let _ = write!(
                s,
                "  {:w$}  {:ow$}  {:>3}  {:>12}  {:>12}  {:>12}  {:>12}  {:>12}  {:>8.3}s",
                r.name, r.operation, r.parallelism, r.rows_in, r.rows_out, r.filtered, r.rejected, r.dropped, r.seconds
            );
            if r.bytes > 0 {
                let _ = write!(s, "  ({:.1} MB read)", r.bytes as f64 / 1e6);
            }
            if r.pruned > 0 {
                let _ = write!(s, "  ({} row groups skipped by statistics)", r.pruned);
            }
            s.push('\n');
        }
        for r in self.rows.iter().filter(|r| r.discarded > 0) {
            let _ = writeln!(s, "  '{}': {} open windows (per key) were not fired: stopped without --drain", r.name, r.discarded);
        }
        s
    }

    pub fn to_json(&self) -> String {
        let ops: Vec<_> = self
            .rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name, "inputs": r.inputs, "operation": r.operation, "parallelism": r.parallelism,
                    "rows_in": r.rows_in, "rows_out": r.rows_out, "filtered": r.filtered, "rejected": r.rejected, "dropped": r.dropped,
                    "open_windows_discarded": r.discarded,
                    "seconds": r.seconds, "bytes_read": r.bytes, "row_groups_skipped": r.pruned,
                })
            })
            .collect();
        serde_json::to_string_pretty(&json!({"pipeline": self.pipeline, "elapsed_seconds": self.elapsed, "peak_rss_bytes": self.peak_rss, "operators": ops}))
            .unwrap_or_default()
    }
}
