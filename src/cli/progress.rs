//! Progress bars on stderr (only on a terminal): bytes (text files) or rows (Parquet) read per
//! source, with rate and ETA.
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::exec::metrics::{Metrics, NodeMetrics};
use crate::pipeline::SourceFormat;
use crate::plan::logical::{LogicalGraph, NodeKind};

pub struct Progress {
    _multi: MultiProgress,
    bars: Vec<(usize, bool, ProgressBar)>,
}

impl Progress {
    pub fn new(stream: &LogicalGraph) -> Self {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10));
        let mut bars = Vec::new();
        for (id, node) in stream.nodes.iter().enumerate() {
            let NodeKind::Source(config) = &node.kind else {
                continue;
            };
            let by_rows = config.format == SourceFormat::Parquet;
            let (total, template) = if by_rows {
                let rows = config.splits().map(|s| s.iter().map(|s| s.end - s.start).sum()).unwrap_or(0);
                (rows, "{prefix:>16} [{bar:30}] {human_pos}/{human_len} rows {per_sec} ETA {eta}")
            } else {
                let bytes = config.files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
                (bytes, "{prefix:>16} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}")
            };
            let bar = multi.add(ProgressBar::new(total));
            bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()).progress_chars("=> "));
            bar.set_prefix(node.name.clone());
            bars.push((id, by_rows, bar));
        }
        Progress { _multi: multi, bars }
    }

    pub fn update(&self, metrics: &Metrics) {
        for (id, by_rows, bar) in &self.bars {
            let m = &metrics.nodes[*id];
            bar.set_position(if *by_rows { NodeMetrics::get(&m.rows_out) } else { NodeMetrics::get(&m.bytes) });
        }
    }

    pub fn finish(&self) {
        for (_, _, bar) in &self.bars {
            bar.finish_and_clear();
        }
    }
}
